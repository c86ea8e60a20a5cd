//! `/dev`: the devices (`null`, `zero`, `full`, `random`, `urandom`), the declared channels
//! (names may nest: `/dev/in/part-1`), and that the guest cannot change it.

use crate::filesystem::{check_ops, check_ops_io, expect, path_ops, s, zvm_run};
use crate::support::*;

/// What `ls /dev` shows with only the standard streams (from the host: character devices).
const DEV: &str = "full%,null%,random%,stderr%,stdin%,stdout%,urandom%,zero%";

#[test]
fn dev_null_reads_eof_and_swallows_writes() {
    check_ops(
        &[],
        &[
            (&["hex", "/dev/null", "16"], " EOF"),
            (&["read", "/dev/null"], ""),
            (&["write", "/dev/null", "into the void"], "ok"),
            (&["append", "/dev/null", "more"], "ok"),
            (&["stat", "/dev/null"], "chardev"),
            (&["hex", "/dev/null", "1"], " EOF"),
        ],
    );
}

#[test]
fn dev_zero_reads_zeros() {
    let zeros = "00".repeat(24);
    check_ops(
        &[],
        &[
            (&["hex", "/dev/zero", "24"], &zeros),
            (&["write", "/dev/zero", "x"], "ok"),
            (&["stat", "/dev/zero"], "chardev"),
        ],
    );
}

#[test]
fn dev_zero_fills_large_reads() {
    // 300 000 bytes in as few reads as the device likes: all zeros, no EOF.
    check_ops(
        &[],
        &[(&["hex", "/dev/zero", "300000"], &"00".repeat(300_000))],
    );
}

#[test]
fn dev_full_rejects_writes_with_enospc_and_reads_zeros() {
    check_ops(
        &[],
        &[
            (&["write", "/dev/full", "x"], "ENOSPC"),
            (&["append", "/dev/full", "y"], "ENOSPC"),
            (&["hex", "/dev/full", "8"], "0000000000000000"),
            (&["stat", "/dev/full"], "chardev"),
        ],
    );
}

/// The hex of 32 bytes of `/dev/random` then 32 of `/dev/urandom`, with `--seed seed` (or the
/// default seed).
fn random_bytes(seed: Option<&str>) -> (String, String) {
    let flags = match seed {
        Some(seed) => vec!["--seed", seed],
        None => vec![],
    };
    let ops: &[&[&str]] = &[
        &["hex", "/dev/random", "32"],
        &["hex", "/dev/urandom", "32"],
    ];
    let out = path_ops(&flags, ops, b"");
    assert_eq!((out.status.code(), stderr(&out).as_str()), (Some(0), ""));
    let text = stdout(&out);
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), 2, "{text}");
    let random = got[0]
        .strip_prefix("hex /dev/random 32: ")
        .expect("random line");
    let urandom = got[1]
        .strip_prefix("hex /dev/urandom 32: ")
        .expect("urandom line");
    for hex in [random, urandom] {
        assert_eq!(hex.len(), 64, "32 bytes without EOF: {hex}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex}");
        assert_ne!(hex, "00".repeat(32), "random bytes are not all zero");
    }
    (random.to_string(), urandom.to_string())
}

#[test]
fn random_devices_depend_only_on_the_seed() {
    let first = random_bytes(Some("7"));
    assert_eq!(first, random_bytes(Some("7")), "same seed, same bytes");
    let other = random_bytes(Some("8"));
    assert_ne!(first.0, other.0, "another seed, other /dev/random bytes");
    assert_ne!(first.1, other.1, "another seed, other /dev/urandom bytes");
    assert_ne!(
        first.0, first.1,
        "the two reads do not repeat the same bytes"
    );
    // Without --seed the seed is fixed too.
    assert_eq!(random_bytes(None), random_bytes(None));
}

#[test]
fn time_random_output_depends_only_on_the_seed() {
    let guest = c_guest("time_random");
    let run_seed = |seed: &str| {
        let out = zvm_run(&["--seed", seed, "--start-time", "1700000000", s(&guest)]);
        assert_eq!((out.status.code(), stderr(&out).as_str()), (Some(0), ""));
        stdout(&out)
    };
    let is_random = |l: &&str| {
        l.starts_with("getentropy=") || l.starts_with("urandom=") || l.starts_with("random=")
    };
    let a = run_seed("42");
    assert_eq!(a, run_seed("42"), "same seed, same output");
    let b = run_seed("43");
    let (ra, rb): (Vec<&str>, Vec<&str>) = (
        a.lines().filter(is_random).collect(),
        b.lines().filter(is_random).collect(),
    );
    assert_eq!(ra.len(), 3, "{a}");
    for (x, y) in ra.iter().zip(&rb) {
        assert_ne!(x, y, "another seed changes every random line");
    }
    // Everything else (the virtual clocks) stays the same.
    let rest = |t: &str| {
        t.lines()
            .filter(|l| !is_random(l))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(rest(&a), rest(&b));
}

#[test]
fn dev_lists_exactly_the_devices_and_standard_streams() {
    check_ops(
        &[],
        &[
            (&["ls", "/dev"], DEV),
            (&["ls", "/"], "dev/"),
            (&["stat", "/dev"], "dir"),
        ],
    );
}

#[test]
fn dev_lists_declared_channels_sorted_among_the_devices() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "data").unwrap();
    let input = s(&input);
    check_ops(
        &[
            "--input",
            &format!("zeta={input}"),
            "--input",
            &format!("alpha={input}"),
            "--output",
            &format!("result={}", s(&dir.path().join("out.txt"))),
            "--channel",
            &format!("mid.log={}:append", s(&dir.path().join("log"))),
        ],
        // File channels are regular files; the host's standard streams are character devices.
        &[(
            &["ls", "/dev"],
            "alpha,full%,mid.log,null%,random%,result,stderr%,stdin%,stdout%,urandom%,zero%,zeta",
        )],
    );
}

#[test]
fn nested_channel_names_appear_as_directories_under_dev() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = dir.path().join("p1");
    let p2 = dir.path().join("p2");
    std::fs::write(&p1, "first part\n").unwrap();
    std::fs::write(&p2, "second part\n").unwrap();
    check_ops(
        &[
            "--input",
            &format!("in/part-1={}", s(&p1)),
            "--input",
            &format!("in/part-2={}", s(&p2)),
            "--input",
            &format!("deep/er/x={}", s(&p1)),
        ],
        &[
            (
                &["ls", "/dev"],
                "deep/,full%,in/,null%,random%,stderr%,stdin%,stdout%,urandom%,zero%",
            ),
            (&["ls", "/dev/in"], "part-1,part-2"),
            (&["stat", "/dev/in"], "dir"),
            (&["read", "/dev/in/part-1"], "first part\\n"),
            (&["ls", "/dev/deep/er"], "x"),
            (&["read", "/dev/deep/er/x"], "first part\\n"),
            (&["read", "/dev/in/part-3"], "ENOENT"),
            (&["stat", "/dev/in/../in/part-2"], "file 12"),
            // A read channel is a stream: every open of it shares one position.
            (&["read", "/dev/in/../in/part-2"], "second part\\n"),
            (&["read", "/dev/in/part-2"], ""),
            (&["create", "/dev/in/part-3"], "EROFS"),
            (&["unlink", "/dev/in/part-1"], "EROFS"),
        ],
    );
    assert_eq!(std::fs::read_to_string(&p1).unwrap(), "first part\n");
}

#[test]
fn standard_streams_can_be_opened_by_path() {
    check_ops_io(
        &[],
        &[
            (&["read", "/dev/stdin"], "from stdin\\n"),
            (&["append", "/dev/stdout", "[to stdout]"], "[to stdout]ok"),
            (&["append", "/dev/stderr", "[to stderr]"], "ok"),
        ],
        b"from stdin\n",
        "[to stderr]",
    );
}

#[test]
fn the_guest_cannot_change_dev() {
    check_ops(
        &[],
        &[
            (&["create", "/dev/new"], "EROFS"),
            (&["write", "/dev/new", "x"], "EROFS"),
            (&["mkdir", "/dev/dir"], "EROFS"),
            (&["symlink", "null", "/dev/link"], "EROFS"),
            (&["link", "/dev/null", "/dev/null2"], "EROFS"),
            (&["unlink", "/dev/stdin"], "EROFS"),
            (&["unlink", "/dev/null"], "EROFS"),
            (&["unlink", "/dev/urandom"], "EROFS"),
            (&["rename", "/dev/null", "/dev/nothing"], "EROFS"),
            (&["rename", "/dev/zero", "/zero"], "EROFS"),
            (&["mkdir", "/tmp"], "ok"),
            (&["write", "/tmp/f", "x"], "ok"),
            (&["rename", "/tmp/f", "/dev/f"], "EROFS"),
            (&["rename", "/tmp/f", "/dev/null"], "EROFS"),
            (&["rmdir", "/dev"], "EBUSY"),
            (&["rename", "/dev", "/dev2"], "EBUSY"),
            (&["utime", "/dev"], "EROFS"),
            (&["ls", "/dev"], DEV),
            (&["ls", "/"], "dev/,tmp/"),
        ],
    );
}

#[test]
fn a_channel_named_like_a_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, "").unwrap();
    let out = zvm_run(&["--input", &format!("null={}", s(&f)), s(&c_guest("hello"))]);
    let want = "zvm: channel `null` clashes with a device or another channel under `/dev`\n";
    expect(&out, 125, "", want);
}
