//! Programs built by stock toolchains run unmodified: Rust std (Debian's rustc for
//! wasm32-wasi) here; C (wasi-libc) throughout the other modules.

use crate::support::*;

#[test]
fn rust_std_program_runs_unmodified() {
    let guest = rust_guest("std_tour");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let output = format!("output={}", out.display());
    let (o, report) = run_report(
        &[
            guest.to_str().unwrap(),
            "--output",
            &output,
            "--env",
            "LANG=C.UTF-8",
            "--start-time",
            "1700000000",
            "--",
            "one",
            "two words",
        ],
        b"hello from stdin\n",
    );
    assert_eq!(report["state"]["kind"], "ok", "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "args=[\"one\", \"two words\"]\n\
         env LANG=Some(\"C.UTF-8\")\n\
         dev=[\"full\", \"null\", \"output\", \"random\", \"stderr\", \"stdin\", \"stdout\", \"urandom\", \"zero\"]\n\
         realtime>=start: true\n\
         slept>=2s: true\n\
         HELLO FROM STDIN\n"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "17 bytes\n");
    assert!(
        report["wall_time_us"].as_u64().unwrap() < 2_000_000,
        "the sleep is virtual"
    );
}
