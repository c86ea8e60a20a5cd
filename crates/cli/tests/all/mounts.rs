//! Mounts: host directories read-only (`--ro-dir`) and read-write (`--dir`, also at `/`), tar
//! images (`--image`, including hostile ones), and the preopens the guest is handed for them.

use std::fs::File;
use std::path::Path;

use tar::{Builder, EntryType, Header};

use crate::filesystem::{check_ops, expect, lines, s, tree, zvm_run};
use crate::support::*;

/// `--dir`/`--ro-dir`/`--image` value `HOST::GUEST`.
fn at(host: &Path, guest: &str) -> String {
    format!("{}::{guest}", s(host))
}

/// Runs the C guest `name` with zvm `flags` before it.
fn run_guest(flags: &[&str], name: &str) -> std::process::Output {
    let guest = c_guest(name);
    let mut args = flags.to_vec();
    args.push(s(&guest));
    zvm_run(&args)
}

// ----- read-only host directories -----------------------------------------------------------------

/// A small host tree: `a.txt`, `sub/b.txt`, `la -> a.txt`, empty `empty/`.
fn host_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(dir.join("a.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("sub/b.txt"), "deep").unwrap();
    std::os::unix::fs::symlink("a.txt", dir.join("la")).unwrap();
}

#[test]
fn ro_dir_can_be_read() {
    let dir = tempfile::tempdir().unwrap();
    host_tree(dir.path());
    check_ops(
        &["--ro-dir", &at(dir.path(), "/ro")],
        &[
            (&["ls", "/ro"], "a.txt,empty/,la@,sub/"),
            (&["read", "/ro/a.txt"], "hello\\n"),
            (&["read", "/ro/sub/b.txt"], "deep"),
            (&["read", "/ro/la"], "hello\\n"),
            (&["readlink", "/ro/la"], "a.txt"),
            (&["stat", "/ro/a.txt"], "file 6"),
            (&["stat", "/ro/sub"], "dir"),
            (&["lstat", "/ro/la"], "symlink 5"),
            (&["ls", "/ro/empty"], "(empty)"),
            (&["read", "/ro/missing"], "ENOENT"),
            (&["ls", "/"], "dev/,ro/"),
        ],
    );
}

#[test]
fn ro_dir_refuses_every_change_with_erofs() {
    let dir = tempfile::tempdir().unwrap();
    host_tree(dir.path());
    let before = tree(dir.path());
    let mtime = |p: &str| {
        std::fs::symlink_metadata(dir.path().join(p))
            .unwrap()
            .modified()
            .unwrap()
    };
    let mtimes = (mtime("."), mtime("a.txt"), mtime("sub"));
    check_ops(
        &["--ro-dir", &at(dir.path(), "/ro")],
        &[
            (&["write", "/ro/a.txt", "x"], "EROFS"),
            (&["append", "/ro/a.txt", "x"], "EROFS"),
            (&["write", "/ro/new.txt", "x"], "EROFS"),
            (&["create", "/ro/new2.txt"], "EROFS"),
            (&["write", "/ro/la", "through the link"], "EROFS"),
            (&["truncate", "/ro/a.txt", "0"], "EROFS"),
            (&["mkdir", "/ro/d"], "EROFS"),
            (&["mkdir", "/ro/sub/d"], "EROFS"),
            (&["rmdir", "/ro/empty"], "EROFS"),
            (&["unlink", "/ro/a.txt"], "EROFS"),
            (&["unlink", "/ro/la"], "EROFS"),
            (&["rename", "/ro/a.txt", "/ro/c.txt"], "EROFS"),
            (&["rename", "/ro/a.txt", "/moved.txt"], "EROFS"),
            (&["write", "/scratch.txt", "x"], "ok"),
            (&["rename", "/scratch.txt", "/ro/scratch.txt"], "EROFS"),
            (&["link", "/ro/a.txt", "/ro/hard"], "EROFS"),
            (&["symlink", "a.txt", "/ro/l2"], "EROFS"),
            (&["utime", "/ro/a.txt"], "EROFS"),
            (&["utime", "/ro"], "EROFS"),
            (&["write", "/ro/sub/b.txt", "x"], "EROFS"),
            (&["read", "/ro/a.txt"], "hello\\n"),
        ],
    );
    assert_eq!(tree(dir.path()), before, "the host directory is unchanged");
    assert_eq!(
        (mtime("."), mtime("a.txt"), mtime("sub")),
        mtimes,
        "and so are its times"
    );
}

// ----- read-write host directories ----------------------------------------------------------------

#[test]
fn rw_dir_changes_are_made_on_the_host() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path();
    std::fs::write(host.join("old.txt"), "old\n").unwrap();
    std::fs::write(host.join("gone.txt"), "bye").unwrap();
    std::fs::create_dir(host.join("empty")).unwrap();
    check_ops(
        &["--dir", &at(host, "/data")],
        &[
            (&["write", "/data/new.txt", "created by the guest"], "ok"),
            (&["append", "/data/old.txt", "appended\n"], "ok"),
            (&["rename", "/data/old.txt", "/data/renamed.txt"], "ok"),
            (&["unlink", "/data/gone.txt"], "ok"),
            (&["mkdir", "/data/newdir"], "ok"),
            (&["write", "/data/newdir/inner.txt", "inner"], "ok"),
            (&["mkdir", "/data/newdir/deeper"], "ok"),
            (&["rename", "/data/newdir", "/data/moved"], "ok"),
            (&["link", "/data/renamed.txt", "/data/moved/hard.txt"], "ok"),
            (&["symlink", "hard.txt", "/data/moved/sym"], "ok"),
            (&["readlink", "/data/moved/sym"], "hard.txt"),
            (&["read", "/data/moved/sym"], "old\\nappended\\n"),
            (&["stat", "/data/moved/hard.txt"], "file 13"),
            (&["rmdir", "/data/empty"], "ok"),
            (&["rmdir", "/data/moved"], "ENOTEMPTY"),
            (&["truncate", "/data/new.txt", "7"], "ok"),
            (&["create", "/data/new.txt"], "EEXIST"),
            (&["ls", "/data"], "moved/,new.txt,renamed.txt"),
        ],
    );
    assert_eq!(
        tree(host),
        [
            "moved/",
            "moved/deeper/",
            "moved/hard.txt = old\nappended\n",
            "moved/inner.txt = inner",
            "moved/sym -> hard.txt",
            "new.txt = created",
            "renamed.txt = old\nappended\n",
        ]
    );
    let a = std::fs::metadata(host.join("renamed.txt")).unwrap();
    let b = std::fs::metadata(host.join("moved/hard.txt")).unwrap();
    assert_eq!(
        (a.ino(), a.nlink()),
        (b.ino(), 2),
        "a real hard link on the host"
    );
}

#[test]
fn rw_dir_changes_are_seen_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let mount = at(dir.path(), "/data");
    check_ops(
        &["--dir", &mount],
        &[(&["write", "/data/f", "first run"], "ok")],
    );
    check_ops(
        &["--dir", &mount],
        &[
            (&["read", "/data/f"], "first run"),
            (&["unlink", "/data/f"], "ok"),
        ],
    );
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

#[test]
fn renames_and_links_between_mounts_and_scratch_fail_with_exdev() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    std::fs::write(a.path().join("f"), "a's file").unwrap();
    check_ops(
        &["--dir", &at(a.path(), "/a"), "--dir", &at(b.path(), "/b")],
        &[
            (&["rename", "/a/f", "/b/f"], "EXDEV"),
            (&["link", "/a/f", "/b/f"], "EXDEV"),
            (&["rename", "/a/f", "/f"], "EXDEV"),
            (&["write", "/s", "scratch"], "ok"),
            (&["rename", "/s", "/a/s"], "EXDEV"),
            (&["read", "/a/f"], "a's file"),
        ],
    );
    assert_eq!(tree(a.path()), ["f = a's file"]);
    assert_eq!(tree(b.path()), Vec::<String>::new());
}

#[test]
fn mount_points_cannot_be_removed_or_replaced() {
    let a = tempfile::tempdir().unwrap();
    check_ops(
        &["--dir", &at(a.path(), "/mnt/a")],
        &[
            (&["rmdir", "/mnt/a"], "EBUSY"),
            (&["rename", "/mnt/a", "/mnt/b"], "EBUSY"),
            (&["mkdir", "/mnt/x"], "ok"),
            (&["rename", "/mnt/x", "/mnt/a"], "EBUSY"),
            (&["rmdir", "/mnt"], "ENOTEMPTY"),
            (&["ls", "/mnt"], "a/,x/"),
        ],
    );
}

#[test]
fn a_host_directory_can_be_the_root_and_dev_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path();
    std::fs::write(host.join("name"), "at the root\n").unwrap();
    // A `dev` on the host is hidden by the guest's /dev.
    std::fs::create_dir(host.join("dev")).unwrap();
    std::fs::write(host.join("dev/evil"), "host dev").unwrap();
    check_ops(
        &["--dir", &at(host, "/")],
        &[
            (&["read", "/name"], "at the root\\n"),
            (&["read", "name"], "at the root\\n"),
            (
                &["append", "/dev/stdout", "[via /dev/stdout]"],
                "[via /dev/stdout]ok",
            ),
            (&["ls", "/"], "dev/,name"),
            (
                &["ls", "/dev"],
                "full%,null%,random%,stderr%,stdin%,stdout%,urandom%,zero%",
            ),
            (&["read", "/dev/evil"], "ENOENT"),
            (&["hex", "/dev/zero", "4"], "00000000"),
            (&["write", "/created", "by the guest"], "ok"),
            (&["mkdir", "/d"], "ok"),
            (&["read", "/../name"], "at the root\\n"),
            (&["ls", "/.."], "created,d/,dev/,name"),
            (&["mkdir", "/dev"], "EEXIST"),
        ],
    );
    assert_eq!(
        tree(host),
        [
            "created = by the guest",
            "d/",
            "dev/",
            "dev/evil = host dev",
            "name = at the root\n"
        ]
    );
}

#[test]
fn a_host_root_with_another_mount_below_it() {
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("r"), "root file").unwrap();
    std::fs::write(data.path().join("d"), "data file").unwrap();
    check_ops(
        &[
            "--dir",
            &at(root.path(), "/"),
            "--ro-dir",
            &at(data.path(), "/data"),
        ],
        &[
            (&["ls", "/"], "data/,dev/,r"),
            (&["read", "/r"], "root file"),
            (&["read", "/data/d"], "data file"),
            (&["read", "/data/../r"], "root file"),
            (&["write", "/data/x", "no"], "EROFS"),
        ],
    );
    assert_eq!(
        tree(root.path()),
        ["r = root file"],
        "the mount point is not created on the host"
    );
}

#[test]
fn special_and_unnamable_host_files_are_not_opened() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path();
    // A FIFO would block an open() on the host; it must be refused, not opened.
    let status = std::process::Command::new("mkfifo")
        .arg(host.join("fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    std::os::unix::fs::symlink("loop", host.join("loop")).unwrap();
    // A name that is not UTF-8 cannot be named by a WASI guest: it is not listed.
    std::fs::write(host.join(std::ffi::OsStr::from_bytes(b"bad-\xff")), "x").unwrap();
    std::fs::write(host.join("plain"), "plain").unwrap();
    check_ops(
        &["--timeout", "20s", "--dir", &at(host, "/data")],
        &[
            (&["ls", "/data"], "fifo,loop@,plain"),
            (&["stat", "/data/fifo"], "other"),
            (&["read", "/data/fifo"], "EACCES"),
            (&["write", "/data/fifo", "x"], "EACCES"),
            (&["read", "/data/loop"], "ELOOP"),
            (&["write", "/data/loop", "x"], "ELOOP"),
            (&["read", "/data/plain"], "plain"),
        ],
    );
}

#[test]
fn guest_paths_of_mounts_may_be_relative_or_end_in_a_slash() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    std::fs::write(a.path().join("in-a"), "a").unwrap();
    std::fs::write(b.path().join("in-b"), "b").unwrap();
    check_ops(
        &[
            "--dir",
            &at(a.path(), "/a/"),
            "--ro-dir",
            &at(b.path(), "b"),
        ],
        &[
            (&["ls", "/"], "a/,b/,dev/"),
            (&["read", "/a/in-a"], "a"),
            (&["read", "a/in-a"], "a"),
            (&["read", "/b/in-b"], "b"),
            (&["read", "b/in-b"], "b"),
            (&["read", "/b/../a/in-a"], "a"),
        ],
    );
}

#[test]
fn a_mount_inside_another_mount_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let out = run_guest(
        &["--dir", &at(a.path(), "/a"), "--dir", &at(b.path(), "/a/b")],
        "hello",
    );
    expect(
        &out,
        125,
        "",
        "zvm: mount `/a/b`: it lies inside another mount\n",
    );
    assert_eq!(
        listing(a.path()),
        Vec::<String>::new(),
        "no mount point created on the host"
    );
}

#[test]
fn bad_mounts_are_refused_before_the_guest_starts() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = run_guest(&["--dir", &at(&missing, "/data")], "hello");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(125), ""));
    let prefix = format!(
        "zvm: mount `/data`: cannot open directory `{}`: ",
        s(&missing)
    );
    assert!(stderr(&out).starts_with(&prefix), "{}", stderr(&out));

    let out = run_guest(&["--dir", &at(dir.path(), "/dev")], "hello");
    let want = "zvm: mount path `/dev` is under `/dev`, where the guest sees its channels; mount elsewhere\n";
    expect(&out, 125, "", want);

    let out = run_guest(&["--dir", &at(dir.path(), "/dev/x")], "hello");
    let want = "zvm: mount path `/dev/x` is under `/dev`, where the guest sees its channels; mount elsewhere\n";
    expect(&out, 125, "", want);

    let out = run_guest(
        &[
            "--dir",
            &at(dir.path(), "/a"),
            "--ro-dir",
            &at(dir.path(), "/a"),
        ],
        "hello",
    );
    expect(&out, 125, "", "zvm: duplicate mount `/a`\n");

    let out = run_guest(&["--dir", &at(dir.path(), "/a/../b")], "hello");
    let want = "zvm: mount path `/a/../b` contains `..`, expected a path inside the guest's tree\n";
    expect(&out, 125, "", want);
}

// ----- tar images ---------------------------------------------------------------------------------

fn header(ty: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(if ty == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_700_000_000);
    h
}

fn add_file(b: &mut Builder<File>, path: &str, data: &[u8]) {
    let mut h = header(EntryType::Regular, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

fn add_dir(b: &mut Builder<File>, path: &str) {
    let mut h = header(EntryType::Directory, 0);
    b.append_data(&mut h, path, std::io::empty()).unwrap();
}

fn add_symlink(b: &mut Builder<File>, path: &str, target: &str) {
    let mut h = header(EntryType::Symlink, 0);
    b.append_link(&mut h, path, target).unwrap();
}

/// An entry whose name is written into the header as is, bypassing the tar crate's checks (it
/// refuses `..`), as a hostile tar would.
fn add_raw_file(b: &mut Builder<File>, name: &[u8], data: &[u8]) {
    let mut h = header(EntryType::Regular, data.len() as u64);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// Writes a tar at `path` with `build`.
fn make_tar(path: &Path, build: impl FnOnce(&mut Builder<File>)) {
    let mut b = Builder::new(File::create(path).unwrap());
    build(&mut b);
    b.finish().unwrap();
}

/// The image `image_read.c` expects, with nested directories.
fn good_image(path: &Path) {
    make_tar(path, |b| {
        add_file(b, "hello.txt", b"hello from the image\n");
        add_dir(b, "dir/");
        add_file(b, "dir/nested.txt", b"nested, no newline");
        add_dir(b, "dir/sub/");
        add_file(b, "dir/sub/deeper/leaf.txt", b"leaf\n"); // dir/sub/deeper is implied
        add_file(b, "dir/a-first.txt", b"");
        add_symlink(b, "link", "hello.txt");
        add_symlink(b, "dir/up", "../hello.txt");
    });
}

#[test]
fn image_read_reads_a_tar_image() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("img.tar");
    good_image(&tar);
    let out = zvm_run(&[
        "--image",
        &at(&tar, "/img"),
        s(&c_guest("image_read")),
        "/img",
    ]);
    let want = lines(&[
        "== hello.txt",
        "hello from the image",
        "== dir",
        "a-first.txt",
        "nested.txt",
        "sub",
        "up",
        "== dir/nested.txt",
        "nested, no newline",
        "== link",
        "readlink=hello.txt",
        "hello from the image",
        "write-existing=EROFS",
        "create=EROFS",
        "mkdir=EROFS",
        "unlink=EROFS",
        "ok",
    ]);
    expect(&out, 0, &want, "");
}

#[test]
fn image_tree_and_metadata_as_the_guest_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("img.tar");
    good_image(&tar);
    check_ops(
        &["--image", &at(&tar, "/srv/img")],
        &[
            (&["ls", "/srv/img"], "dir/,hello.txt,link@"),
            (&["ls", "/srv/img/dir"], "a-first.txt,nested.txt,sub/,up@"),
            (&["ls", "/srv/img/dir/sub"], "deeper/"),
            (&["read", "/srv/img/dir/sub/deeper/leaf.txt"], "leaf\\n"),
            (&["read", "/srv/img/dir/up"], "hello from the image\\n"),
            (&["read", "/srv/img/dir/a-first.txt"], ""),
            (&["stat", "/srv/img/hello.txt"], "file 21"),
            (&["stat", "/srv/img/dir/sub/deeper"], "dir"),
            (&["lstat", "/srv/img/link"], "symlink 9"),
            (&["read", "/srv/img/dir/../link"], "hello from the image\\n"),
            (&["ls", "/srv/img/.."], "img/"),
            (&["read", "/srv/img/missing"], "ENOENT"),
            (&["ls", "/srv/img/hello.txt"], "ENOTDIR"),
        ],
    );
}

#[test]
fn image_refuses_every_change_with_erofs() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("img.tar");
    good_image(&tar);
    let before = std::fs::read(&tar).unwrap();
    check_ops(
        &["--image", &at(&tar, "/img")],
        &[
            (&["write", "/img/hello.txt", "x"], "EROFS"),
            (&["append", "/img/hello.txt", "x"], "EROFS"),
            (&["write", "/img/link", "x"], "EROFS"),
            (&["create", "/img/new"], "EROFS"),
            (&["write", "/img/dir/new", "x"], "EROFS"),
            (&["truncate", "/img/hello.txt", "0"], "EROFS"),
            (&["mkdir", "/img/d"], "EROFS"),
            (&["rmdir", "/img/dir/sub/deeper"], "EROFS"),
            (&["unlink", "/img/hello.txt"], "EROFS"),
            (&["unlink", "/img/link"], "EROFS"),
            (&["rename", "/img/hello.txt", "/img/h2"], "EROFS"),
            (&["rename", "/img/hello.txt", "/h2"], "EROFS"),
            (&["link", "/img/hello.txt", "/img/h3"], "EROFS"),
            (&["symlink", "hello.txt", "/img/l2"], "EROFS"),
            (&["utime", "/img/hello.txt"], "EROFS"),
            (&["read", "/img/hello.txt"], "hello from the image\\n"),
            (&["ls", "/img"], "dir/,hello.txt,link@"),
        ],
    );
    assert_eq!(
        std::fs::read(&tar).unwrap(),
        before,
        "the tar file is unchanged"
    );
}

/// Runs hello.wasm with `tar` mounted at /img: zvm must refuse to start, saying `why` about it.
#[track_caller]
fn assert_image_refused(tar: &Path, why: &str) {
    let out = run_guest(&["--image", &at(tar, "/img")], "hello");
    let want = format!("zvm: mount `/img`: image `{}`: {why}\n", s(tar));
    expect(&out, 125, "", &want);
}

#[test]
fn image_entry_with_dotdot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("evil.tar");
    make_tar(&tar, |b| {
        add_file(b, "fine.txt", b"fine");
        add_raw_file(b, b"../evil", b"escaped");
    });
    assert_image_refused(
        &tar,
        "entry `../evil` leaves the image (it has a `..` component)",
    );
    assert!(!dir.path().join("evil").exists());
}

#[test]
fn image_entry_with_dotdot_in_the_middle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("evil.tar");
    make_tar(&tar, |b| add_raw_file(b, b"a/../../evil", b"escaped"));
    assert_image_refused(
        &tar,
        "entry `a/../../evil` leaves the image (it has a `..` component)",
    );
}

#[test]
fn image_entry_running_past_the_end_of_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("short.tar");
    make_tar(&tar, |b| add_file(b, "fine.txt", b"ok"));
    // Replace the end-of-archive blocks by a header claiming 1 TiB and one block of data.
    let mut bytes = std::fs::read(&tar).unwrap();
    bytes.truncate(1024);
    let mut h = header(EntryType::Regular, 1 << 40);
    h.as_old_mut().name[..4].copy_from_slice(b"huge");
    h.set_cksum();
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&[7; 512]);
    std::fs::write(&tar, &bytes).unwrap();
    assert_image_refused(
        &tar,
        "entry `huge` claims 1099511627776 bytes but the image ends at offset 2048",
    );
}

#[test]
fn image_cut_short_inside_file_data_is_refused() {
    // An ordinary tar, truncated in the middle of a file's data.
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("cut.tar");
    make_tar(&tar, |b| {
        add_file(b, "a.txt", b"a");
        add_file(b, "big.bin", &[1; 4096]);
    });
    let bytes = std::fs::read(&tar).unwrap();
    std::fs::write(&tar, &bytes[..1024 + 512 + 1000]).unwrap();
    assert_image_refused(
        &tar,
        "entry `big.bin` claims 4096 bytes but the image ends at offset 2536",
    );
}

#[test]
fn a_missing_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("none.tar");
    let out = run_guest(&["--image", &at(&tar, "/img")], "hello");
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(125), ""));
    let prefix = format!("zvm: mount `/img`: image `{}`: cannot ", s(&tar));
    assert!(stderr(&out).starts_with(&prefix), "{}", stderr(&out));
}

#[test]
fn image_symlinks_pointing_out_resolve_inside_the_guest_tree() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("links.tar");
    make_tar(&tar, |b| {
        add_symlink(b, "rel", "../../../../etc/passwd");
        add_symlink(b, "abs", "/etc/passwd");
        add_symlink(b, "up", "../../../../../..");
        add_dir(b, "d/");
        add_symlink(b, "d/root", "/");
    });
    check_ops(
        &["--image", &at(&tar, "/img")],
        &[
            (&["readlink", "/img/rel"], "../../../../etc/passwd"),
            (&["readlink", "/img/abs"], "/etc/passwd"),
            (&["read", "/img/rel"], "ENOENT"),
            (&["read", "/img/abs"], "ENOENT"),
            (&["ls", "/img/up"], "dev/,img/"),
            (&["ls", "/img/d/root"], "dev/,img/"),
            // Give the guest tree an /etc/passwd of its own: the links find that one.
            (&["mkdir", "/etc"], "ok"),
            (&["write", "/etc/passwd", "guest's own passwd"], "ok"),
            (&["read", "/img/rel"], "guest's own passwd"),
            (&["read", "/img/abs"], "guest's own passwd"),
            (&["read", "/img/up/etc/passwd"], "guest's own passwd"),
            (&["read", "/img/d/root/etc/passwd"], "guest's own passwd"),
        ],
    );
}

#[test]
fn image_absolute_entry_names_stay_below_the_mount() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("abs.tar");
    make_tar(&tar, |b| {
        add_raw_file(b, b"/abs.txt", b"was absolute");
        add_raw_file(b, b"./dot/./x.txt", b"dotted");
    });
    check_ops(
        &["--image", &at(&tar, "/img")],
        &[
            (&["ls", "/img"], "abs.txt,dot/"),
            (&["read", "/img/abs.txt"], "was absolute"),
            (&["read", "/img/dot/x.txt"], "dotted"),
            (&["read", "/abs.txt"], "ENOENT"),
        ],
    );
}

#[test]
fn an_image_can_be_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("root.tar");
    good_image(&tar);
    check_ops(
        &["--image", &at(&tar, "/")],
        &[
            (&["ls", "/"], "dev/,dir/,hello.txt,link@"),
            (&["read", "/hello.txt"], "hello from the image\\n"),
            (&["read", "/link"], "hello from the image\\n"),
            (&["write", "/new", "x"], "EROFS"),
            (&["hex", "/dev/zero", "2"], "0000"),
        ],
    );
}

// ----- preopens -------------------------------------------------------------------------------------

#[test]
fn preopens_without_mounts_are_just_the_root() {
    expect(&run_guest(&[], "preopens"), 0, "3 /\nend EBADF\n", "");
}

#[test]
fn preopens_list_each_mount_in_order_then_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    for d in [&a, &b, &c] {
        std::fs::create_dir(d).unwrap();
    }
    let tar = dir.path().join("img.tar");
    good_image(&tar);
    // The CLI puts --dir mounts first, then --ro-dir, then --image, each in command-line order.
    let flags = [
        "--dir",
        &at(&a, "/data/out"),
        "--dir",
        &at(&b, "/work"),
        "--ro-dir",
        &at(&c, "/ro"),
        "--image",
        &at(&tar, "/img"),
    ];
    let want = "3 /data/out\n4 /work\n5 /ro\n6 /img\n7 /\nend EBADF\n";
    expect(&run_guest(&flags, "preopens"), 0, want, "");
}

#[test]
fn preopens_with_a_root_mount_have_a_single_root() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let flags = ["--dir", &at(dir.path(), "/"), "--ro-dir", &at(&sub, "/sub")];
    expect(
        &run_guest(&flags, "preopens"),
        0,
        "3 /\n4 /sub\nend EBADF\n",
        "",
    );
}

// ----- compressed and layered images ---------------------------------------------------------------

/// Writes `tar` gzip-compressed (by the system's `gzip`, as a user would) to `gz`.
fn gzip_file(tar: &Path, gz: &Path) {
    let out = std::process::Command::new("gzip")
        .args(["-c", "-n"])
        .arg(tar)
        .output()
        .expect("run gzip");
    assert!(out.status.success(), "gzip: {}", stderr(&out));
    std::fs::write(gz, out.stdout).unwrap();
}

/// What `image_read.c` prints for [`good_image`].
fn good_image_read() -> String {
    lines(&[
        "== hello.txt",
        "hello from the image",
        "== dir",
        "a-first.txt",
        "nested.txt",
        "sub",
        "up",
        "== dir/nested.txt",
        "nested, no newline",
        "== link",
        "readlink=hello.txt",
        "hello from the image",
        "write-existing=EROFS",
        "create=EROFS",
        "mkdir=EROFS",
        "unlink=EROFS",
        "ok",
    ])
}

#[test]
fn image_read_reads_a_tar_gz_image() {
    let dir = tempfile::tempdir().unwrap();
    let (tar, gz) = (dir.path().join("img.tar"), dir.path().join("img.tar.gz"));
    good_image(&tar);
    gzip_file(&tar, &gz);
    let out = zvm_run(&[
        "--image",
        &at(&gz, "/img"),
        s(&c_guest("image_read")),
        "/img",
    ]);
    expect(&out, 0, &good_image_read(), "");
    // Known by its content, not its name: the same bytes as `.tgz`, or even as `.tar`.
    for name in ["img.tgz", "compressed.tar"] {
        let renamed = dir.path().join(name);
        std::fs::copy(&gz, &renamed).unwrap();
        let out = zvm_run(&[
            "--image",
            &at(&renamed, "/img"),
            s(&c_guest("image_read")),
            "/img",
        ]);
        expect(&out, 0, &good_image_read(), "");
    }
    assert_eq!(
        listing(dir.path()),
        ["compressed.tar", "img.tar", "img.tar.gz", "img.tgz"],
        "nothing is unpacked beside the image"
    );
}

#[test]
fn a_tar_gz_image_looks_exactly_like_its_tar() {
    let dir = tempfile::tempdir().unwrap();
    let (tar, gz) = (dir.path().join("img.tar"), dir.path().join("img.tar.gz"));
    good_image(&tar);
    gzip_file(&tar, &gz);
    let steps: &[crate::filesystem::Step] = &[
        (&["ls", "/img"], "dir/,hello.txt,link@"),
        (&["ls", "/img/dir"], "a-first.txt,nested.txt,sub/,up@"),
        (&["read", "/img/dir/sub/deeper/leaf.txt"], "leaf\\n"),
        (&["read", "/img/dir/up"], "hello from the image\\n"),
        (&["stat", "/img/hello.txt"], "file 21"),
        (&["lstat", "/img/link"], "symlink 9"),
        (&["hex", "/img/hello.txt", "5"], "68656c6c6f"),
        (&["write", "/img/hello.txt", "x"], "EROFS"),
    ];
    let plain = check_ops(&["--image", &at(&tar, "/img")], steps);
    let compressed = check_ops(&["--image", &at(&gz, "/img")], steps);
    assert_eq!(stdout(&plain), stdout(&compressed));
}

/// Two layers for /img: the upper one replaces `hello.txt`, adds to `dir`, deletes
/// `dir/old.txt` with a whiteout and turns the directory `gone` into a file.
fn layered_images(lower: &Path, upper: &Path) {
    make_tar(lower, |b| {
        add_file(b, "hello.txt", b"hello from the lower layer\n");
        add_dir(b, "dir/");
        add_file(b, "dir/nested.txt", b"nested, from below");
        add_file(b, "dir/old.txt", b"deleted above");
        add_file(b, "gone/inside.txt", b"hidden with its directory");
        add_symlink(b, "link", "hello.txt");
    });
    make_tar(upper, |b| {
        add_file(b, "hello.txt", b"hello from the upper layer\n");
        add_file(b, "dir/added.txt", b"added above");
        add_file(b, "dir/.wh.old.txt", b"");
        add_file(b, "gone", b"a file now");
    });
}

#[test]
fn image_read_reads_two_layered_images() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = (dir.path().join("lower.tar"), dir.path().join("upper.tar"));
    layered_images(&lower, &upper);
    let upper_gz = dir.path().join("upper.tar.gz");
    gzip_file(&upper, &upper_gz);
    let want = lines(&[
        "== hello.txt",
        "hello from the upper layer",
        "== dir",
        "added.txt",
        "nested.txt",
        "== dir/nested.txt",
        "nested, from below",
        "== link",
        "readlink=hello.txt",
        "hello from the upper layer",
        "write-existing=EROFS",
        "create=EROFS",
        "mkdir=EROFS",
        "unlink=EROFS",
        "ok",
    ]);
    // A plain upper layer and a compressed one give the same tree.
    for top in [&upper, &upper_gz] {
        let out = zvm_run(&[
            "--image",
            &at(&lower, "/img"),
            "--image",
            &at(top, "/img/"),
            s(&c_guest("image_read")),
            "/img",
        ]);
        expect(&out, 0, &want, "");
    }
}

#[test]
fn layered_images_as_the_guest_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = (dir.path().join("lower.tar"), dir.path().join("upper.tar"));
    layered_images(&lower, &upper);
    let flags = [
        "--image",
        &at(&lower, "/img"),
        "--image",
        &at(&upper, "/img"),
    ];
    check_ops(
        &flags,
        &[
            (&["ls", "/img"], "dir/,gone,hello.txt,link@"),
            (&["ls", "/img/dir"], "added.txt,nested.txt"),
            (&["read", "/img/dir/old.txt"], "ENOENT"),
            (&["read", "/img/dir/.wh.old.txt"], "ENOENT"),
            (&["stat", "/img/gone"], "file 10"),
            (&["read", "/img/gone/inside.txt"], "ENOTDIR"),
            (&["read", "/img/link"], "hello from the upper layer\\n"),
            (&["write", "/img/dir/new", "x"], "EROFS"),
            (&["unlink", "/img/dir/added.txt"], "EROFS"),
            (&["ls", "/"], "dev/,img/"),
        ],
    );
    // The other order puts the lower tar on top.
    check_ops(
        &[
            "--image",
            &at(&upper, "/img"),
            "--image",
            &at(&lower, "/img"),
        ],
        &[
            (&["ls", "/img"], "dir/,gone/,hello.txt,link@"),
            (&["ls", "/img/dir"], "added.txt,nested.txt,old.txt"),
            (&["read", "/img/hello.txt"], "hello from the lower layer\\n"),
        ],
    );
}

#[test]
fn layered_images_from_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = (dir.path().join("lower.tar"), dir.path().join("upper.tar"));
    layered_images(&lower, &upper);
    gzip_file(&upper, &dir.path().join("upper.tgz"));
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(
        &manifest,
        format!(
            "version = 1\nprogram = \"{}\"\nargs = [\"ls\", \"/lib/dir\", \"read\", \"/lib/hello.txt\"]\n\
             \n[[mount]]\npath = \"/lib\"\nimage = \"lower.tar\"\n\
             \n[[mount]]\npath = \"lib/\"\nimage = \"upper.tgz\"\n",
            s(&c_guest("path_ops"))
        ),
    )
    .unwrap();
    let out = zvm_run(&[s(&manifest)]);
    let want =
        "ls /lib/dir: added.txt,nested.txt\nread /lib/hello.txt: hello from the upper layer\\n\n";
    expect(&out, 0, want, "");
}

#[test]
fn preopens_list_a_layered_image_once() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = (dir.path().join("lower.tar"), dir.path().join("upper.tar"));
    layered_images(&lower, &upper);
    let flags = [
        "--ro-dir",
        &at(dir.path(), "/ro"),
        "--image",
        &at(&lower, "/img"),
        "--image",
        &at(&upper, "/img/"),
    ];
    expect(
        &run_guest(&flags, "preopens"),
        0,
        "3 /ro\n4 /img\n5 /\nend EBADF\n",
        "",
    );
}

#[test]
fn only_images_may_share_a_mount_path() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("img.tar");
    good_image(&tar);
    // The CLI puts --ro-dir mounts before --image ones: the image is the duplicate.
    let out = run_guest(
        &[
            "--image",
            &at(&tar, "/a"),
            "--ro-dir",
            &at(dir.path(), "/a"),
        ],
        "hello",
    );
    expect(&out, 125, "", "zvm: duplicate mount `/a`\n");
}

#[test]
fn a_layer_that_cannot_be_read_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = (dir.path().join("lower.tar"), dir.path().join("upper.tar"));
    layered_images(&lower, &upper);
    let gz = dir.path().join("upper.tar.gz");
    gzip_file(&upper, &gz);
    // Corrupt the compressed data in the middle; the header and size stay plausible.
    let mut bytes = std::fs::read(&gz).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 4] {
        *b ^= 0xa5;
    }
    std::fs::write(&gz, &bytes).unwrap();
    let out = run_guest(
        &["--image", &at(&lower, "/img"), "--image", &at(&gz, "/img")],
        "hello",
    );
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(125), ""));
    let prefix = format!(
        "zvm: mount `/img`: image `{}`: malformed gzip data: ",
        s(&gz)
    );
    assert!(stderr(&out).starts_with(&prefix), "{}", stderr(&out));
}

#[test]
fn a_gzip_bomb_image_is_refused_at_the_decompressed_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let zeros = dir.path().join("zeros");
    std::fs::write(&zeros, vec![0; 1 << 20]).unwrap();
    let member = dir.path().join("zeros.gz");
    gzip_file(&zeros, &member);
    // 1025 gzip members of 1 MiB of zeros each: about a megabyte on disk, which gzip would
    // decompress to 1 GiB and one MiB, just over the limit (`MAX_DECOMPRESSED_BYTES`).
    let member = std::fs::read(&member).unwrap();
    let bomb = dir.path().join("bomb.tar.gz");
    std::fs::write(&bomb, member.repeat(1025)).unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 2 << 20);
    let out = run_guest(&["--image", &at(&bomb, "/img")], "hello");
    let want = format!(
        "zvm: mount `/img`: image `{}`: decompresses to more than 1073741824 bytes, the most a \
         compressed image may hold in memory; mount it as a plain tar instead\n",
        s(&bomb)
    );
    expect(&out, 125, "", &want);
}
