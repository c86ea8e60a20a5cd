//! WASI calls: the input is read as a guest (flags, optional junk over memory, then a
//! sequence of host function calls with their arguments; see `zvm_fuzz::Guest`), which is
//! built as a module and run in a fresh VM of a pooled runtime. The run must give a report
//! (never `Err`, never a panic), end with the first `proc_exit`'s code, account for every
//! captured byte, and leave the host unchanged outside the mounted directory.
//!
//! `ZVM_FUZZ_VERBOSE=1` prints where each input's time went.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use zvm_fuzz::{FUEL, Guest, HostWorld, TIMEOUT, check_report, manifest, run};

fn world() -> &'static HostWorld {
    static WORLD: OnceLock<HostWorld> = OnceLock::new();
    WORLD.get_or_init(HostWorld::default)
}

fuzz_target!(|data: &[u8]| {
    let Ok(guest) = Guest::from_input(&mut Unstructured::new(data)) else {
        return;
    };
    if guest.calls.is_empty() {
        return;
    }
    let t0 = std::time::Instant::now();
    let wat = guest.wat();
    let program = zvm_fuzz::runtime()
        .load(Path::new("guest.wat"), wat.as_bytes(), None)
        .unwrap_or_else(|e| panic!("the generated module was refused: {e}\n{wat}"));
    let t1 = std::time::Instant::now();
    let world = world();
    let before = world.snapshot();
    let dir = guest.mounted.then(|| world.mount_dir());
    let mounts = dir.iter().map(|d| HostWorld::mount(d.path())).collect();
    let t2 = std::time::Instant::now();
    let (result, captured) = run(&program, &manifest(mounts, FUEL, TIMEOUT));
    let t3 = std::time::Instant::now();
    if std::env::var_os("ZVM_FUZZ_VERBOSE").is_some() {
        eprintln!(
            "{} calls: build and load {:?}, host setup {:?}, run {:?}",
            guest.calls.len(),
            t1 - t0,
            t2 - t1,
            t3 - t2
        );
    }
    match result {
        Ok(report) => check_report(&report, guest.expected_exit(), &captured),
        Err(e) => panic!("run failed: {e}\n{guest:?}\n{wat}"),
    }
    assert_eq!(
        world.snapshot(),
        before,
        "the host changed outside the mount\n{wat}"
    );
});
