//! What zvm's fuzz targets share: the checks every manifest parse and image walk must pass,
//! and the WASI-calling guests the VM targets build and run.
//!
//! The property tests in the main workspace (`crates/*/tests/*_props.rs`) check the same
//! things for a bounded number of cases in every `cargo test`; the targets here run them for
//! as long as one likes, guided by coverage. The WASI table is duplicated from
//! `crates/vm/tests/wasi_props.rs` (a test file cannot be a dependency) and checked against
//! the host's source at start-up, like the test's own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use zvm_channel::{Endpoint, SharedBuffer};
use zvm_fs::image::{EntryKind, Image};
use zvm_manifest::{
    AccessMode, Channel, ChannelName, ChannelSource, Manifest, Mount, MountSource, Quota,
};
use zvm_vm::{Allocator, PoolConfig, Report, RunIo, Runtime, RuntimeConfig, State};

// ---------------------------------------------------------------------------------------------
// Manifests

/// The origin every manifest target parses with; errors must start with it.
pub const MANIFEST_ORIGIN: &str = "fuzz/dir/m.toml";

/// Checks one parse result: an error names the origin first and says something after it; a
/// manifest's canonical TOML reads back to the same manifest and the same text.
pub fn check_manifest(result: Result<Manifest, zvm_manifest::Error>) {
    match result {
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with(MANIFEST_ORIGIN) && shown.len() > MANIFEST_ORIGIN.len() + 2,
                "an error that does not start with the origin: {shown:?}"
            );
        }
        Ok(m) => {
            let text = zvm_manifest::canonical_toml(&m);
            let again = zvm_manifest::parse_toml(&text, Path::new("canonical.toml"))
                .unwrap_or_else(|e| panic!("canonical text does not parse: {e}\n{text}"));
            assert_eq!(again, m, "canonical text reads back different:\n{text}");
            assert_eq!(
                zvm_manifest::canonical_toml(&again),
                text,
                "canonical text unstable"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images

/// Largest buffer an image walk reads with.
pub const MAX_READ: usize = 8192;

/// Visits every entry of `image` reachable from the root and asks everything of each:
/// children (sorted, consistent with `lookup`), metadata, symlink targets, and reads at edge
/// offsets that must never return more than the entry holds.
pub fn walk_image(image: &Image, offsets: &[u64]) {
    let mut seen_dirs = BTreeSet::new();
    let mut todo = vec![image.root()];
    let mut buf = vec![0u8; MAX_READ];
    let mut visited = 0usize;
    while let Some(id) = todo.pop() {
        visited += 1;
        assert!(visited <= 2 * image.len() + 1, "the walk does not end");
        let meta = image.meta(id);
        assert_eq!(meta.ino, u64::from(id) + 1);
        match image.kind(id) {
            EntryKind::Dir => {
                assert_eq!(meta.kind_code, 3);
                assert!(seen_dirs.insert(id), "directory {id} reached twice");
                let children = image.children(id);
                for pair in children.windows(2) {
                    assert!(pair[0].0 < pair[1].0, "children not sorted: {pair:?}");
                }
                for (name, child) in children {
                    assert!(
                        !name.is_empty() && name != "." && name != ".." && !name.contains('/'),
                        "bad child name {name:?}"
                    );
                    assert_eq!(image.lookup(id, name), Some(*child));
                    todo.push(*child);
                }
                assert!(image.symlink_target(id).is_none());
                assert!(image.read_at(id, 0, &mut buf).is_err());
            }
            EntryKind::Symlink => {
                assert_eq!(meta.kind_code, 7);
                let target = image.symlink_target(id).expect("a symlink has a target");
                assert_eq!(meta.size, target.len() as u64);
                assert!(image.children(id).is_empty());
                assert!(image.read_at(id, 0, &mut buf).is_err());
            }
            EntryKind::File => {
                assert_eq!(meta.kind_code, 4);
                assert!(image.symlink_target(id).is_none());
                assert!(image.children(id).is_empty());
                let size = meta.size;
                let edges = [
                    0,
                    size / 2,
                    size.saturating_sub(1),
                    size,
                    size + 1,
                    u64::MAX,
                ];
                for (i, &offset) in edges.iter().chain(offsets).enumerate() {
                    let len = [MAX_READ, 1, 511, 512, 4096][i % 5];
                    let n = image
                        .read_at(id, offset, &mut buf[..len])
                        .unwrap_or_else(|e| panic!("reading file {id} at {offset}: {e}"));
                    let left = size.saturating_sub(offset);
                    assert_eq!(
                        n as u64,
                        left.min(len as u64),
                        "read_at({id}, {offset}, {len})"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WASI guests

/// What a parameter is for; the role decides which values are likely, and its wasm type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Fd,
    Dir,
    Buf,
    Out,
    Len,
    Iovs,
    Count,
    /// Two i32 parameters: pointer and length.
    Path,
    Flags,
    Enum,
    /// `proc_exit`'s code: always a constant.
    Code,
    Subs,
    Off,
    Rights,
    Time,
}

impl Role {
    pub fn wasm_types(self) -> &'static [&'static str] {
        match self {
            Role::Path => &["i32", "i32"],
            Role::Off | Role::Rights | Role::Time => &["i64"],
            _ => &["i32"],
        }
    }
}

/// One host function: name, parameter roles, and whether it returns an errno.
pub struct Function {
    pub name: &'static str,
    pub params: &'static [Role],
    pub returns: bool,
}

const fn f(name: &'static str, params: &'static [Role]) -> Function {
    Function {
        name,
        params,
        returns: true,
    }
}

use Role::*;

/// Every function of `zvm_vm::wasi::add_to_linker` with its exact signature.
pub const FUNCTIONS: &[Function] = &[
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

/// Panics if [`FUNCTIONS`] and the host's `add_to_linker` name different functions.
fn check_table_against_source() {
    let source = include_str!("../../crates/vm/src/wasi.rs");
    let mut in_source = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("MODULE,") {
        rest = &rest[at + "MODULE,".len()..];
        if let Some(name) = rest
            .trim_start()
            .strip_prefix('"')
            .and_then(|r| r.split('"').next())
        {
            in_source.insert(name);
        }
    }
    let in_table: BTreeSet<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
    assert_eq!(
        in_table, in_source,
        "FUNCTIONS and wasi.rs's add_to_linker differ"
    );
}

pub const PAGE: u32 = 65536;
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
const OUT: u32 = 0x400;
const STRINGS: u32 = 0x800;
const SUBS: u32 = 0x1000;
const BUFS: [u32; 4] = [0x2000, 0x4000, 0x8000, PAGE - 64];
const MAX_FD: u32 = 12;
/// Most calls one guest makes.
pub const MAX_CALLS: usize = 24;

const PATHS: &[&[u8]] = &[
    b"f",
    b"sub",
    b"sub/g",
    b"sub/deep/er",
    b"link",
    b"dangling",
    b"escape",
    b"escape/new",
    b"escape/secret",
    b"abs",
    b"abs/new",
    b"new",
    b"new2",
    b"tmp",
    b"tmp/file",
    b".",
    b"..",
    b"../..",
    b"/",
    b"",
    b"../outside/secret",
    b"sub/../f",
    b"f/",
    b"link/x",
    b"data",
    b"data/f",
    b"data/new",
    b"data/escape/new",
    b"/data/f",
    b"dev",
    b"dev/zero",
    b"dev/null",
    b"dev/full",
    b"dev/random",
    b"dev/stdout",
    b"dev/stdin",
    b"dev/input",
    b"dev/output",
    b"a\0b",
    &[b'x'; 300],
    b"\xff\xfe",
];

fn string_at(i: usize) -> (u32, u32) {
    let before: usize = PATHS[..i].iter().map(|s| s.len() + 1).sum();
    (STRINGS + before as u32, PATHS[i].len() as u32)
}

fn preset_memory() -> Vec<u8> {
    let mut m = vec![0u8; 0x2400];
    for (i, (ptr, len)) in IOVECS.iter().enumerate() {
        let at = IOVS as usize + 8 * i;
        m[at..at + 4].copy_from_slice(&ptr.to_le_bytes());
        m[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
    }
    for (i, s) in PATHS.iter().enumerate() {
        let (ptr, _) = string_at(i);
        m[ptr as usize..ptr as usize + s.len()].copy_from_slice(s);
    }
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

/// One argument as the guest computes it.
#[derive(Debug, Clone, Copy)]
pub enum Value {
    I32(i32),
    I64(i64),
    /// The previous call's result.
    Prev,
    /// The i32 at [`OUT`], where `path_open` usually leaves its descriptor.
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
pub struct Call {
    pub func: usize,
    pub args: Vec<Value>,
}

/// What a fuzz input means to the `wasi_calls` target.
#[derive(Debug, Clone)]
pub struct Guest {
    pub mounted: bool,
    pub junk: Option<(u32, Vec<u8>)>,
    pub calls: Vec<Call>,
}

fn edge_i32(u: &mut Unstructured) -> ArbResult<i32> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => u.int_in_range(0..=15)?,
        1 => (PAGE as i64 + i64::from(u.int_in_range(-72..=72i8)?)) as i32,
        2 => (u32::MAX - u32::from(u.int_in_range(0..=72u8)?)) as i32,
        3 => *u.choose(&[i32::MIN, i32::MAX, i32::MIN + 1, -1])?,
        _ => u.arbitrary()?,
    })
}

fn edge_i64(u: &mut Unstructured) -> ArbResult<i64> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => u.int_in_range(0..=4095)?,
        1 => (u64::MAX - u64::from(u.int_in_range(0..=72u8)?)) as i64,
        2 => *u.choose(&[i64::MAX, i64::MIN, 1 << 32, 1 << 40, -1])?,
        _ => u.arbitrary()?,
    })
}

fn value(u: &mut Unstructured, role: Role, out: &mut Vec<Value>) -> ArbResult<()> {
    let pick: u8 = u.int_in_range(0..=9)?;
    // Three in ten values are edge values whatever the role; the rest mean something to it.
    if pick >= 7 && !matches!(role, Code | Path | Off | Rights | Time) {
        out.push(Value::I32(edge_i32(u)?));
        return Ok(());
    }
    let v = match role {
        Fd => match pick {
            0..=4 => Value::I32(u.int_in_range(0..=MAX_FD - 1)? as i32),
            5 => Value::Opened,
            _ => Value::Prev,
        },
        Dir => match pick {
            0..=4 => Value::I32(u.int_in_range(3..=4)?),
            5 => Value::I32(u.int_in_range(0..=MAX_FD - 1)? as i32),
            _ => Value::Opened,
        },
        Buf => Value::I32(*u.choose(&BUFS)? as i32),
        Out => match pick {
            0..=5 => Value::I32(OUT as i32),
            _ => Value::I32((PAGE - u32::from(u.int_in_range(0..=8u8)?)) as i32),
        },
        Len => Value::I32(match pick {
            0..=4 => u.int_in_range(0..=64)?,
            _ => *u.choose(&[4096, PAGE as i32 - 1, PAGE as i32, PAGE as i32 + 1])?,
        }),
        Iovs => Value::I32((IOVS + 8 * u.int_in_range(0..=IOVECS.len() as u32 - 1)?) as i32),
        Count => match pick {
            0..=4 => Value::I32(u.int_in_range(0..=3)?),
            5 => Value::Prev,
            _ => Value::I32(*u.choose(&[4096, 4097, 0x2000_0000])?),
        },
        Flags => Value::I32(match pick {
            0..=4 => u.int_in_range(0..=0x3f)?,
            _ => i32::from(u.arbitrary::<u16>()?),
        }),
        Enum => Value::I32(u.int_in_range(0..=7)?),
        Code => Value::I32(if pick < 6 {
            u.int_in_range(0..=3)?
        } else {
            u.arbitrary()?
        }),
        Subs => Value::I32((SUBS + 48 * u.int_in_range(0..=5u32)?) as i32),
        Off => Value::I64(if pick < 4 {
            u.int_in_range(0..=63)?
        } else {
            edge_i64(u)?
        }),
        Rights => Value::I64(match pick {
            0..=5 => -1,
            6 => 0,
            _ => u.arbitrary()?,
        }),
        Time => Value::I64(match pick {
            0..=3 => u.int_in_range(0..=2)?,
            4 => -1,
            _ => edge_i64(u)?,
        }),
        Path => {
            let (ptr, len) = match pick {
                0..=7 => string_at(u.choose_index(PATHS.len())?),
                8 => (edge_i32(u)? as u32, u.int_in_range(0..=63)?),
                _ => (edge_i32(u)? as u32, edge_i32(u)? as u32),
            };
            out.push(Value::I32(ptr as i32));
            Value::I32(len as i32)
        }
    };
    out.push(v);
    Ok(())
}

impl Guest {
    /// Reads a guest from fuzz input: flags, optional junk, then calls until the input ends.
    pub fn from_input(u: &mut Unstructured) -> ArbResult<Guest> {
        let flags: u8 = u.arbitrary()?;
        let junk = if flags & 2 != 0 {
            let len = u.int_in_range(1..=4096u32)?;
            let at = match u.int_in_range(0..=5u8)? {
                0 => 0,
                1 => IOVS,
                2 => STRINGS,
                3 => SUBS,
                4 => 0x2000,
                _ => u.int_in_range(0..=PAGE - 4096)?,
            };
            let bytes = u.bytes(len as usize)?.to_vec();
            Some((at, bytes))
        } else {
            None
        };
        let mut calls = if flags & 4 != 0 {
            prelude()
        } else {
            Vec::new()
        };
        while !u.is_empty() && calls.len() < MAX_CALLS {
            let func = u.choose_index(FUNCTIONS.len())?;
            let mut args = Vec::new();
            for &role in FUNCTIONS[func].params {
                value(u, role, &mut args)?;
            }
            calls.push(Call { func, args });
        }
        Ok(Guest {
            mounted: flags & 1 != 0,
            junk,
            calls,
        })
    }

    /// The exit code the guest must end with: the first `proc_exit`'s, else 0.
    pub fn expected_exit(&self) -> u32 {
        self.calls
            .iter()
            .find(|c| FUNCTIONS[c.func].name == "proc_exit")
            .map(|c| match c.args[0] {
                Value::I32(code) => code as u32,
                other => unreachable!("proc_exit's code is a constant, not {other:?}"),
            })
            .unwrap_or(0)
    }

    /// The guest as WAT text.
    pub fn wat(&self) -> String {
        let mut wat = String::from("(module\n");
        let used: BTreeSet<usize> = self.calls.iter().map(|c| c.func).collect();
        for &i in &used {
            import(&mut wat, &FUNCTIONS[i]);
        }
        let _ = writeln!(wat, "  (memory (export \"memory\") 1)");
        data_segments(&mut wat, &preset_memory());
        if let Some((at, bytes)) = &self.junk {
            let at = (*at).min(PAGE - bytes.len() as u32);
            let _ = writeln!(wat, "  (data (i32.const {at}) \"{}\")", escape(bytes));
        }
        let _ = writeln!(wat, "  (func (export \"_start\") (local $r i32)");
        for c in &self.calls {
            let func = &FUNCTIONS[c.func];
            let types: Vec<&str> = func
                .params
                .iter()
                .flat_map(|r| r.wasm_types().iter().copied())
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
}

fn import(wat: &mut String, func: &Function) {
    let params: Vec<&str> = func
        .params
        .iter()
        .flat_map(|r| r.wasm_types().iter().copied())
        .collect();
    let _ = writeln!(
        wat,
        "  (import \"wasi_snapshot_preview1\" \"{name}\" (func ${name} (param {}){}))",
        params.join(" "),
        if func.returns { " (result i32)" } else { "" },
        name = func.name,
    );
}

/// A module importing every host function, for wasm-smith's `available_imports`.
pub fn all_imports_wat() -> String {
    let mut wat = String::from("(module\n");
    for func in FUNCTIONS {
        import(&mut wat, func);
    }
    wat.push_str(")\n");
    wat
}

/// Data segments writing the non-zero runs of `memory` (from address 0): a fraction of the
/// text one segment of the whole image would take, which the WAT parser would pay for on
/// every input.
fn data_segments(wat: &mut String, memory: &[u8]) {
    let mut at = 0;
    while at < memory.len() {
        if memory[at] == 0 {
            at += 1;
            continue;
        }
        // A run ends at eight zero bytes in a row (shorter gaps stay inside it).
        let mut end = at;
        let mut zeros = 0;
        while end < memory.len() && zeros < 8 {
            zeros = if memory[end] == 0 { zeros + 1 } else { 0 };
            end += 1;
        }
        let _ = writeln!(
            wat,
            "  (data (i32.const {at}) \"{}\")",
            escape(&memory[at..end - zeros])
        );
        at = end;
    }
}

fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for b in bytes {
        let _ = write!(s, "\\{b:02x}");
    }
    s
}

/// Well-formed opens of every kind of descriptor, so that later calls find them.
fn prelude() -> Vec<Call> {
    let path = |p: &str| {
        let i = PATHS.iter().position(|s| *s == p.as_bytes()).unwrap();
        let (ptr, len) = string_at(i);
        [Value::I32(ptr as i32), Value::I32(len as i32)]
    };
    let func = |name: &str| FUNCTIONS.iter().position(|f| f.name == name).unwrap();
    let open = |dir: i32, p: &str, oflags: i32| Call {
        func: func("path_open"),
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
    vec![
        open(3, "new", 1),
        open(3, "f", 0),
        open(3, "sub", 2),
        open(3, "dev/input", 0),
        open(4, "dev/output", 0),
        open(3, "dev/zero", 0),
        Call {
            func: func("path_create_directory"),
            args: [vec![Value::I32(4)], path("tmp").to_vec()].concat(),
        },
        open(4, "tmp", 2),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running guests

pub const FUEL: u64 = 10_000_000;
pub const TIMEOUT: Duration = Duration::from_secs(2);
pub const MEMORY: u64 = 2 << 20;

/// The runtime every run shares, built once per process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        check_table_against_source();
        Runtime::new(RuntimeConfig {
            cache_dir: None,
            journal: None,
            allocator: Allocator::Pooling(PoolConfig {
                slots: 4,
                max_memory: MEMORY,
                keep_resident: 0,
            }),
        })
        .expect("a runtime")
    })
}

fn memory_channel(name: &str, mode: AccessMode, quota: Quota) -> Channel {
    Channel {
        name: ChannelName::new(name).unwrap(),
        source: ChannelSource::Null,
        mode,
        quota,
        etag: None,
    }
}

/// The manifest of every run: small limits, stdio, an `input` with a read quota, an `output`
/// with a write quota, and `mounts`.
pub fn manifest(mounts: Vec<Mount>, fuel: u64, timeout: Duration) -> Manifest {
    let mut m = Manifest::for_program("guest.wasm");
    m.limits.fuel = fuel;
    m.limits.timeout = timeout;
    m.limits.memory = MEMORY;
    m.limits.scratch = 1 << 20;
    m.limits.open_files = 16;
    m.args = vec!["an argument".into()];
    m.env.insert("LANG".into(), "C".into());
    m.memory_etag = true;
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
    m
}

/// Output channels whose bytes a run captures.
pub const CAPTURED: [&str; 3] = ["stdout", "stderr", "output"];

/// Runs `program` once with in-memory channels; returns the result and what each captured
/// channel received.
pub fn run(
    program: &zvm_vm::Program,
    manifest: &Manifest,
) -> (Result<Report, zvm_vm::Error>, Vec<Vec<u8>>) {
    let captures: Vec<SharedBuffer> = CAPTURED.iter().map(|_| SharedBuffer::new()).collect();
    let mut io = RunIo::default()
        .bind(
            "stdin",
            Endpoint::Reader(Box::new(&b"standard input\n"[..])),
        )
        .bind("input", Endpoint::Reader(Box::new(std::io::repeat(b'i'))));
    for (name, c) in CAPTURED.iter().zip(&captures) {
        io = io.bind(name, c.endpoint());
    }
    let result = program.run(manifest, io);
    let bytes = captures.iter().map(SharedBuffer::contents).collect();
    (result, bytes)
}

/// Checks a run's report against what the guest's calls say and what the host captured.
pub fn check_report(report: &Report, expected_exit: u32, captured: &[Vec<u8>]) {
    assert_eq!(report.exit_code, Some(expected_exit), "{report:?}");
    let quota_hit = report.channels.iter().any(|c| c.quota_hit.is_some());
    match &report.state {
        State::Ok => assert_eq!(expected_exit, 0),
        State::Exited { code } => assert_eq!(*code, expected_exit),
        State::QuotaExceeded { .. } => assert!(quota_hit),
        other => panic!("unexpected state {other:?}: {report:?}"),
    }
    assert!(report.fuel_used <= FUEL);
    assert!(report.peak_memory <= MEMORY);
    for (name, bytes) in CAPTURED.iter().zip(captured) {
        let ch = report.channels.iter().find(|c| c.name == *name).unwrap();
        assert_eq!(ch.write_bytes, bytes.len() as u64, "channel {name}");
        assert_eq!(
            ch.etag,
            blake3::hash(bytes).to_hex().to_string(),
            "channel {name}"
        );
    }
}

/// A host tree for mount runs: `<parent>/outside` holds a secret, and each run mounts a
/// fresh `<parent>/m-*` holding files, a directory and symlinks that point out of it.
pub struct HostWorld {
    parent: tempfile::TempDir,
}

impl Default for HostWorld {
    fn default() -> Self {
        let parent = tempfile::tempdir().unwrap();
        let outside = parent.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"host secret").unwrap();
        HostWorld { parent }
    }
}

impl HostWorld {
    pub fn mount_dir(&self) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("m-")
            .tempdir_in(self.parent.path())
            .unwrap();
        let d = dir.path();
        std::fs::write(d.join("f"), b"hello data\n").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/g"), b"g").unwrap();
        std::os::unix::fs::symlink("f", d.join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", d.join("dangling")).unwrap();
        std::os::unix::fs::symlink("../outside", d.join("escape")).unwrap();
        std::os::unix::fs::symlink(self.parent.path().join("outside"), d.join("abs")).unwrap();
        dir
    }

    pub fn mount(dir: &Path) -> Mount {
        Mount {
            guest: "/data".into(),
            source: MountSource::Dir {
                path: dir.to_path_buf(),
                writable: true,
            },
        }
    }

    /// Everything under the parent except mount directories.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, (String, u64, i64, u32)> {
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
}
