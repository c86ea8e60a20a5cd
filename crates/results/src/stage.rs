//! Staging: copying what `put` stores into temporary files inside the cache, hashing as it goes.
//!
//! Staging happens without any lock, so a large copy never holds up eviction or other
//! processes. Each temporary file is flushed to disk (`fdatasync`) before it is renamed into
//! place: after a crash, a blob or entry under its final name has its full content, never a
//! hole of zeros behind a correct size (which the size check on `get` could not catch).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use tempfile::NamedTempFile;

use crate::entry::Content;
use crate::{Error, OutputSource};

/// Copy buffer size: large enough that syscalls do not dominate the copy, small enough that
/// many concurrent `put`s cost little memory.
const COPY_BUFFER: usize = 64 * 1024;

/// An output copied into the cache's temporary directory, not yet published.
#[derive(Debug)]
pub(crate) struct Staged {
    pub tmp: NamedTempFile,
    pub content: Content,
}

/// Where `source` says the bytes are, for error messages.
fn describe(source: &OutputSource<'_>) -> String {
    match source {
        OutputSource::Path(path) => format!("`{}`", path.display()),
        OutputSource::File(_) => "an open file".to_string(),
        OutputSource::Bytes(_) => "memory".to_string(),
    }
}

fn read_error(name: &str, source: &OutputSource<'_>) -> impl FnOnce(io::Error) -> Error {
    let (name, from) = (name.to_string(), describe(source));
    move |source| Error::ReadOutput { name, from, source }
}

/// The size `source` has now (it may still change while it is copied).
pub(crate) fn current_size(name: &str, source: &OutputSource<'_>) -> Result<u64, Error> {
    match source {
        OutputSource::Path(path) => std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(read_error(name, source)),
        OutputSource::File(file) => file
            .metadata()
            .map(|m| m.len())
            .map_err(read_error(name, source)),
        OutputSource::Bytes(bytes) => Ok(bytes.len() as u64),
    }
}

/// Creates an empty temporary file in `tmp_dir`.
fn create_temp(tmp_dir: &Path, prefix: &str) -> Result<NamedTempFile, Error> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(tmp_dir)
        .map_err(Error::io("create a temporary file in", tmp_dir))
}

fn write_error(tmp: &NamedTempFile) -> impl FnOnce(io::Error) -> Error {
    Error::io("write temporary file", tmp.path())
}

fn sync(tmp: NamedTempFile) -> Result<NamedTempFile, Error> {
    tmp.as_file().sync_data().map_err(write_error(&tmp))?;
    Ok(tmp)
}

/// Writes `bytes` to a new, synced temporary file.
pub(crate) fn write_temp(
    tmp_dir: &Path,
    prefix: &str,
    bytes: &[u8],
) -> Result<NamedTempFile, Error> {
    let mut tmp = create_temp(tmp_dir, prefix)?;
    tmp.write_all(bytes).map_err(write_error(&tmp))?;
    sync(tmp)
}

/// Copies output `name` into a temporary file. `None` if it holds more than `budget` bytes
/// (the temporary file is then removed).
pub(crate) fn stage(
    tmp_dir: &Path,
    name: &str,
    source: &OutputSource<'_>,
    budget: u64,
) -> Result<Option<Staged>, Error> {
    if let OutputSource::Bytes(bytes) = source {
        if bytes.len() as u64 > budget {
            return Ok(None);
        }
        let tmp = write_temp(tmp_dir, "blob-", bytes)?;
        let content = Content::of(bytes);
        return Ok(Some(Staged { tmp, content }));
    }
    let mut reader = match source {
        OutputSource::Path(path) => {
            Reader::Owned(File::open(path).map_err(read_error(name, source))?)
        }
        OutputSource::File(file) => Reader::At(file, 0),
        OutputSource::Bytes(_) => unreachable!("handled above"),
    };
    let mut tmp = create_temp(tmp_dir, "blob-")?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    let mut buf = vec![0; COPY_BUFFER];
    loop {
        let n = reader.read(&mut buf).map_err(read_error(name, source))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > budget {
            return Ok(None);
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(write_error(&tmp))?;
    }
    let content = Content {
        size,
        hash: hasher.finalize(),
    };
    Ok(Some(Staged {
        tmp: sync(tmp)?,
        content,
    }))
}

/// Reads a source from its start. A caller's open file is read with positional reads so its
/// file offset is left alone.
enum Reader<'a> {
    Owned(File),
    At(&'a File, u64),
}

impl Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let result = match self {
                Reader::Owned(file) => file.read(buf),
                Reader::At(file, offset) => file.read_at(buf, *offset),
            };
            match result {
                Ok(n) => {
                    if let Reader::At(_, offset) = self {
                        *offset += n as u64;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
