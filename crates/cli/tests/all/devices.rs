//! `/dev`: the devices (`null`, `zero`, `full`, `random`, `urandom`), the declared channels
//! (names may nest: `/dev/in/part-1`), and that the guest cannot change it.

use crate::filesystem::{expect, lines, path_ops, path_ops_stdin, s, zvm_run};
use crate::support::*;

#[test]
fn dev_null_reads_eof_and_swallows_writes() {
    let out = path_ops(
        &[],
        &[
            "hex",
            "/dev/null",
            "16",
            "read",
            "/dev/null",
            "write",
            "/dev/null",
            "into the void",
            "append",
            "/dev/null",
            "more",
            "stat",
            "/dev/null",
            "hex",
            "/dev/null",
            "1",
        ],
    );
    let want = lines(&[
        "hex /dev/null 16:  EOF",
        "read /dev/null: ",
        "write /dev/null into the void: ok",
        "append /dev/null more: ok",
        "stat /dev/null: chardev",
        "hex /dev/null 1:  EOF",
    ]);
    expect(&out, 0, &want, "");
}

#[test]
fn dev_zero_reads_zeros() {
    let out = path_ops(
        &[],
        &[
            "hex",
            "/dev/zero",
            "24",
            "write",
            "/dev/zero",
            "x",
            "stat",
            "/dev/zero",
        ],
    );
    let want = lines(&[
        &format!("hex /dev/zero 24: {}", "00".repeat(24)),
        "write /dev/zero x: ok",
        "stat /dev/zero: chardev",
    ]);
    expect(&out, 0, &want, "");
}

#[test]
fn dev_zero_fills_large_reads() {
    // 300 000 bytes in as few reads as the device likes: all zeros, no EOF.
    let out = path_ops(&[], &["hex", "/dev/zero", "300000"]);
    expect(
        &out,
        0,
        &format!("hex /dev/zero 300000: {}\n", "00".repeat(300_000)),
        "",
    );
}

#[test]
fn dev_full_rejects_writes_with_enospc_and_reads_zeros() {
    let out = path_ops(
        &[],
        &[
            "write",
            "/dev/full",
            "x",
            "append",
            "/dev/full",
            "y",
            "hex",
            "/dev/full",
            "8",
            "stat",
            "/dev/full",
        ],
    );
    let want = lines(&[
        "write /dev/full x: ENOSPC",
        "append /dev/full y: ENOSPC",
        "hex /dev/full 8: 0000000000000000",
        "stat /dev/full: chardev",
    ]);
    expect(&out, 0, &want, "");
}

/// The hex lines of `/dev/random` and `/dev/urandom` (32 bytes each) with `--seed seed`.
fn random_bytes(seed: &str) -> (String, String) {
    let out = path_ops(
        &["--seed", seed],
        &["hex", "/dev/random", "32", "hex", "/dev/urandom", "32"],
    );
    assert_eq!((out.status.code(), stderr(&out).as_str()), (Some(0), ""));
    let text = stdout(&out);
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), 2, "{text}");
    let random = got[0]
        .strip_prefix("hex /dev/random 32: ")
        .expect("random line")
        .to_string();
    let urandom = got[1]
        .strip_prefix("hex /dev/urandom 32: ")
        .expect("urandom line")
        .to_string();
    for hex in [&random, &urandom] {
        assert_eq!(hex.len(), 64, "32 bytes without EOF: {hex}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex}");
        assert_ne!(
            hex.as_str(),
            "00".repeat(32),
            "random bytes are not all zero"
        );
    }
    (random, urandom)
}

#[test]
fn random_devices_depend_only_on_the_seed() {
    let first = random_bytes("7");
    let again = random_bytes("7");
    assert_eq!(first, again, "same seed, same bytes");
    let other = random_bytes("8");
    assert_ne!(first.0, other.0, "another seed, other /dev/random bytes");
    assert_ne!(first.1, other.1, "another seed, other /dev/urandom bytes");
    assert_ne!(
        first.0, first.1,
        "the two reads do not repeat the same bytes"
    );
    // The default seed is a seed like any other: stable across runs.
    let default = path_ops(&[], &["hex", "/dev/urandom", "32"]);
    let default_again = path_ops(&[], &["hex", "/dev/urandom", "32"]);
    assert_eq!(stdout(&default), stdout(&default_again));
    assert_eq!(default.status.code(), Some(0));
}

#[test]
fn time_random_output_depends_only_on_the_seed() {
    let guest = c_guest("time_random");
    let run_seed = |seed: &str| {
        let out = zvm_run(&["--seed", seed, "--start-time", "1700000000", s(&guest)]);
        assert_eq!((out.status.code(), stderr(&out).as_str()), (Some(0), ""));
        stdout(&out)
    };
    let a = run_seed("42");
    assert_eq!(a, run_seed("42"), "same seed, same output");
    let b = run_seed("43");
    let random_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                l.starts_with("getentropy=")
                    || l.starts_with("urandom=")
                    || l.starts_with("random=")
            })
            .map(str::to_string)
            .collect()
    };
    let (ra, rb) = (random_lines(&a), random_lines(&b));
    assert_eq!(ra.len(), 3, "{a}");
    for (x, y) in ra.iter().zip(&rb) {
        assert_ne!(x, y, "another seed changes every random line");
    }
    // Everything else (the virtual clocks) is the same.
    let rest = |text: &str| -> Vec<String> {
        let random = random_lines(text);
        text.lines()
            .filter(|l| !random.contains(&l.to_string()))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(rest(&a), rest(&b));
}

#[test]
fn dev_lists_exactly_the_devices_and_standard_streams() {
    let out = path_ops(&[], &["ls", "/dev", "ls", "/", "stat", "/dev"]);
    let want = lines(&[
        "ls /dev: full%,null%,random%,stderr%,stdin%,stdout%,urandom%,zero%",
        "ls /: dev/",
        "stat /dev: dir",
    ]);
    expect(&out, 0, &want, "");
}

#[test]
fn dev_lists_declared_channels_sorted_among_the_devices() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "data").unwrap();
    let out_file = dir.path().join("out.txt");
    let input = s(&input);
    let out = path_ops(
        &[
            "--input",
            &format!("zeta={input}"),
            "--input",
            &format!("alpha={input}"),
            "--output",
            &format!("result={}", s(&out_file)),
            "--channel",
            &format!("mid.log={}:append", s(&dir.path().join("log"))),
        ],
        &["ls", "/dev"],
    );
    // File channels are regular files; the host's standard streams are character devices.
    let want = "ls /dev: alpha,full%,mid.log,null%,random%,result,stderr%,stdin%,stdout%,urandom%,zero%,zeta\n";
    expect(&out, 0, want, "");
}

#[test]
fn nested_channel_names_appear_as_directories_under_dev() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = dir.path().join("p1");
    let p2 = dir.path().join("p2");
    std::fs::write(&p1, "first part\n").unwrap();
    std::fs::write(&p2, "second part\n").unwrap();
    let out = path_ops(
        &[
            "--input",
            &format!("in/part-1={}", s(&p1)),
            "--input",
            &format!("in/part-2={}", s(&p2)),
            "--input",
            &format!("deep/er/x={}", s(&p1)),
        ],
        &[
            "ls",
            "/dev",
            "ls",
            "/dev/in",
            "stat",
            "/dev/in",
            "read",
            "/dev/in/part-1",
            "ls",
            "/dev/deep/er",
            "read",
            "/dev/deep/er/x",
            "read",
            "/dev/in/part-3",
            "stat",
            "/dev/in/../in/part-2",
            // A read channel is a stream: its position is shared by every open of it.
            "read",
            "/dev/in/../in/part-2",
            "read",
            "/dev/in/part-2",
            "create",
            "/dev/in/part-3",
            "unlink",
            "/dev/in/part-1",
        ],
    );
    let want = lines(&[
        "ls /dev: deep/,full%,in/,null%,random%,stderr%,stdin%,stdout%,urandom%,zero%",
        "ls /dev/in: part-1,part-2",
        "stat /dev/in: dir",
        "read /dev/in/part-1: first part\\n",
        "ls /dev/deep/er: x",
        "read /dev/deep/er/x: first part\\n",
        "read /dev/in/part-3: ENOENT",
        "stat /dev/in/../in/part-2: file 12",
        "read /dev/in/../in/part-2: second part\\n",
        "read /dev/in/part-2: ",
        "create /dev/in/part-3: EROFS",
        "unlink /dev/in/part-1: EROFS",
    ]);
    expect(&out, 0, &want, "");
    assert_eq!(std::fs::read_to_string(&p1).unwrap(), "first part\n");
}

#[test]
fn standard_streams_can_be_opened_by_path() {
    let out = path_ops_stdin(
        &[],
        &[
            "read",
            "/dev/stdin",
            "append",
            "/dev/stdout",
            "[to stdout]",
            "append",
            "/dev/stderr",
            "[to stderr]",
        ],
        b"from stdin\n",
    );
    let want = "read /dev/stdin: from stdin\\n\nappend /dev/stdout [to stdout]: [to stdout]ok\nappend /dev/stderr [to stderr]: ok\n";
    expect(&out, 0, want, "[to stderr]");
}

#[test]
fn the_guest_cannot_change_dev() {
    let out = path_ops(
        &[],
        &[
            "create",
            "/dev/new",
            "write",
            "/dev/new",
            "x",
            "mkdir",
            "/dev/dir",
            "symlink",
            "null",
            "/dev/link",
            "link",
            "/dev/null",
            "/dev/null2",
            "unlink",
            "/dev/stdin",
            "unlink",
            "/dev/null",
            "unlink",
            "/dev/urandom",
            "rename",
            "/dev/null",
            "/dev/nothing",
            "rename",
            "/dev/zero",
            "/zero",
            "mkdir",
            "/tmp",
            "write",
            "/tmp/f",
            "x",
            "rename",
            "/tmp/f",
            "/dev/f",
            "rename",
            "/tmp/f",
            "/dev/null",
            "rmdir",
            "/dev",
            "rename",
            "/dev",
            "/dev2",
            "utime",
            "/dev",
            "ls",
            "/dev",
        ],
    );
    let want = lines(&[
        "create /dev/new: EROFS",
        "write /dev/new x: EROFS",
        "mkdir /dev/dir: EROFS",
        "symlink null /dev/link: EROFS",
        "link /dev/null /dev/null2: EROFS",
        "unlink /dev/stdin: EROFS",
        "unlink /dev/null: EROFS",
        "unlink /dev/urandom: EROFS",
        "rename /dev/null /dev/nothing: EROFS",
        "rename /dev/zero /zero: EROFS",
        "mkdir /tmp: ok",
        "write /tmp/f x: ok",
        "rename /tmp/f /dev/f: EROFS",
        "rename /tmp/f /dev/null: EROFS",
        "rmdir /dev: EBUSY",
        "rename /dev /dev2: EBUSY",
        "utime /dev: EROFS",
        "ls /dev: full%,null%,random%,stderr%,stdin%,stdout%,urandom%,zero%",
    ]);
    expect(&out, 0, &want, "");
}

#[test]
fn a_channel_named_like_a_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, "").unwrap();
    let out = zvm_run(&["--input", &format!("null={}", s(&f)), s(&c_guest("hello"))]);
    expect(
        &out,
        125,
        "",
        "zvm: channel `null` clashes with a device or another channel under `/dev`\n",
    );
}
