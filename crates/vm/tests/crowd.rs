//! A thousand hostile VMs at once, next to a well-behaved one.
//!
//! One pooled [`Runtime`] (1,024 slots), 1,000 threads, each running one hostile guest
//! picked round-robin: an endless loop, a memory bomb, an output flood and a runaway
//! recursion. Every guest first waits at a rendezvous (a stdin read the test holds until all
//! of them have made it; the bombs get there with their memory full), so all 1,000 VMs are
//! alive at once. Meanwhile one more thread runs a well-behaved guest again and again.
//! Every hostile VM must end in exactly its expected state; every run of the good guest must
//! print exactly the right bytes with exactly the same fuel; the test process's peak resident
//! memory and the wall time must stay within the bounds worked out below.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use zvm_channel::{Endpoint, SharedBuffer};
use zvm_manifest::Manifest;
use zvm_vm::{Allocator, PoolConfig, Program, Report, RunIo, Runtime, RuntimeConfig, State};

/// Hostile VMs running at once.
const HOSTILE: usize = 1000;

/// Slots of the pool: the hostile VMs, the good one, and room to spare.
const SLOTS: u32 = 1024;

/// Stack of each VM thread: the documented minimum. Wasm runs on the calling thread's native
/// stack, and a guest may use up to `MAX_WASM_STACK` (512 KiB) of it before it traps, so the
/// thread needs that much plus room for the host's own frames; a 256 KiB thread overflows its
/// stack in the recursion guest (a SIGABRT of the whole test, not a trap). Untouched stack is
/// only address space.
const VM_THREAD_STACK: usize = zvm_vm::MIN_THREAD_STACK;

/// Fuel of every VM; the endless loop uses all of it.
const FUEL: u64 = 50_000_000;

/// Memory limit of the memory bomb.
const BOMB_MEMORY: u64 = 4 << 20;

/// Write quota (bytes) of the output flood's stdout.
const FLOOD_QUOTA: u64 = 1 << 20;

/// Wall-clock timeout of every VM: a safety net far above what any of them needs even when a
/// thousand share two cores, so that the states stay the deterministic ones.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Counts what the guest writes without keeping it.
#[derive(Clone, Default)]
struct Sink(Arc<AtomicU64>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Longest a hostile VM waits at the rendezvous: if one VM never gets there (its thread
/// failed before), the others give up instead of hanging the test, and fail it.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(120);

/// Where every hostile VM waits, inside its guest, until all of them are running.
struct Rendezvous {
    arrived: Mutex<usize>,
    all_here: Condvar,
    expected: usize,
}

impl Rendezvous {
    /// Waits for the others; false if they did not all come in time.
    fn wait(&self) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        if *arrived == self.expected {
            self.all_here.notify_all();
            return true;
        }
        let (_arrived, wait) = self
            .all_here
            .wait_timeout_while(arrived, RENDEZVOUS_TIMEOUT, |n| *n < self.expected)
            .unwrap();
        !wait.timed_out()
    }
}

/// A stdin whose first read returns end of file once every hostile VM has made its read.
struct Hold(Arc<Rendezvous>);

impl Read for Hold {
    fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.wait() {
            Ok(0)
        } else {
            Err(std::io::Error::other(
                "not every hostile VM reached the rendezvous",
            ))
        }
    }
}

// Every hostile guest reads stdin once, with the iovec at address 16 (32, 1) and the count
// at 24, to wait at the rendezvous: the memory bomb after it has grown, so that all the bombs
// hold their memory at once, the others before they start.

/// Waits at the rendezvous, then spins until its fuel runs out.
const LOOP: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")
        (i32.store (i32.const 16) (i32.const 32))
        (i32.store (i32.const 20) (i32.const 1))
        (drop (call $read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (loop $l (br $l))))"#;

/// Grows its memory a page at a time, writing to every 4 KiB of each new page, until growth
/// fails; then waits at the rendezvous and exits 3.
const BOMB: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func (export "_start") (local $old i32) (local $at i32)
        (loop $grow
            (local.set $old (memory.grow (i32.const 1)))
            (if (i32.ne (local.get $old) (i32.const -1))
                (then
                    (local.set $at (i32.mul (local.get $old) (i32.const 65536)))
                    (loop $touch
                        (i32.store (local.get $at) (i32.const 1))
                        (local.set $at (i32.add (local.get $at) (i32.const 4096)))
                        (br_if $touch (i32.rem_u (local.get $at) (i32.const 65536))))
                    (br $grow))))
        (i32.store (i32.const 16) (i32.const 32))
        (i32.store (i32.const 20) (i32.const 1))
        (drop (call $read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (call $exit (i32.const 3))))"#;

/// Waits at the rendezvous, then writes 64 KiB of zeros (from address 65536) to stdout until
/// a write fails; exits 0 if the failure was EDQUOT (19), 1 otherwise.
const FLOOD: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 2)
    (func (export "_start") (local $errno i32)
        (i32.store (i32.const 16) (i32.const 32))
        (i32.store (i32.const 20) (i32.const 1))
        (drop (call $read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (i32.store (i32.const 0) (i32.const 65536))
        (i32.store (i32.const 4) (i32.const 65536))
        (loop $flood
            (local.set $errno (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (br_if $flood (i32.eqz (local.get $errno))))
        (call $exit (i32.ne (local.get $errno) (i32.const 19)))))"#;

/// Waits at the rendezvous, then recurses without end.
const RECURSE: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func $r (param i32) (result i32)
        (i32.add (call $r (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
    (func (export "_start")
        (i32.store (i32.const 16) (i32.const 32))
        (i32.store (i32.const 20) (i32.const 1))
        (drop (call $read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
        (drop (call $r (i32.const 0)))))"#;

/// Sums 1..=100000 and prints the sum in decimal, then exits with fd_write's errno.
const GOOD: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func (export "_start") (local $i i64) (local $sum i64) (local $p i32)
        (local.set $i (i64.const 1))
        (loop $add
            (local.set $sum (i64.add (local.get $sum) (local.get $i)))
            (local.set $i (i64.add (local.get $i) (i64.const 1)))
            (br_if $add (i64.le_u (local.get $i) (i64.const 100000))))
        ;; Digits backwards from address 64, which holds the newline.
        (local.set $p (i32.const 64))
        (i32.store8 (local.get $p) (i32.const 10))
        (loop $digit
            (local.set $p (i32.sub (local.get $p) (i32.const 1)))
            (i32.store8 (local.get $p)
                (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $sum) (i64.const 10)))))
            (local.set $sum (i64.div_u (local.get $sum) (i64.const 10)))
            (br_if $digit (i64.ne (local.get $sum) (i64.const 0))))
        (i32.store (i32.const 0) (local.get $p))
        (i32.store (i32.const 4) (i32.sub (i32.const 65) (local.get $p)))
        (call $exit (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// The four kinds of hostile guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Loop,
    Bomb,
    Flood,
    Recurse,
}

const KINDS: [Kind; 4] = [Kind::Loop, Kind::Bomb, Kind::Flood, Kind::Recurse];

fn manifest(kind: Kind) -> Manifest {
    let mut m = Manifest::for_program(format!("{kind:?}.wat"));
    m.limits.fuel = FUEL;
    m.limits.timeout = TIMEOUT;
    m.limits.memory = 64 << 20;
    match kind {
        Kind::Bomb => m.limits.memory = BOMB_MEMORY,
        Kind::Flood => {
            let stdout = m
                .channels
                .iter_mut()
                .find(|c| c.name.as_str() == "stdout")
                .unwrap();
            stdout.quota.write_bytes = FLOOD_QUOTA;
        }
        Kind::Loop | Kind::Recurse => {}
    }
    m
}

/// Runs `program` with `stdin` and `stdout`; stderr is counted and must stay empty.
fn run(
    program: &Program,
    manifest: &Manifest,
    stdin: Box<dyn Read + Send>,
    stdout: Endpoint,
) -> Report {
    let stderr = Sink::default();
    let io = RunIo::default()
        .bind("stdin", Endpoint::Reader(stdin))
        .bind("stdout", stdout)
        .bind("stderr", Endpoint::Writer(Box::new(stderr.clone())));
    let report = program.run(manifest, io).expect("the VM is set up");
    assert_eq!(stderr.0.load(Ordering::Relaxed), 0);
    report
}

/// Hostile VMs running now, and the most there have been at once.
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
static MOST_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

/// Runs one hostile VM of `kind`, which waits at `rendezvous`, and asserts its exact outcome.
fn hostile(kind: Kind, program: &Program, manifest: &Manifest, rendezvous: Arc<Rendezvous>) {
    let sink = Sink::default();
    let stdin = Box::new(Hold(rendezvous));
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
    let report = run(
        program,
        manifest,
        stdin,
        Endpoint::Writer(Box::new(sink.clone())),
    );
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    let written = sink.0.load(Ordering::Relaxed);
    let stdout = &report.channels[1];
    match kind {
        Kind::Loop => {
            assert_eq!(report.state, State::OutOfFuel, "{report:?}");
            assert_eq!(report.exit_code, None);
            assert_eq!(report.fuel_used, FUEL);
            assert_eq!(written, 0);
        }
        Kind::Bomb => {
            assert_eq!(report.state, State::MemoryLimit, "{report:?}");
            assert_eq!(report.exit_code, Some(3));
            assert_eq!(report.peak_memory, BOMB_MEMORY);
            assert_eq!(written, 0);
        }
        Kind::Flood => {
            assert_eq!(
                report.state,
                State::QuotaExceeded {
                    channel: "stdout".into(),
                    quota: "write_bytes".into()
                },
                "{report:?}"
            );
            assert_eq!(report.exit_code, Some(0), "the guest saw EDQUOT");
            assert_eq!(written, FLOOD_QUOTA, "the sink got exactly the quota");
            assert_eq!((stdout.writes, stdout.write_bytes), (16, FLOOD_QUOTA));
            assert_eq!(
                stdout.etag,
                blake3::hash(&vec![0u8; FLOOD_QUOTA as usize])
                    .to_hex()
                    .to_string()
            );
        }
        Kind::Recurse => {
            assert_eq!(
                report.state,
                State::Trap {
                    message: "call stack exhausted".into()
                },
                "{report:?}"
            );
            assert_eq!(report.exit_code, None);
            assert_eq!(report.backtrace.len(), zvm_vm::MAX_BACKTRACE_FRAMES);
            assert_eq!(written, 0);
        }
    }
    assert!(!report.committed);
    let stdin = &report.channels[0];
    assert_eq!(
        (stdin.reads, stdin.read_bytes),
        (1, 0),
        "one read, at the rendezvous"
    );
}

/// The process's peak resident memory so far (`VmHWM`: the kernel tracks the high-water
/// mark, so nothing is missed between samples), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// Resident memory now (`/proc/self/statm`'s second field, in pages of 4 KiB), in bytes.
fn rss_now() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_thousand_hostile_vms_next_to_a_well_behaved_one() {
    let started = Instant::now();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator: Allocator::Pooling(PoolConfig {
            slots: SLOTS,
            ..PoolConfig::default()
        }),
    })
    .unwrap();
    let load = |name: &str, wat: &str| {
        runtime
            .load(Path::new(&format!("{name}.wat")), wat.as_bytes(), None)
            .unwrap()
    };
    let programs: Arc<Vec<(Kind, Program, Manifest)>> = Arc::new(
        KINDS
            .iter()
            .zip([LOOP, BOMB, FLOOD, RECURSE])
            .map(|(&kind, wat)| (kind, load(&format!("{kind:?}"), wat), manifest(kind)))
            .collect(),
    );
    let good = load("good", GOOD);
    let mut good_manifest = Manifest::for_program("good.wat");
    good_manifest.limits.fuel = FUEL;
    good_manifest.limits.timeout = TIMEOUT;
    let good_run = || {
        let out = SharedBuffer::new();
        let report = run(
            &good,
            &good_manifest,
            Box::new(std::io::empty()),
            out.endpoint(),
        );
        (report, out.contents())
    };
    // Alone first: the reference the storm's runs must match.
    let (alone, out) = good_run();
    assert_eq!(alone.state, State::Ok, "{alone:?}");
    assert_eq!(out, b"5000050000\n");
    let rss_before = rss_now();
    let prepared = started.elapsed();

    let storm = Instant::now();
    let rendezvous = Arc::new(Rendezvous {
        arrived: Mutex::new(0),
        all_here: Condvar::new(),
        expected: HOSTILE,
    });
    let threads: Vec<_> = (0..HOSTILE)
        .map(|i| {
            let (programs, rendezvous) = (programs.clone(), rendezvous.clone());
            std::thread::Builder::new()
                .name(format!("hostile-{i}"))
                .stack_size(VM_THREAD_STACK)
                .spawn(move || {
                    let (kind, program, manifest) = &programs[i % KINDS.len()];
                    hostile(*kind, program, manifest, rendezvous);
                })
                .unwrap()
        })
        .collect();
    let storming = AtomicBool::new(true);
    let good_runs = std::thread::scope(|scope| {
        let good_thread = scope.spawn(|| {
            let mut runs = 0u32;
            let mut slowest = Duration::ZERO;
            // During the whole storm, and at least 20 times.
            while storming.load(Ordering::Relaxed) || runs < 20 {
                let t = Instant::now();
                let (report, out) = good_run();
                slowest = slowest.max(t.elapsed());
                assert_eq!(out, b"5000050000\n", "run {runs}");
                let mut report = report;
                report.wall_time_us = alone.wall_time_us;
                assert_eq!(report, alone, "run {runs}");
                runs += 1;
            }
            (runs, slowest)
        });
        let mut failed = 0;
        for t in threads {
            if t.join().is_err() {
                failed += 1;
            }
        }
        storming.store(false, Ordering::Relaxed);
        assert_eq!(failed, 0, "{failed} hostile VMs ended other than expected");
        good_thread
            .join()
            .expect("the good guest's runs were all exact")
    });
    let storm_time = storm.elapsed();
    let total = started.elapsed();
    let peak = peak_rss();
    eprintln!(
        "crowd: {HOSTILE} hostile VMs in {storm_time:?} (preparation {prepared:?}, total \
         {total:?}), at most {} at once; good guest ran {} times, slowest {:?}; RSS before \
         the storm {} MiB, peak {} MiB",
        MOST_IN_FLIGHT.load(Ordering::SeqCst),
        good_runs.0,
        good_runs.1,
        rss_before >> 20,
        peak >> 20
    );

    assert_eq!(
        MOST_IN_FLIGHT.load(Ordering::SeqCst),
        HOSTILE as u64,
        "every hostile VM was running at the rendezvous"
    );

    // Resident memory. What the limits allow the crowd at once: each bomb its 4 MiB (all
    // of them hold it together, at the rendezvous), each recursion up to MAX_WASM_STACK of
    // its thread's stack, each flood its two pages; the loops touch one 4 KiB page each. On
    // top of that, a fixed allowance for the runtime, the thousand threads' host frames, the
    // stores and the test itself: measured at 50 to 140 MiB in all (peaks of 1051 to 1143
    // MiB, of which the bombs are 1000), allowed 256 MiB. The bombs' memory is also a lower
    // bound: below it they did not really hold their memory at once.
    let kinds = |kind| {
        (0..HOSTILE)
            .filter(|i| KINDS[i % KINDS.len()] == kind)
            .count() as u64
    };
    let bombs = kinds(Kind::Bomb) * BOMB_MEMORY;
    let bound = bombs
        + kinds(Kind::Recurse) * zvm_vm::MAX_WASM_STACK as u64
        + kinds(Kind::Flood) * (2 << 16)
        + (256 << 20);
    assert!(
        (bombs..bound).contains(&peak),
        "peak RSS {} MiB, expected from {} to {} MiB",
        peak >> 20,
        bombs >> 20,
        bound >> 20
    );
    // Time: the storm takes 4 to 6 s in a debug build on two cores (release: the same, the
    // guests' own code dominates).
    assert!(
        storm_time < Duration::from_secs(60),
        "the storm took {storm_time:?}"
    );
}

/// Runs `program` once on a thread with Rust's default stack (2 MiB, what
/// `std::thread::spawn` gives), with an empty stdin.
fn on_a_default_thread(program: Arc<Program>, manifest: Manifest) -> Report {
    std::thread::spawn(move || {
        run(
            &program,
            &manifest,
            Box::new(std::io::empty()),
            Endpoint::Writer(Box::new(Sink::default())),
        )
    })
    .join()
    .unwrap()
}

/// An embedder that uses plain `std::thread::spawn`, as `Runtime`'s "shared across threads"
/// suggests, gets Rust's default 2 MiB stack. A guest recursing to wasmtime's stack limit
/// must trap there, before the host thread's stack runs out: when `MAX_WASM_STACK` was 2 MiB
/// itself, the whole process aborted instead ("thread has overflowed its stack", SIGABRT).
/// If that comes back, this test aborts the test binary rather than failing politely.
#[test]
fn runaway_recursion_on_a_default_thread_is_a_trap_not_a_crash() {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        journal: None,
        allocator: Allocator::OnDemand,
    })
    .unwrap();
    let program = runtime
        .load(Path::new("recurse.wat"), RECURSE.as_bytes(), None)
        .unwrap();
    let report = on_a_default_thread(Arc::new(program), Manifest::for_program("recurse.wat"));
    assert_eq!(
        report.state,
        State::Trap {
            message: "call stack exhausted".into()
        }
    );
}
