//! The result cache: outputs of earlier successful runs, kept so a run need not be repeated.
//!
//! zvm runs are deterministic: the same program, manifest and inputs give the same outputs, byte
//! for byte. So when a caller computes a key from the program hash, the canonical manifest and the
//! input etags, and an earlier successful run had the same key, the caller can hand out the earlier
//! outputs instead of running again. This crate only stores and retrieves; it knows nothing of VMs,
//! manifests or what the record it keeps means.
//!
//! # A guided tour
//!
//! **Layout.** Everything lives under a layout version directory, so a future format sits beside
//! this one instead of being misread by it (module `layout`):
//!
//! ```text
//! <dir>/v1/lock                  advisory lock file (flock)
//! <dir>/v1/entries/<key hex>     one entry per key: JSON header line + the caller's record
//! <dir>/v1/blobs/<blake3 hex>    output contents, named by their BLAKE3 (shared by entries)
//! <dir>/v1/tmp/                  temporary files being written, renamed into place when done
//! ```
//!
//! Directories are created with mode 0700 and files with 0600. An entry names, for each output, the
//! blob holding it with its size; the format is described in module `entry`. Blobs are
//! content-addressed, so identical outputs of different runs (or of one run) are stored once.
//!
//! **Writing.** [`ResultCache::put`] copies each output into a temporary file while hashing it,
//! with no lock held (module `stage`); each is synced to disk. It then takes the lock *shared*,
//! renames each blob into `blobs/` (or drops it if an intact blob of that hash is already there),
//! renames the entry into `entries/` last, and releases the lock. Every file appears by `rename`,
//! so a reader sees a whole file or none. Finally it takes the lock *exclusive* and runs an
//! eviction pass.
//!
//! **Reading.** [`ResultCache::get`] takes no lock. It reads the entry, checks it, and opens every
//! blob it names, checking each one's size, before returning: the [`Hit`] holds open files, so an
//! eviction that unlinks them afterwards cannot take the content away. Anything missing or damaged
//! (unparsable entry, wrong record hash, missing blob, blob of the wrong size) is a miss. A damaged
//! entry is then removed under the exclusive lock, but only if the file at the entry's path is
//! still the very one that was read (same device, inode, size, mtime and ctime): an entry that
//! vanished or was replaced by a concurrent eviction or `put` was a race, not damage. Blob contents
//! are not re-hashed on a hit (that would read every byte twice); they were hashed when written and
//! synced before being published, and each [`HitOutput`] carries its BLAKE3 so a caller can verify
//! while copying.
//!
//! **Locking protocol.** Publishing (shared) and eviction, clear and damage removal (exclusive)
//! exclude each other. Under the exclusive lock, then, no `put` is between publishing its blobs and
//! its entry, so every blob a completed `put` published is referenced by its entry, and a blob no
//! entry references is garbage. Eviction therefore never deletes a blob a completed `put` needs,
//! and a `put` never publishes an entry whose blobs were deleted after it checked them. Readers
//! need no lock because they treat anything vanished as a miss. The lock file is opened afresh for
//! every acquisition (module `lock`), so threads exclude each other as processes do.
//!
//! **Recency.** An entry's mtime is its last use: `put` sets it when it publishes the entry, and
//! every hit sets it to the current time through the descriptor it read the entry from
//! (`futimens`). The mtime was chosen over a separate index because it costs one syscall and no
//! extra file to keep consistent across processes, and over atime because atime updates are often
//! disabled (`noatime`, `relatime`). Both times are set explicitly from the clock rather than left
//! to the filesystem, whose timestamps can be a tick coarse.
//!
//! **Eviction.** Size is the bytes of blobs plus the bytes of entry files. After every `put`
//! (module `evict`), if the total is over the bound, damaged entries and unreferenced blobs go
//! first, then entries oldest first (ties by key, so the order is deterministic), each with the
//! blobs only it used, until the total fits. Temporary files older than an hour, left by crashed
//! processes, are removed by every pass. An entry whose record plus outputs would take more than a
//! quarter of the bound ([`MAX_ENTRY_FRACTION`]) is not stored at all, so one run can never flush
//! most of the cache.

mod entry;
mod error;
mod evict;
mod layout;
mod lock;
mod stage;

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

pub use error::Error;

use entry::Content;
use evict::Pass;
use layout::Layout;
use lock::{LockMode, lock};

/// One entry (record, outputs and the entry's own header) may take at most this fraction of
/// the cache's bound: a quarter keeps at least four results around, so one large run cannot
/// flush everything else, while still caching outputs of a useful size.
pub const MAX_ENTRY_FRACTION: u64 = 4;

/// A result cache in a directory, shared safely by any number of threads and processes.
#[derive(Debug, Clone)]
pub struct ResultCache {
    layout: Layout,
    max_bytes: u64,
}

/// Where an output to be stored comes from.
#[derive(Debug, Clone, Copy)]
pub enum OutputSource<'a> {
    /// A host file, copied in.
    Path(&'a Path),
    /// An open file, read from offset 0 to its end with positional reads (its file offset is
    /// left alone).
    File(&'a File),
    /// Bytes in memory.
    Bytes(&'a [u8]),
}

/// What a hit returns: the record and every output, ready to copy.
#[derive(Debug)]
pub struct Hit {
    /// The record stored with the entry, byte for byte.
    pub record: Vec<u8>,
    /// The outputs, sorted by name.
    pub outputs: Vec<HitOutput>,
}

/// One output of a hit.
#[derive(Debug)]
pub struct HitOutput {
    pub name: String,
    /// The stored content, open for reading at offset 0. Still readable if the blob is
    /// evicted meanwhile.
    pub file: File,
    /// The content's size; the file's size was checked against it.
    pub size: u64,
    /// The BLAKE3 of the content, lowercase hex (what zvm reports as the output's etag).
    pub blake3: String,
}

/// What [`ResultCache::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The entry is stored; the eviction pass that followed removed `evicted`.
    Written { evicted: Evicted },
    /// Not stored: record, outputs and header together exceed `limit` bytes
    /// (the bound divided by [`MAX_ENTRY_FRACTION`]).
    TooLarge { limit: u64 },
}

/// What an eviction pass removed (damaged entries and unreferenced blobs included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub entries: u64,
    pub blobs: u64,
    pub bytes: u64,
}

impl Evicted {
    fn add_entry(&mut self, removed: bool, size: u64) {
        if removed {
            self.entries += 1;
            self.bytes += size;
        }
    }

    fn add_blob(&mut self, removed: bool, size: u64) {
        if removed {
            self.blobs += 1;
            self.bytes += size;
        }
    }
}

/// How much the cache holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of entry files and blobs (what the bound limits).
    pub bytes: u64,
    pub entries: u64,
    /// Blobs on disk, including any no entry references yet (collected by the next pass
    /// that finds the cache over its bound, or by [`ResultCache::evict`]).
    pub blobs: u64,
}

/// Which file was read, to tell damage from a concurrent replacement. The inode number alone
/// is not enough (a freed inode is soon reused); the mtime, which every `put` and hit sets
/// from the clock to the nanosecond, tells a new entry from an old one in the same inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl ResultCache {
    /// Opens the cache at `dir`, creating its directories (mode 0700) as needed, bounded to
    /// `max_bytes` of blobs and entries.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<ResultCache, Error> {
        let layout = Layout::new(dir);
        layout.create()?;
        Ok(ResultCache { layout, max_bytes })
    }

    /// The bound given to [`ResultCache::open`].
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The most one entry (record, outputs and header) may take.
    pub fn entry_limit(&self) -> u64 {
        self.max_bytes / MAX_ENTRY_FRACTION
    }

    /// Looks up `key`. On a hit, every output's file is already open, and the entry's
    /// recency is refreshed. Anything missing or damaged is a miss, never an error; a
    /// damaged entry is removed.
    pub fn get(&self, key: &[u8; 32]) -> Result<Option<Hit>, Error> {
        let key = blake3::Hash::from_bytes(*key);
        let path = self.layout.entry_path(&key);
        let Some((file, identity, bytes)) = read_entry(&path)? else {
            return Ok(None);
        };
        let Some(entry) = entry::decode(&key, bytes) else {
            return self.discard(&path, identity);
        };
        let mut outputs = Vec::with_capacity(entry.outputs.len());
        for (name, content) in entry.outputs {
            let Some(blob) = self.open_blob(&content)? else {
                return self.discard(&path, identity);
            };
            outputs.push(HitOutput {
                name,
                file: blob,
                size: content.size,
                blake3: content.hash.to_hex().to_string(),
            });
        }
        // Recency is advisory: if it cannot be recorded (a read-only cache), the hit is
        // still good and the entry is merely evicted a little early.
        let _ = file.set_modified(SystemTime::now());
        Ok(Some(Hit {
            record: entry.record,
            outputs,
        }))
    }

    /// Stores `record` and `outputs` under `key`, replacing any entry it had, then evicts
    /// until the cache is within its bound. Output names must be unique. Returns
    /// [`Stored::TooLarge`] (storing nothing) when the entry would exceed
    /// [`ResultCache::entry_limit`].
    pub fn put(
        &self,
        key: &[u8; 32],
        record: &[u8],
        outputs: &[(String, OutputSource<'_>)],
    ) -> Result<Stored, Error> {
        let key = blake3::Hash::from_bytes(*key);
        let limit = self.entry_limit();
        let mut sorted: Vec<&(String, OutputSource<'_>)> = outputs.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            let name = pair[0].0.clone();
            return Err(Error::DuplicateOutput { name });
        }

        // A cheap early refusal before copying anything; the copy enforces the limit again,
        // since files can grow meanwhile.
        let mut size = record.len() as u64;
        for (name, source) in &sorted {
            size = size.saturating_add(stage::current_size(name, source)?);
        }
        if size > limit {
            return Ok(Stored::TooLarge { limit });
        }

        let mut staged = Vec::with_capacity(sorted.len());
        let mut size = record.len() as u64;
        for (name, source) in sorted {
            let Some(blob) = stage::stage(&self.layout.tmp, name, source, limit - size)? else {
                return Ok(Stored::TooLarge { limit });
            };
            size += blob.content.size;
            staged.push((name.clone(), blob));
        }
        let contents: Vec<(String, Content)> = staged
            .iter()
            .map(|(name, s)| (name.clone(), s.content))
            .collect();
        let entry_bytes = entry::encode(&key, record, &contents);
        if size - record.len() as u64 + entry_bytes.len() as u64 > limit {
            return Ok(Stored::TooLarge { limit });
        }
        let entry_tmp = stage::write_temp(&self.layout.tmp, "entry-", &entry_bytes)?;

        {
            let _shared = lock(&self.layout.lock, LockMode::Shared)?;
            for (_, blob) in staged {
                self.publish_blob(blob)?;
            }
            let entry_path = self.layout.entry_path(&key);
            entry_tmp
                .as_file()
                .set_modified(SystemTime::now())
                .map_err(Error::io("set the time of", entry_tmp.path()))?;
            entry_tmp
                .persist(&entry_path)
                .map_err(|e| Error::io("rename into", &entry_path)(e.error))?;
        }

        let _exclusive = lock(&self.layout.lock, LockMode::Exclusive)?;
        let evicted = evict::evict(&self.layout, self.max_bytes, Pass::IfOverBound)?;
        Ok(Stored::Written { evicted })
    }

    /// Counts what the cache holds.
    pub fn usage(&self) -> Result<Usage, Error> {
        let _shared = lock(&self.layout.lock, LockMode::Shared)?;
        let entries = layout::list(&self.layout.entries)?;
        let blobs = layout::list(&self.layout.blobs)?;
        Ok(Usage {
            bytes: entries.bytes() + blobs.bytes(),
            entries: entries.files.len() as u64,
            blobs: blobs.files.len() as u64,
        })
    }

    /// A full eviction pass: checks every entry (removing damaged ones), removes blobs no
    /// entry references and stale temporary files, then evicts least recently used entries
    /// until the cache is within its bound.
    pub fn evict(&self) -> Result<Evicted, Error> {
        let _exclusive = lock(&self.layout.lock, LockMode::Exclusive)?;
        evict::evict(&self.layout, self.max_bytes, Pass::Full)
    }

    /// Removes every entry and blob (and stale temporary files). A concurrent `put` that
    /// publishes afterwards still stores its entry.
    pub fn clear(&self) -> Result<(), Error> {
        let _exclusive = lock(&self.layout.lock, LockMode::Exclusive)?;
        evict::clear(&self.layout)
    }

    /// Opens the blob holding `content`; `None` if it is missing or has the wrong size.
    fn open_blob(&self, content: &Content) -> Result<Option<File>, Error> {
        let path = self.layout.blob_path(&content.hash);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open blob", &path)(e)),
        };
        let meta = file.metadata().map_err(Error::io("inspect", &path))?;
        Ok((meta.is_file() && meta.len() == content.size).then_some(file))
    }

    /// Renames a staged blob into `blobs/`, unless an intact blob of that content is already
    /// there (then the staged copy is dropped). The caller holds the shared lock, so no
    /// eviction can remove the existing blob before the entry referencing it is published.
    fn publish_blob(&self, blob: stage::Staged) -> Result<(), Error> {
        let path = self.layout.blob_path(&blob.content.hash);
        let intact =
            fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == blob.content.size);
        if !intact {
            blob.tmp
                .persist(&path)
                .map_err(|e| Error::io("rename into", &path)(e.error))?;
        }
        Ok(())
    }

    /// Removes the damaged entry at `path` if it is still the file that was read, and
    /// reports the miss.
    fn discard(&self, path: &Path, read: Identity) -> Result<Option<Hit>, Error> {
        let _exclusive = lock(&self.layout.lock, LockMode::Exclusive)?;
        let current = match fs::symlink_metadata(path) {
            Ok(meta) => Identity::of(&meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("inspect", path)(e)),
        };
        if current == read && layout::remove(path)? {
            #[cfg(test)]
            tests::DISCARDED.with(|n| n.set(n.get() + 1));
        }
        Ok(None)
    }
}

/// Opens and reads an entry file; `None` if there is none.
fn read_entry(path: &Path) -> Result<Option<(File, Identity, Vec<u8>)>, Error> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open entry", path)(e)),
    };
    let meta = file.metadata().map_err(Error::io("inspect", path))?;
    if !meta.is_file() {
        return Ok(None); // foreign; the next eviction pass removes it
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)
        .map_err(Error::io("read entry", path))?;
    Ok(Some((file, Identity::of(&meta), bytes)))
}
