//! Bounded property tests of zvm's WASI preview1 host against hostile guests: generated
//! modules call each host function with chosen argument values and check that the run ends
//! as a report, never as a host error or a panic.
//!
//! [`FUNCTIONS`] lists every function `zvm_vm::wasi::add_to_linker` provides, with its exact
//! signature and a role per parameter (a descriptor, an out pointer, a path...), and is
//! checked against the source so that a function added there cannot be missed here. From it a
//! case builds a WAT module that calls one function (or a mix) K times with values drawn from
//! a blend of edge values (small, around the 64 KiB memory end, around `u32::MAX`, negative)
//! and values that mean something (open descriptors, preset iovecs, path strings, poll
//! subscriptions), and sometimes the result of the previous call or the descriptor a
//! `path_open` stored. Variants first fill memory with junk (so pointers lead to junk iovecs
//! and strings), or mount a writable host directory so that path calls reach real host code.
//!
//! Properties: [`Program::run`] returns `Ok(report)` (an `Err(Internal)` is a caught host
//! panic), `proc_exit`'s argument is the exit code, captured channel bytes match the
//! report's counters and etags, and nothing changes on the host outside the mounted
//! directory, which holds symlinks pointing out of it as bait. The `wasi_calls` cargo-fuzz
//! target in `fuzz/` runs the same idea for as long as one likes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use zvm_channel::{Endpoint, SharedBuffer};
use zvm_manifest::{
    AccessMode, Channel, ChannelName, ChannelSource, Manifest, Mount, MountSource, Quota,
};
use zvm_vm::{Allocator, PoolConfig, Report, RunIo, Runtime, RuntimeConfig, State};

/// Cases per property: each compiles and runs one module, tens of milliseconds in a debug
/// build, so that the whole file stays well under twenty seconds.
const CASES: u32 = 64;

/// Most calls one generated module makes.
const MAX_CALLS: usize = 8;

/// The limits of every run: small, so that a call that loops or allocates is stopped quickly.
const FUEL: u64 = 10_000_000;
const TIMEOUT: Duration = Duration::from_secs(2);
const MEMORY: u64 = 2 << 20;
const SCRATCH: u64 = 1 << 20;
const OPEN_FILES: u32 = 16;

/// Descriptors below this are the likely ones: stdio, two preopens, and what a prelude opens.
const MAX_FD: i32 = 12;

/// The guest's memory: one 64 KiB page, so that "near the end of memory" is near 65536.
const PAGE: u32 = 65536;

/// What a parameter is for; the role decides which values are likely, and its wasm type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A file descriptor.
    Fd,
    /// The directory descriptor a path is resolved from.
    Dir,
    /// A pointer to a buffer the host reads or fills.
    Buf,
    /// A pointer the host writes a result to.
    Out,
    /// A buffer length.
    Len,
    /// A pointer to an iovec array.
    Iovs,
    /// An element count (iovecs, subscriptions).
    Count,
    /// A path or string: two i32 parameters, pointer and length.
    Path,
    /// A bit set (lookup, open, fd or fst flags).
    Flags,
    /// A small enumeration: clock id, advice, whence, signal, `how`.
    Enum,
    /// `proc_exit`'s code: always a constant, so that the expected exit code is known.
    Code,
    /// A pointer to poll subscriptions.
    Subs,
    /// A 64-bit offset, length, size, delta or cookie.
    Off,
    /// 64-bit rights.
    Rights,
    /// A 64-bit timestamp or precision.
    Time,
}

impl Role {
    fn wasm_types(self) -> &'static str {
        match self {
            Role::Path => "i32 i32",
            Role::Off | Role::Rights | Role::Time => "i64",
            _ => "i32",
        }
    }
}

/// One host function: name, parameter roles, and whether it returns an errno.
struct Function {
    name: &'static str,
    params: &'static [Role],
    returns: bool,
}

const fn f(name: &'static str, params: &'static [Role]) -> Function {
    Function {
        name,
        params,
        returns: true,
    }
}

use Role::*;

/// Every function of `zvm_vm::wasi::add_to_linker`, in its order, with its exact signature.
const FUNCTIONS: &[Function] = &[
    f("args_get", &[Buf, Buf]),
    f("args_sizes_get", &[Out, Out]),
    f("environ_get", &[Buf, Buf]),
    f("environ_sizes_get", &[Out, Out]),
    f("clock_res_get", &[Enum, Out]),
    f("clock_time_get", &[Enum, Time, Out]),
    f("fd_advise", &[Fd, Off, Off, Enum]),
    f("fd_allocate", &[Fd, Off, Off]),
    f("fd_close", &[Fd]),
    f("fd_datasync", &[Fd]),
    f("fd_sync", &[Fd]),
    f("fd_fdstat_get", &[Fd, Out]),
    f("fd_fdstat_set_flags", &[Fd, Flags]),
    f("fd_fdstat_set_rights", &[Fd, Rights, Rights]),
    f("fd_filestat_get", &[Fd, Out]),
    f("fd_filestat_set_size", &[Fd, Off]),
    f("fd_filestat_set_times", &[Fd, Time, Time, Flags]),
    f("fd_pread", &[Fd, Iovs, Count, Off, Out]),
    f("fd_prestat_get", &[Fd, Out]),
    f("fd_prestat_dir_name", &[Fd, Buf, Len]),
    f("fd_pwrite", &[Fd, Iovs, Count, Off, Out]),
    f("fd_read", &[Fd, Iovs, Count, Out]),
    f("fd_readdir", &[Fd, Buf, Len, Off, Out]),
    f("fd_renumber", &[Fd, Fd]),
    f("fd_seek", &[Fd, Off, Enum, Out]),
    f("fd_tell", &[Fd, Out]),
    f("fd_write", &[Fd, Iovs, Count, Out]),
    f("path_create_directory", &[Dir, Path]),
    f("path_filestat_get", &[Dir, Flags, Path, Out]),
    f(
        "path_filestat_set_times",
        &[Dir, Flags, Path, Time, Time, Flags],
    ),
    f("path_link", &[Dir, Flags, Path, Dir, Path]),
    f(
        "path_open",
        &[Dir, Flags, Path, Flags, Rights, Rights, Flags, Out],
    ),
    f("path_readlink", &[Dir, Path, Buf, Len, Out]),
    f("path_remove_directory", &[Dir, Path]),
    f("path_rename", &[Dir, Path, Dir, Path]),
    f("path_symlink", &[Path, Dir, Path]),
    f("path_unlink_file", &[Dir, Path]),
    f("poll_oneoff", &[Subs, Buf, Count, Out]),
    Function {
        name: "proc_exit",
        params: &[Code],
        returns: false,
    },
    f("proc_raise", &[Enum]),
    f("sched_yield", &[]),
    f("random_get", &[Buf, Len]),
    f("sock_accept", &[Fd, Flags, Out]),
    f("sock_recv", &[Fd, Iovs, Count, Flags, Out, Out]),
    f("sock_send", &[Fd, Iovs, Count, Flags, Out]),
    f("sock_shutdown", &[Fd, Enum]),
];

fn function(name: &str) -> usize {
    FUNCTIONS
        .iter()
        .position(|f| f.name == name)
        .unwrap_or_else(|| panic!("no function `{name}` in the table"))
}

// The guest's memory layout, written by a data segment before `_start` runs.

/// Preset iovecs: sound ones, an empty one, ones that cross or leave memory.
const IOVS: u32 = 0x100;
const IOVECS: [(u32, u32); 7] = [
    (0x2000, 16),
    (0x2100, 0),
    (0x2200, 4096),
    (PAGE - 6, 100),
    (0xffff_fff0, 32),
    (0x2300, u32::MAX),
    (0x3000, PAGE),
];
/// Where out pointers usually point; `path_open` leaves the new descriptor here, and
/// [`Value::Opened`] reads it back.
const OUT: u32 = 0x400;
/// Path strings, packed from here.
const STRINGS: u32 = 0x800;
/// Preset poll subscriptions (48 bytes each).
const SUBS: u32 = 0x1000;
/// Buffers.
const BUFS: [u32; 4] = [0x2000, 0x4000, 0x8000, PAGE - 64];

/// Paths the guest names: plain ones, ones through the planted symlinks, devices, channels,
/// `..` tricks, an empty one, a NUL, a long one and invalid UTF-8.
fn strings() -> &'static [Vec<u8>] {
    static STRINGS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    STRINGS.get_or_init(|| {
        let mut s: Vec<Vec<u8>> = [
            "f",
            "sub",
            "sub/g",
            "sub/deep/er",
            "link",
            "dangling",
            "escape",
            "escape/new",
            "escape/secret",
            "abs",
            "abs/new",
            "new",
            "new2",
            "tmp",
            "tmp/file",
            ".",
            "..",
            "../..",
            "/",
            "",
            "../outside/secret",
            "sub/../f",
            "f/",
            "link/x",
            "data",
            "data/f",
            "data/new",
            "data/escape/new",
            "/data/f",
            "dev",
            "dev/zero",
            "dev/null",
            "dev/full",
            "dev/random",
            "dev/stdout",
            "dev/stdin",
            "dev/input",
            "dev/output",
            "a\0b",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        s.push(vec![b'x'; 300]);
        s.push(b"\xff\xfe".to_vec());
        s
    })
}

/// Where each of [`strings`] sits in memory.
fn string_at(i: usize) -> (u32, u32) {
    let before: usize = strings()[..i].iter().map(|s| s.len() + 1).sum();
    (STRINGS + before as u32, strings()[i].len() as u32)
}

/// The preset memory image written at address 0.
fn preset_memory() -> Vec<u8> {
    let mut m = vec![0u8; 0x2400];
    for (i, (ptr, len)) in IOVECS.iter().enumerate() {
        let at = IOVS as usize + 8 * i;
        m[at..at + 4].copy_from_slice(&ptr.to_le_bytes());
        m[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
    }
    for (i, s) in strings().iter().enumerate() {
        let (ptr, _) = string_at(i);
        m[ptr as usize..ptr as usize + s.len()].copy_from_slice(s);
    }
    // Subscriptions: a relative monotonic clock, reads of stdin, writes of stdout, an
    // absolute realtime clock at the end of time, a bad clock id and a bad tag.
    let subs: [(u8, u32, u64, u16); 6] = [
        (0, 1, 1000, 0),
        (1, 0, 0, 0),
        (2, 1, 0, 0),
        (0, 0, u64::MAX, 1),
        (0, 9, 5, 0),
        (7, 0, 0, 0),
    ];
    for (i, (tag, id, timeout, flags)) in subs.into_iter().enumerate() {
        let at = SUBS as usize + 48 * i;
        m[at..at + 8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        m[at + 8] = tag;
        m[at + 16..at + 20].copy_from_slice(&id.to_le_bytes());
        m[at + 24..at + 32].copy_from_slice(&timeout.to_le_bytes());
        m[at + 40..at + 42].copy_from_slice(&flags.to_le_bytes());
    }
    m[0x2000..0x2010].copy_from_slice(b"hello, channels\n");
    m
}

/// One argument as the module computes it.
#[derive(Debug, Clone, Copy)]
enum Value {
    I32(i32),
    I64(i64),
    /// The previous call's result (0 before the first).
    Prev,
    /// The descriptor the last successful `path_open` (with out pointer [`OUT`]) wrote.
    Opened,
}

impl Value {
    fn wat(self, out: &mut String, ty: &str) {
        let _ = match (self, ty) {
            (Value::I32(v), "i32") => write!(out, " (i32.const {v})"),
            (Value::I64(v), "i64") => write!(out, " (i64.const {v})"),
            (Value::I32(v), _) => write!(out, " (i64.const {v})"),
            (Value::I64(v), _) => write!(out, " (i32.const {})", v as i32),
            (Value::Prev, "i32") => write!(out, " (local.get $r)"),
            (Value::Prev, _) => write!(out, " (i64.extend_i32_u (local.get $r))"),
            (Value::Opened, "i32") => write!(out, " (i32.load (i32.const {OUT}))"),
            (Value::Opened, _) => write!(out, " (i64.load32_u (i32.const {OUT}))"),
        };
    }
}

/// One call: a function of [`FUNCTIONS`] and one value per wasm parameter.
#[derive(Debug, Clone)]
struct Call {
    func: usize,
    args: Vec<Value>,
}

/// Edge values of an i32: small, around the end of memory, around `u32::MAX`, negative.
fn edge_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => 0..16i32,
        2 => (PAGE as i64 - 72..PAGE as i64 + 72).prop_map(|v| v as i32),
        2 => (0..72u32).prop_map(|d| (u32::MAX - d) as i32),
        1 => -1000..0i32,
        1 => prop_oneof![Just(i32::MIN), Just(i32::MAX), Just(i32::MIN + 1)],
        2 => any::<i32>(),
    ]
}

fn edge_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => 0..4096i64,
        1 => (0..72u64).prop_map(|d| (u64::MAX - d) as i64),
        1 => prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(1 << 32), Just(1 << 40)],
        1 => -1000..0i64,
        2 => any::<i64>(),
    ]
}

/// Values for one parameter of role `role`: mostly meaningful ones, often edge ones.
fn values(role: Role) -> BoxedStrategy<Vec<Value>> {
    let edge = || edge_i32().prop_map(Value::I32);
    let one: BoxedStrategy<Value> = match role {
        Fd => prop_oneof![
            // stdio, the preopens, and what the prelude or earlier calls opened.
            8 => (0..MAX_FD).prop_map(Value::I32),
            2 => Just(Value::Opened),
            1 => Just(Value::Prev),
            2 => edge(),
        ]
        .boxed(),
        Dir => prop_oneof![
            // The preopens: `/` without a mount; `/data` then `/` with one.
            8 => (3..5i32).prop_map(Value::I32),
            2 => (0..MAX_FD).prop_map(Value::I32),
            1 => Just(Value::Opened),
            1 => edge(),
        ]
        .boxed(),
        Buf => prop_oneof![
            3 => (0..BUFS.len()).prop_map(|i| Value::I32(BUFS[i] as i32)),
            1 => Just(Value::I32(OUT as i32)),
            2 => edge(),
        ]
        .boxed(),
        Out => prop_oneof![
            8 => Just(Value::I32(OUT as i32)),
            1 => (0..8u32).prop_map(|d| Value::I32((PAGE - d) as i32)),
            1 => edge(),
        ]
        .boxed(),
        Len => prop_oneof![
            3 => (0..64i32).prop_map(Value::I32),
            1 => prop_oneof![Just(4096), Just(PAGE as i32 - 1), Just(PAGE as i32), Just(PAGE as i32 + 1)]
                .prop_map(Value::I32),
            2 => edge(),
        ]
        .boxed(),
        Iovs => prop_oneof![
            3 => Just(Value::I32(IOVS as i32)),
            4 => (0..IOVECS.len() as u32).prop_map(|i| Value::I32((IOVS + 8 * i) as i32)),
            1 => edge(),
        ]
        .boxed(),
        Count => prop_oneof![
            4 => Just(Value::I32(1)),
            4 => (0..4i32).prop_map(Value::I32),
            1 => prop_oneof![Just(4096), Just(4097), Just(0x2000_0000)].prop_map(Value::I32),
            1 => Just(Value::Prev),
            2 => edge(),
        ]
        .boxed(),
        Flags => prop_oneof![
            4 => (0..0x40i32).prop_map(Value::I32),
            1 => any::<u16>().prop_map(|v| Value::I32(i32::from(v))),
            1 => edge(),
        ]
        .boxed(),
        Enum => prop_oneof![
            4 => (0..3i32).prop_map(Value::I32),
            2 => (0..8i32).prop_map(Value::I32),
            1 => edge(),
        ]
        .boxed(),
        Code => prop_oneof![
            3 => (0..4i32).prop_map(Value::I32),
            2 => any::<i32>().prop_map(Value::I32),
        ]
        .boxed(),
        Subs => prop_oneof![
            5 => (0..6u32).prop_map(|i| Value::I32((SUBS + 48 * i) as i32)),
            2 => edge(),
        ]
        .boxed(),
        Off => prop_oneof![
            3 => (0..64i64).prop_map(Value::I64),
            3 => edge_i64().prop_map(Value::I64),
        ]
        .boxed(),
        Rights => prop_oneof![
            3 => Just(Value::I64(-1)),
            1 => Just(Value::I64(0)),
            2 => any::<i64>().prop_map(Value::I64),
        ]
        .boxed(),
        Time => prop_oneof![
            2 => (0..3i64).prop_map(Value::I64),
            1 => Just(Value::I64(-1)),
            2 => edge_i64().prop_map(Value::I64),
        ]
        .boxed(),
        Path => {
            return prop_oneof![
                6 => (0..strings().len()).prop_map(|i| {
                    let (ptr, len) = string_at(i);
                    vec![Value::I32(ptr as i32), Value::I32(len as i32)]
                }),
                1 => (edge_i32(), 0..64i32).prop_map(|(p, l)| vec![Value::I32(p), Value::I32(l)]),
                1 => (edge_i32(), edge_i32()).prop_map(|(p, l)| vec![Value::I32(p), Value::I32(l)]),
            ]
            .boxed();
        }
    };
    one.prop_map(|v| vec![v]).boxed()
}

/// A call of function `func` with values for every parameter.
fn call(func: usize) -> BoxedStrategy<Call> {
    FUNCTIONS[func]
        .params
        .iter()
        .map(|&role| values(role))
        .collect::<Vec<_>>()
        .prop_map(move |vals| Call {
            func,
            args: vals.concat(),
        })
        .boxed()
}

fn any_call() -> impl Strategy<Value = Call> {
    (0..FUNCTIONS.len()).prop_flat_map(call)
}

/// Junk to write over memory before the calls: where, and what.
fn junk() -> impl Strategy<Value = (u32, Vec<u8>)> {
    (
        prop_oneof![
            Just(0u32),
            Just(IOVS),
            Just(STRINGS),
            Just(SUBS),
            Just(0x2000),
            0..PAGE - 4096,
        ],
        proptest::collection::vec(any::<u8>(), 1..4096),
    )
}

/// The module: imports what `calls` use, lays out memory, writes `junk`, makes the calls.
fn module(calls: &[Call], junk: Option<&(u32, Vec<u8>)>) -> String {
    let mut wat = String::from("(module\n");
    let used: BTreeSet<usize> = calls.iter().map(|c| c.func).collect();
    for &i in &used {
        let func = &FUNCTIONS[i];
        let params: Vec<&str> = func.params.iter().map(|r| r.wasm_types()).collect();
        let _ = writeln!(
            wat,
            "  (import \"wasi_snapshot_preview1\" \"{name}\" (func ${name} (param {}){}))",
            params.join(" "),
            if func.returns { " (result i32)" } else { "" },
            name = func.name,
        );
    }
    let _ = writeln!(wat, "  (memory (export \"memory\") 1)");
    let _ = writeln!(
        wat,
        "  (data (i32.const 0) \"{}\")",
        escape(&preset_memory())
    );
    if let Some((at, bytes)) = junk {
        let at = (*at).min(PAGE - bytes.len() as u32);
        let _ = writeln!(wat, "  (data (i32.const {at}) \"{}\")", escape(bytes));
    }
    let _ = writeln!(wat, "  (func (export \"_start\") (local $r i32)");
    for c in calls {
        let func = &FUNCTIONS[c.func];
        let types: Vec<&str> = func
            .params
            .iter()
            .flat_map(|r| r.wasm_types().split(' '))
            .collect();
        let mut args = String::new();
        for (v, ty) in c.args.iter().zip(&types) {
            v.wat(&mut args, ty);
        }
        if func.returns {
            let _ = writeln!(wat, "    (local.set $r (call ${}{args}))", func.name);
        } else {
            let _ = writeln!(wat, "    (call ${}{args})", func.name);
        }
    }
    wat.push_str("  ))\n");
    wat
}

fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for b in bytes {
        let _ = write!(s, "\\{b:02x}");
    }
    s
}

/// The runtime every case shares: pooled, like a server's, with slots sized to [`MEMORY`].
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: None,
            journal: None,
            allocator: Allocator::Pooling(PoolConfig {
                slots: 8,
                max_memory: MEMORY,
                keep_resident: 0,
            }),
        })
        .unwrap()
    })
}

/// A channel with no host file: its endpoint is bound in memory for each run.
fn memory_channel(name: &str, mode: AccessMode, quota: Quota) -> Channel {
    Channel {
        name: ChannelName::new(name).unwrap(),
        source: ChannelSource::Null,
        mode,
        quota,
        etag: None,
    }
}

/// The manifest of every case: small limits, stdio plus an `input` with a small read quota
/// and an `output` with a small write quota, and `mounts`.
fn manifest(mounts: Vec<Mount>) -> Manifest {
    let mut m = Manifest::for_program("case.wat");
    m.limits.fuel = FUEL;
    m.limits.timeout = TIMEOUT;
    m.limits.memory = MEMORY;
    m.limits.scratch = SCRATCH;
    m.limits.open_files = OPEN_FILES;
    m.args = vec!["an argument".into()];
    m.env.insert("LANG".into(), "C".into());
    m.channels.push(memory_channel(
        "input",
        AccessMode::RandomRead,
        Quota {
            reads: 4,
            ..Quota::default()
        },
    ));
    m.channels.push(memory_channel(
        "output",
        AccessMode::SequentialWrite,
        Quota {
            write_bytes: 1000,
            ..Quota::default()
        },
    ));
    m.mounts = mounts;
    m.check().expect("the test manifest is valid");
    m
}

/// Builds and runs one case, and checks every property of its report.
fn run_case(
    calls: &[Call],
    junk: Option<&(u32, Vec<u8>)>,
    mounts: Vec<Mount>,
) -> Result<Report, TestCaseError> {
    let wat = module(calls, junk);
    let program = runtime()
        .load(Path::new("case.wat"), wat.as_bytes(), None)
        .map_err(|e| TestCaseError::fail(format!("the module was refused: {e}\n{wat}")))?;
    let captures: Vec<(&str, SharedBuffer)> = ["stdout", "stderr", "output"]
        .into_iter()
        .map(|n| (n, SharedBuffer::new()))
        .collect();
    let mut io = RunIo::default()
        .bind(
            "stdin",
            Endpoint::Reader(Box::new(&b"standard input\n"[..])),
        )
        .bind("input", Endpoint::Reader(Box::new(std::io::repeat(b'i'))));
    for (name, c) in &captures {
        io = io.bind(name, c.endpoint());
    }
    let report = match program.run(&manifest(mounts), io) {
        Ok(report) => report,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "run failed: {e}\ncalls: {calls:?}\n{wat}"
            )));
        }
    };

    // The exit code is the first proc_exit's argument (every call before it returns).
    let exit = calls
        .iter()
        .find(|c| FUNCTIONS[c.func].name == "proc_exit")
        .map(|c| match c.args[0] {
            Value::I32(code) => code as u32,
            other => unreachable!("proc_exit's code is a constant, not {other:?}"),
        })
        .unwrap_or(0);
    prop_assert_eq!(report.exit_code, Some(exit), "calls: {:?}", calls);
    let quota_hit = report.channels.iter().any(|c| c.quota_hit.is_some());
    match &report.state {
        State::Ok => prop_assert_eq!(exit, 0),
        State::Exited { code } => prop_assert_eq!(*code, exit),
        State::QuotaExceeded { .. } => prop_assert!(quota_hit),
        other => {
            return Err(TestCaseError::fail(format!(
                "unexpected state {other:?}\ncalls: {calls:?}\n{report:?}"
            )));
        }
    }
    prop_assert!(report.fuel_used <= FUEL);
    prop_assert!(report.peak_memory <= MEMORY);

    // What reached the host is what the report counted and hashed.
    for (name, capture) in &captures {
        let bytes = capture.contents();
        let ch = report.channels.iter().find(|c| c.name == *name).unwrap();
        prop_assert_eq!(ch.write_bytes, bytes.len() as u64, "channel {}", name);
        prop_assert_eq!(
            &ch.etag,
            &blake3::hash(&bytes).to_hex().to_string(),
            "channel {}",
            name
        );
    }
    Ok(report)
}

/// A host tree for mount cases: `<parent>/outside` holds a secret the guest must not reach,
/// and each case mounts a fresh `<parent>/m-*` with files, a directory and symlinks that
/// point out of it (relative and absolute) as bait.
struct HostWorld {
    parent: tempfile::TempDir,
}

impl HostWorld {
    fn new() -> HostWorld {
        let parent = tempfile::tempdir().unwrap();
        let outside = parent.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"host secret").unwrap();
        HostWorld { parent }
    }

    /// A fresh mount directory for one case.
    fn mount_dir(&self) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("m-")
            .tempdir_in(self.parent.path())
            .unwrap();
        let d = dir.path();
        std::fs::write(d.join("f"), b"hello data\n").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/g"), b"g").unwrap();
        let outside = self.parent.path().join("outside");
        std::os::unix::fs::symlink("f", d.join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", d.join("dangling")).unwrap();
        std::os::unix::fs::symlink("../outside", d.join("escape")).unwrap();
        std::os::unix::fs::symlink(&outside, d.join("abs")).unwrap();
        dir
    }

    /// Everything under the parent except mount directories: path to (kind, size, mtime, mode).
    fn snapshot(&self) -> BTreeMap<PathBuf, (String, u64, i64, u32)> {
        use std::os::unix::fs::MetadataExt;
        let mut out = BTreeMap::new();
        let mut todo = vec![self.parent.path().to_path_buf()];
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(self.parent.path()).unwrap().to_path_buf();
                if dir == self.parent.path() && rel.to_string_lossy().starts_with("m-") {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let kind = format!("{:?}", meta.file_type());
                out.insert(rel, (kind, meta.len(), meta.mtime(), meta.mode()));
                if meta.is_dir() {
                    todo.push(path);
                }
            }
        }
        out
    }

    /// Runs one case with a fresh writable mount at `/data`, and checks the host outside it.
    fn run(&self, calls: &[Call], junk: Option<&(u32, Vec<u8>)>) -> Result<Report, TestCaseError> {
        let before = self.snapshot();
        let dir = self.mount_dir();
        let mount = Mount {
            guest: "/data".into(),
            source: MountSource::Dir {
                path: dir.path().to_path_buf(),
                writable: true,
            },
        };
        let report = run_case(calls, junk, vec![mount])?;
        prop_assert_eq!(
            self.snapshot(),
            before,
            "the host changed outside the mount; calls: {:?}",
            calls
        );
        Ok(report)
    }
}

/// The no-mount cases check the host too: nothing may appear in the parent of a tree that
/// is not even mounted.
fn run_unmounted(
    world: &HostWorld,
    calls: &[Call],
    junk: Option<&(u32, Vec<u8>)>,
) -> Result<Report, TestCaseError> {
    let before = world.snapshot();
    let report = run_case(calls, junk, Vec::new())?;
    prop_assert_eq!(
        world.snapshot(),
        before,
        "the host changed; calls: {:?}",
        calls
    );
    Ok(report)
}

/// The host tree of the calling test. Each test runs its cases one after another on its own
/// thread, so a world per thread keeps parallel tests from seeing each other's mounts, and is
/// removed from the host when the test's thread ends.
fn world() -> Rc<HostWorld> {
    thread_local! {
        static WORLD: Rc<HostWorld> = Rc::new(HostWorld::new());
    }
    WORLD.with(Rc::clone)
}

/// One function, called K times: the shape the issue asks for.
fn one_function_k_times() -> impl Strategy<Value = Vec<Call>> {
    (0..FUNCTIONS.len(), 1..=MAX_CALLS)
        .prop_flat_map(|(func, k)| proptest::collection::vec(call(func), k))
}

fn mixed_calls() -> impl Strategy<Value = Vec<Call>> {
    proptest::collection::vec(any_call(), 1..=MAX_CALLS)
}

/// Well-formed calls that open descriptors of every kind (scratch and host files, a host
/// directory, channels, a device) and make a directory, so that the random calls after them
/// find more than stdio and preopens behind small descriptor numbers. Which succeed depends
/// on the mounts: without one, fd 3 is `/`; with one, fd 3 is `/data` and fd 4 is `/`.
fn prelude() -> Vec<Call> {
    let path = |p: &str| {
        let i = strings().iter().position(|s| s == p.as_bytes()).unwrap();
        let (ptr, len) = string_at(i);
        [Value::I32(ptr as i32), Value::I32(len as i32)]
    };
    let open = |dir: i32, p: &str, oflags: i32| Call {
        func: function("path_open"),
        args: [
            vec![Value::I32(dir), Value::I32(1)],
            path(p).to_vec(),
            vec![
                Value::I32(oflags),
                Value::I64(-1),
                Value::I64(-1),
                Value::I32(0),
                Value::I32(OUT as i32),
            ],
        ]
        .concat(),
    };
    const CREATE: i32 = 1;
    const DIRECTORY: i32 = 2;
    vec![
        open(3, "new", CREATE),
        open(3, "f", 0),
        open(3, "sub", DIRECTORY),
        open(3, "dev/input", 0),
        open(4, "dev/output", 0),
        open(3, "dev/zero", 0),
        open(4, "tmp", CREATE | DIRECTORY),
        Call {
            func: function("path_create_directory"),
            args: [vec![Value::I32(4)], path("tmp").to_vec()].concat(),
        },
    ]
}

/// Mixed calls, half the time after the [`prelude`].
fn mixed_calls_after_prelude() -> impl Strategy<Value = Vec<Call>> {
    (any::<bool>(), mixed_calls()).prop_map(|(with_prelude, calls)| {
        if with_prelude {
            [prelude(), calls].concat()
        } else {
            calls
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        // Failures are reported with their minimal case; a regression becomes a named test
        // in this file rather than a seed file beside it.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn one_function_k_times_without_mounts(calls in one_function_k_times()) {
        run_unmounted(&world(), &calls, None)?;
    }

    #[test]
    fn one_function_k_times_with_a_writable_mount(calls in one_function_k_times()) {
        world().run(&calls, None)?;
    }

    #[test]
    fn mixed_calls_over_junk_memory(calls in mixed_calls_after_prelude(), junk in junk(), mounted: bool) {
        if mounted {
            world().run(&calls, Some(&junk))?;
        } else {
            run_unmounted(&world(), &calls, Some(&junk))?;
        }
    }

    #[test]
    fn mixed_calls_without_mounts(calls in mixed_calls_after_prelude()) {
        run_unmounted(&world(), &calls, None)?;
    }

    #[test]
    fn mixed_calls_with_a_writable_mount(calls in mixed_calls_after_prelude()) {
        world().run(&calls, None)?;
    }
}

/// Every function runs at least once per test run, whatever proptest draws: each is called
/// with all-small, all-edge and preset arguments, with and without a mount.
#[test]
fn every_function_survives_edge_arguments() {
    let edge_sets: [fn(Role) -> Vec<Value>; 4] = [
        |r| match r {
            Path => vec![Value::I32(STRINGS as i32), Value::I32(1)],
            Off | Rights | Time => vec![Value::I64(0)],
            _ => vec![Value::I32(0)],
        },
        |r| match r {
            Path => vec![Value::I32(-1), Value::I32(-1)],
            Off | Rights | Time => vec![Value::I64(-1)],
            Code => vec![Value::I32(0)],
            _ => vec![Value::I32(-1)],
        },
        |r| match r {
            Path => vec![Value::I32(PAGE as i32 - 1), Value::I32(2)],
            Off | Rights | Time => vec![Value::I64(i64::MAX)],
            Code => vec![Value::I32(0)],
            _ => vec![Value::I32(PAGE as i32 - 2)],
        },
        |r| match r {
            Fd | Dir => vec![Value::I32(3)],
            Buf => vec![Value::I32(BUFS[0] as i32)],
            Out => vec![Value::I32(OUT as i32)],
            Len => vec![Value::I32(64)],
            Iovs => vec![Value::I32(IOVS as i32)],
            Count => vec![Value::I32(1)],
            Path => {
                let (p, l) = string_at(0);
                vec![Value::I32(p as i32), Value::I32(l as i32)]
            }
            Flags => vec![Value::I32(1)],
            Enum => vec![Value::I32(1)],
            Code => vec![Value::I32(0)],
            Subs => vec![Value::I32(SUBS as i32)],
            Off => vec![Value::I64(1)],
            Rights => vec![Value::I64(-1)],
            Time => vec![Value::I64(1)],
        },
    ];
    let world = world();
    for (func, function) in FUNCTIONS.iter().enumerate() {
        let calls: Vec<Call> = edge_sets
            .iter()
            .map(|set| Call {
                func,
                args: function.params.iter().flat_map(|&r| set(r)).collect(),
            })
            .collect();
        let name = function.name;
        run_unmounted(&world, &calls, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        world
            .run(&calls, None)
            .unwrap_or_else(|e| panic!("{name} with a mount: {e}"));
    }
}

/// The table lists exactly the functions the host provides, with signatures the linker
/// accepts: a module importing all of them is valid, and the source names no other.
#[test]
fn the_table_matches_the_host() {
    let source = include_str!("../src/wasi.rs");
    let mut in_source = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("MODULE,") {
        rest = &rest[at + "MODULE,".len()..];
        let name = rest
            .trim_start()
            .strip_prefix('"')
            .and_then(|r| r.split('"').next());
        if let Some(name) = name {
            in_source.insert(name.to_string());
        }
    }
    let in_table: BTreeSet<String> = FUNCTIONS.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(
        in_table, in_source,
        "FUNCTIONS and wasi.rs's add_to_linker differ"
    );
    assert_eq!(
        in_table.len(),
        FUNCTIONS.len(),
        "a function is listed twice"
    );

    // Importing every function with the table's signature: refused if one is wrong.
    let calls: Vec<Call> = (0..FUNCTIONS.len())
        .filter(|&i| FUNCTIONS[i].name != "proc_exit")
        .map(|func| Call {
            func,
            args: FUNCTIONS[func]
                .params
                .iter()
                .flat_map(|r| r.wasm_types().split(' '))
                .map(|ty| {
                    if ty == "i64" {
                        Value::I64(0)
                    } else {
                        Value::I32(0)
                    }
                })
                .collect(),
        })
        .collect();
    let wat = module(&calls, None);
    runtime()
        .load(Path::new("all.wat"), wat.as_bytes(), None)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `proc_exit` ends the run with its code, as the exit-code property expects.
#[test]
fn proc_exit_gives_the_exit_code() {
    let calls = vec![Call {
        func: function("proc_exit"),
        args: vec![Value::I32(7)],
    }];
    let report = run_unmounted(&world(), &calls, None).unwrap();
    assert_eq!(report.state, State::Exited { code: 7 });
    assert_eq!(report.exit_code, Some(7));
}

// Regression tests of bugs the properties found: each is the minimal case the shrinker gave.

/// `fd_close(3)` without mounts closed the `/` preopen, whose scratch root had never been
/// counted as opened, so `Scratch::closed` subtracted from an open count of 0: a host panic in
/// debug builds (caught as `Error::Internal`), a silent wrap in release. `fd_renumber(x, 3)`
/// did the same. Fixed in commit 4e8dcb5 (preopens count as opened).
#[test]
fn closing_the_root_preopen_is_not_a_host_panic() {
    for calls in [
        vec![Call {
            func: function("fd_close"),
            args: vec![Value::I32(3)],
        }],
        vec![Call {
            func: function("fd_renumber"),
            args: vec![Value::I32(0), Value::I32(3)],
        }],
    ] {
        let report =
            run_unmounted(&world(), &calls, None).unwrap_or_else(|e| panic!("{calls:?}: {e}"));
        assert_eq!(report.state, State::Ok, "{calls:?}");
    }
}
