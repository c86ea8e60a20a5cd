//! The few file system steps the atomicity protocol is built from, each with its error
//! context: fsyncing a directory (so that a rename or unlink in it survives a crash), and
//! creating and removing the store's own directories.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Makes the entries of directory `path` durable: the renames, creations and removals done in
/// it so far survive a crash once this returns.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .op("fsync directory", path)
}

/// [`sync_dir`], where the directory may have gone since (a bucket deleted concurrently):
/// then there is nothing left to make durable.
pub(crate) fn sync_dir_if_exists(path: &Path) -> Result<()> {
    match File::open(path) {
        Ok(d) => d.sync_all().op("fsync directory", path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).op("open directory", path),
    }
}

/// Creates directory `path` unless it exists; whether it was created.
pub(crate) fn ensure_dir(path: &Path) -> Result<bool> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).op("create directory", path),
    }
}

/// Removes a file or a whole tree; what is already gone is fine.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).op("remove", path),
        _ => Ok(()),
    }
}

/// Removes a file; what is already gone is fine. Whether it was there.
pub(crate) fn remove_file(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).op("remove", path),
    }
}

/// Writes `bytes` to a new file at `path` and fsyncs it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = File::create(path).op("create", path)?;
    file.write_all(bytes).op("write", path)?;
    file.sync_all().op("fsync", path)
}
