//! Eviction: keeping the cache within its bound, least recently used first.
//!
//! Every function here runs under the exclusive lock, so no `put` is between publishing its
//! blobs and its entry: every blob an entry will ever need is either referenced by an entry
//! already on disk or not needed by anyone. That is what makes it safe to delete a blob no
//! entry references, and to treat an entry whose blob is missing as damaged.
//!
//! A pass first removes temporary files older than [`STALE_TEMP_AGE`] (left by crashed
//! processes) and foreign files. Then, if the blobs and entries together exceed the bound
//! (or the caller asked for a full pass), it reads every entry: damaged ones are removed,
//! blobs no entry references are removed, and entries are removed oldest first (by mtime,
//! ties by key, so the order is deterministic) until the total fits, each taking with it
//! the blobs only it referenced. The pass costs a directory listing and a `stat` per file,
//! plus reading every entry when over the bound; it is meant for thousands of entries, not
//! millions.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::entry;
use crate::layout::{Layout, Listed, list, remove, remove_any};
use crate::{Error, Evicted};

/// Temporary files older than this are abandoned (their writer crashed) and removed. A live
/// `put` writes its temporary files continuously and renames them within moments of the
/// last write, so an hour without a write cannot be a live one in practice.
pub(crate) const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// How much of the work a pass does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Only read entries if blobs and entries together exceed the bound (after each `put`).
    IfOverBound,
    /// Always check every entry and collect unreferenced blobs ([`crate::ResultCache::evict`]).
    Full,
}

/// An entry that passed its checks, with what it keeps alive.
struct Live {
    listed: Listed,
    blobs: Vec<blake3::Hash>,
}

/// Brings the cache within `max_bytes`. The caller holds the exclusive lock.
pub(crate) fn evict(layout: &Layout, max_bytes: u64, pass: Pass) -> Result<Evicted, Error> {
    remove_stale_temps(&layout.tmp, SystemTime::now())?;
    let entries = list(&layout.entries)?;
    let blobs = list(&layout.blobs)?;
    for path in entries.foreign.iter().chain(&blobs.foreign) {
        remove_any(path)?;
    }
    let mut evicted = Evicted::default();
    if pass == Pass::IfOverBound && entries.bytes() + blobs.bytes() <= max_bytes {
        return Ok(evicted);
    }

    let blob_sizes: BTreeMap<[u8; 32], u64> = blobs
        .files
        .iter()
        .map(|b| (*b.hash.as_bytes(), b.size))
        .collect();
    let mut refs: BTreeMap<[u8; 32], u32> = BTreeMap::new();
    let mut live = Vec::new();
    for listed in entries.files {
        let present = |c: &entry::Content| blob_sizes.get(c.hash.as_bytes()) == Some(&c.size);
        match read_entry(&listed)? {
            Some(entry) if entry.outputs.iter().all(|(_, c)| present(c)) => {
                let blobs: Vec<_> = entry.outputs.iter().map(|(_, c)| c.hash).collect();
                for hash in &blobs {
                    *refs.entry(*hash.as_bytes()).or_default() += 1;
                }
                live.push(Live { listed, blobs });
            }
            _ => evicted.add_entry(remove(&listed.path)?, listed.size),
        }
    }
    for blob in &blobs.files {
        if !refs.contains_key(blob.hash.as_bytes()) {
            evicted.add_blob(remove(&blob.path)?, blob.size);
        }
    }

    let mut total: u64 = live.iter().map(|e| e.listed.size).sum::<u64>()
        + refs.keys().map(|h| blob_sizes[h]).sum::<u64>();
    live.sort_by(|a, b| {
        (a.listed.modified, a.listed.hash.as_bytes())
            .cmp(&(b.listed.modified, b.listed.hash.as_bytes()))
    });
    for entry in live {
        if total <= max_bytes {
            break;
        }
        evicted.add_entry(remove(&entry.listed.path)?, entry.listed.size);
        total -= entry.listed.size;
        for hash in entry.blobs {
            let count = refs.get_mut(hash.as_bytes()).expect("counted above");
            *count -= 1;
            if *count == 0 {
                let size = blob_sizes[hash.as_bytes()];
                evicted.add_blob(remove(&layout.blob_path(&hash))?, size);
                total -= size;
            }
        }
    }
    Ok(evicted)
}

/// Removes every entry and blob, and stale temporary files. The caller holds the exclusive
/// lock. Temporary files of `put`s in progress are left to them.
pub(crate) fn clear(layout: &Layout) -> Result<(), Error> {
    remove_stale_temps(&layout.tmp, SystemTime::now())?;
    for dir in [&layout.entries, &layout.blobs] {
        let listing = list(dir)?;
        for path in listing
            .files
            .iter()
            .map(|f| &f.path)
            .chain(&listing.foreign)
        {
            remove_any(path)?;
        }
    }
    Ok(())
}

/// Reads and decodes one entry; `None` if it is damaged or gone.
fn read_entry(listed: &Listed) -> Result<Option<entry::Entry>, Error> {
    match fs::read(&listed.path) {
        Ok(bytes) => Ok(entry::decode(&listed.hash, bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read entry", &listed.path)(e)),
    }
}

/// Removes what in `tmp` was last modified more than [`STALE_TEMP_AGE`] before `now`.
pub(crate) fn remove_stale_temps(tmp: &Path, now: SystemTime) -> Result<(), Error> {
    let read = match fs::read_dir(tmp) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", tmp)(e)),
    };
    let mut stale: Vec<PathBuf> = Vec::new();
    for item in read {
        let item = item.map_err(Error::io("list", tmp))?;
        let Ok(modified) = item.metadata().and_then(|m| m.modified()) else {
            continue; // vanished: its put renamed or dropped it
        };
        if now
            .duration_since(modified)
            .is_ok_and(|age| age > STALE_TEMP_AGE)
        {
            stale.push(item.path());
        }
    }
    for path in stale {
        remove_any(&path)?;
    }
    Ok(())
}
