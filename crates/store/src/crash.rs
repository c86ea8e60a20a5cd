//! Test hook for crash injection, so that a test can stop the store between every two steps
//! of its atomicity protocol rather than hoping a random kill lands there.
//!
//! With `ZVM_STORE_CRASH_AT=<n>` in the environment, the process kills itself with SIGKILL at
//! the n-th crash point it passes (counting from 1), after naming it on stderr. Without the
//! variable a crash point costs one load of a cached value.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms the hook.
pub const CRASH_AT_VAR: &str = "ZVM_STORE_CRASH_AT";

pub(crate) fn crash_point(label: &str) {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let Some(at) = *AT.get_or_init(|| std::env::var(CRASH_AT_VAR).ok()?.parse().ok()) else {
        return;
    };
    if PASSED.fetch_add(1, Ordering::SeqCst) + 1 == at {
        let _ = writeln!(std::io::stderr(), "zvm-store: crash point {at}: {label}");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
