//! The cache-wide advisory lock (`flock` on `v1/lock`).
//!
//! Each acquisition opens the lock file afresh: `flock` locks belong to an open file
//! description, so two threads sharing one descriptor would silently share one lock instead
//! of excluding each other. The lock is released when the guard (and with it the descriptor)
//! is dropped, and by the kernel if the process dies, so a crashed zvm never wedges the cache.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::Error;

/// How the lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockMode {
    /// Publishing a put's blobs and entry; many at once.
    Shared,
    /// Eviction, clear and removal of damaged entries; alone.
    Exclusive,
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct LockGuard {
    _file: File,
}

/// Blocks until the lock at `path` is held in `mode`.
pub(crate) fn lock(path: &Path, mode: LockMode) -> Result<LockGuard, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("open lock file", path))?;
    let operation = match mode {
        LockMode::Shared => FlockOperation::LockShared,
        LockMode::Exclusive => FlockOperation::LockExclusive,
    };
    loop {
        match rustix::fs::flock(&file, operation) {
            Ok(()) => return Ok(LockGuard { _file: file }),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::io("lock", path)(e.into())),
        }
    }
}
