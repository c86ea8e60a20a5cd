//! One object on disk: a single file holding the content and, after it, the metadata, so
//! that one rename makes both visible at once.
//!
//! ```text
//! +------------------+---------------------------+---------------------+-----------+
//! | content (size B) | trailer: JSON of          | trailer length      | magic     |
//! |                  | {"format":1,"info":{..}}  | (u64 little-endian) | "zvm-obj1"|
//! +------------------+---------------------------+---------------------+-----------+
//! ```
//!
//! The content comes first so that a put can stream it straight from the client while
//! hashing it: the etag and size are known only at the end, and the trailer is written then.
//! A reader finds the trailer from the end of the file, and checks that the trailer's size
//! agrees with the file's length, so a file cut short is never taken for an object.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// What the store knows of one object; what `HEAD` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectInfo {
    pub key: String,
    /// Length of the content in bytes.
    pub size: u64,
    /// BLAKE3 hash of the content, 64 lowercase hex digits.
    pub etag: String,
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`), sorted by name.
    pub user: BTreeMap<String, String>,
    /// When the object was written, in milliseconds since the Unix epoch.
    pub modified: u64,
}

/// Metadata given with a put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutMeta {
    pub content_type: Option<String>,
    pub user: BTreeMap<String, String>,
}

/// Longest content type: longer than any real media type with its parameters, and short
/// enough that a trailer stays small.
pub const MAX_CONTENT_TYPE_BYTES: usize = 1024;
/// Most bytes of user metadata (names plus values), as in S3, whose clients expect it.
pub const MAX_USER_METADATA_BYTES: usize = 2048;
/// Largest trailer a reader accepts: a maximal key, content type and user metadata with
/// every byte escaped by JSON (6 bytes per byte) stay below it, and a corrupt length field
/// cannot make a reader allocate gigabytes.
const MAX_TRAILER_BYTES: u64 = 64 * 1024;
/// Size of the buffer a put streams through: large enough that hashing and writing run at
/// disk speed, small enough to give each of many concurrent puts its own.
const COPY_BUFFER_BYTES: usize = 64 * 1024;
/// Marks the end of a complete object file, and its format.
const MAGIC: [u8; 8] = *b"zvm-obj1";
/// The trailer's format number.
const TRAILER_FORMAT: u32 = 1;
/// Length field plus magic.
const FOOTER_BYTES: u64 = 16;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    format: u32,
    info: ObjectInfo,
}

/// Checks a put's metadata: it has to fit in HTTP headers when the gateway returns it.
pub(crate) fn validate_meta(bucket: &str, key: &str, meta: &PutMeta) -> Result<()> {
    let fail = |reason: String| {
        Err(Error::InvalidMetadata {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason,
        })
    };
    let header_safe = |s: &str| !s.chars().any(|c| c.is_control() && c != '\t');
    if let Some(ct) = &meta.content_type {
        if ct.len() > MAX_CONTENT_TYPE_BYTES {
            return fail(format!(
                "content type longer than {MAX_CONTENT_TYPE_BYTES} bytes"
            ));
        }
        if !header_safe(ct) {
            return fail("content type contains a control character".into());
        }
    }
    let mut total = 0;
    for (name, value) in &meta.user {
        // An HTTP field name: the gateway sends it as `x-amz-meta-<name>`.
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(tchar) {
            return fail(format!(
                "user metadata name `{name}` is not an HTTP field name"
            ));
        }
        if !header_safe(value) {
            return fail(format!(
                "user metadata `{name}` contains a control character"
            ));
        }
        total += name.len() + value.len();
    }
    if total > MAX_USER_METADATA_BYTES {
        return fail(format!(
            "user metadata is {total} bytes, more than {MAX_USER_METADATA_BYTES}"
        ));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A file the store is writing and has not yet renamed into place: removed when dropped,
/// unless [`StagedFile::keep`] was called (after the rename, or once a commit record names it).
#[derive(Debug)]
pub(crate) struct StagedFile {
    pub path: PathBuf,
    keep: bool,
}

impl StagedFile {
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes a complete object file at `path` (which must not exist) from `data`, and fsyncs
/// it; the file is removed again if anything fails.
pub(crate) fn write_object(
    path: PathBuf,
    bucket: &str,
    key: &str,
    mut data: impl Read,
    meta: PutMeta,
) -> Result<(StagedFile, ObjectInfo)> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .op("create staged object", &path)?;
    let staged = StagedFile { path, keep: false };
    let path = &staged.path;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let mut size = 0u64;
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::Body {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).op("write staged object", path)?;
        size += n as u64;
    }
    let info = ObjectInfo {
        key: key.to_owned(),
        size,
        etag: hasher.finalize().to_hex().to_string(),
        content_type: meta.content_type,
        user: meta.user,
        modified: now_ms(),
    };
    let trailer = Trailer {
        format: TRAILER_FORMAT,
        info,
    };
    let mut tail = serde_json::to_vec(&trailer).expect("a trailer always serialises");
    let len = tail.len() as u64;
    tail.extend_from_slice(&len.to_le_bytes());
    tail.extend_from_slice(&MAGIC);
    file.write_all(&tail).op("write staged object", path)?;
    file.sync_all().op("fsync staged object", path)?;
    Ok((staged, trailer.info))
}

/// Reads the metadata of the object file `file` (at `path`, for messages), checking that the
/// file is complete.
pub(crate) fn read_info(file: &mut File, path: &Path) -> Result<ObjectInfo> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let len = file.metadata().op("stat object", path)?.len();
    if len < FOOTER_BYTES {
        return Err(corrupt(format!("{len} bytes is too short for an object")));
    }
    let mut footer = [0u8; FOOTER_BYTES as usize];
    file.seek(SeekFrom::Start(len - FOOTER_BYTES))
        .op("seek object", path)?;
    file.read_exact(&mut footer).op("read object", path)?;
    if footer[8..] != MAGIC {
        return Err(corrupt("no object trailer at the end".into()));
    }
    let trailer_len = u64::from_le_bytes(footer[..8].try_into().expect("8 bytes"));
    if trailer_len > MAX_TRAILER_BYTES || trailer_len > len - FOOTER_BYTES {
        return Err(corrupt(format!(
            "trailer length {trailer_len} out of range"
        )));
    }
    let size = len - FOOTER_BYTES - trailer_len;
    let mut json = vec![0u8; trailer_len as usize];
    file.seek(SeekFrom::Start(size)).op("seek object", path)?;
    file.read_exact(&mut json).op("read object", path)?;
    let trailer: Trailer =
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("trailer: {e}")))?;
    if trailer.format != TRAILER_FORMAT {
        return Err(corrupt(format!("trailer format {}", trailer.format)));
    }
    if trailer.info.size != size {
        return Err(corrupt(format!(
            "trailer says {} bytes of content, the file holds {size}",
            trailer.info.size
        )));
    }
    Ok(trailer.info)
}

/// The content (or the requested range of it) of an object being read. From the local store
/// it reads from a file opened before the object could change, so a concurrent put or delete
/// of the same key does not affect it; from S3 it streams the one GET response, which S3
/// serves from one version of the object.
pub struct ObjectBody {
    inner: BodySource,
}

enum BodySource {
    File(io::Take<File>),
    /// A reader of a remote body and the bytes it has left to give.
    Remote {
        reader: Box<dyn Read + Send>,
        remaining: u64,
    },
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.inner {
            BodySource::File(_) => "file",
            BodySource::Remote { .. } => "remote",
        };
        f.debug_struct("ObjectBody")
            .field("source", &source)
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl ObjectBody {
    pub(crate) fn new(mut file: File, path: &Path, range: std::ops::Range<u64>) -> Result<Self> {
        file.seek(SeekFrom::Start(range.start))
            .op("seek object", path)?;
        Ok(ObjectBody {
            inner: BodySource::File(file.take(range.end - range.start)),
        })
    }

    /// A body of `len` bytes that `reader` streams from elsewhere (the S3 backend).
    pub(crate) fn remote(reader: Box<dyn Read + Send>, len: u64) -> Self {
        ObjectBody {
            inner: BodySource::Remote {
                reader,
                remaining: len,
            },
        }
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        match &self.inner {
            BodySource::File(f) => f.limit(),
            BodySource::Remote { remaining, .. } => *remaining,
        }
    }
}

impl Read for ObjectBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            BodySource::File(f) => f.read(buf),
            BodySource::Remote { reader, remaining } => {
                if *remaining == 0 {
                    return Ok(0);
                }
                let max = buf
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                let n = reader.read(&mut buf[..max])?;
                if n == 0 {
                    // The stream ended before the length its response announced.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the object's body ended {remaining} bytes early"),
                    ));
                }
                *remaining -= n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(dir: &Path, key: &str, data: &[u8], meta: PutMeta) -> (PathBuf, ObjectInfo) {
        let path = dir.join("obj");
        let (staged, info) = write_object(path.clone(), "b", key, data, meta).unwrap();
        staged.keep();
        (path, info)
    }

    #[test]
    fn a_file_cut_short_is_never_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let meta = PutMeta {
            content_type: Some("text/plain".into()),
            user: [("a".to_string(), "b".to_string())].into(),
        };
        let (path, info) = write(dir.path(), "k", b"hello world", meta);
        let full = std::fs::read(&path).unwrap();
        assert_eq!(
            read_info(&mut File::open(&path).unwrap(), &path).unwrap(),
            info
        );
        for cut in 0..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let err = read_info(&mut File::open(&path).unwrap(), &path).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn a_failing_body_leaves_no_file() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("client went away"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let err =
            write_object(dir.path().join("x"), "b", "k", Failing, PutMeta::default()).unwrap_err();
        assert!(
            err.to_string().contains("client went away") && err.to_string().contains("`k`"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn metadata_must_fit_in_headers() {
        let bad = |content_type: Option<&str>, user: &[(&str, &str)]| {
            let meta = PutMeta {
                content_type: content_type.map(Into::into),
                user: user
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            validate_meta("b", "k", &meta).unwrap_err().to_string()
        };
        assert!(bad(Some("text/plain\r\nx: y"), &[]).contains("control"));
        assert!(bad(Some(&"t".repeat(2000)), &[]).contains("content type longer"));
        assert!(bad(None, &[("", "v")]).contains("field name"));
        assert!(bad(None, &[("a b", "v")]).contains("`a b`"));
        assert!(bad(None, &[("a", "x\ny")]).contains("control"));
        let big = "v".repeat(MAX_USER_METADATA_BYTES);
        assert!(bad(None, &[("a", &big)]).contains("more than 2048"));
        let ok = PutMeta {
            content_type: Some("text/plain; charset=utf-8".into()),
            user: [("Owner".into(), "Zoë\tand co".into())].into(),
        };
        validate_meta("b", "k", &ok).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn keys_and_metadata_round_trip_through_the_trailer(
            key in "\\PC{1,200}",
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            content_type in proptest::option::of("\\PC{0,40}"),
            user in proptest::collection::btree_map("[a-z0-9-]{1,12}", "\\PC{0,30}", 0..4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let meta = PutMeta { content_type, user };
            let (path, info) = write(dir.path(), &key, &data, meta.clone());
            let read = read_info(&mut File::open(&path).unwrap(), &path).unwrap();
            prop_assert_eq!(&read, &info);
            prop_assert_eq!(&read.key, &key);
            prop_assert_eq!(read.content_type, meta.content_type);
            prop_assert_eq!(read.user, meta.user);
            prop_assert_eq!(read.etag, blake3::hash(&data).to_hex().to_string());
            let file = File::open(&path).unwrap();
            let mut body = ObjectBody::new(file, &path, 0..read.size).unwrap();
            let mut content = Vec::new();
            body.read_to_end(&mut content).unwrap();
            prop_assert_eq!(content, data);
        }
    }
}
