//! The exit codes of `zvm`, in one place (documented in `docs/exit-codes.md`).
//!
//! When the guest ran to an exit, `zvm run` exits with the guest's own code, so that it is a
//! drop-in for `wasmtime run`. zvm's own outcomes use codes a well-behaved program rarely
//! uses, following the conventions of `timeout(1)` and of shells: the report (`--report`)
//! always tells them apart from a guest that happens to use the same number.

use zvm_vm::{Report, State};

/// A limit stopped the guest: fuel, wall timeout, memory, or a channel quota.
pub const LIMIT: i32 = 124;
/// zvm could not start the guest: bad manifest, missing or unreadable program or input,
/// validation refused, or a failure of zvm itself.
pub const CANNOT_START: i32 = 125;
/// The guest trapped (like a native program killed by SIGABRT: 128 + 6).
pub const TRAP: i32 = 134;
/// `--verify` or `zvm replay` found that a run did not reproduce.
pub const NOT_REPRODUCED: i32 = 123;

/// The exit code for a finished run.
pub fn for_report(report: &Report) -> i32 {
    match &report.state {
        State::Ok => 0,
        State::Exited { code } => (*code).min(255) as i32,
        State::OutOfFuel | State::TimedOut | State::MemoryLimit | State::QuotaExceeded { .. } => {
            LIMIT
        }
        State::Trap { .. } => TRAP,
        // The run could not be completed as one consistent run; trying again may succeed.
        State::ValidationFailed { .. } | State::InputChanged { .. } => CANNOT_START,
    }
}
