//! The runtime under load: pooled slots, many threads, slot reuse.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use zvm_channel::{Endpoint, SharedBuffer};
use zvm_manifest::Manifest;
use zvm_vm::{Allocator, Error, PoolConfig, Report, RunIo, Runtime, RuntimeConfig, State};

/// A `Read` that says when the guest first reads, then blocks until the test sends it its
/// bytes (then EOF).
struct Gate(mpsc::Receiver<Vec<u8>>, Vec<u8>, Option<mpsc::Sender<()>>);

impl Read for Gate {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(reading) = self.2.take() {
            let _ = reading.send(());
        }
        if self.1.is_empty() {
            match self.0.recv() {
                Ok(bytes) => self.1 = bytes,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.1.len());
        buf[..n].copy_from_slice(&self.1[..n]);
        self.1.drain(..n);
        Ok(n)
    }
}

fn pooled(slots: u32) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator: Allocator::Pooling(PoolConfig {
            slots,
            ..PoolConfig::default()
        }),
    })
    .unwrap()
}

fn run(program: &zvm_vm::Program, stdin: Box<dyn Read + Send>) -> Result<(Report, Vec<u8>), Error> {
    let out = SharedBuffer::new();
    let io = RunIo::default()
        .bind("stdin", Endpoint::Reader(stdin))
        .bind("stdout", out.endpoint());
    let report = program.run(&Manifest::for_program("guest.wat"), io)?;
    Ok((report, out.contents()))
}

/// Reads one byte of stdin, then exits.
const READ_ONE: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 1))
        (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn an_exhausted_pool_is_an_error_not_a_crash() {
    let rt = pooled(1);
    let program = Arc::new(
        rt.load(Path::new("read_one.wat"), READ_ONE.as_bytes(), None)
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    let (reading_tx, reading) = mpsc::channel();
    let holder = {
        let program = program.clone();
        let gate = Gate(rx, Vec::new(), Some(reading_tx));
        std::thread::spawn(move || run(&program, Box::new(gate)).unwrap())
    };
    // The first VM holds the only slot once it blocks reading its stdin.
    reading.recv().unwrap();
    let refused = run(&program, Box::new(std::io::empty())).unwrap_err();
    assert!(
        matches!(refused, Error::PoolExhausted { slots: 1 }),
        "{refused}"
    );
    assert_eq!(
        refused.to_string(),
        "all 1 VM slots of the pool are in use; try again later or configure more"
    );
    tx.send(b"x".to_vec()).unwrap();
    let (report, _) = holder.join().unwrap();
    assert_eq!(report.state, State::Ok);
    // The slot is free again.
    assert_eq!(
        run(&program, Box::new(std::io::empty())).unwrap().0.state,
        State::Ok
    );
}

/// Writes a secret into memory it grows and into a scratch file, then exits; or, in the
/// second role, prints what it finds at the same places.
const SECRET: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 200) "/secret.txt")
    (func $out (param $ptr i32) (param $len i32)
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
    (func (export "_start") (local $errno i32)
        ;; stdin says the role: "w" writes the secret, anything else looks for it.
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 1))
        (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (drop (memory.grow (i32.const 1)))
        (if (i32.eq (i32.load8_u (i32.const 16)) (i32.const 119))
            (then
                (i64.store (i32.const 70000) (i64.const 0x5445524345535f5a)) ;; "Z_SECRET"
                (local.set $errno (call $open (i32.const 3) (i32.const 0) (i32.const 200)
                    (i32.const 11) (i32.const 1) (i64.const 0x7fffffff) (i64.const 0)
                    (i32.const 0) (i32.const 100))))
            (else
                (call $out (i32.const 70000) (i32.const 8))
                (local.set $errno (call $open (i32.const 3) (i32.const 0) (i32.const 200)
                    (i32.const 11) (i32.const 0) (i64.const 0x7fffffff) (i64.const 0)
                    (i32.const 0) (i32.const 100)))))
        ;; Report path_open's errno as one byte.
        (i32.store8 (i32.const 300) (i32.add (local.get $errno) (i32.const 48)))
        (call $out (i32.const 300) (i32.const 1))))"#;

#[test]
fn a_reused_slot_shows_nothing_of_the_previous_vm() {
    let rt = pooled(1);
    let program = rt
        .load(Path::new("secret.wat"), SECRET.as_bytes(), None)
        .unwrap();
    let (report, out) = run(&program, Box::new(&b"w"[..])).unwrap();
    assert_eq!(report.state, State::Ok);
    assert_eq!(out, b"0", "the writer created its scratch file");
    for _ in 0..3 {
        let (report, out) = run(&program, Box::new(&b"r"[..])).unwrap();
        assert_eq!(report.state, State::Ok);
        // Eight zero bytes where the secret was, and ENOENT (44) for the file.
        let mut expected = vec![0u8; 8];
        expected.push(b'0' + 44);
        assert_eq!(out, expected);
    }
}

/// Prints random bytes and the time, so that every run's output is seed- and clock-dependent.
const NOISY: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "clock_time_get" (func $time (param i32 i64 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")
        (drop (call $random (i32.const 100) (i32.const 32)))
        (drop (call $time (i32.const 0) (i64.const 1) (i32.const 132)))
        (drop (call $time (i32.const 1) (i64.const 1) (i32.const 140)))
        (i32.store (i32.const 0) (i32.const 100))
        (i32.store (i32.const 4) (i32.const 48))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn concurrent_vms_give_the_reports_of_sequential_ones() {
    let rt = Arc::new(pooled(64));
    let program = Arc::new(
        rt.load(Path::new("noisy.wat"), NOISY.as_bytes(), None)
            .unwrap(),
    );
    let normalise = |mut r: Report| {
        r.wall_time_us = 0;
        r
    };
    let (expected, expected_out) = run(&program, Box::new(std::io::empty())).unwrap();
    let expected = normalise(expected);
    assert_eq!(expected.state, State::Ok);
    assert_eq!(expected_out.len(), 48);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let program = program.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|_| run(&program, Box::new(std::io::empty())).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (report, out) in t.join().unwrap() {
            assert_eq!(normalise(report), expected);
            assert_eq!(out, expected_out);
        }
    }
}

#[test]
fn a_manifest_asking_more_memory_than_a_slot_is_refused() {
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator: Allocator::Pooling(PoolConfig {
            slots: 4,
            max_memory: 1 << 20,
            keep_resident: 0,
        }),
    })
    .unwrap();
    let program = rt
        .load(Path::new("read_one.wat"), READ_ONE.as_bytes(), None)
        .unwrap();
    let mut m = Manifest::for_program("read_one.wat");
    m.limits.memory = 2 << 20;
    let err = program.run(&m, RunIo::default()).unwrap_err();
    assert!(matches!(err, Error::MemoryOverPool { .. }), "{err}");
}

#[test]
fn runtime_and_programs_are_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Runtime>();
    assert_send_sync::<zvm_vm::Program>();
}
