//! The guest's filesystem: the POSIX file API on scratch and on host mounts, the scratch tree's
//! lifetime and size limit, and confinement (`..`, absolute paths, symlinks planted by the guest
//! or on the host can never reach a host file outside what is mounted).
//!
//! Most tests drive `tests/guests/c/path_ops.c` with a table of steps: an operation and the
//! exact result the guest must print for it (see [`check_ops`]). The helpers at the top are
//! shared with `mounts` and `devices`.

use std::path::Path;
use std::process::Output;

use crate::support::*;

// ----- shared helpers ---------------------------------------------------------------------------

/// `zvm run ARGS...` with empty stdin.
pub(crate) fn zvm_run(args: &[&str]) -> Output {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    run(&all, b"")
}

/// A path as a `&str` for a command line.
pub(crate) fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Asserts the exit code and the exact stdout and stderr of a run.
#[track_caller]
pub(crate) fn expect(out: &Output, code: i32, want_stdout: &str, want_stderr: &str) {
    assert_eq!(
        (
            out.status.code(),
            stdout(out).as_str(),
            stderr(out).as_str()
        ),
        (Some(code), want_stdout, want_stderr),
        "(exit code, stdout, stderr) differ"
    );
}

/// `lines` joined by newlines, each one ended by a newline.
pub(crate) fn lines(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Runs `path_ops.c` with zvm `flags` and the guest operations `ops` (each an operation name
/// and its arguments), with `stdin`.
pub(crate) fn path_ops(flags: &[&str], ops: &[&[&str]], stdin: &[u8]) -> Output {
    let guest = c_guest("path_ops");
    let mut args = vec!["run"];
    args.extend_from_slice(flags);
    args.push(s(&guest));
    for op in ops {
        args.extend_from_slice(op);
    }
    run(&args, stdin)
}

/// How `path_ops.c` escapes arguments and file contents.
fn escaped(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0x20..0x7f => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// One step for [`check_ops`]: an operation with its arguments, and what the guest prints for
/// it after the echo of the operation (`"ok"`, an errno name, data read).
pub(crate) type Step<'a> = (&'a [&'a str], &'a str);

/// Runs `path_ops.c` with `flags` over `steps` and asserts that it exits 0 with an empty stderr
/// and exactly `<op> <args>: <result>` per step on stdout.
#[track_caller]
pub(crate) fn check_ops(flags: &[&str], steps: &[Step]) -> Output {
    check_ops_io(flags, steps, b"", "")
}

/// [`check_ops`] with a stdin and an expected stderr.
#[track_caller]
pub(crate) fn check_ops_io(
    flags: &[&str],
    steps: &[Step],
    stdin: &[u8],
    want_stderr: &str,
) -> Output {
    let ops: Vec<&[&str]> = steps.iter().map(|(op, _)| *op).collect();
    let out = path_ops(flags, &ops, stdin);
    let want: String = steps
        .iter()
        .map(|(op, result)| {
            let echo: Vec<String> = op.iter().map(|a| escaped(a)).collect();
            format!("{}: {result}\n", echo.join(" "))
        })
        .collect();
    expect(&out, 0, &want, want_stderr);
    out
}

/// Everything below `dir` on the host, sorted: `path/` for a directory, `path -> target` for a
/// symlink (not followed), `path = content` for a file.
pub(crate) fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for name in listing(dir) {
            let path = dir.join(&name);
            let rel = s(path.strip_prefix(base).unwrap()).to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push(format!("{rel} -> {}", target.display()));
            } else if meta.is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &path, out);
            } else {
                let content = std::fs::read(&path).unwrap();
                out.push(format!("{rel} = {}", String::from_utf8_lossy(&content)));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every symlink below `dir` whose target, as the host resolves it (`canonicalize`), exists
/// and lies outside `dir`: `link -> where it leads`.
fn symlinks_leading_out(dir: &Path) -> Vec<String> {
    let root = dir.canonicalize().unwrap();
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for name in listing(&d) {
            let path = d.join(name);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                if let Ok(real) = path.canonicalize()
                    && !real.starts_with(&root)
                {
                    bad.push(format!("{} -> {}", path.display(), real.display()));
                }
            } else if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    bad
}

const SECRET: &str = "TOP-SECRET-host-data-7f3a";

/// `dir/secret.txt`, a host file the guest is never given, holding [`SECRET`].
fn secret_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("secret.txt");
    std::fs::write(&path, SECRET).unwrap();
    path
}

#[track_caller]
fn assert_no_secret(out: &Output) {
    assert!(
        !stdout(out).contains(SECRET),
        "the secret leaked to stdout: {}",
        stdout(out)
    );
    assert!(
        !stderr(out).contains(SECRET),
        "the secret leaked to stderr: {}",
        stderr(out)
    );
}

// ----- the POSIX file API -----------------------------------------------------------------------

#[test]
fn fs_api_passes_on_the_scratch_tree() {
    let out = zvm_run(&[s(&c_guest("fs_api"))]);
    expect(&out, 0, "ok\n", "");
}

#[test]
fn fs_api_passes_on_a_host_directory_mounted_at_tmp() {
    // fs_api works under the hard-coded /tmp/x: mount a host directory at /tmp.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("keep.txt"), "left alone\n").unwrap();
    let mount = format!("{}::/tmp", s(host.path()));
    let out = zvm_run(&["--dir", &mount, s(&c_guest("fs_api")), "host"]);
    expect(&out, 0, "ok\n", "");
    // fs_api removes /tmp/x and everything it made below it; the host file is untouched.
    assert_eq!(tree(host.path()), ["keep.txt = left alone\n"]);
}

#[test]
fn fs_api_passes_on_a_host_directory_mounted_at_the_root() {
    let host = tempfile::tempdir().unwrap();
    let mount = format!("{}::/", s(host.path()));
    let out = zvm_run(&["--dir", &mount, s(&c_guest("fs_api")), "host"]);
    expect(&out, 0, "ok\n", "");
    // fs_api creates /tmp (on the host now) and removes only /tmp/x.
    assert_eq!(tree(host.path()), ["tmp/"]);
}

// ----- the scratch tree ---------------------------------------------------------------------------

#[test]
fn scratch_files_vanish_at_exit_and_never_reach_the_host() {
    let cwd = tempfile::tempdir().unwrap();
    let host_persist = Path::new("/tmp/persist.txt");
    let existed = host_persist.exists();

    let scratch = c_guest("scratch");
    let mut cmd = zvm();
    cmd.current_dir(cwd.path())
        .env("TMPDIR", cwd.path())
        .args(["run", s(&scratch)]);
    let out = run_cmd(&mut cmd, b"");
    expect(&out, 0, "ok\n", "");

    // A new run starts from an empty scratch tree.
    let out = zvm_run(&[s(&scratch), "check-absent"]);
    expect(&out, 0, "ok\n", "");
    // And the full tour (which also starts by checking the file is absent) passes again.
    let out = zvm_run(&[s(&scratch)]);
    expect(&out, 0, "ok\n", "");

    assert_eq!(
        listing(cwd.path()),
        Vec::<String>::new(),
        "nothing written to the host"
    );
    if !existed {
        assert!(
            !host_persist.exists(),
            "the guest's /tmp/persist.txt reached the host's /tmp"
        );
    }
}

#[test]
fn scratch_check_absent_can_fail() {
    // The check that proves the scratch tree is discarded fails while the file exists.
    let out = zvm_run(&[s(&c_guest("scratch")), "check-absent"]);
    expect(&out, 0, "ok\n", "");
    check_ops(
        &[],
        &[
            (&["mkdir", "/tmp"], "ok"),
            (&["write", "/tmp/persist.txt", "x"], "ok"),
            (&["stat", "/tmp/persist.txt"], "file 1"),
        ],
    );
    check_ops(
        &[],
        &[
            (&["stat", "/tmp/persist.txt"], "ENOENT"),
            (&["ls", "/"], "dev/"),
        ],
    );
}

/// The byte count `scratch.c fill` reports on stderr.
#[track_caller]
fn bytes_written(out: &Output) -> u64 {
    assert_eq!(
        (out.status.code(), stdout(out).as_str()),
        (Some(0), "errno=ENOSPC\n"),
        "stderr: {}",
        stderr(out)
    );
    let err = stderr(out);
    err.strip_prefix("wrote ")
        .and_then(|r| r.strip_suffix(" bytes\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected stderr {err:?}"))
}

#[test]
fn scratch_size_limit_gives_enospc() {
    let wrote = bytes_written(&zvm_run(&[
        "--scratch",
        "1MiB",
        s(&c_guest("scratch")),
        "fill",
    ]));
    // The limit counts names and inodes too, so a little less than 1 MiB of data fits, but no
    // more than one 64 KiB write less.
    assert!(
        wrote <= 1 << 20,
        "wrote {wrote} bytes into a 1 MiB scratch tree"
    );
    assert!(
        wrote > (1 << 20) - 2 * 65536,
        "only {wrote} bytes fit in a 1 MiB scratch tree"
    );
}

#[test]
fn default_scratch_limit_is_64_mib() {
    let wrote = bytes_written(&zvm_run(&[s(&c_guest("scratch")), "fill"]));
    assert!(
        wrote <= 64 << 20 && wrote > (64 << 20) - 2 * 65536,
        "wrote {wrote}"
    );
}

#[test]
fn deleting_scratch_files_gives_the_space_back() {
    // 80 KiB of a 100 KiB scratch tree, three times over: only possible if unlink frees it.
    let big = "x".repeat(40 * 1024);
    let (write_f, write_g, write_h) = (
        ["write", "/f", &big],
        ["write", "/g", &big],
        ["write", "/h", &big],
    );
    let mut steps: Vec<Step> = Vec::new();
    for _ in 0..3 {
        steps.extend([
            (&write_f[..], "ok"),
            (&write_g[..], "ok"),
            (&["unlink", "/f"][..], "ok"),
            (&["unlink", "/g"][..], "ok"),
        ]);
    }
    steps.extend([
        (&write_f[..], "ok"),
        (&write_g[..], "ok"),
        (&write_h[..], "ENOSPC"),
    ]);
    check_ops(&["--scratch", "100KiB"], &steps);
}

// ----- confinement without mounts -------------------------------------------------------------------

/// What escape.c prints on stderr before its mount checks.
fn escape_diagnostics(secret: &str) -> Vec<String> {
    [
        "open(\"../etc/passwd\") -> ENOENT",
        "open(\"/../etc/passwd\") -> ENOENT",
        "open(\"/etc/passwd\") -> ENOENT",
        "open(\"/etc\") -> ENOENT",
        "open(\"/proc/self/environ\") -> ENOENT",
        &format!("open(\"{secret}\") -> ENOENT"),
        "open(\"/tmp/l\") -> ENOENT",
        "open(\"/tmp/up/etc/passwd\") -> ENOENT",
        &format!("open(\"/tmp/up{secret}\") -> ENOENT"),
    ]
    .map(str::to_string)
    .to_vec()
}

#[test]
fn escape_attempts_from_scratch_all_fail() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let out = zvm_run(&[s(&c_guest("escape")), s(&secret)]);
    expect(
        &out,
        0,
        "ok\n",
        &(escape_diagnostics(s(&secret)).join("\n") + "\n"),
    );
    assert_no_secret(&out);
}

#[test]
fn scratch_symlinks_resolve_inside_the_guest_tree() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let secret = s(&secret);
    let via_up = format!("/up/../..{secret}");
    let out = check_ops(
        &[],
        &[
            (&["symlink", "/etc/passwd", "/abs"], "ok"),
            (&["symlink", "../../../../../..", "/up"], "ok"),
            (&["symlink", secret, "/host"], "ok"),
            (&["read", "/abs"], "ENOENT"),
            (&["read", "/host"], "ENOENT"),
            (&["ls", "/up"], "abs@,dev/,host@,up@"),
            (&["read", &via_up], "ENOENT"),
            // The same targets once the guest has made them exist in its own tree.
            (&["mkdir", "/etc"], "ok"),
            (&["write", "/etc/passwd", "guest-passwd"], "ok"),
            (&["read", "/abs"], "guest-passwd"),
            (&["read", "/up/up/etc/passwd"], "guest-passwd"),
        ],
    );
    assert_no_secret(&out);
}

// ----- confinement with host mounts ---------------------------------------------------------------

#[test]
fn escape_attempts_through_a_host_mount_all_fail() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let secret = s(&secret);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = format!("{}::/data", s(&mnt));
    let out = zvm_run(&["--dir", &mount, s(&c_guest("escape")), secret, "/data"]);
    let mut want = escape_diagnostics(secret);
    want.extend(
        [
            "open(\"/data/../../etc/passwd\") -> ENOENT",
            "open(\"/data/../../../../../../etc/passwd\") -> ENOENT",
            "symlink(\"/etc/passwd\", \"/data/zvm_escape_abs\") refused: EPERM",
            "symlink(\"../../../etc/passwd\", \"/data/zvm_escape_rel\") refused: EPERM",
            "symlink(\"../../../../../../../..\", \"/data/zvm_escape_up\") refused: EPERM",
            &format!("symlink(\"{secret}\", \"/data/zvm_escape_host\") refused: EPERM"),
        ]
        .map(str::to_string),
    );
    expect(&out, 0, "ok\n", &(want.join("\n") + "\n"));
    assert_no_secret(&out);
    assert_eq!(
        listing(&mnt),
        Vec::<String>::new(),
        "the mount is left as it was"
    );
}

#[test]
fn a_mount_at_its_own_host_path_does_not_expose_its_host_siblings() {
    // `--dir HOST` mounts at the same path: the guest sees HOST, but not HOST's neighbours even
    // though they have the same paths on the host.
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::write(mnt.join("inside.txt"), "inside").unwrap();
    let (secret, mnt_s, parent) = (s(&secret), s(&mnt), s(dir.path()));
    let out = zvm_run(&["--dir", mnt_s, s(&c_guest("escape")), secret, mnt_s]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "ok\n"),
        "{}",
        stderr(&out)
    );
    assert_no_secret(&out);

    let via_parent = format!("{mnt_s}/../secret.txt");
    let inside = format!("{mnt_s}/inside.txt");
    check_ops(
        &["--dir", mnt_s],
        &[
            (&["read", secret], "ENOENT"),
            (&["read", &via_parent], "ENOENT"),
            (&["ls", parent], "mnt/"),
            (&["read", &inside], "inside"),
        ],
    );
}

#[test]
fn symlinks_planted_on_the_host_cannot_lead_out_of_the_mount() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(mnt.join("sub")).unwrap();
    let link =
        |target: &str, name: &str| std::os::unix::fs::symlink(target, mnt.join(name)).unwrap();
    link(s(&secret), "abs");
    link("../secret.txt", "rel_out");
    link("/etc/hostname", "hostname");
    link("/etc", "etc");
    link("..", "parent");
    link("../../../../../../../../..", "sub/way_up");
    link(s(dir.path()), "host_dir");
    let before = tree(&mnt);
    let secret = s(&secret);
    let via_way_up = format!("/data/sub/way_up{secret}");
    let secret_len = secret.len().to_string();
    let out = check_ops(
        &["--dir", &format!("{}::/data", s(&mnt))],
        &[
            (&["read", "/data/abs"], "ENOENT"),
            (&["hex", "/data/abs", "4"], "ENOENT"),
            (&["read", "/data/rel_out"], "ENOENT"),
            (&["read", "/data/hostname"], "ENOENT"),
            (&["read", "/data/etc/passwd"], "ENOENT"),
            (&["ls", "/data/etc"], "ENOENT"),
            (&["read", "/data/parent/secret.txt"], "ENOENT"),
            (&["ls", "/data/parent"], "data/,dev/"),
            (&["ls", "/data/sub/way_up"], "data/,dev/"),
            (&["read", &via_way_up], "ENOENT"),
            (&["ls", "/data/host_dir"], "ENOENT"),
            (&["read", "/data/host_dir/secret.txt"], "ENOENT"),
            // What the links are is no secret; where they lead is the guest's own tree.
            (&["readlink", "/data/abs"], secret),
            (&["lstat", "/data/abs"], &format!("symlink {secret_len}")),
            (&["stat", "/data/abs"], "ENOENT"),
        ],
    );
    assert_no_secret(&out);
    assert_eq!(tree(&mnt), before);
}

#[test]
fn host_symlinks_planted_in_a_read_only_mount_cannot_lead_out_either() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::symlink(&secret, mnt.join("abs")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", mnt.join("rel_out")).unwrap();
    let out = check_ops(
        &["--ro-dir", &format!("{}::/ro", s(&mnt))],
        &[
            (&["read", "/ro/abs"], "ENOENT"),
            (&["read", "/ro/rel_out"], "ENOENT"),
        ],
    );
    assert_no_secret(&out);
}

#[test]
fn host_symlinks_that_stay_inside_the_mount_work() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(mnt.join("sub/deeper")).unwrap();
    std::fs::write(mnt.join("inside.txt"), "inside\n").unwrap();
    std::fs::write(mnt.join("sub/deeper/leaf.txt"), "leaf").unwrap();
    let link =
        |target: &str, name: &str| std::os::unix::fs::symlink(target, mnt.join(name)).unwrap();
    link("inside.txt", "same_dir");
    link("../inside.txt", "sub/up_one");
    link("./sub/../inside.txt", "roundabout");
    link("sub", "sub_link");
    link("sub_link/deeper", "chain");
    link("../..", "sub/deeper/to_root");
    check_ops(
        &["--dir", &format!("{}::/data", s(&mnt))],
        &[
            (&["read", "/data/same_dir"], "inside\\n"),
            (&["read", "/data/sub/up_one"], "inside\\n"),
            (&["read", "/data/roundabout"], "inside\\n"),
            (&["ls", "/data/sub_link"], "deeper/,up_one@"),
            (&["read", "/data/sub_link/deeper/leaf.txt"], "leaf"),
            (&["read", "/data/chain/leaf.txt"], "leaf"),
            (
                &["ls", "/data/sub/deeper/to_root"],
                "chain@,inside.txt,roundabout@,same_dir@,sub/,sub_link@",
            ),
            (
                &["read", "/data/sub/deeper/to_root/inside.txt"],
                "inside\\n",
            ),
            (&["stat", "/data/same_dir"], "file 7"),
            (&["lstat", "/data/same_dir"], "symlink 10"),
            (&["stat", "/data/chain"], "dir"),
            // Writing through a link writes the target.
            (&["append", "/data/sub/up_one", "more\n"], "ok"),
            (&["read", "/data/inside.txt"], "inside\\nmore\\n"),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("inside.txt")).unwrap(),
        "inside\nmore\n"
    );
}

#[test]
fn creating_through_dangling_host_symlinks_stays_in_the_guest_tree() {
    // The classic O_CREAT-through-a-planted-symlink attack: the targets do not exist yet, and
    // opening the links with O_CREAT must not create them on the host.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let abs_target = dir.path().join("abs_created");
    std::os::unix::fs::symlink("../rel_created", mnt.join("dang_rel")).unwrap();
    std::os::unix::fs::symlink(&abs_target, mnt.join("dang_abs")).unwrap();
    std::os::unix::fs::symlink("new_inside.txt", mnt.join("dang_in")).unwrap();
    check_ops(
        &["--dir", &format!("{}::/data", s(&mnt))],
        &[
            // `../rel_created` from /data is /rel_created, in scratch.
            (&["write", "/data/dang_rel", "via rel"], "ok"),
            // The absolute target's parent directories do not exist in the guest tree.
            (&["write", "/data/dang_abs", "via abs"], "ENOENT"),
            (&["write", "/data/dang_in", "via in"], "ok"),
            (&["ls", "/"], "data/,dev/,rel_created"),
            (&["read", "/rel_created"], "via rel"),
        ],
    );
    assert!(
        !dir.path().join("rel_created").exists(),
        "created next to the mount on the host"
    );
    assert!(!abs_target.exists(), "created at the absolute host path");
    assert_eq!(
        tree(dir.path()),
        [
            "mnt/",
            &format!("mnt/dang_abs -> {}", s(&abs_target)),
            "mnt/dang_in -> new_inside.txt",
            "mnt/dang_rel -> ../rel_created",
            "mnt/new_inside.txt = via in",
        ]
    );
}

#[test]
fn dotdot_from_a_mount_root_is_the_guest_parent_not_the_host_parent() {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(mnt.join("sub")).unwrap();
    std::fs::write(mnt.join("inside.txt"), "inside").unwrap();
    let out = check_ops(
        &["--dir", &format!("{}::/a/b/data", s(&mnt))],
        &[
            (&["ls", "/a/b/data/.."], "data/"),
            (&["read", "/a/b/data/../secret.txt"], "ENOENT"),
            (&["read", "/a/b/data/../mnt/inside.txt"], "ENOENT"),
            (&["read", "/a/b/data/sub/../../secret.txt"], "ENOENT"),
            (&["write", "/a/b/marker", "in scratch"], "ok"),
            (&["read", "/a/b/data/../marker"], "in scratch"),
            (&["read", "/a/b/data/sub/../../marker"], "in scratch"),
            (&["read", "/a/b/data/../data/inside.txt"], "inside"),
            (&["ls", "/a/b/data/../../.."], "a/,dev/"),
            (&["ls", "/a/b/data/../../../../../.."], "a/,dev/"),
            // A symlink in scratch next to the mount climbs the guest's tree too.
            (&["symlink", "data/../../..", "/a/b/up"], "ok"),
            (&["ls", "/a/b/up"], "a/,dev/"),
        ],
    );
    assert_no_secret(&out);
    assert_eq!(
        tree(&mnt),
        ["inside.txt = inside", "sub/"],
        "the marker stayed in scratch"
    );
}

#[test]
fn guest_symlinks_in_a_mount_may_only_point_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(mnt.join("sub")).unwrap();
    std::fs::write(mnt.join("inside.txt"), "inside").unwrap();
    check_ops(
        &["--dir", &format!("{}::/data", s(&mnt))],
        &[
            (&["symlink", "/etc/passwd", "/data/abs"], "EPERM"),
            (&["symlink", "/data/inside.txt", "/data/abs_in"], "EPERM"),
            (&["symlink", "../x", "/data/up"], "EPERM"),
            (&["symlink", "sub/../../x", "/data/roundabout"], "EPERM"),
            (&["symlink", "../../x", "/data/sub/up2"], "EPERM"),
            (&["symlink", "inside.txt", "/data/ok"], "ok"),
            // Any `..` is refused: moved later, the link could lead out.
            (&["symlink", "sub/../inside.txt", "/data/ok2"], "EPERM"),
            (&["symlink", "../inside.txt", "/data/sub/ok3"], "EPERM"),
            (&["symlink", "../inside.txt", "/sub-in-scratch"], "ok"),
            (&["symlink", "missing", "/data/dangling"], "ok"),
            (&["read", "/data/ok"], "inside"),
            (&["read", "/data/dangling"], "ENOENT"),
        ],
    );
    assert_eq!(
        tree(&mnt),
        [
            "dangling -> missing",
            "inside.txt = inside",
            "ok -> inside.txt",
            "sub/",
        ]
    );
    assert_eq!(symlinks_leading_out(&mnt), Vec::<String>::new());
}

/// Runs the guest operations `ops` on a writable mount at /data of a host directory `mnt`
/// (which holds an empty `sub/`, and has `secret.txt` next to it), then checks on the host that
/// no symlink in `mnt` leads out of it, as a host tool following it would see it.
#[track_caller]
fn assert_guest_plants_no_outward_symlink(ops: &[&[&str]]) {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(mnt.join("sub")).unwrap();
    let out = path_ops(&["--dir", &format!("{}::/data", s(&mnt))], ops, b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_no_secret(&out);
    assert_eq!(
        symlinks_leading_out(&mnt),
        Vec::<String>::new(),
        "the guest left symlinks that lead out of the mount on the host; guest said:\n{}",
        stdout(&out)
    );
}

#[test]
fn guest_cannot_plant_an_outward_symlink_directly() {
    // Control for the three below: the direct ways are refused.
    assert_guest_plants_no_outward_symlink(&[
        &["symlink", "../secret.txt", "/data/l"],
        &["symlink", "../../secret.txt", "/data/sub/l"],
        &["symlink", "sub/../../secret.txt", "/data/l2"],
    ]);
}

#[test]
fn guest_cannot_plant_an_outward_symlink_by_renaming_it() {
    // `../secret.txt` is fine in /data/sub (it names /data/secret.txt), but moved to /data it
    // names the host file next to the mount.
    assert_guest_plants_no_outward_symlink(&[
        &["symlink", "../secret.txt", "/data/sub/l"],
        &["rename", "/data/sub/l", "/data/l"],
    ]);
}

#[test]
fn guest_cannot_plant_an_outward_symlink_by_renaming_its_directory() {
    assert_guest_plants_no_outward_symlink(&[
        &["mkdir", "/data/sub/deeper"],
        &["symlink", "../../secret.txt", "/data/sub/deeper/l"],
        &["rename", "/data/sub/deeper", "/data/moved"],
    ]);
}

#[test]
fn guest_cannot_plant_an_outward_symlink_by_hard_linking_it() {
    assert_guest_plants_no_outward_symlink(&[
        &["symlink", "../secret.txt", "/data/sub/l"],
        &["link", "/data/sub/l", "/data/l"],
    ]);
}

#[test]
fn guest_cannot_plant_an_outward_symlink_through_another_symlink() {
    assert_guest_plants_no_outward_symlink(&[
        &["symlink", "..", "/data/sub/u"],
        &["symlink", "sub/u/../secret.txt", "/data/l"],
    ]);
}
