//! Where things live on disk, and the few filesystem primitives every operation shares.
//!
//! Everything sits under a layout version directory (`<dir>/v1`), so a later zvm that changes
//! the entry format uses `v2` beside it and never misreads what this version wrote. Entries
//! and blobs are named by the lowercase hex of a 32-byte hash; any other name found in those
//! directories is foreign and is ignored by readers and removed by eviction.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::Error;

/// The name of the layout version directory. Bump it whenever the entry format or the
/// meaning of a file changes, so old and new zvm never read each other's files.
pub(crate) const LAYOUT_VERSION: &str = "v1";

/// Cache directories are private to the user: outputs of runs may be confidential, and a
/// writable cache would let someone else forge results.
const DIR_MODE: u32 = 0o700;

/// The paths of one cache.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub entries: PathBuf,
    pub blobs: PathBuf,
    pub tmp: PathBuf,
    pub lock: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        let root = dir.join(LAYOUT_VERSION);
        Layout {
            entries: root.join("entries"),
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
            lock: root.join("lock"),
        }
    }

    /// Creates the directories that do not exist yet, each with mode 0700.
    pub fn create(&self) -> Result<(), Error> {
        for dir in [&self.entries, &self.blobs, &self.tmp] {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(Error::io("create directory", dir))?;
        }
        Ok(())
    }

    pub fn entry_path(&self, key: &blake3::Hash) -> PathBuf {
        self.entries.join(key.to_hex().as_str())
    }

    pub fn blob_path(&self, hash: &blake3::Hash) -> PathBuf {
        self.blobs.join(hash.to_hex().as_str())
    }
}

/// Parses a hash written as 64 lowercase hex digits, the only form this cache writes (so
/// that one hash has exactly one file name, and no name can climb out of its directory).
pub(crate) fn parse_hex(text: &str) -> Option<blake3::Hash> {
    let hash = blake3::Hash::from_hex(text).ok()?;
    (hash.to_hex().as_str() == text).then_some(hash)
}

fn parse_hex_name(name: &OsStr) -> Option<blake3::Hash> {
    parse_hex(name.to_str()?)
}

/// One regular file of `entries/` or `blobs/`.
#[derive(Debug)]
pub(crate) struct Listed {
    pub hash: blake3::Hash,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
}

/// What a directory of hash-named files holds.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Files with a proper name, sorted by name.
    pub files: Vec<Listed>,
    /// Anything else (other names, directories, symlinks).
    pub foreign: Vec<PathBuf>,
}

impl Listing {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Lists `dir`. Files that vanish while we look (a concurrent eviction) are skipped.
pub(crate) fn list(dir: &Path) -> Result<Listing, Error> {
    let mut listing = Listing::default();
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(listing),
        Err(e) => return Err(Error::io("list", dir)(e)),
    };
    for item in read {
        let item = item.map_err(Error::io("list", dir))?;
        let path = item.path();
        // `DirEntry::metadata` does not follow symlinks, so a symlink is foreign.
        let meta = match item.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("inspect", &path)(e)),
        };
        match parse_hex_name(&item.file_name()) {
            Some(hash) if meta.is_file() => listing.files.push(Listed {
                hash,
                size: meta.len(),
                modified: meta.modified().map_err(Error::io("inspect", &path))?,
                path,
            }),
            _ => listing.foreign.push(path),
        }
    }
    listing
        .files
        .sort_by(|a, b| a.hash.as_bytes().cmp(b.hash.as_bytes()));
    listing.foreign.sort();
    Ok(listing)
}

/// Removes a file; one that is already gone is fine (someone else removed it first).
/// Returns whether this call removed it.
pub(crate) fn remove(path: &Path) -> Result<bool, Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

/// Removes a foreign path, a directory included.
pub(crate) fn remove_any(path: &Path) -> Result<(), Error> {
    let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    let result = if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_hex_names_are_hashes() {
        let hash = blake3::hash(b"x");
        let hex = hash.to_hex();
        assert_eq!(parse_hex(hex.as_str()), Some(hash));
        assert_eq!(parse_hex(&hex.as_str().to_uppercase()), None);
        assert_eq!(parse_hex(&hex.as_str()[1..]), None);
        assert_eq!(parse_hex("../../etc/passwd"), None);
        assert_eq!(parse_hex(&format!("{hex}.json")), None);
    }
}
