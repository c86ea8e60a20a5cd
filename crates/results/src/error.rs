//! The one error type of the result cache.
//!
//! A damaged or vanished entry is never an error (it is a miss); what remains are the host
//! failing us (permissions, a full disk, I/O errors) and a caller handing `put` something it
//! cannot store.

use std::io;
use std::path::{Path, PathBuf};

/// Why a result cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory of the cache itself could not be created, read, written, locked
    /// or removed.
    #[error("result cache: cannot {action} `{}`", path.display())]
    Io {
        /// What was being done, as a verb phrase ("create directory", "lock", ...).
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An output to be stored could not be read from where the caller said it is.
    #[error("result cache: cannot read output `{name}` from {from}")]
    ReadOutput {
        name: String,
        /// Where the bytes were coming from: a path in backticks, or "an open file".
        from: String,
        #[source]
        source: io::Error,
    },
    /// Two outputs of one `put` have the same name.
    #[error("result cache: output `{name}` is given twice")]
    DuplicateOutput { name: String },
}

impl Error {
    /// Wraps an I/O error on a cache path; used as `.map_err(Error::io("lock", &path))`.
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
