//! Read-only tar images: indexed once when mounted, read lazily afterwards.
//!
//! A guest's virtual filesystem can mount a tar file as a read-only tree. Images may be many
//! gigabytes, so this module keeps only what the headers say in memory: at [`Image::open`] it
//! walks the tar headers once, seeking past file data, and builds an index of directories,
//! files and symlinks. File contents stay on host disk and are read on demand with positioned
//! reads at each file's data offset, so an open image costs memory in proportion to its number
//! of entries rather than its size, and many guests can read one [`Image`] at once (there is
//! no shared cursor; [`Image::read_at`] takes `&self`).
//!
//! # The tar is hostile
//!
//! Whoever wrote the image is as untrusted as the guest that reads it, so the index is built to
//! three rules:
//!
//! - **Nothing leaves the image.** Every entry path is reduced to plain components below the
//!   root (a leading `/` or `./`, `.` components and doubled slashes are dropped); a `..`
//!   component, an empty path or a NUL refuses the whole image. The index never walks through
//!   a symlink while it is being built (an entry below a symlink is an error), so a symlink
//!   cannot redirect later entries. Symlink targets are stored verbatim and resolved later by
//!   the caller's path walker inside the guest tree, where `..` and absolute targets are
//!   harmless.
//! - **Memory is bounded by limits, not by the tar.** The index holds at most
//!   [`MAX_ENTRIES`] entries and [`MAX_INDEX_BYTES`] bytes of names and symlink targets. The
//!   `tar` crate buffers GNU long names and PAX records in memory before it hands us an entry;
//!   a `MetaBudget` under its reader caps those reads at [`MAX_META_BYTES`] per entry, so a
//!   long-name record that claims gigabytes is refused instead of read.
//! - **Reads stay inside the entry.** A declared size that runs past the end of the image is
//!   refused at open time, and [`Image::read_at`] clamps every read to the entry's data range,
//!   so a guest never sees the next header or another file's bytes.
//!
//! Anything this module does not understand (devices, FIFOs, sparse files, unknown entry
//! types) refuses the whole image with an [`ImageError`] naming the entry, rather than
//! guessing.
//!
//! # Replacement
//!
//! As with GNU tar extraction, a later entry with the same path replaces the earlier one: it
//! gets a fresh [`EntryId`], so hard links made to the earlier entry keep its data. A
//! directory entry over an existing directory only updates its mode and mtime. A non-directory
//! cannot replace a directory that has children (that would silently drop part of the tree).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tar::{Archive, EntryType};

/// Index of an entry in an [`Image`]; the root is always `0`.
pub type EntryId = u32;

/// Default cap on the entries an image may hold (hard links count as one each).
///
/// Two hundred thousand files is far more than a job's read-only inputs need (a whole
/// CPython standard library is under ten thousand). While the index is built, each entry
/// costs about 400 bytes besides its name (measured: a tar of a million deep one-byte paths
/// peaked near 400 MiB), so this holds a hostile image's index to around 80 MiB plus
/// [`MAX_INDEX_BYTES`] instead of letting a tar of empty headers grow it without end.
pub const MAX_ENTRIES: usize = 200_000;

/// Default cap on the bytes of names and symlink targets the index keeps.
///
/// 64 MiB fits the largest image's entries with names of typical length many times over;
/// beyond that a tar is more likely an attack on host memory than a dataset.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Default cap on the bytes the `tar` crate may read (rather than seek past) to produce one
/// entry: the entry's 512-byte header and any GNU long-name, long-link and PAX records before
/// it, all of which it holds in memory.
///
/// Legitimate records hold a path of at most [`MAX_PATH_BYTES`] plus a few attributes
/// (times, owners, perhaps extended attributes), well under 1 MiB; a record claiming more
/// would only make the host allocate it.
pub const MAX_META_BYTES: u64 = 1 << 20;

/// Longest name component an entry may have, in bytes.
///
/// This is Linux's `NAME_MAX`: a guest cannot create or be expected to handle longer names.
pub const MAX_NAME_BYTES: usize = 255;

/// Longest path (or symlink target) an entry may have, in bytes, as written in the tar.
///
/// This is Linux's `PATH_MAX`, the longest path a guest could ever pass back to name the entry.
pub const MAX_PATH_BYTES: usize = 4096;

/// Permission bits of directories the tar implies but does not list (and of the root, unless
/// the tar lists `./`): what GNU tar gives a directory it has to create under the usual
/// `umask` of `022`.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Characters of an entry's name that an error message shows before cutting it short: enough
/// to recognise the entry, while a hostile 4 KiB name does not flood the logs.
const SHOWN_NAME_CHARS: usize = 200;

const ROOT: EntryId = 0;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// WASI preview 1 `filetype` codes, given as [`EntryMeta::kind_code`].
const WASI_FILETYPE_DIRECTORY: u8 = 3;
const WASI_FILETYPE_REGULAR_FILE: u8 = 4;
const WASI_FILETYPE_SYMBOLIC_LINK: u8 = 7;

/// The hostile-input limits of [`Image::open_with`]; [`Default`] gives the `MAX_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Entries the index may hold, the root and each hard link included.
    pub max_entries: usize,
    /// Bytes of names and symlink targets the index may keep.
    pub max_index_bytes: u64,
    /// Bytes the tar crate may read to produce one entry (see [`MAX_META_BYTES`]); must be at
    /// least 512 for any entry to be read at all.
    pub max_meta_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_entries: MAX_ENTRIES,
            max_index_bytes: MAX_INDEX_BYTES,
            max_meta_bytes: MAX_META_BYTES,
        }
    }
}

/// Why an image cannot be opened. Every variant names the image, and the entry when there is
/// one.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image `{}`: cannot {action}", image.display())]
    Io {
        image: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("image `{}`: not a regular file", image.display())]
    NotAFile { image: PathBuf },
    #[error("image `{}`: malformed tar archive {place}", image.display())]
    Malformed {
        image: PathBuf,
        /// Where parsing stopped: "at its first entry" or "after entry `x`".
        place: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "image `{}`: an extended header (GNU long name or PAX record) {place} takes more than {limit} bytes",
        image.display()
    )]
    MetaTooLarge {
        image: PathBuf,
        place: String,
        limit: u64,
    },
    #[error("image `{}`: entry `{entry}` {fault}", image.display())]
    BadPath {
        image: PathBuf,
        entry: String,
        fault: PathFault,
    },
    #[error("image `{}`: symlink `{entry}` has a target that {fault}", image.display())]
    BadSymlinkTarget {
        image: PathBuf,
        entry: String,
        fault: PathFault,
    },
    #[error("image `{}`: link `{entry}` has no target", image.display())]
    MissingLinkTarget { image: PathBuf, entry: String },
    #[error(
        "image `{}`: hard link `{entry}` points to `{target}`, which is not an earlier file in the image",
        image.display()
    )]
    HardLinkTarget {
        image: PathBuf,
        entry: String,
        target: String,
    },
    #[error("image `{}`: entry `{entry}` is {kind}, which images cannot hold", image.display())]
    Unsupported {
        image: PathBuf,
        entry: String,
        /// What the entry is, with its article: "a character device", "of type `M`".
        kind: String,
    },
    #[error("image `{}`: entry `{entry}` is a sparse file, which images do not support", image.display())]
    Sparse { image: PathBuf, entry: String },
    #[error(
        "image `{}`: entry `{entry}` claims {size} bytes but the image ends at offset {end}",
        image.display()
    )]
    Truncated {
        image: PathBuf,
        entry: String,
        size: u64,
        end: u64,
    },
    #[error("image `{}`: entry `{entry}` has a malformed `{field}` field", image.display())]
    BadHeader {
        image: PathBuf,
        entry: String,
        field: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("image `{}`: entry `{entry}` goes through `{through}`, which is not a directory", image.display())]
    NotADirectory {
        image: PathBuf,
        entry: String,
        through: String,
    },
    #[error("image `{}`: entry `{entry}` would replace a directory that has children", image.display())]
    ReplacesNonEmptyDir { image: PathBuf, entry: String },
    #[error("image `{}`: entry `{entry}` names the image root but is not a directory", image.display())]
    ReplacesRoot { image: PathBuf, entry: String },
    #[error("image `{}`: more than {limit} entries", image.display())]
    TooManyEntries { image: PathBuf, limit: usize },
    #[error("image `{}`: names and symlink targets take more than {limit} bytes", image.display())]
    IndexTooLarge { image: PathBuf, limit: u64 },
}

/// What is wrong with an entry's path or a symlink's target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathFault {
    #[error("is an empty path")]
    Empty,
    #[error("contains a NUL byte")]
    Nul,
    #[error("is not valid UTF-8")]
    NotUtf8,
    #[error("leaves the image (it has a `..` component)")]
    DotDot,
    #[error("has a component of {0} bytes (the limit is {MAX_NAME_BYTES})")]
    LongName(usize),
    #[error("is {0} bytes long (the limit is {MAX_PATH_BYTES})")]
    LongPath(usize),
}

/// What an entry is, as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
}

/// An entry's metadata, as a `stat` would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// The WASI preview 1 `filetype`: 3 for a directory, 4 for a regular file, 7 for a symlink.
    pub kind_code: u8,
    /// File size; 0 for directories, the target's length for symlinks.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 for times before it).
    pub mtime_ns: u64,
    /// Permission bits (`& 0o7777`) from the header.
    pub mode: u32,
    /// `id + 1`, so that no entry has inode 0; hard links share it.
    pub ino: u64,
}

/// A mounted tar image: the open file and the index of its entries.
pub struct Image {
    path: PathBuf,
    file: File,
    entries: Vec<Entry<Children>>,
}

/// A directory's children once the index is built: sorted by name, as `readdir` lists them.
type Children = Vec<(String, EntryId)>;

/// A directory's children while the index is built, when entries arrive in any order.
type BuildChildren = BTreeMap<String, EntryId>;

/// One indexed entry. `C` is how a directory holds its children: a map while the index is
/// built (entries arrive in any order and may replace each other), then a vector sorted by
/// name, which is smaller and already in `readdir` order.
struct Entry<C> {
    node: Node<C>,
    mtime_ns: u64,
    mode: u32,
}

enum Node<C> {
    Dir(C),
    /// The data's absolute offset in the image and its length.
    File {
        offset: u64,
        size: u64,
    },
    Symlink(String),
}

impl Image {
    /// Opens and indexes the tar image at `path` with the default [`ImageLimits`].
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        Image::open_with(path, ImageLimits::default())
    }

    /// Opens and indexes the tar image at `path`, refusing it if it breaks `limits`.
    pub fn open_with(path: &Path, limits: ImageLimits) -> Result<Image, ImageError> {
        let io_error = |action, source| ImageError::Io {
            image: path.to_owned(),
            action,
            source,
        };
        // Check before opening: opening a FIFO would block until a writer came along.
        let pre = std::fs::metadata(path).map_err(|e| io_error("read its metadata", e))?;
        if !pre.is_file() {
            return Err(ImageError::NotAFile {
                image: path.to_owned(),
            });
        }
        let file = File::open(path).map_err(|e| io_error("open it", e))?;
        let metadata = file
            .metadata()
            .map_err(|e| io_error("read its metadata", e))?;
        if !metadata.is_file() {
            return Err(ImageError::NotAFile {
                image: path.to_owned(),
            });
        }
        let entries = Indexer::new(path, limits).run(&file, metadata.len())?;
        Ok(Image {
            path: path.to_owned(),
            file,
            entries,
        })
    }

    /// The root directory, always `0`.
    pub fn root(&self) -> EntryId {
        ROOT
    }

    /// What `id` is. Panics if `id` did not come from this image.
    pub fn kind(&self, id: EntryId) -> EntryKind {
        match self.entry(id).node {
            Node::Dir(_) => EntryKind::Dir,
            Node::File { .. } => EntryKind::File,
            Node::Symlink(_) => EntryKind::Symlink,
        }
    }

    /// The metadata of `id`. Panics if `id` did not come from this image.
    pub fn meta(&self, id: EntryId) -> EntryMeta {
        let entry = self.entry(id);
        let (kind_code, size) = match &entry.node {
            Node::Dir(_) => (WASI_FILETYPE_DIRECTORY, 0),
            Node::File { size, .. } => (WASI_FILETYPE_REGULAR_FILE, *size),
            Node::Symlink(target) => (WASI_FILETYPE_SYMBOLIC_LINK, target.len() as u64),
        };
        EntryMeta {
            kind_code,
            size,
            mtime_ns: entry.mtime_ns,
            mode: entry.mode,
            ino: u64::from(id) + 1,
        }
    }

    /// The child called `name` (a single component) of directory `dir`; `None` if `dir` is not
    /// a directory or has no such child. `.` and `..` are the caller's walker's business.
    pub fn lookup(&self, dir: EntryId, name: &str) -> Option<EntryId> {
        let children = self.children(dir);
        children
            .binary_search_by(|(child, _)| child.as_str().cmp(name))
            .ok()
            .map(|at| children[at].1)
    }

    /// The children of `dir`, sorted by name in byte order; empty if `dir` is not a directory.
    pub fn children(&self, dir: EntryId) -> &[(String, EntryId)] {
        match &self.entry(dir).node {
            Node::Dir(children) => children,
            _ => &[],
        }
    }

    /// The target of symlink `id`, verbatim from the tar; `None` if `id` is not a symlink.
    pub fn symlink_target(&self, id: EntryId) -> Option<&str> {
        match &self.entry(id).node {
            Node::Symlink(target) => Some(target),
            _ => None,
        }
    }

    /// Reads file `id`'s data from `offset` into `buf`, filling as much of `buf` as the file
    /// has left; returns 0 at or after the end. Fails if `id` is not a regular file.
    pub fn read_at(&self, id: EntryId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let (start, size) = match self.entry(id).node {
            Node::File { offset, size } => (offset, size),
            Node::Dir(_) => return Err(io::ErrorKind::IsADirectory.into()),
            Node::Symlink(_) => return Err(io::ErrorKind::InvalidInput.into()),
        };
        if offset >= size {
            return Ok(0);
        }
        let wanted = usize::try_from(size - offset).map_or(buf.len(), |left| left.min(buf.len()));
        let buf = &mut buf[..wanted];
        // No overflow: `open` checked that `start + size` lies within the image.
        let mut pos = start + offset;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], pos) {
                // The index said these bytes exist; if they no longer do, the image was
                // changed underneath us, and a short read would pass for end of file.
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    done += n;
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// The number of entries, the root included (a hard link adds a name, not an entry;
    /// replaced entries still count).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: an image holds at least its root.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The host path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, id: EntryId) -> &Entry<Children> {
        &self.entries[id as usize]
    }
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// What one tar entry adds to the tree.
enum Addition {
    Dir,
    File {
        offset: u64,
        size: u64,
    },
    Symlink(String),
    /// Another name for an entry already in the index.
    HardLink(EntryId),
}

/// Builds the index from the tar's entries, in order, checking every limit as it grows.
struct Indexer<'a> {
    image: &'a Path,
    limits: ImageLimits,
    entries: Vec<Entry<BuildChildren>>,
    /// Entries allocated plus hard links, against `limits.max_entries`.
    records: usize,
    /// Bytes of names and symlink targets held, against `limits.max_index_bytes`.
    index_bytes: u64,
}

impl<'a> Indexer<'a> {
    fn new(image: &'a Path, limits: ImageLimits) -> Self {
        let root = Entry {
            node: Node::Dir(BTreeMap::new()),
            mtime_ns: 0,
            mode: IMPLICIT_DIR_MODE,
        };
        Indexer {
            image,
            limits,
            entries: vec![root],
            records: 1,
            index_bytes: 0,
        }
    }

    fn run(mut self, file: &File, end: u64) -> Result<Vec<Entry<Children>>, ImageError> {
        let budget = MetaBudget::new(self.limits.max_meta_bytes);
        let mut archive = Archive::new(BudgetedFile {
            file,
            budget: &budget,
        });
        let tar_entries = archive
            .entries_with_seek()
            .map_err(|source| self.malformed(None, source))?;
        // Shown name of the last entry read, so that errors can say where the tar went wrong.
        let mut last: Option<String> = None;
        for item in tar_entries {
            let mut tar_entry = match item {
                Ok(tar_entry) => tar_entry,
                Err(_) if budget.spent.get() => {
                    return Err(ImageError::MetaTooLarge {
                        image: self.image.to_owned(),
                        place: place(last.as_deref()),
                        limit: self.limits.max_meta_bytes,
                    });
                }
                Err(source) => return Err(self.malformed(last.as_deref(), source)),
            };
            budget.refill(self.limits.max_meta_bytes);

            let pax = self.pax_facts(&mut tar_entry, last.as_deref())?;
            let raw_path = tar_entry.path_bytes().into_owned();
            let entry = shown(&raw_path);
            let header = tar_entry.header();
            let ty = header.entry_type();

            // Before the size check: for a sparse file the crate reports the size it would
            // have once its holes were filled in, not the bytes in the tar.
            if pax.sparse || ty.is_gnu_sparse() {
                return Err(ImageError::Sparse {
                    image: self.image.to_owned(),
                    entry,
                });
            }

            let offset = tar_entry.raw_file_position();
            let size = tar_entry.size();
            if offset
                .checked_add(size)
                .is_none_or(|data_end| data_end > end)
            {
                return Err(ImageError::Truncated {
                    image: self.image.to_owned(),
                    entry,
                    size,
                    end,
                });
            }

            // Global PAX headers (`git archive` writes one holding the commit id) and GNU
            // volume labels describe the archive, not a file in it.
            if ty.is_pax_global_extensions() || ty.as_byte() == b'V' {
                last = Some(entry);
                continue;
            }

            let bad_header = |field, source| ImageError::BadHeader {
                image: self.image.to_owned(),
                entry: entry.clone(),
                field,
                source,
            };
            let mode = header.mode().map_err(|e| bad_header("mode", e))? & 0o7777;
            let mtime_ns = match pax.mtime_ns {
                Some(ns) => ns,
                None => header
                    .mtime()
                    .map_err(|e| bad_header("mtime", e))?
                    .saturating_mul(NANOS_PER_SEC),
            };

            let addition = match ty {
                // Pre-POSIX tars mark directories only by a trailing slash on a regular entry.
                EntryType::Regular if raw_path.ends_with(b"/") => Addition::Dir,
                EntryType::Regular | EntryType::Continuous => Addition::File { offset, size },
                EntryType::Directory => Addition::Dir,
                EntryType::Symlink => {
                    let target = tar_entry.link_name_bytes().ok_or_else(|| {
                        ImageError::MissingLinkTarget {
                            image: self.image.to_owned(),
                            entry: entry.clone(),
                        }
                    })?;
                    let target =
                        symlink_target(&target).map_err(|fault| ImageError::BadSymlinkTarget {
                            image: self.image.to_owned(),
                            entry: entry.clone(),
                            fault,
                        })?;
                    Addition::Symlink(target)
                }
                EntryType::Link => {
                    let target = tar_entry.link_name_bytes().ok_or_else(|| {
                        ImageError::MissingLinkTarget {
                            image: self.image.to_owned(),
                            entry: entry.clone(),
                        }
                    })?;
                    Addition::HardLink(self.hard_link_target(&entry, &target)?)
                }
                _ => {
                    return Err(ImageError::Unsupported {
                        image: self.image.to_owned(),
                        entry,
                        kind: kind_name(ty),
                    });
                }
            };
            self.add(&raw_path, &entry, addition, mode, mtime_ns)?;
            last = Some(entry);
        }
        Ok(self.finish())
    }

    /// Puts `addition` at `raw_path`, creating missing parent directories.
    fn add(
        &mut self,
        raw_path: &[u8],
        entry: &str,
        addition: Addition,
        mode: u32,
        mtime_ns: u64,
    ) -> Result<(), ImageError> {
        let components = components(raw_path).map_err(|fault| ImageError::BadPath {
            image: self.image.to_owned(),
            entry: entry.to_owned(),
            fault,
        })?;
        let Some((&name, parents)) = components.split_last() else {
            // `./` or `/`: the root itself, which a tar made with `tar -C dir .` lists first.
            if !matches!(addition, Addition::Dir) {
                return Err(ImageError::ReplacesRoot {
                    image: self.image.to_owned(),
                    entry: entry.to_owned(),
                });
            }
            let root = &mut self.entries[ROOT as usize];
            root.mode = mode;
            root.mtime_ns = mtime_ns;
            return Ok(());
        };

        let mut dir = ROOT;
        for (depth, &parent) in parents.iter().enumerate() {
            dir = match self.child(dir, parent) {
                Some(id) if matches!(self.entries[id as usize].node, Node::Dir(_)) => id,
                Some(_) => {
                    return Err(ImageError::NotADirectory {
                        image: self.image.to_owned(),
                        entry: entry.to_owned(),
                        through: components[..=depth].join("/"),
                    });
                }
                None => {
                    let id = self.allocate(Node::Dir(BTreeMap::new()), IMPLICIT_DIR_MODE, 0)?;
                    self.link(dir, parent, id)?;
                    id
                }
            };
        }

        let existing = self.child(dir, name);
        if let Some(old) = existing {
            let old_entry = &mut self.entries[old as usize];
            if let Node::Dir(children) = &old_entry.node {
                if matches!(addition, Addition::Dir) {
                    // GNU tar keeps an existing directory and only applies the new metadata.
                    old_entry.mode = mode;
                    old_entry.mtime_ns = mtime_ns;
                    return Ok(());
                }
                if !children.is_empty() {
                    return Err(ImageError::ReplacesNonEmptyDir {
                        image: self.image.to_owned(),
                        entry: entry.to_owned(),
                    });
                }
            }
        }
        let id = match addition {
            Addition::Dir => self.allocate(Node::Dir(BTreeMap::new()), mode, mtime_ns)?,
            Addition::File { offset, size } => {
                self.allocate(Node::File { offset, size }, mode, mtime_ns)?
            }
            Addition::Symlink(target) => {
                self.charge_bytes(target.len())?;
                self.allocate(Node::Symlink(target), mode, mtime_ns)?
            }
            Addition::HardLink(id) => {
                self.count_record()?;
                id
            }
        };
        self.link(dir, name, id)
    }

    /// The entry a hard link names: an earlier file or symlink, found without creating
    /// anything. The target is a path in the tar, normalised like an entry's.
    fn hard_link_target(&self, entry: &str, target: &[u8]) -> Result<EntryId, ImageError> {
        let refused = || ImageError::HardLinkTarget {
            image: self.image.to_owned(),
            entry: entry.to_owned(),
            target: shown(target),
        };
        let components = components(target).map_err(|_| refused())?;
        let mut id = ROOT;
        for component in &components {
            id = self.child(id, component).ok_or_else(refused)?;
        }
        match self.entries[id as usize].node {
            Node::Dir(_) => Err(refused()),
            Node::File { .. } | Node::Symlink(_) => Ok(id),
        }
    }

    /// The child `name` of `dir`, if `dir` is a directory that has one.
    fn child(&self, dir: EntryId, name: &str) -> Option<EntryId> {
        match &self.entries[dir as usize].node {
            Node::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }

    /// Makes `name` in directory `dir` refer to `id`, replacing whatever it referred to.
    fn link(&mut self, dir: EntryId, name: &str, id: EntryId) -> Result<(), ImageError> {
        let is_new = self.child(dir, name).is_none();
        if is_new {
            self.charge_bytes(name.len())?;
        }
        let Node::Dir(children) = &mut self.entries[dir as usize].node else {
            unreachable!("`add` only links into directories");
        };
        match children.get_mut(name) {
            Some(slot) => *slot = id,
            None => {
                children.insert(name.to_owned(), id);
            }
        }
        Ok(())
    }

    fn allocate(
        &mut self,
        node: Node<BuildChildren>,
        mode: u32,
        mtime_ns: u64,
    ) -> Result<EntryId, ImageError> {
        self.count_record()?;
        let id = EntryId::try_from(self.entries.len()).map_err(|_| self.too_many())?;
        self.entries.push(Entry {
            node,
            mtime_ns,
            mode,
        });
        Ok(id)
    }

    fn count_record(&mut self) -> Result<(), ImageError> {
        self.records += 1;
        if self.records > self.limits.max_entries {
            return Err(self.too_many());
        }
        Ok(())
    }

    fn too_many(&self) -> ImageError {
        ImageError::TooManyEntries {
            image: self.image.to_owned(),
            limit: self.limits.max_entries,
        }
    }

    fn charge_bytes(&mut self, bytes: usize) -> Result<(), ImageError> {
        self.index_bytes = self.index_bytes.saturating_add(bytes as u64);
        if self.index_bytes > self.limits.max_index_bytes {
            return Err(ImageError::IndexTooLarge {
                image: self.image.to_owned(),
                limit: self.limits.max_index_bytes,
            });
        }
        Ok(())
    }

    /// What this entry's PAX records (if any) say that the header cannot: a precise mtime,
    /// and whether the data is a GNU sparse map rather than the file's bytes.
    fn pax_facts<R: Read>(
        &self,
        tar_entry: &mut tar::Entry<'_, R>,
        last: Option<&str>,
    ) -> Result<PaxFacts, ImageError> {
        let mut facts = PaxFacts::default();
        // A global header's records describe the archive, and reading them would read its data.
        if tar_entry.header().entry_type().is_pax_global_extensions() {
            return Ok(facts);
        }
        let records = tar_entry
            .pax_extensions()
            .map_err(|source| self.malformed(last, source))?;
        // Malformed records are skipped, as the tar crate itself skips them when it looks for
        // `path` and `linkpath`.
        for record in records.into_iter().flatten().flatten() {
            let key = record.key_bytes();
            if key == b"mtime" {
                facts.mtime_ns = pax_time_ns(record.value_bytes());
            } else if key.starts_with(b"GNU.sparse.") {
                facts.sparse = true;
            }
        }
        Ok(facts)
    }

    fn malformed(&self, last: Option<&str>, source: io::Error) -> ImageError {
        ImageError::Malformed {
            image: self.image.to_owned(),
            place: place(last),
            source,
        }
    }

    /// Turns each directory's map into a vector sorted by name (a `BTreeMap` iterates in key
    /// order, and `String` orders by bytes).
    fn finish(self) -> Vec<Entry<Children>> {
        self.entries
            .into_iter()
            .map(|entry| Entry {
                node: match entry.node {
                    Node::Dir(children) => Node::Dir(children.into_iter().collect()),
                    Node::File { offset, size } => Node::File { offset, size },
                    Node::Symlink(target) => Node::Symlink(target),
                },
                mtime_ns: entry.mtime_ns,
                mode: entry.mode,
            })
            .collect()
    }
}

#[derive(Default)]
struct PaxFacts {
    mtime_ns: Option<u64>,
    sparse: bool,
}

/// Bytes the tar crate may still read (rather than seek past) before it hands over its next
/// entry. Refilled after every entry; when it runs dry the read fails and `spent` says why.
struct MetaBudget {
    left: Cell<u64>,
    spent: Cell<bool>,
}

impl MetaBudget {
    fn new(bytes: u64) -> Self {
        MetaBudget {
            left: Cell::new(bytes),
            spent: Cell::new(false),
        }
    }

    fn refill(&self, bytes: u64) {
        self.left.set(bytes);
    }
}

/// The image file as the tar crate sees it: seeks are free, reads draw on the budget.
struct BudgetedFile<'a> {
    file: &'a File,
    budget: &'a MetaBudget,
}

impl Read for BudgetedFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.budget.left.get();
        if left == 0 {
            self.budget.spent.set(true);
            return Err(io::Error::other("extended header read budget spent"));
        }
        let allowed = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        let n = self.file.read(&mut buf[..allowed])?;
        self.budget.left.set(left - n as u64);
        Ok(n)
    }
}

impl Seek for BudgetedFile<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// The components of an entry path below the root: a leading `/` or `./`, `.` components and
/// empty components (doubled slashes) are dropped. An empty result is the root itself.
fn components(raw: &[u8]) -> Result<Vec<&str>, PathFault> {
    if raw.is_empty() {
        return Err(PathFault::Empty);
    }
    if raw.contains(&0) {
        return Err(PathFault::Nul);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathFault::LongPath(raw.len()));
    }
    let path = std::str::from_utf8(raw).map_err(|_| PathFault::NotUtf8)?;
    let mut components = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(PathFault::DotDot),
            _ if component.len() > MAX_NAME_BYTES => {
                return Err(PathFault::LongName(component.len()));
            }
            _ => components.push(component),
        }
    }
    Ok(components)
}

/// A symlink target, kept verbatim once it is known to be a plausible path.
fn symlink_target(raw: &[u8]) -> Result<String, PathFault> {
    if raw.is_empty() {
        return Err(PathFault::Empty);
    }
    if raw.contains(&0) {
        return Err(PathFault::Nul);
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathFault::LongPath(raw.len()));
    }
    let target = std::str::from_utf8(raw).map_err(|_| PathFault::NotUtf8)?;
    Ok(target.to_owned())
}

/// A PAX time (`seconds[.fraction]`, possibly negative) in nanoseconds since the epoch;
/// times before it become 0, times past `u64` saturate, and malformed values are ignored.
fn pax_time_ns(value: &[u8]) -> Option<u64> {
    let value = std::str::from_utf8(value).ok()?;
    let (negative, value) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (secs, fraction) = value.split_once('.').unwrap_or((value, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !all_digits(secs) || !all_digits(fraction) {
        return None;
    }
    if negative {
        return Some(0);
    }
    // Only digits remain, so a parse failure means overflow.
    let secs: u64 = secs.parse().unwrap_or(u64::MAX);
    let mut nanos = 0;
    for position in 0..9 {
        let digit = fraction.as_bytes().get(position).map_or(0, |b| b - b'0');
        nanos = nanos * 10 + u64::from(digit);
    }
    Some(secs.saturating_mul(NANOS_PER_SEC).saturating_add(nanos))
}

/// An entry's name as error messages show it: lossy UTF-8, control characters escaped, long
/// names cut short.
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == SHOWN_NAME_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Where in the tar an error happened, for messages.
fn place(last: Option<&str>) -> String {
    match last {
        Some(entry) => format!("after entry `{entry}`"),
        None => "at its first entry".to_owned(),
    }
}

/// An unsupported entry type, as "is ..." in an error message.
fn kind_name(ty: EntryType) -> String {
    match ty {
        EntryType::Char => "a character device".to_owned(),
        EntryType::Block => "a block device".to_owned(),
        EntryType::Fifo => "a FIFO".to_owned(),
        other => {
            let byte = other.as_byte();
            if byte.is_ascii_graphic() {
                format!("of unknown type `{}`", byte as char)
            } else {
                format!("of unknown type {byte:#04x}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use tar::{Builder, Header};

    use super::*;

    /// Writes `bytes` to a temporary file and opens it as an image with `limits`. The file is
    /// returned too, so that it outlives the test's use of the image.
    fn open_bytes_with(
        bytes: &[u8],
        limits: ImageLimits,
    ) -> (tempfile::NamedTempFile, Result<Image, ImageError>) {
        let mut file = tempfile::NamedTempFile::new().expect("create a temporary file");
        file.write_all(bytes).expect("write the image");
        file.flush().expect("flush the image");
        let image = Image::open_with(file.path(), limits);
        (file, image)
    }

    fn open_bytes(bytes: &[u8]) -> (tempfile::NamedTempFile, Result<Image, ImageError>) {
        open_bytes_with(bytes, ImageLimits::default())
    }

    fn tar(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().expect("finish the tar")
    }

    fn header(ty: EntryType, size: u64) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(ty);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header
    }

    /// Appends a file through the crate's checked path handling (GNU long names included).
    fn add_file(builder: &mut Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut header = header(EntryType::Regular, data.len() as u64);
        builder
            .append_data(&mut header, path, data)
            .expect("append a file");
    }

    /// Appends an entry whose name and link name are written into the header verbatim, as a
    /// hostile tar would, bypassing the crate's checks.
    fn add_raw(
        builder: &mut Builder<Vec<u8>>,
        name: &[u8],
        ty: EntryType,
        link: &[u8],
        data: &[u8],
    ) {
        let mut header = header(ty, data.len() as u64);
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_cksum();
        builder.append(&header, data).expect("append a raw entry");
    }

    /// Appends a PAX extended header holding `records` for the entry that follows it.
    fn add_pax(builder: &mut Builder<Vec<u8>>, ty: EntryType, records: &[(&str, &[u8])]) {
        let mut data = Vec::new();
        for (key, value) in records {
            // The length counts itself, so find the width that makes it consistent.
            let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut header = Header::new_ustar();
        header.set_entry_type(ty);
        header.set_size(data.len() as u64);
        header
            .set_path("PaxHeader")
            .expect("set the PAX header's name");
        header.set_cksum();
        builder
            .append(&header, &data[..])
            .expect("append a PAX header");
    }

    fn resolve(image: &Image, path: &str) -> Option<EntryId> {
        path.split('/')
            .try_fold(image.root(), |dir, name| image.lookup(dir, name))
    }

    fn read_all(image: &Image, id: EntryId) -> Vec<u8> {
        let mut buf = vec![0; image.meta(id).size as usize + 10];
        let n = image.read_at(id, 0, &mut buf).expect("read the file");
        buf.truncate(n);
        buf
    }

    fn names(image: &Image, dir: EntryId) -> Vec<&str> {
        image
            .children(dir)
            .iter()
            .map(|(name, _)| name.as_str())
            .collect()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn reads_file_data_at_any_offset_and_never_past_its_end() {
        let data = pattern(1000);
        let bytes = tar(|b| {
            add_file(b, "first", &data);
            add_file(b, "second", b"not part of first");
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        let id = image.lookup(image.root(), "first").unwrap();
        assert_eq!(image.kind(id), EntryKind::File);
        assert_eq!(image.meta(id).size, 1000);

        let mut buf = vec![0; 4096];
        assert_eq!(image.read_at(id, 0, &mut buf).unwrap(), 1000);
        assert_eq!(&buf[..1000], &data[..]);

        let mut buf = [0; 100];
        assert_eq!(image.read_at(id, 500, &mut buf).unwrap(), 100);
        assert_eq!(&buf[..], &data[500..600]);

        // Crossing the end: only what is left of the entry, not the padding or next header.
        let mut buf = [0xAA; 100];
        assert_eq!(image.read_at(id, 990, &mut buf).unwrap(), 10);
        assert_eq!(&buf[..10], &data[990..]);
        assert!(buf[10..].iter().all(|&b| b == 0xAA));

        assert_eq!(image.read_at(id, 1000, &mut buf).unwrap(), 0);
        assert_eq!(image.read_at(id, u64::MAX, &mut buf).unwrap(), 0);
        assert_eq!(image.read_at(id, 3, &mut []).unwrap(), 0);

        let second = image.lookup(image.root(), "second").unwrap();
        assert_eq!(read_all(&image, second), b"not part of first");
    }

    #[test]
    fn metadata_comes_from_the_header() {
        let bytes = tar(|b| {
            let mut h = header(EntryType::Regular, 2);
            // Some writers keep the file-type bits in `mode`; only permissions survive.
            h.set_mode(0o104_755);
            h.set_mtime(42);
            b.append_data(&mut h, "suid", &b"hi"[..]).unwrap();
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        let id = image.lookup(image.root(), "suid").unwrap();
        assert_eq!(
            image.meta(id),
            EntryMeta {
                kind_code: WASI_FILETYPE_REGULAR_FILE,
                size: 2,
                mtime_ns: 42 * NANOS_PER_SEC,
                mode: 0o4755,
                ino: u64::from(id) + 1,
            }
        );
        assert_eq!(image.meta(image.root()).kind_code, WASI_FILETYPE_DIRECTORY);
        assert_eq!(image.meta(image.root()).ino, 1);
    }

    #[test]
    fn pax_mtime_keeps_its_fraction() {
        let bytes = tar(|b| {
            add_pax(b, EntryType::XHeader, &[("mtime", b"1700000000.5")]);
            add_file(b, "precise", b"");
            add_pax(b, EntryType::XHeader, &[("mtime", b"-12.25")]);
            add_file(b, "ancient", b"");
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        let precise = image.lookup(image.root(), "precise").unwrap();
        assert_eq!(image.meta(precise).mtime_ns, 1_700_000_000_500_000_000);
        let ancient = image.lookup(image.root(), "ancient").unwrap();
        assert_eq!(image.meta(ancient).mtime_ns, 0);
    }

    #[test]
    fn pax_time_parses_seconds_and_fractions() {
        assert_eq!(pax_time_ns(b"12"), Some(12 * NANOS_PER_SEC));
        assert_eq!(pax_time_ns(b"1.000000001"), Some(NANOS_PER_SEC + 1));
        assert_eq!(
            pax_time_ns(b"1.1234567899"),
            Some(NANOS_PER_SEC + 123_456_789)
        );
        assert_eq!(pax_time_ns(b"99999999999999999999999"), Some(u64::MAX));
        assert_eq!(pax_time_ns(b"-1"), Some(0));
        assert_eq!(pax_time_ns(b""), None);
        assert_eq!(pax_time_ns(b"1e9"), None);
        assert_eq!(pax_time_ns(b".5"), None);
    }

    #[test]
    fn missing_directories_are_created_and_children_sorted() {
        let bytes = tar(|b| {
            add_file(b, "a/b/c.txt", b"deep");
            add_file(b, "z", b"");
            add_file(b, "B", b"");
            add_file(b, "a2", b"");
            add_file(b, "\u{e9}", b"");
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        assert_eq!(names(&image, image.root()), ["B", "a", "a2", "z", "\u{e9}"]);
        let a = image.lookup(image.root(), "a").unwrap();
        assert_eq!(image.kind(a), EntryKind::Dir);
        assert_eq!(image.meta(a).mode, IMPLICIT_DIR_MODE);
        assert_eq!(image.meta(a).size, 0);
        let b = image.lookup(a, "b").unwrap();
        assert_eq!(image.kind(b), EntryKind::Dir);
        let c = image.lookup(b, "c.txt").unwrap();
        assert_eq!(read_all(&image, c), b"deep");
        // root, a, b, c.txt and four files
        assert_eq!(image.len(), 8);
        assert!(!image.is_empty());
    }

    #[test]
    fn lookup_and_children_outside_directories_find_nothing() {
        let bytes = tar(|b| add_file(b, "dir/file", b"x"));
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        let file = resolve(&image, "dir/file").unwrap();
        assert_eq!(image.lookup(file, "anything"), None);
        assert!(image.children(file).is_empty());
        assert_eq!(image.lookup(image.root(), "dir/file"), None);
        assert_eq!(image.lookup(image.root(), "missing"), None);
        assert_eq!(image.symlink_target(file), None);
        let dir = resolve(&image, "dir").unwrap();
        let err = image.read_at(dir, 0, &mut [0; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::IsADirectory);
    }

    #[test]
    fn paths_are_normalised_below_the_root() {
        let bytes = tar(|b| {
            add_raw(b, b"/etc/passwd", EntryType::Regular, b"", b"root");
            add_raw(b, b"./x//y/./z", EntryType::Regular, b"", b"z");
            add_raw(b, b"//./d/", EntryType::Directory, b"", b"");
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        assert_eq!(names(&image, image.root()), ["d", "etc", "x"]);
        let passwd = resolve(&image, "etc/passwd").unwrap();
        assert_eq!(read_all(&image, passwd), b"root");
        let z = resolve(&image, "x/y/z").unwrap();
        assert_eq!(read_all(&image, z), b"z");
        assert_eq!(image.kind(resolve(&image, "d").unwrap()), EntryKind::Dir);
    }

    #[test]
    fn the_dot_entry_sets_the_root_metadata() {
        let bytes = tar(|b| {
            let mut h = header(EntryType::Directory, 0);
            h.set_mode(0o700);
            h.set_mtime(7);
            h.as_old_mut().name[..2].copy_from_slice(b"./");
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            add_file(b, "./f", b"f");
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        let root = image.meta(image.root());
        assert_eq!((root.mode, root.mtime_ns), (0o700, 7 * NANOS_PER_SEC));
        assert_eq!(names(&image, image.root()), ["f"]);

        let bytes = tar(|b| add_raw(b, b".", EntryType::Regular, b"", b"x"));
        let (_file, err) = open_bytes(&bytes);
        assert!(matches!(err.unwrap_err(), ImageError::ReplacesRoot { .. }));
    }

    #[test]
    fn dot_dot_refuses_the_image() {
        for name in [&b"../x"[..], b"a/../../x", b"a/.."] {
            let bytes = tar(|b| {
                add_file(b, "fine", b"");
                add_raw(b, name, EntryType::Regular, b"", b"escape");
            });
            let (file, err) = open_bytes(&bytes);
            let err = err.unwrap_err();
            assert!(
                matches!(
                    &err,
                    ImageError::BadPath {
                        fault: PathFault::DotDot,
                        ..
                    }
                ),
                "{err:?}"
            );
            let expected = format!(
                "image `{}`: entry `{}` leaves the image",
                file.path().display(),
                String::from_utf8_lossy(name)
            );
            assert!(err.to_string().starts_with(&expected), "{err}");
        }
    }

    #[test]
    fn bad_names_refuse_the_image() {
        let long_component = "n".repeat(MAX_NAME_BYTES + 1);
        let long_path = "d/".repeat(MAX_PATH_BYTES / 2 + 1);
        let cases: [(&[u8], PathFault); 4] = [
            (b"a\0b", PathFault::Nul),
            (b"caf\xe9", PathFault::NotUtf8),
            (
                long_component.as_bytes(),
                PathFault::LongName(MAX_NAME_BYTES + 1),
            ),
            (long_path.as_bytes(), PathFault::LongPath(long_path.len())),
        ];
        for (name, fault) in cases {
            // A GNU long-name record carries names the 100-byte header field cannot.
            let bytes = tar(|b| {
                let mut long = header(EntryType::GNULongName, name.len() as u64 + 1);
                long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
                long.set_cksum();
                b.append(&long, &[name, b"\0"].concat()[..]).unwrap();
                add_raw(b, b"short", EntryType::Regular, b"", b"");
            });
            let (_file, err) = open_bytes(&bytes);
            match err.unwrap_err() {
                ImageError::BadPath { fault: got, .. } => assert_eq!(got, fault),
                other => panic!("expected {fault:?}, got {other:?}"),
            }
        }

        let bytes = tar(|b| {
            let mut h = header(EntryType::Regular, 0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        });
        let (_file, err) = open_bytes(&bytes);
        assert!(matches!(
            err.unwrap_err(),
            ImageError::BadPath {
                fault: PathFault::Empty,
                ..
            }
        ));
    }

    #[test]
    fn error_messages_escape_and_shorten_names() {
        assert_eq!(shown(b"a\nb"), "a\\nb");
        let long = shown("x".repeat(5000).as_bytes());
        assert_eq!(long.chars().count(), SHOWN_NAME_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn long_names_work_through_gnu_and_pax_records() {
        let gnu_path = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        let gnu_target = format!("/{}", "t".repeat(300));
        let pax_path = format!("{}/{}", "p".repeat(200), "q".repeat(200));
        let pax_target = "../".repeat(60);
        let bytes = tar(|b| {
            add_file(b, &gnu_path, b"gnu");
            let mut h = header(EntryType::Symlink, 0);
            b.append_link(&mut h, "gnu-link", &gnu_target).unwrap();
            add_pax(b, EntryType::XHeader, &[("path", pax_path.as_bytes())]);
            add_raw(b, b"truncated-pax-name", EntryType::Regular, b"", b"pax");
            add_pax(
                b,
                EntryType::XHeader,
                &[("path", b"pax-link"), ("linkpath", pax_target.as_bytes())],
            );
            add_raw(b, b"ignored", EntryType::Symlink, b"short-target", b"");
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        assert_eq!(
            read_all(&image, resolve(&image, &gnu_path).unwrap()),
            b"gnu"
        );
        assert_eq!(
            read_all(&image, resolve(&image, &pax_path).unwrap()),
            b"pax"
        );
        let gnu_link = resolve(&image, "gnu-link").unwrap();
        assert_eq!(image.kind(gnu_link), EntryKind::Symlink);
        assert_eq!(image.symlink_target(gnu_link), Some(gnu_target.as_str()));
        assert_eq!(image.meta(gnu_link).size, gnu_target.len() as u64);
        let pax_link = resolve(&image, "pax-link").unwrap();
        assert_eq!(image.symlink_target(pax_link), Some(pax_target.as_str()));
        assert_eq!(resolve(&image, "truncated-pax-name"), None);
        assert_eq!(resolve(&image, "ignored"), None);
    }

    #[test]
    fn symlinks_keep_their_target_verbatim() {
        let bytes = tar(|b| {
            add_raw(b, b"etc", EntryType::Symlink, b"../../../etc", b"");
            add_raw(b, b"abs", EntryType::Symlink, b"/etc/passwd", b"");
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        let etc = image.lookup(image.root(), "etc").unwrap();
        assert_eq!(image.kind(etc), EntryKind::Symlink);
        assert_eq!(image.symlink_target(etc), Some("../../../etc"));
        assert_eq!(image.meta(etc).kind_code, WASI_FILETYPE_SYMBOLIC_LINK);
        assert_eq!(image.meta(etc).size, 12);
        assert!(image.children(etc).is_empty());
        let err = image.read_at(etc, 0, &mut [0; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let abs = image.lookup(image.root(), "abs").unwrap();
        assert_eq!(image.symlink_target(abs), Some("/etc/passwd"));

        let bytes = tar(|b| add_raw(b, b"none", EntryType::Symlink, b"", b""));
        let (_file, err) = open_bytes(&bytes);
        assert!(matches!(
            err.unwrap_err(),
            ImageError::MissingLinkTarget { entry, .. } if entry == "none"
        ));
        let bytes = tar(|b| {
            add_pax(b, EntryType::XHeader, &[("linkpath", b"")]);
            add_raw(b, b"empty", EntryType::Symlink, b"ignored", b"");
        });
        let (_file, err) = open_bytes(&bytes);
        assert!(matches!(
            err.unwrap_err(),
            ImageError::BadSymlinkTarget {
                fault: PathFault::Empty,
                ..
            }
        ));
    }

    #[test]
    fn entries_below_a_symlink_or_file_are_refused() {
        let bytes = tar(|b| {
            add_raw(b, b"link", EntryType::Symlink, b"/etc", b"");
            add_file(b, "link/passwd", b"evil");
        });
        let (_file, err) = open_bytes(&bytes);
        let err = err.unwrap_err();
        assert!(
            matches!(&err, ImageError::NotADirectory { through, .. } if through == "link"),
            "{err:?}"
        );
        assert!(err.to_string().contains("goes through `link`"), "{err}");
    }

    #[test]
    fn hard_links_share_the_earlier_entry() {
        let bytes = tar(|b| {
            add_file(b, "dir/original", b"shared bytes");
            add_raw(b, b"copy", EntryType::Link, b"./dir/original", b"");
            add_raw(b, b"sym", EntryType::Symlink, b"dir", b"");
            add_raw(b, b"sym2", EntryType::Link, b"sym", b"");
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        let original = resolve(&image, "dir/original").unwrap();
        let copy = resolve(&image, "copy").unwrap();
        assert_eq!(copy, original);
        assert_eq!(image.meta(copy).ino, image.meta(original).ino);
        assert_eq!(read_all(&image, copy), b"shared bytes");
        let sym2 = resolve(&image, "sym2").unwrap();
        assert_eq!(image.symlink_target(sym2), Some("dir"));
    }

    #[test]
    fn a_replaced_file_leaves_its_hard_links_alone() {
        let bytes = tar(|b| {
            add_file(b, "f", b"old");
            add_raw(b, b"link", EntryType::Link, b"f", b"");
            add_file(b, "f", b"new");
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        assert_eq!(read_all(&image, resolve(&image, "f").unwrap()), b"new");
        assert_eq!(read_all(&image, resolve(&image, "link").unwrap()), b"old");
    }

    #[test]
    fn hard_links_to_missing_later_or_directory_entries_are_refused() {
        type Build<'a> = &'a dyn Fn(&mut Builder<Vec<u8>>);
        let cases: [Build; 4] = [
            &|b| add_raw(b, b"link", EntryType::Link, b"missing", b""),
            &|b| {
                add_raw(b, b"link", EntryType::Link, b"later", b"");
                add_file(b, "later", b"x");
            },
            &|b| {
                add_file(b, "dir/x", b"x");
                add_raw(b, b"link", EntryType::Link, b"dir", b"");
            },
            &|b| {
                add_file(b, "x", b"x");
                add_raw(b, b"link", EntryType::Link, b"../x", b"");
            },
        ];
        for build in cases {
            let bytes = tar(build);
            let (_file, err) = open_bytes(&bytes);
            let err = err.unwrap_err();
            assert!(
                matches!(&err, ImageError::HardLinkTarget { entry, .. } if entry == "link"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let bytes = tar(|b| {
            add_file(b, "f", b"first");
            add_file(b, "f", b"second");
            add_file(b, "d/child", b"c");
            let mut h = header(EntryType::Directory, 0);
            h.set_mode(0o711);
            b.append_data(&mut h, "d", &[][..]).unwrap();
            b.append_data(&mut header(EntryType::Directory, 0), "empty", &[][..])
                .unwrap();
            add_file(b, "empty", b"now a file");
            add_file(b, "was-file", b"x");
            b.append_data(&mut header(EntryType::Directory, 0), "was-file", &[][..])
                .unwrap();
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        assert_eq!(read_all(&image, resolve(&image, "f").unwrap()), b"second");
        let d = resolve(&image, "d").unwrap();
        assert_eq!(image.meta(d).mode, 0o711);
        assert_eq!(names(&image, d), ["child"]);
        assert_eq!(
            read_all(&image, resolve(&image, "empty").unwrap()),
            b"now a file"
        );
        assert_eq!(
            image.kind(resolve(&image, "was-file").unwrap()),
            EntryKind::Dir
        );

        let bytes = tar(|b| {
            add_file(b, "d/child", b"c");
            add_file(b, "d", b"a file over a tree");
        });
        let (_file, err) = open_bytes(&bytes);
        assert!(matches!(
            err.unwrap_err(),
            ImageError::ReplacesNonEmptyDir { .. }
        ));
    }

    #[test]
    fn a_size_past_the_end_of_the_image_is_refused() {
        let mut bytes = tar(|b| add_file(b, "fine", b"ok"));
        let mut h = header(EntryType::Regular, 1 << 40);
        h.as_old_mut().name[..4].copy_from_slice(b"huge");
        h.set_cksum();
        // Replace the end-of-archive blocks with the lying header and a little data.
        bytes.truncate(1024);
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(&[7; 512]);
        let (file, err) = open_bytes(&bytes);
        let err = err.unwrap_err();
        assert!(matches!(&err, ImageError::Truncated { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "image `{}`: entry `huge` claims 1099511627776 bytes but the image ends at offset 2048",
                file.path().display()
            )
        );
    }

    #[test]
    fn entry_count_is_limited() {
        let limits = ImageLimits {
            max_entries: 10,
            ..ImageLimits::default()
        };
        let bytes = tar(|b| {
            for i in 0..20 {
                add_file(b, &format!("f{i}"), b"");
            }
        });
        let (_file, err) = open_bytes_with(&bytes, limits);
        let err = err.unwrap_err();
        assert!(
            matches!(&err, ImageError::TooManyEntries { limit: 10, .. }),
            "{err:?}"
        );
        assert!(err.to_string().ends_with("more than 10 entries"), "{err}");

        // Implied directories count too: one header cannot make a thousand entries for free.
        let bytes = tar(|b| add_file(b, &format!("{}f", "d/".repeat(12)), b""));
        let (_file, err) = open_bytes_with(&bytes, limits);
        assert!(matches!(
            err.unwrap_err(),
            ImageError::TooManyEntries { .. }
        ));

        // And so do hard links, which add names without adding entries.
        let bytes = tar(|b| {
            add_file(b, "f", b"");
            for i in 0..20 {
                add_raw(b, format!("l{i}").as_bytes(), EntryType::Link, b"f", b"");
            }
        });
        let (_file, err) = open_bytes_with(&bytes, limits);
        assert!(matches!(
            err.unwrap_err(),
            ImageError::TooManyEntries { .. }
        ));

        // Exactly at the limit is fine.
        let bytes = tar(|b| {
            for i in 0..9 {
                add_file(b, &format!("f{i}"), b"");
            }
        });
        let (_file, image) = open_bytes_with(&bytes, limits);
        assert_eq!(image.unwrap().len(), 10);
    }

    #[test]
    fn index_bytes_are_limited() {
        let limits = ImageLimits {
            max_index_bytes: 100,
            ..ImageLimits::default()
        };
        let bytes = tar(|b| {
            for i in 0..10 {
                add_file(b, &format!("{i}{}", "n".repeat(9)), b"");
            }
        });
        let (_file, image) = open_bytes_with(&bytes, limits);
        image.unwrap();

        let bytes = tar(|b| {
            add_file(b, "name", b"");
            add_raw(b, b"l", EntryType::Symlink, &[b't'; 99], b"");
        });
        let (_file, err) = open_bytes_with(&bytes, limits);
        assert!(matches!(
            err.unwrap_err(),
            ImageError::IndexTooLarge { limit: 100, .. }
        ));
    }

    #[test]
    fn oversized_extended_headers_are_refused_before_they_are_read() {
        let comment = vec![b'c'; 10_000];
        let bytes = tar(|b| {
            add_file(b, "before", b"");
            add_pax(b, EntryType::XHeader, &[("comment", &comment)]);
            add_file(b, "after", b"");
        });
        let (_file, image) = open_bytes(&bytes);
        assert!(resolve(&image.unwrap(), "after").is_some());

        let limits = ImageLimits {
            max_meta_bytes: 4096,
            ..ImageLimits::default()
        };
        let (_file, err) = open_bytes_with(&bytes, limits);
        let err = err.unwrap_err();
        assert!(
            matches!(&err, ImageError::MetaTooLarge { place, limit: 4096, .. } if place == "after entry `before`"),
            "{err:?}"
        );

        // The budget is per entry: many small entries in a row do not add up.
        let bytes = tar(|b| {
            for i in 0..100 {
                add_file(b, &format!("f{i}"), b"");
            }
        });
        let (_file, image) = open_bytes_with(&bytes, limits);
        assert_eq!(image.unwrap().len(), 101);
    }

    #[test]
    fn devices_and_fifos_are_refused() {
        for (ty, kind) in [
            (EntryType::Char, "a character device"),
            (EntryType::Block, "a block device"),
            (EntryType::Fifo, "a FIFO"),
            (EntryType::new(b'M'), "of unknown type `M`"),
        ] {
            let bytes = tar(|b| add_raw(b, b"dev/thing", ty, b"", b""));
            let (file, err) = open_bytes(&bytes);
            let err = err.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "image `{}`: entry `dev/thing` is {kind}, which images cannot hold",
                    file.path().display()
                )
            );
        }
    }

    #[test]
    fn sparse_files_are_refused() {
        // An old GNU sparse entry: five bytes of data standing for a 1 MiB file, as GNU tar
        // writes one for a file that is mostly a hole.
        let bytes = tar(|b| {
            let mut h = header(EntryType::GNUSparse, 5);
            h.as_old_mut().name[..6].copy_from_slice(b"sparse");
            let gnu = h.as_gnu_mut().unwrap();
            gnu.sparse[0].offset.copy_from_slice(b"00003777773\0");
            gnu.sparse[0].numbytes.copy_from_slice(b"00000000005\0");
            gnu.realsize.copy_from_slice(b"00004000000\0");
            h.set_cksum();
            b.append(&h, &b"12345"[..]).unwrap();
        });
        let (_file, err) = open_bytes(&bytes);
        let err = err.unwrap_err();
        assert!(
            matches!(&err, ImageError::Sparse { entry, .. } if entry == "sparse"),
            "{err:?}"
        );

        // PAX sparse (format 1.0): a regular entry whose data is a sparse map.
        let bytes = tar(|b| {
            add_pax(
                b,
                EntryType::XHeader,
                &[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")],
            );
            add_file(b, "pax-sparse", b"1\n0\n5\n");
        });
        let (_file, err) = open_bytes(&bytes);
        assert!(matches!(err.unwrap_err(), ImageError::Sparse { .. }));
    }

    #[test]
    fn global_headers_are_skipped() {
        let bytes = tar(|b| {
            add_pax(
                b,
                EntryType::XGlobalHeader,
                &[("comment", b"0123456789abcdef")],
            );
            add_file(b, "file", b"data");
        });
        let (_file, image) = open_bytes(&bytes);
        let image = image.unwrap();
        assert_eq!(names(&image, image.root()), ["file"]);
        assert_eq!(read_all(&image, resolve(&image, "file").unwrap()), b"data");
    }

    #[test]
    fn a_truncated_header_is_refused() {
        let bytes = tar(|b| {
            add_file(b, "one", &pattern(600));
            add_file(b, "two", b"2");
        });
        // "one" takes a header and two data blocks; cut in the middle of the next header.
        let cut = &bytes[..512 * 3 + 100];
        let (_file, err) = open_bytes(cut);
        let err = err.unwrap_err();
        assert!(
            matches!(&err, ImageError::Malformed { place, .. } if place == "after entry `one`"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("malformed tar archive after entry `one`"),
            "{err}"
        );
    }

    #[test]
    fn empty_tars_give_an_empty_root() {
        for bytes in [tar(|_| {}), Vec::new()] {
            let (file, image) = open_bytes(&bytes);
            let image = image.unwrap();
            assert_eq!(image.len(), 1);
            assert_eq!(image.kind(image.root()), EntryKind::Dir);
            assert!(image.children(image.root()).is_empty());
            assert_eq!(image.path(), file.path());
        }
    }

    #[test]
    fn a_file_that_is_not_a_tar_is_refused() {
        let text = "this is not a tar archive\n".repeat(100);
        let (_file, err) = open_bytes(text.as_bytes());
        let err = err.unwrap_err();
        assert!(matches!(&err, ImageError::Malformed { .. }), "{err:?}");
        assert!(
            err.to_string()
                .ends_with("malformed tar archive at its first entry"),
            "{err}"
        );

        let (_file, err) = open_bytes(b"short");
        assert!(matches!(err.unwrap_err(), ImageError::Malformed { .. }));
    }

    #[test]
    fn directories_and_missing_paths_are_not_images() {
        let dir = tempfile::tempdir().unwrap();
        let err = Image::open(dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::NotAFile { .. }), "{err:?}");
        let err = Image::open(&dir.path().join("missing.tar")).unwrap_err();
        assert!(matches!(err, ImageError::Io { .. }), "{err:?}");
    }
}
