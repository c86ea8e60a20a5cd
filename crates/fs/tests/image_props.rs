//! Bounded property tests of the tar image index against hostile archives: arbitrary bytes,
//! and valid tars with flipped bytes, cut ends and lying header fields.
//!
//! Whoever built an image is as untrusted as the guest reading it, so [`Image::open_with`]
//! must refuse what it cannot index and never panic, and whatever it accepts must be safe to
//! walk: every entry's children, metadata and symlink target can be asked for, and
//! [`Image::read_at`] never hands back more bytes than the entry holds. The `tar_image`
//! cargo-fuzz target in `fuzz/` runs the same checks for as long as one likes.
//!
//! Two more properties cover what is built on the index: a tar and its gzip-compressed copy
//! give the same view (or the same error), and a stack of layers is what applying each
//! layer's whiteouts and then laying its tree over the layers below gives, computed here
//! from the single-layer images with a simple model.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use tar::{Builder, EntryType, Header};
use zvm_fs::image::{EntryKind, Image, ImageLimits};

/// Cases per property: each writes and indexes a small file, a few milliseconds apiece.
const CASES: u32 = 500;

/// Limits small enough that mutated tars run into every one of them.
const LIMITS: ImageLimits = ImageLimits {
    max_entries: 64,
    max_index_bytes: 4096,
    max_meta_bytes: 4096,
};

/// Largest buffer a walk reads with: bigger than every file of the seed tars, so one read
/// can reach past an entry's end.
const MAX_READ: usize = 4096;

const BLOCK: usize = 512;
/// Offsets and widths of ustar header fields the mutations edit.
const SIZE_FIELD: (usize, usize) = (124, 12);
const MODE_FIELD: (usize, usize) = (100, 8);
const MTIME_FIELD: (usize, usize) = (136, 12);
const CKSUM_FIELD: (usize, usize) = (148, 8);
const TYPE_FIELD: usize = 156;
const NAME_FIELD: (usize, usize) = (0, 100);
const LINK_FIELD: (usize, usize) = (157, 100);

fn header(ty: EntryType, size: usize) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(ty);
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
}

/// Seed archives: what real tools write (directories, files of sizes around block edges,
/// symlinks, hard links, a GNU long name, PAX records), built with the `tar` crate.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = Vec::new();

        let mut b = Builder::new(Vec::new());
        b.append_data(&mut header(EntryType::Directory, 0), "dir/", &[][..])
            .unwrap();
        for (i, len) in [0usize, 1, 511, 512, 513, 1500].into_iter().enumerate() {
            let data = pattern(len, i as u8);
            b.append_data(
                &mut header(EntryType::Regular, len),
                format!("dir/f{len}"),
                &data[..],
            )
            .unwrap();
        }
        let mut link = header(EntryType::Symlink, 0);
        b.append_link(&mut link, "dir/sym", "f1").unwrap();
        let mut hard = header(EntryType::Link, 0);
        b.append_link(&mut hard, "hard", "dir/f512").unwrap();
        let long = format!("{}/file", "long-directory-name".repeat(6));
        b.append_data(&mut header(EntryType::Regular, 3), &long, &b"abc"[..])
            .unwrap();
        seeds.push(b.into_inner().unwrap());

        // A ustar tar with a PAX record and an implied directory.
        let mut b = Builder::new(Vec::new());
        let mut pax = Header::new_ustar();
        let record = b"30 path=pax/renamed-by-record\n";
        pax.set_entry_type(EntryType::XHeader);
        pax.set_size(record.len() as u64);
        pax.set_path("PaxHeader").unwrap();
        pax.set_cksum();
        b.append(&pax, &record[..]).unwrap();
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_size(5);
        h.set_mode(0o600);
        h.set_mtime(1);
        h.set_path("short").unwrap();
        h.set_cksum();
        b.append(&h, &b"hello"[..]).unwrap();
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_size(700);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_path("a/b/c/deep").unwrap();
        h.set_cksum();
        b.append(&h, &pattern(700, 9)[..]).unwrap();
        seeds.push(b.into_inner().unwrap());

        // Two small files, one in an implied directory.
        let mut b = Builder::new(Vec::new());
        b.append_data(&mut header(EntryType::Regular, 2), "x", &b"hi"[..])
            .unwrap();
        b.append_data(&mut header(EntryType::Regular, 0), "y/z", &[][..])
            .unwrap();
        seeds.push(b.into_inner().unwrap());
        seeds
    })
}

/// Offsets of the blocks of `bytes` that carry a valid header checksum: where mutations of
/// header fields go.
fn header_blocks(bytes: &[u8]) -> Vec<usize> {
    (0..bytes.len() / BLOCK)
        .map(|i| i * BLOCK)
        .filter(|&at| {
            let block = &bytes[at..at + BLOCK];
            if block.iter().all(|&b| b == 0) {
                return false;
            }
            let h = Header::from_byte_slice(block);
            let mut fixed = h.clone();
            fixed.set_cksum();
            h.cksum().is_ok_and(|c| fixed.cksum().is_ok_and(|f| f == c))
        })
        .collect()
}

/// The [`numeric_field`] choice that writes `raw` itself in octal.
const OCTAL_RAW: u8 = 6;

/// Values written into numeric header fields: octal edges, base-256 and garbage.
fn numeric_field(choice: u8, width: usize, raw: u64) -> Vec<u8> {
    let mut out = vec![0u8; width];
    match choice % 6 {
        // Octal, NUL-terminated, of an arbitrary or edge value.
        0 | 1 => {
            let value = match choice % 12 {
                0 => 0,
                1 => u64::MAX,
                2 => (1 << 33) - 1,
                3 => 1 << 40,
                _ => raw,
            };
            let text = format!("{value:0w$o}", w = width - 1);
            let text = &text.as_bytes()[text.len().saturating_sub(width - 1)..];
            out[..text.len()].copy_from_slice(text);
        }
        // GNU base-256: the high bit of the first byte set, then big-endian digits.
        2 => {
            out[0] = 0x80;
            let be = raw.to_be_bytes();
            let n = be.len().min(width - 1);
            out[width - n..].copy_from_slice(&be[be.len() - n..]);
        }
        // Negative base-256.
        3 => out.fill(0xff),
        // Spaces, letters and NULs where digits belong.
        4 => {
            for (i, b) in out.iter_mut().enumerate() {
                *b = b" 7x\0-8"[(raw as usize + i) % 6];
            }
        }
        _ => out.fill(b'7'),
    }
    out
}

/// One edit of an archive.
#[derive(Debug, Clone)]
enum Mutation {
    /// XORs the byte at (index modulo length).
    Flip(usize, u8),
    /// Edits a field of the header block chosen by index, and maybe fixes the checksum.
    Field {
        block: usize,
        field: u8,
        choice: u8,
        raw: u64,
        fix_cksum: bool,
    },
    /// Writes a name (with `..`, `/`, NULs, long runs) into a header's name or link field.
    Name {
        block: usize,
        link: bool,
        name: Vec<u8>,
        fix_cksum: bool,
    },
    /// Cuts the archive at (index modulo length).
    Truncate(usize),
    /// Cuts the archive at a block boundary.
    TruncateBlocks(usize),
    /// Repeats a block (a header, say) at another block boundary.
    CopyBlock(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ix = any::<usize>();
    prop_oneof![
        4 => (ix, 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        5 => (ix, any::<u8>(), any::<u8>(), any::<u64>(), proptest::bool::weighted(0.8))
            .prop_map(|(block, field, choice, raw, fix_cksum)| Mutation::Field {
                block, field, choice, raw, fix_cksum
            }),
        2 => (ix, any::<bool>(), name_bytes(), proptest::bool::weighted(0.9))
            .prop_map(|(block, link, name, fix_cksum)| Mutation::Name {
                block, link, name, fix_cksum
            }),
        1 => ix.prop_map(Mutation::Truncate),
        1 => ix.prop_map(Mutation::TruncateBlocks),
        1 => (ix, ix).prop_map(|(a, b)| Mutation::CopyBlock(a, b)),
    ]
}

fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"..".to_vec()),
        Just(b"../escape".to_vec()),
        Just(b"/abs/path".to_vec()),
        Just(b"./dir//x/./y".to_vec()),
        Just(b"dir/f1/below-a-file".to_vec()),
        Just(b"dir/sym/below-a-link".to_vec()),
        Just(b"dir".to_vec()),
        Just(b"".to_vec()),
        Just(b"a\0b".to_vec()),
        Just(vec![b'n'; 100]),
        Just(b"\xff\xfe".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..100),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    let headers = header_blocks(bytes);
    match m {
        Mutation::Flip(i, x) => {
            if len > 0 {
                bytes[i % len] ^= x;
            }
        }
        Mutation::Field {
            block,
            field,
            choice,
            raw,
            fix_cksum,
        } => {
            let Some(&at) = headers.get(block % headers.len().max(1)) else {
                return;
            };
            let h = &mut bytes[at..at + BLOCK];
            match field % 5 {
                0 | 1 => {
                    let (off, w) = SIZE_FIELD;
                    h[off..off + w].copy_from_slice(&numeric_field(*choice, w, *raw));
                }
                2 => {
                    let (off, w) = if choice % 2 == 0 {
                        MODE_FIELD
                    } else {
                        MTIME_FIELD
                    };
                    h[off..off + w].copy_from_slice(&numeric_field(*choice / 2, w, *raw));
                }
                3 => h[TYPE_FIELD] = b"0123456789gxKLSVMAD\0"[*raw as usize % 20],
                _ => {
                    let (off, w) = CKSUM_FIELD;
                    h[off..off + w].copy_from_slice(&numeric_field(*choice, w, *raw));
                    return;
                }
            }
            if *fix_cksum {
                fix_checksum(h);
            }
        }
        Mutation::Name {
            block,
            link,
            name,
            fix_cksum,
        } => {
            let Some(&at) = headers.get(block % headers.len().max(1)) else {
                return;
            };
            let h = &mut bytes[at..at + BLOCK];
            let (off, w) = if *link { LINK_FIELD } else { NAME_FIELD };
            let field = &mut h[off..off + w];
            field.fill(0);
            let n = name.len().min(w);
            field[..n].copy_from_slice(&name[..n]);
            if *fix_cksum {
                fix_checksum(h);
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
        Mutation::TruncateBlocks(i) => bytes.truncate((i % (len / BLOCK + 1)) * BLOCK),
        Mutation::CopyBlock(from, to) => {
            let blocks = len / BLOCK;
            if blocks > 0 {
                let (from, to) = ((from % blocks) * BLOCK, (to % blocks) * BLOCK);
                let block = bytes[from..from + BLOCK].to_vec();
                bytes.splice(to..to, block);
            }
        }
    }
}

fn fix_checksum(h: &mut [u8]) {
    let (off, w) = CKSUM_FIELD;
    h[off..off + w].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[off..off + w].copy_from_slice(text.as_bytes());
}

/// Writes `bytes` to a temporary file, opens it with [`LIMITS`] and walks whatever opened.
/// Returns how many entries were walked (`None` if the image was refused).
fn open_and_walk(
    bytes: &[u8],
    offsets: &[u64],
    lens: &[usize],
) -> Result<Option<usize>, TestCaseError> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    file.flush().unwrap();
    let image = match Image::open_with(file.path(), LIMITS) {
        Ok(image) => image,
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(
                shown.starts_with(&format!("image `{}`", file.path().display())),
                "an image error that does not name the image: {shown}"
            );
            return Ok(None);
        }
    };
    prop_assert!(image.len() <= LIMITS.max_entries, "{} entries", image.len());
    walk(&image, offsets, lens).map(Some)
}

/// Visits every entry reachable from the root, asking everything of each.
fn walk(image: &Image, offsets: &[u64], lens: &[usize]) -> Result<usize, TestCaseError> {
    let mut seen_dirs = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![image.root()];
    let mut buf = vec![0u8; MAX_READ];
    let mut k = 0;
    while let Some(id) = todo.pop() {
        seen.insert(id);
        let meta = image.meta(id);
        prop_assert_eq!(meta.ino, u64::from(id) + 1);
        let kind = image.kind(id);
        match kind {
            EntryKind::Dir => {
                prop_assert_eq!(meta.kind_code, 3);
                prop_assert!(seen_dirs.insert(id), "directory {} reached twice", id);
                let children = image.children(id);
                for pair in children.windows(2) {
                    prop_assert!(pair[0].0 < pair[1].0, "children not sorted: {:?}", pair);
                }
                for (name, child) in children {
                    prop_assert!(
                        !name.is_empty() && name != "." && name != ".." && !name.contains('/'),
                        "bad child name {:?}",
                        name
                    );
                    prop_assert_eq!(image.lookup(id, name), Some(*child));
                    todo.push(*child);
                }
                prop_assert!(image.symlink_target(id).is_none());
                prop_assert!(image.read_at(id, 0, &mut buf).is_err());
            }
            EntryKind::Symlink => {
                prop_assert_eq!(meta.kind_code, 7);
                let target = image.symlink_target(id);
                prop_assert!(target.is_some());
                prop_assert_eq!(meta.size, target.unwrap().len() as u64);
                prop_assert!(image.children(id).is_empty());
                prop_assert!(image.read_at(id, 0, &mut buf).is_err());
            }
            EntryKind::File => {
                prop_assert_eq!(meta.kind_code, 4);
                prop_assert!(image.symlink_target(id).is_none());
                prop_assert!(image.children(id).is_empty());
                let size = meta.size;
                let edges = [
                    0,
                    size.saturating_sub(1),
                    size,
                    size.saturating_add(1),
                    u64::MAX,
                ];
                for (i, &offset) in edges.iter().chain(offsets).enumerate() {
                    // Arbitrary offsets are folded into the file (and a little past it).
                    let offset = if i < edges.len() {
                        offset
                    } else {
                        offset % (size + 2)
                    };
                    let len = lens[(k + i) % lens.len()];
                    let read = image.read_at(id, offset, &mut buf[..len]);
                    let n = match read {
                        Ok(n) => n,
                        Err(e) => {
                            return Err(TestCaseError::fail(format!(
                                "reading file {id} ({size} bytes) at {offset}: {e}"
                            )));
                        }
                    };
                    let left = size.saturating_sub(offset);
                    prop_assert!(
                        n as u64 <= left && n <= len,
                        "read_at({id}, {offset}, {len}) gave {n} bytes of a {size}-byte file"
                    );
                    // A read that fits in the file fills the buffer (the image is on disk).
                    prop_assert_eq!(n as u64, left.min(len as u64));
                }
                k += 1;
            }
        }
    }
    prop_assert!(seen.len() <= image.len());
    Ok(seen.len())
}

fn offsets() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(any::<u64>(), 1..4)
}

fn lens() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..=MAX_READ, 1..4)
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
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..3000),
        offsets in offsets(),
        lens in lens(),
    ) {
        open_and_walk(&bytes, &offsets, &lens)?;
    }

    #[test]
    fn mutated_tars_never_panic(
        seed in 0..3usize,
        mutations in proptest::collection::vec(mutation(), 1..5),
        offsets in offsets(),
        lens in lens(),
    ) {
        let mut bytes = seeds()[seed].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        open_and_walk(&bytes, &offsets, &lens)?;
    }

    /// Arbitrary header blocks with valid numeric fields and a correct checksum, so that they
    /// get past the first checks into path handling, links and sizes.
    #[test]
    fn arbitrary_headers_with_valid_checksums_never_panic(
        blocks in proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), BLOCK),
                proptest::option::of(name_bytes()),
                proptest::option::of(name_bytes()),
                0..20usize,
                proptest::collection::vec(any::<u8>(), 0..1100),
            ),
            1..5,
        ),
        offsets in offsets(),
        lens in lens(),
    ) {
        let mut bytes = Vec::new();
        for (mut block, name, link, ty, data) in blocks {
            for (field, value) in [(MODE_FIELD, 0o644), (MTIME_FIELD, 1_700_000_000), ((108, 8), 0), ((116, 8), 0)] {
                let (off, w) = field;
                block[off..off + w].copy_from_slice(&numeric_field(OCTAL_RAW, w, value));
            }
            let (off, w) = SIZE_FIELD;
            block[off..off + w].copy_from_slice(&numeric_field(OCTAL_RAW, w, data.len() as u64));
            for (field, name) in [(NAME_FIELD, name), (LINK_FIELD, link)] {
                if let Some(name) = name {
                    let (off, w) = field;
                    block[off..off + w].fill(0);
                    let n = name.len().min(w);
                    block[off..off + n].copy_from_slice(&name[..n]);
                }
            }
            block[257..263].copy_from_slice(b"ustar\0");
            block[263..265].copy_from_slice(b"00");
            block[TYPE_FIELD] = b"0123456789gxKLSVMAD\0"[ty];
            fix_checksum(&mut block);
            bytes.extend_from_slice(&block);
            bytes.extend_from_slice(&data);
            // Pad to the block boundary, as the size field promises.
            bytes.resize(bytes.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        open_and_walk(&bytes, &offsets, &lens)?;
    }
}

/// The seeds open, hold what was put in them, and have header blocks for the field mutations
/// to edit; otherwise the mutation property would test much less than it seems to.
#[test]
fn seeds_open_and_read_back() {
    for (i, seed) in seeds().iter().enumerate() {
        assert!(
            header_blocks(seed).len() >= 2,
            "seed {i} has too few header blocks"
        );
        let walked = open_and_walk(seed, &[0, 7, 600], &[1, 512, MAX_READ])
            .unwrap_or_else(|e| panic!("seed {i}: {e}"));
        assert!(
            walked.is_some_and(|n| n >= 3),
            "seed {i} was refused or is nearly empty"
        );
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&seeds()[0]).unwrap();
    let image = Image::open_with(file.path(), LIMITS).unwrap();
    let dir = image.lookup(image.root(), "dir").unwrap();
    let f1500 = image.lookup(dir, "f1500").unwrap();
    let mut buf = vec![0; 2000];
    assert_eq!(image.read_at(f1500, 0, &mut buf).unwrap(), 1500);
    assert_eq!(&buf[..1500], &pattern(1500, 5)[..]);
    let hard = image.lookup(image.root(), "hard").unwrap();
    assert_eq!(hard, image.lookup(dir, "f512").unwrap());
    let sym = image.lookup(dir, "sym").unwrap();
    assert_eq!(image.symlink_target(sym), Some("f1"));
}

// ----- gzip: the same view as the plain tar -----------------------------------------------------

fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    file.flush().unwrap();
    file
}

/// Everything a guest can learn of an image: each reachable path in walk order, with its
/// metadata (inode included) and its content or target.
fn view(image: &Image) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![(".".to_owned(), image.root())];
    while let Some((path, id)) = todo.pop() {
        let detail = match image.kind(id) {
            EntryKind::Dir => {
                for (name, child) in image.children(id) {
                    todo.push((format!("{path}/{name}"), *child));
                }
                String::new()
            }
            EntryKind::File => {
                let mut buf = vec![0; image.meta(id).size as usize + 1];
                let n = image.read_at(id, 0, &mut buf).unwrap();
                format!("{:?}", &buf[..n])
            }
            EntryKind::Symlink => image.symlink_target(id).unwrap().to_owned(),
        };
        out.push(format!("{path} {:?} {detail}", image.meta(id)));
    }
    out
}

/// An error with its causes, the image's path replaced, so that two images' errors compare.
fn error_text(err: &dyn std::error::Error, path: &Path) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text.replace(&path.display().to_string(), "IMAGE")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A `.tar` and its `.tar.gz` are the same image: the same tree, metadata, inodes and
    /// bytes, or the same refusal.
    #[test]
    fn a_tar_and_its_gzip_give_identical_views(
        seed in 0..3usize,
        mutations in proptest::collection::vec(mutation(), 0..4),
        level in 0..=9u32,
    ) {
        let mut bytes = seeds()[seed].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        // Such a "tar" would itself be read as gzip.
        prop_assume!(!bytes.starts_with(&[0x1f, 0x8b]));
        let plain = temp_file(&bytes);
        let compressed = temp_file(&gzip(&bytes, level));
        let from_plain = Image::open_with(plain.path(), LIMITS);
        let from_gzip = Image::open_with(compressed.path(), LIMITS);
        match (from_plain, from_gzip) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(view(&a), view(&b));
                prop_assert_eq!(a.len(), b.len());
            }
            // The same refusal, at the same place; its innermost cause may differ (a read of
            // the file beyond its end fails with EINVAL, the in-memory reader says why in
            // words of its own).
            (Err(a), Err(b)) => {
                let (a, b) = (error_text(&a, plain.path()), error_text(&b, compressed.path()));
                let place = |t: &str| t.rsplit_once(": ").map(|(p, _)| p.to_string()).unwrap_or(t.to_string());
                prop_assert_eq!(place(&a), place(&b), "{} / {}", a, b);
            }
            (a, b) => prop_assert!(false, "plain: {:?}\ngzip: {:?}", a.err(), b.err()),
        }
    }

    /// Compressed garbage, and corrupted gzip of a real tar, are refused or walk safely.
    #[test]
    fn corrupt_gzip_never_panics(
        seed in 0..3usize,
        flips in proptest::collection::vec((any::<usize>(), 1..=255u8), 0..4),
        garbage in proptest::collection::vec(any::<u8>(), 0..200),
        offsets in offsets(),
        lens in lens(),
    ) {
        let mut bytes = gzip(&seeds()[seed], 6);
        let len = bytes.len();
        for (at, x) in &flips {
            bytes[at % len] ^= x;
        }
        open_and_walk(&bytes, &offsets, &lens)?;
        let mut garbage_gzip = vec![0x1f, 0x8b];
        garbage_gzip.extend(&garbage);
        open_and_walk(&garbage_gzip, &offsets, &lens)?;
    }
}

// ----- layers: a model of the union ---------------------------------------------------------------

/// What a path is in a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Thing {
    Dir,
    File(Vec<u8>),
    Link(String),
}

/// A tree as a map from path (components joined with `/`) to what is there; every ancestor
/// of a path is in the map as a directory.
type Tree = BTreeMap<String, Thing>;

fn tree_of(image: &Image) -> Tree {
    let mut tree = Tree::new();
    let mut todo = vec![(String::new(), image.root())];
    while let Some((prefix, dir)) = todo.pop() {
        for (name, id) in image.children(dir) {
            let path = format!("{prefix}{name}");
            let thing = match image.kind(*id) {
                EntryKind::Dir => {
                    todo.push((format!("{path}/"), *id));
                    Thing::Dir
                }
                EntryKind::File => {
                    let mut buf = vec![0; image.meta(*id).size as usize];
                    image.read_at(*id, 0, &mut buf).unwrap();
                    Thing::File(buf)
                }
                EntryKind::Symlink => Thing::Link(image.symlink_target(*id).unwrap().to_owned()),
            };
            tree.insert(path, thing);
        }
    }
    tree
}

/// Removes `path` and everything below it.
fn remove_tree(tree: &mut Tree, path: &str) {
    let below = format!("{path}/");
    tree.retain(|p, _| p != path && !p.starts_with(&below));
}

/// One generated entry of a layer: its path components and what it is.
#[derive(Debug, Clone)]
struct LayerEntry {
    components: Vec<&'static str>,
    thing: Thing,
}

fn layer_entry() -> impl Strategy<Value = LayerEntry> {
    let name = prop::sample::select(vec!["a", "b", "c"]);
    let last = prop::sample::select(vec![
        "a",
        "b",
        "c",
        ".wh.a",
        ".wh.b",
        ".wh.c",
        ".wh..wh..opq",
    ]);
    let thing = prop_oneof![
        3 => any::<u8>().prop_map(|b| Thing::File(vec![b; 3])),
        2 => Just(Thing::Dir),
        1 => prop::sample::select(vec!["a", "../b", "/c"]).prop_map(|t| Thing::Link(t.into())),
    ];
    (proptest::collection::vec(name, 0..3), last, thing).prop_map(
        |(mut components, last, thing)| {
            components.push(last);
            LayerEntry { components, thing }
        },
    )
}

fn layer_tar(entries: &[LayerEntry]) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    for entry in entries {
        let path = entry.components.join("/");
        match &entry.thing {
            Thing::Dir => b
                .append_data(&mut header(EntryType::Directory, 0), &path, &[][..])
                .unwrap(),
            Thing::File(data) => b
                .append_data(
                    &mut header(EntryType::Regular, data.len()),
                    &path,
                    &data[..],
                )
                .unwrap(),
            Thing::Link(target) => b
                .append_link(&mut header(EntryType::Symlink, 0), &path, target)
                .unwrap(),
        }
    }
    b.into_inner().unwrap()
}

/// Lays a layer (its tree alone, and its entries for the whiteouts) over `below`.
fn model_stack(below: &mut Tree, layer: &Tree, entries: &[LayerEntry]) {
    for entry in entries {
        let (last, dir) = entry.components.split_last().unwrap();
        let Some(hidden) = last.strip_prefix(".wh.") else {
            continue;
        };
        let dir = dir.join("/");
        if !dir.is_empty() && below.get(&dir) != Some(&Thing::Dir) {
            continue;
        }
        if *last == ".wh..wh..opq" {
            if dir.is_empty() {
                below.clear();
            } else {
                let inside = format!("{dir}/");
                below.retain(|p, _| !p.starts_with(&inside));
            }
        } else if dir.is_empty() {
            remove_tree(below, hidden);
        } else {
            remove_tree(below, &format!("{dir}/{hidden}"));
        }
    }
    // Parents come before their children in a `BTreeMap` of these names.
    for (path, thing) in layer {
        if !(thing == &Thing::Dir && below.get(path) == Some(&Thing::Dir)) {
            remove_tree(below, path);
            below.insert(path.clone(), thing.clone());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A stack of layers, each plain or compressed, is refused exactly when one of its layers
    /// is refused on its own (with that layer's error), and otherwise shows the model's tree.
    #[test]
    fn stacked_layers_match_the_union_model(
        layers in proptest::collection::vec(
            (proptest::collection::vec(layer_entry(), 1..6), any::<bool>()),
            1..4,
        ),
    ) {
        let files: Vec<tempfile::NamedTempFile> = layers
            .iter()
            .map(|(entries, compressed)| {
                let tar = layer_tar(entries);
                temp_file(&if *compressed { gzip(&tar, 1) } else { tar })
            })
            .collect();
        let paths: Vec<&Path> = files.iter().map(|f| f.path()).collect();
        let stacked = Image::open_layers(&paths);

        let mut model = Tree::new();
        for ((entries, _), path) in layers.iter().zip(&paths) {
            match Image::open(path) {
                Ok(alone) => model_stack(&mut model, &tree_of(&alone), entries),
                Err(alone) => {
                    let stacked = stacked.err().map(|e| e.to_string());
                    prop_assert_eq!(stacked, Some(alone.to_string()));
                    return Ok(());
                }
            }
        }
        let stacked = stacked.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(tree_of(&stacked), model);
        walk(&stacked, &[0, 1, 2], &[1, 3, 8])?;
    }
}
