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
//!
//! # Compressed images
//!
//! An image whose file starts with the gzip magic bytes is a `.tar.gz` (whatever its name).
//! gzip cannot be read at an offset, so such an image is decompressed once, at open, into
//! memory, at most [`MAX_DECOMPRESSED_BYTES`] of it, and indexed and read from there exactly
//! as a plain tar is from disk (see `source.rs`). Nothing is unpacked to host disk.
//!
//! # Layers
//!
//! [`Image::open_layers`] stacks several tars into one read-only tree, later layers on top,
//! with the union semantics of OCI image layers:
//!
//! - A file or symlink in a layer hides whatever the layers below have at its path, a whole
//!   directory included; a directory in a layer replaces a file or symlink below it.
//! - A directory present in a layer and below merges: the children of both, the upper
//!   layer's winning on a clash (by the same rules, recursively). The merged directory keeps
//!   the lower directory's inode number, and takes the upper layer's mode and mtime only if
//!   the upper tar lists the directory itself (a directory it merely implies, as the parent
//!   of an entry, changes nothing).
//! - Whiteouts: an entry `.wh.<name>` (of any type) deletes `<name>`, and everything below
//!   it, from the layers below; `.wh..wh..opq` in a directory deletes everything the layers
//!   below have in it. A layer's whiteouts apply before its own entries are laid over the
//!   layers below, so they never affect their own layer, whatever the order in its tar. A
//!   whiteout is a marker only: it is never shown, in any layer (the lowest layer's have
//!   nothing to delete), it does not imply its parent directory, and a path that goes through
//!   a `.wh.` component refuses the image.
//!
//! Each layer is indexed on its own, by the rules above, into one index: entry ids (and so
//! inode numbers) are given in layer order and entry order, the same for the same tars every
//! time, and each file entry remembers which layer's bytes it reads. The limits apply to the
//! index as a whole: [`ImageLimits::max_entries`] counts the entries of every layer, hidden
//! ones included, since they were indexed. Hard links stay within their own layer.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tar::{Archive, EntryType};

use self::source::{ReadSeek, Source};

mod source;

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

/// Default cap on the bytes a gzip-compressed image may decompress to.
///
/// A compressed image is held whole in memory for as long as it is mounted (gzip cannot be
/// read at an offset), so this bounds what one can cost the host: 1 GiB holds a large
/// language runtime's library several times over (a full CPython with NumPy is a few hundred
/// MiB), while a gzip bomb, whose deflate data can expand over a thousandfold, is stopped
/// there. An image bigger than this should be mounted as a plain tar, which is read in place
/// and costs no memory for its contents.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// The prefix of a whiteout entry's name, which deletes the rest of the name from the layers
/// below (the OCI image layer convention).
const WHITEOUT_PREFIX: &str = ".wh.";

/// The name of an opaque whiteout, which hides everything the layers below have in its
/// directory.
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

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
    #[error("image `{}`: malformed gzip data", image.display())]
    Gzip {
        image: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "image `{}`: decompresses to more than {limit} bytes, the most a compressed image may hold in memory; mount it as a plain tar instead",
        image.display()
    )]
    DecompressedTooLarge { image: PathBuf, limit: u64 },
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
    #[error("goes through a whiteout (a `.wh.` name), which can only end a path")]
    ThroughWhiteout,
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

/// A mounted tar image: its layers (one, unless it was opened with
/// [`Image::open_layers`]) and the index of their entries.
pub struct Image {
    layers: Vec<Layer>,
    entries: Vec<Entry<Children>>,
}

/// One tar of an image: where it is on the host, and its bytes.
struct Layer {
    path: PathBuf,
    source: Source,
}

/// A directory's children once the index is built: sorted by name, as `readdir` lists them.
type Children = Vec<(String, EntryId)>;

/// A directory while the index is built, when entries arrive in any order.
#[derive(Default)]
struct BuildDir {
    children: BTreeMap<String, EntryId>,
    /// Whether the tar lists the directory itself, rather than only implying it as the parent
    /// of an entry: only a listed directory's mode and mtime override a lower layer's.
    listed: bool,
}

/// A whiteout entry of a layer: what it deletes from the layers below.
struct Whiteout {
    /// The components of the directory it is in.
    dir: Vec<String>,
    /// The name it deletes there; `None` for an opaque whiteout, which deletes every name.
    name: Option<String>,
}

/// One indexed entry. `C` is how a directory is held: a [`BuildDir`] while the index is
/// built (entries arrive in any order and may replace each other), then a vector of children
/// sorted by name, which is smaller and already in `readdir` order.
struct Entry<C> {
    node: Node<C>,
    mtime_ns: u64,
    mode: u32,
}

enum Node<C> {
    Dir(C),
    /// The layer whose bytes hold the data, the data's absolute offset in the layer's tar, and
    /// its length.
    File {
        layer: u32,
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

    /// Opens and indexes the tar image at `path`, refusing it if it breaks `limits`; a
    /// compressed image may decompress to at most [`MAX_DECOMPRESSED_BYTES`].
    pub fn open_with(path: &Path, limits: ImageLimits) -> Result<Image, ImageError> {
        Image::open_layers_with(&[path], limits, MAX_DECOMPRESSED_BYTES)
    }

    /// Opens the tar images at `layers` as one tree, each on top of those before it (see the
    /// [module documentation](self#layers)), with the default limits. Panics if `layers` is
    /// empty.
    pub fn open_layers(layers: &[&Path]) -> Result<Image, ImageError> {
        Image::open_layers_with(layers, ImageLimits::default(), MAX_DECOMPRESSED_BYTES)
    }

    /// [`Image::open_layers`], refusing the stack if its index breaks `limits` or a
    /// compressed layer decompresses to more than `max_decompressed_bytes`. Panics if `layers`
    /// is empty.
    pub fn open_layers_with(
        layers: &[&Path],
        limits: ImageLimits,
        max_decompressed_bytes: u64,
    ) -> Result<Image, ImageError> {
        assert!(!layers.is_empty(), "an image has at least one layer");
        let mut opened = Vec::with_capacity(layers.len());
        let mut stack = Stack::default();
        for (number, path) in layers.iter().enumerate() {
            let source = Source::open(path, max_decompressed_bytes)?;
            let indexer = Indexer::new(path, number, limits, &stack)?;
            let index = source.with_reader(|reader| indexer.run(reader, source.len()))?;
            stack.push(path, limits, index)?;
            opened.push(Layer {
                path: path.to_path_buf(),
                source,
            });
        }
        Ok(Image {
            layers: opened,
            entries: stack.finish(),
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
        let (layer, start, size) = match self.entry(id).node {
            Node::File {
                layer,
                offset,
                size,
            } => (layer, offset, size),
            Node::Dir(_) => return Err(io::ErrorKind::IsADirectory.into()),
            Node::Symlink(_) => return Err(io::ErrorKind::InvalidInput.into()),
        };
        if offset >= size {
            return Ok(0);
        }
        let wanted = usize::try_from(size - offset).map_or(buf.len(), |left| left.min(buf.len()));
        let buf = &mut buf[..wanted];
        // No overflow: `open` checked that `start + size` lies within the layer.
        self.layers[layer as usize]
            .source
            .read_exact_at(buf, start + offset)?;
        Ok(wanted)
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

    /// The host path the image was opened from; for layers, the lowest layer's.
    pub fn path(&self) -> &Path {
        &self.layers[0].path
    }

    /// The host paths of the image's layers, lowest first, and whether each was decompressed
    /// into memory.
    pub fn layers(&self) -> impl ExactSizeIterator<Item = (&Path, bool)> {
        self.layers
            .iter()
            .map(|layer| (layer.path.as_path(), layer.source.is_compressed()))
    }

    fn entry(&self, id: EntryId) -> &Entry<Children> {
        &self.entries[id as usize]
    }
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("layers", &self.layers().collect::<Vec<_>>())
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

/// One layer's index, its ids counted from its own root at `0`, its whiteouts, and what the
/// index of the layers up to and including it has spent of the limits.
struct LayerIndex {
    entries: Vec<Entry<BuildDir>>,
    whiteouts: Vec<Whiteout>,
    records: usize,
    index_bytes: u64,
}

/// Builds one layer's index from its tar's entries, in order, checking every limit as it
/// grows.
struct Indexer<'a> {
    image: &'a Path,
    /// The layer's number, lowest first, which its file entries read from.
    layer: u32,
    limits: ImageLimits,
    entries: Vec<Entry<BuildDir>>,
    whiteouts: Vec<Whiteout>,
    /// Entries allocated plus hard links and whiteouts, in this layer and those below,
    /// against `limits.max_entries`.
    records: usize,
    /// Bytes of names and symlink targets held, in this layer and those below, against
    /// `limits.max_index_bytes`.
    index_bytes: u64,
}

impl<'a> Indexer<'a> {
    /// An indexer for layer number `layer`, on top of the layers in `below`.
    fn new(
        image: &'a Path,
        layer: usize,
        limits: ImageLimits,
        below: &Stack,
    ) -> Result<Self, ImageError> {
        let mut indexer = Indexer {
            image,
            layer: 0,
            limits,
            entries: Vec::new(),
            whiteouts: Vec::new(),
            records: below.records,
            index_bytes: below.index_bytes,
        };
        indexer.layer = u32::try_from(layer).map_err(|_| indexer.too_many())?;
        let root = indexer.allocate(Node::Dir(BuildDir::default()), IMPLICIT_DIR_MODE, 0)?;
        debug_assert_eq!(root, ROOT);
        Ok(indexer)
    }

    fn run(mut self, reader: &mut dyn ReadSeek, end: u64) -> Result<LayerIndex, ImageError> {
        let budget = MetaBudget::new(self.limits.max_meta_bytes);
        let mut archive = Archive::new(Budgeted {
            inner: reader,
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
        Ok(LayerIndex {
            entries: self.entries,
            whiteouts: self.whiteouts,
            records: self.records,
            index_bytes: self.index_bytes,
        })
    }

    /// Puts `addition` at `raw_path`, creating missing parent directories; or, if the name is
    /// a whiteout, only records it.
    fn add(
        &mut self,
        raw_path: &[u8],
        entry: &str,
        addition: Addition,
        mode: u32,
        mtime_ns: u64,
    ) -> Result<(), ImageError> {
        let bad_path = |fault| ImageError::BadPath {
            image: self.image.to_owned(),
            entry: entry.to_owned(),
            fault,
        };
        let components = components(raw_path).map_err(bad_path)?;
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
            if let Node::Dir(dir) = &mut root.node {
                dir.listed = true;
            }
            return Ok(());
        };
        // A whiteout is a marker, not a directory: nothing can be below it.
        if parents.iter().any(|p| p.starts_with(WHITEOUT_PREFIX)) {
            return Err(bad_path(PathFault::ThroughWhiteout));
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(parents, name, hidden);
        }

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
                    let id = self.allocate(Node::Dir(BuildDir::default()), IMPLICIT_DIR_MODE, 0)?;
                    self.link(dir, parent, id)?;
                    id
                }
            };
        }

        let existing = self.child(dir, name);
        if let Some(old) = existing {
            let old_entry = &mut self.entries[old as usize];
            if let Node::Dir(old_dir) = &mut old_entry.node {
                if matches!(addition, Addition::Dir) {
                    // GNU tar keeps an existing directory and only applies the new metadata.
                    old_entry.mode = mode;
                    old_entry.mtime_ns = mtime_ns;
                    old_dir.listed = true;
                    return Ok(());
                }
                if !old_dir.children.is_empty() {
                    return Err(ImageError::ReplacesNonEmptyDir {
                        image: self.image.to_owned(),
                        entry: entry.to_owned(),
                    });
                }
            }
        }
        let id = match addition {
            Addition::Dir => {
                let dir = BuildDir {
                    listed: true,
                    ..BuildDir::default()
                };
                self.allocate(Node::Dir(dir), mode, mtime_ns)?
            }
            Addition::File { offset, size } => {
                let layer = self.layer;
                let file = Node::File {
                    layer,
                    offset,
                    size,
                };
                self.allocate(file, mode, mtime_ns)?
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

    /// Records the whiteout `name` (`.wh.<hidden>`) in the directory `dir`: it counts
    /// against the limits like an entry, since the index keeps it until the layer is stacked.
    fn whiteout(&mut self, dir: &[&str], name: &str, hidden: &str) -> Result<(), ImageError> {
        self.count_record()?;
        let name = (name != OPAQUE_WHITEOUT).then(|| hidden.to_owned());
        let bytes =
            dir.iter().map(|c| c.len()).sum::<usize>() + name.as_ref().map_or(0, String::len);
        self.charge_bytes(bytes)?;
        self.whiteouts.push(Whiteout {
            dir: dir.iter().map(|c| c.to_string()).collect(),
            name,
        });
        Ok(())
    }

    /// The child `name` of `dir`, if `dir` is a directory that has one.
    fn child(&self, dir: EntryId, name: &str) -> Option<EntryId> {
        match &self.entries[dir as usize].node {
            Node::Dir(dir) => dir.children.get(name).copied(),
            _ => None,
        }
    }

    /// Makes `name` in directory `dir` refer to `id`, replacing whatever it referred to.
    fn link(&mut self, dir: EntryId, name: &str, id: EntryId) -> Result<(), ImageError> {
        let is_new = self.child(dir, name).is_none();
        if is_new {
            self.charge_bytes(name.len())?;
        }
        let Node::Dir(dir) = &mut self.entries[dir as usize].node else {
            unreachable!("`add` only links into directories");
        };
        match dir.children.get_mut(name) {
            Some(slot) => *slot = id,
            None => {
                dir.children.insert(name.to_owned(), id);
            }
        }
        Ok(())
    }

    fn allocate(
        &mut self,
        node: Node<BuildDir>,
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
}

/// The layers indexed so far, merged into one tree, and what that index has spent of the
/// limits.
#[derive(Default)]
struct Stack {
    entries: Vec<Entry<BuildDir>>,
    records: usize,
    index_bytes: u64,
}

impl Stack {
    /// Puts the layer `upper` (from the image at `image`) on top of the stack.
    ///
    /// The layer's whiteouts delete from the stack first. Then its entries are appended, their
    /// ids shifted past the stack's, and its root is merged into the stack's root: each
    /// directory present in both is merged in turn (a work list rather than recursion, since a
    /// hostile tar may nest two thousand deep). Only directories reachable from the root
    /// change; entries the layer hides stay in the index, unreachable, so that ids, and so
    /// inode numbers, depend only on the tars.
    fn push(
        &mut self,
        image: &Path,
        limits: ImageLimits,
        upper: LayerIndex,
    ) -> Result<(), ImageError> {
        self.records = upper.records;
        self.index_bytes = upper.index_bytes;
        if self.entries.is_empty() {
            // The lowest layer: its whiteouts have nothing to delete.
            self.entries = upper.entries;
            return Ok(());
        }
        for whiteout in &upper.whiteouts {
            self.delete(whiteout);
        }
        let too_many = || ImageError::TooManyEntries {
            image: image.to_owned(),
            limit: limits.max_entries,
        };
        // Every id of the merged index, the last one included, must fit an `EntryId`.
        EntryId::try_from(self.entries.len() + upper.entries.len()).map_err(|_| too_many())?;
        let offset = EntryId::try_from(self.entries.len()).map_err(|_| too_many())?;
        self.entries
            .extend(upper.entries.into_iter().map(|mut entry| {
                if let Node::Dir(dir) = &mut entry.node {
                    for id in dir.children.values_mut() {
                        *id += offset;
                    }
                }
                entry
            }));

        let mut todo = vec![(ROOT, offset + ROOT)];
        while let Some((lower, upper)) = todo.pop() {
            let upper_dir = match &mut self.entries[upper as usize].node {
                Node::Dir(dir) => std::mem::take(dir),
                _ => unreachable!("only directories are merged"),
            };
            if upper_dir.listed {
                let (mode, mtime_ns) = {
                    let entry = &self.entries[upper as usize];
                    (entry.mode, entry.mtime_ns)
                };
                let entry = &mut self.entries[lower as usize];
                entry.mode = mode;
                entry.mtime_ns = mtime_ns;
            }
            for (name, id) in upper_dir.children {
                match self.child(lower, &name) {
                    Some(below) if self.is_dir(below) && self.is_dir(id) => {
                        todo.push((below, id));
                    }
                    _ => {
                        self.dir_mut(lower).children.insert(name, id);
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes what `whiteout` names from the stack, if the stack has it.
    fn delete(&mut self, whiteout: &Whiteout) {
        let mut dir = ROOT;
        for component in &whiteout.dir {
            match self.child(dir, component) {
                Some(child) if self.is_dir(child) => dir = child,
                _ => return,
            }
        }
        let children = &mut self.dir_mut(dir).children;
        match &whiteout.name {
            Some(name) => {
                children.remove(name);
            }
            None => children.clear(),
        }
    }

    /// The child `name` of `dir`, if `dir` is a directory that has one.
    fn child(&self, dir: EntryId, name: &str) -> Option<EntryId> {
        match &self.entries[dir as usize].node {
            Node::Dir(dir) => dir.children.get(name).copied(),
            _ => None,
        }
    }

    fn is_dir(&self, id: EntryId) -> bool {
        matches!(self.entries[id as usize].node, Node::Dir(_))
    }

    fn dir_mut(&mut self, id: EntryId) -> &mut BuildDir {
        match &mut self.entries[id as usize].node {
            Node::Dir(dir) => dir,
            _ => unreachable!("entry {id} is merged as a directory"),
        }
    }

    /// Turns each directory's map into a vector sorted by name (a `BTreeMap` iterates in key
    /// order, and `String` orders by bytes).
    fn finish(self) -> Vec<Entry<Children>> {
        self.entries
            .into_iter()
            .map(|entry| Entry {
                node: match entry.node {
                    Node::Dir(dir) => Node::Dir(dir.children.into_iter().collect()),
                    Node::File {
                        layer,
                        offset,
                        size,
                    } => Node::File {
                        layer,
                        offset,
                        size,
                    },
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

/// A layer's tar as the tar crate sees it: seeks are free, reads draw on the budget.
struct Budgeted<'a> {
    inner: &'a mut dyn ReadSeek,
    budget: &'a MetaBudget,
}

impl Read for Budgeted<'_> {
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
        let n = self.inner.read(&mut buf[..allowed])?;
        self.budget.left.set(left - n as u64);
        Ok(n)
    }
}

impl Seek for Budgeted<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
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

    // ----- compressed images --------------------------------------------------------------

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("compress");
        encoder.finish().expect("finish compressing")
    }

    /// Writes each layer to a temporary file and opens them as one image, lowest first. The
    /// files are returned too, so that they outlive the test's use of the image.
    fn open_layers_with(
        layers: &[&[u8]],
        limits: ImageLimits,
        max_decompressed: u64,
    ) -> (Vec<tempfile::NamedTempFile>, Result<Image, ImageError>) {
        let files: Vec<tempfile::NamedTempFile> = layers
            .iter()
            .map(|bytes| {
                let mut file = tempfile::NamedTempFile::new().expect("create a temporary file");
                file.write_all(bytes).expect("write the layer");
                file
            })
            .collect();
        let paths: Vec<&Path> = files.iter().map(|f| f.path()).collect();
        let image = Image::open_layers_with(&paths, limits, max_decompressed);
        (files, image)
    }

    fn open_layers(layers: &[&[u8]]) -> (Vec<tempfile::NamedTempFile>, Result<Image, ImageError>) {
        open_layers_with(layers, ImageLimits::default(), MAX_DECOMPRESSED_BYTES)
    }

    /// The tree as the guest would list it, depth first in `readdir` order: `dir/`,
    /// `file = content`, `link -> target`.
    fn tree(image: &Image) -> Vec<String> {
        fn walk(image: &Image, prefix: &str, dir: EntryId, out: &mut Vec<String>) {
            for (name, id) in image.children(dir) {
                let path = format!("{prefix}{name}");
                match image.kind(*id) {
                    EntryKind::Dir => {
                        out.push(format!("{path}/"));
                        walk(image, &format!("{path}/"), *id, out);
                    }
                    EntryKind::File => out.push(format!(
                        "{path} = {}",
                        String::from_utf8_lossy(&read_all(image, *id))
                    )),
                    EntryKind::Symlink => {
                        out.push(format!("{path} -> {}", image.symlink_target(*id).unwrap()))
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(image, "", image.root(), &mut out);
        out
    }

    /// [`tree`] with every entry's metadata, inode included: what `stat` would tell apart.
    fn view(image: &Image) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![(String::from("."), image.root())];
        while let Some((path, id)) = todo.pop() {
            let meta = image.meta(id);
            let detail = match image.kind(id) {
                EntryKind::Dir => {
                    for (name, child) in image.children(id).iter().rev() {
                        todo.push((format!("{path}/{name}"), *child));
                    }
                    String::new()
                }
                EntryKind::File => format!("{:?}", read_all(image, id)),
                EntryKind::Symlink => image.symlink_target(id).unwrap().to_owned(),
            };
            out.push(format!("{path} {meta:?} {detail}"));
        }
        out
    }

    /// A tar of everything the index handles: directories listed and implied, files around
    /// block sizes, a symlink, a hard link, a long name.
    fn varied_tar() -> Vec<u8> {
        tar(|b| {
            let mut h = header(EntryType::Directory, 0);
            h.set_mode(0o700);
            b.append_data(&mut h, "dir", &[][..]).unwrap();
            for len in [0, 1, 511, 512, 513, 3000] {
                add_file(b, &format!("dir/f{len}"), &pattern(len));
            }
            add_file(b, "implied/deeper/leaf", b"leaf");
            add_raw(b, b"sym", EntryType::Symlink, b"dir/f1", b"");
            add_raw(b, b"hard", EntryType::Link, b"dir/f512", b"");
            add_file(b, &format!("{}/long", "n".repeat(150)), b"long name");
        })
    }

    #[test]
    fn a_gzip_image_reads_like_its_plain_tar() {
        let plain = varied_tar();
        let (_plain_file, plain_image) = open_bytes(&plain);
        let plain_image = plain_image.unwrap();
        let (_gz_file, gz_image) = open_bytes(&gzip(&plain));
        let gz_image = gz_image.unwrap();
        assert_eq!(view(&gz_image), view(&plain_image));
        assert_eq!(gz_image.len(), plain_image.len());
        assert!(gz_image.layers().all(|(_, compressed)| compressed));
        assert!(plain_image.layers().all(|(_, compressed)| !compressed));

        // Reads at any offset stay inside the entry, as from disk.
        let id = resolve(&gz_image, "dir/f3000").unwrap();
        let mut buf = vec![0; 700];
        assert_eq!(gz_image.read_at(id, 2500, &mut buf).unwrap(), 500);
        assert_eq!(&buf[..500], &pattern(3000)[2500..]);
        assert_eq!(gz_image.read_at(id, 3000, &mut buf).unwrap(), 0);
        assert_eq!(gz_image.read_at(id, u64::MAX, &mut buf).unwrap(), 0);
    }

    #[test]
    fn gzip_is_known_by_its_magic_bytes_not_the_file_name() {
        let plain = varied_tar();
        let dir = tempfile::tempdir().unwrap();
        let (gz_named_tar, tar_named_gz) = (dir.path().join("a.tar"), dir.path().join("b.tgz"));
        std::fs::write(&gz_named_tar, gzip(&plain)).unwrap();
        std::fs::write(&tar_named_gz, &plain).unwrap();
        let a = Image::open(&gz_named_tar).unwrap();
        let b = Image::open(&tar_named_gz).unwrap();
        assert_eq!(view(&a), view(&b));
        assert_eq!(a.layers().map(|(_, gz)| gz).collect::<Vec<_>>(), [true]);
        assert_eq!(b.layers().map(|(_, gz)| gz).collect::<Vec<_>>(), [false]);
    }

    #[test]
    fn a_gzip_bomb_is_refused_when_it_reaches_the_limit() {
        // 16 MiB of zeros in a tar compresses to about 16 KiB.
        let bomb = gzip(&tar(|b| add_file(b, "zeros", &vec![0; 16 << 20])));
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let limit = 1 << 20;
        let (files, err) = open_layers_with(&[&bomb], ImageLimits::default(), limit);
        let err = err.unwrap_err();
        assert!(
            matches!(
                &err,
                ImageError::DecompressedTooLarge { limit: 1048576, .. }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "image `{}`: decompresses to more than 1048576 bytes, the most a compressed \
                 image may hold in memory; mount it as a plain tar instead",
                files[0].path().display()
            )
        );
        // They fit a limit exactly as large as they are: a header, the data and the two
        // zero blocks that end a tar.
        let size = 512 + (16 << 20) + 1024;
        let (_files, image) = open_layers_with(&[&bomb], ImageLimits::default(), size);
        let image = image.unwrap();
        assert_eq!(image.meta(resolve(&image, "zeros").unwrap()).size, 16 << 20);
    }

    #[test]
    fn corrupt_gzip_is_refused_naming_the_image() {
        let good = gzip(&varied_tar());
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        for byte in &mut flipped[middle..middle + 8] {
            *byte ^= 0x55;
        }
        let mut bad_crc = good.clone();
        let crc_at = bad_crc.len() - 8;
        bad_crc[crc_at] ^= 1;
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"trailing garbage");
        let cases: [(&str, &[u8]); 5] = [
            ("flipped", &flipped),
            ("cut short", &good[..good.len() - 20]),
            ("bad checksum", &bad_crc),
            ("header only", &[0x1f, 0x8b]),
            ("trailing garbage", &trailing),
        ];
        for (case, bytes) in cases {
            let (file, err) = open_bytes(bytes);
            let Err(err) = err else {
                panic!("{case}: a corrupt gzip image was accepted");
            };
            assert!(matches!(err, ImageError::Gzip { .. }), "{case}: {err:?}");
            let prefix = format!("image `{}`: malformed gzip data", file.path().display());
            assert_eq!(err.to_string(), prefix, "{case}");
            assert!(std::error::Error::source(&err).is_some(), "{case}");
        }
    }

    #[test]
    fn a_gzip_image_holding_a_bad_tar_is_refused_like_the_tar() {
        let bytes = tar(|b| add_raw(b, b"../evil", EntryType::Regular, b"", b"x"));
        let (file, err) = open_bytes(&gzip(&bytes));
        assert_eq!(
            err.unwrap_err().to_string(),
            format!(
                "image `{}`: entry `../evil` leaves the image (it has a `..` component)",
                file.path().display()
            )
        );
        let (_file, err) = open_bytes(&gzip(b"not a tar at all, but compressed"));
        assert!(matches!(err.unwrap_err(), ImageError::Malformed { .. }));
    }

    // ----- layers ---------------------------------------------------------------------------

    #[test]
    fn a_later_layer_hides_the_same_path_in_an_earlier_one() {
        let lower = tar(|b| {
            add_file(b, "same.txt", b"lower");
            add_file(b, "lower-only.txt", b"kept");
            add_raw(b, b"link", EntryType::Symlink, b"same.txt", b"");
        });
        let upper = tar(|b| {
            add_file(b, "same.txt", b"upper");
            add_file(b, "upper-only.txt", b"added");
            add_raw(b, b"link", EntryType::Symlink, b"upper-only.txt", b"");
        });
        let (_files, image) = open_layers(&[&lower, &upper]);
        assert_eq!(
            tree(&image.unwrap()),
            [
                "link -> upper-only.txt",
                "lower-only.txt = kept",
                "same.txt = upper",
                "upper-only.txt = added",
            ]
        );
        // The order is what decides.
        let (_files, image) = open_layers(&[&upper, &lower]);
        assert_eq!(
            tree(&image.unwrap()),
            [
                "link -> same.txt",
                "lower-only.txt = kept",
                "same.txt = lower",
                "upper-only.txt = added",
            ]
        );
    }

    #[test]
    fn directories_of_layers_merge_recursively() {
        let lower = tar(|b| {
            let mut h = header(EntryType::Directory, 0);
            h.set_mode(0o700);
            h.set_mtime(100);
            b.append_data(&mut h, "listed", &[][..]).unwrap();
            add_file(b, "listed/a", b"lower a");
            add_file(b, "listed/b", b"lower b");
            add_file(b, "listed/deep/x", b"lower x");
            let mut h = header(EntryType::Directory, 0);
            h.set_mode(0o711);
            b.append_data(&mut h, "implied", &[][..]).unwrap();
            add_file(b, "implied/old", b"old");
        });
        let upper = tar(|b| {
            let mut h = header(EntryType::Directory, 0);
            h.set_mode(0o750);
            h.set_mtime(200);
            b.append_data(&mut h, "listed", &[][..]).unwrap();
            add_file(b, "listed/b", b"upper b");
            add_file(b, "listed/c", b"upper c");
            add_file(b, "listed/deep/y", b"upper y");
            // Only implied here: the lower directory's mode stays.
            add_file(b, "implied/new", b"new");
        });
        let (_files, image) = open_layers(&[&lower, &upper]);
        let image = image.unwrap();
        assert_eq!(
            tree(&image),
            [
                "implied/",
                "implied/new = new",
                "implied/old = old",
                "listed/",
                "listed/a = lower a",
                "listed/b = upper b",
                "listed/c = upper c",
                "listed/deep/",
                "listed/deep/x = lower x",
                "listed/deep/y = upper y",
            ]
        );
        let listed = resolve(&image, "listed").unwrap();
        assert_eq!(image.meta(listed).mode, 0o750);
        assert_eq!(image.meta(listed).mtime_ns, 200 * NANOS_PER_SEC);
        assert_eq!(image.meta(resolve(&image, "implied").unwrap()).mode, 0o711);

        // A merged directory keeps the lower layer's inode: entries of a single-layer image
        // of the lower tar have the same numbers.
        let (_file, alone) = open_bytes(&lower);
        let alone = alone.unwrap();
        for path in ["listed", "listed/deep", "implied", "listed/a"] {
            assert_eq!(
                image.meta(resolve(&image, path).unwrap()).ino,
                alone.meta(resolve(&alone, path).unwrap()).ino,
                "{path}"
            );
        }
    }

    #[test]
    fn a_file_replaces_a_directory_below_and_a_directory_replaces_a_file() {
        let lower = tar(|b| {
            add_file(b, "was-dir/child", b"hidden with its directory");
            add_file(b, "was-dir/sub/deeper", b"hidden too");
            add_file(b, "was-file", b"replaced by a directory");
            add_file(b, "was-link-target/inside", b"x");
            add_raw(b, b"was-link", EntryType::Symlink, b"was-link-target", b"");
        });
        let upper = tar(|b| {
            add_file(b, "was-dir", b"now a file");
            add_file(b, "was-file/inside", b"a directory now");
            // Implied by its child, a directory still replaces the symlink: it is not followed.
            add_file(b, "was-link/new", b"not in was-link-target");
        });
        let (_files, image) = open_layers(&[&lower, &upper]);
        assert_eq!(
            tree(&image.unwrap()),
            [
                "was-dir = now a file",
                "was-file/",
                "was-file/inside = a directory now",
                "was-link/",
                "was-link/new = not in was-link-target",
                "was-link-target/",
                "was-link-target/inside = x",
            ]
        );
    }

    #[test]
    fn whiteouts_delete_entries_of_the_layers_below() {
        let lower = tar(|b| {
            add_file(b, "gone", b"x");
            add_file(b, "gone-dir/child", b"x");
            add_file(b, "dir/gone", b"x");
            add_file(b, "dir/kept", b"kept");
            add_file(b, "opaque/hidden", b"x");
            add_file(b, "opaque/sub/hidden", b"x");
            add_file(b, "readded", b"lower");
            // In the lowest layer, a whiteout has nothing to hide, and is not shown.
            add_file(b, ".wh.nothing", b"");
        });
        let upper = tar(|b| {
            add_file(b, ".wh.gone", b"");
            add_raw(b, b".wh.gone-dir", EntryType::Directory, b"", b"");
            add_file(b, "dir/.wh.gone", b"");
            add_file(b, "dir/.wh.never-existed", b"");
            add_file(b, "opaque/.wh..wh..opq", b"");
            add_file(b, "opaque/new", b"only this");
            // A whiteout does not touch its own layer, whichever comes first in the tar.
            add_file(b, "readded", b"upper");
            add_file(b, ".wh.readded", b"");
            add_file(b, ".wh.upper-too", b"");
            add_file(b, "upper-too", b"upper too");
            // Nothing to delete: neither implies a directory, nor goes through a file.
            add_file(b, "absent/.wh.x", b"");
            add_file(b, "dir/kept/.wh.y", b"");
        });
        let (_files, image) = open_layers(&[&lower, &upper]);
        assert_eq!(
            tree(&image.unwrap()),
            [
                "dir/",
                "dir/kept = kept",
                "opaque/",
                "opaque/new = only this",
                "readded = upper",
                "upper-too = upper too",
            ]
        );

        // A third layer can bring a deleted name back.
        let third = tar(|b| add_file(b, "gone", b"back"));
        let (_files, image) = open_layers(&[&lower, &upper, &third]);
        assert!(tree(&image.unwrap()).contains(&"gone = back".to_owned()));
    }

    #[test]
    fn a_path_through_a_whiteout_is_refused() {
        let bytes = tar(|b| add_file(b, "dir/.wh.x/y", b"below a marker"));
        let (_file, err) = open_bytes(&bytes);
        let err = err.unwrap_err();
        assert!(
            matches!(
                &err,
                ImageError::BadPath {
                    fault: PathFault::ThroughWhiteout,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().ends_with(
            "entry `dir/.wh.x/y` goes through a whiteout (a `.wh.` name), which can only end a path"
        ));
    }

    #[test]
    fn hard_links_keep_their_own_layer_data() {
        let lower = tar(|b| {
            add_file(b, "f", b"lower data");
            add_raw(b, b"link", EntryType::Link, b"f", b"");
        });
        let upper = tar(|b| add_file(b, "f", b"upper data"));
        let (_files, image) = open_layers(&[&lower, &upper]);
        let image = image.unwrap();
        assert_eq!(
            read_all(&image, resolve(&image, "f").unwrap()),
            b"upper data"
        );
        assert_eq!(
            read_all(&image, resolve(&image, "link").unwrap()),
            b"lower data"
        );
        // A hard link cannot reach into another layer.
        let upper = tar(|b| add_raw(b, b"link2", EntryType::Link, b"f", b""));
        let (_files, err) = open_layers(&[&lower, &upper]);
        assert!(matches!(
            err.unwrap_err(),
            ImageError::HardLinkTarget { .. }
        ));
    }

    #[test]
    fn plain_and_gzip_layers_mix() {
        let lower = tar(|b| {
            add_file(b, "from-plain", b"plain bytes");
            add_file(b, "both", b"plain");
        });
        let upper = gzip(&tar(|b| {
            add_file(b, "from-gzip", b"gzip bytes");
            add_file(b, "both", b"gzip");
        }));
        let (files, image) = open_layers(&[&lower, &upper]);
        let image = image.unwrap();
        assert_eq!(
            tree(&image),
            [
                "both = gzip",
                "from-gzip = gzip bytes",
                "from-plain = plain bytes"
            ]
        );
        let layers: Vec<(&Path, bool)> = image.layers().collect();
        assert_eq!(layers, [(files[0].path(), false), (files[1].path(), true)]);
        assert_eq!(image.path(), files[0].path());
    }

    #[test]
    fn layered_images_are_indexed_the_same_every_time() {
        let lower = varied_tar();
        let upper = tar(|b| {
            add_file(b, "dir/f1", b"replaced");
            add_file(b, "zz/new", b"new");
            add_file(b, "aa", b"first in readdir");
            add_file(b, "implied/.wh.deeper", b"");
        });
        let (_files, first) = open_layers(&[&lower, &upper]);
        let (_files, second) = open_layers(&[&lower, &upper]);
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(view(&first), view(&second));
        let mut inos = BTreeMap::new();
        let mut todo = vec![first.root()];
        while let Some(dir) = todo.pop() {
            let names = names(&first, dir);
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "readdir order is byte order");
            for (name, id) in first.children(dir) {
                // Hard links share an inode; nothing else does.
                if let Some(other) = inos.insert(first.meta(*id).ino, name.clone()) {
                    let mut pair = [other.as_str(), name.as_str()];
                    pair.sort_unstable();
                    assert_eq!(pair, ["f512", "hard"]);
                }
                if first.kind(*id) == EntryKind::Dir {
                    todo.push(*id);
                }
            }
        }
    }

    #[test]
    fn the_limits_apply_to_all_layers_together() {
        let limits = ImageLimits {
            max_entries: 10,
            ..ImageLimits::default()
        };
        let layer = |prefix: &str| {
            tar(|b| {
                for i in 0..4 {
                    add_file(b, &format!("{prefix}{i}"), b"");
                }
            })
        };
        let (a, b, c) = (layer("a"), layer("b"), layer("c"));
        // Two layers: two roots and eight files.
        let (_files, image) = open_layers_with(&[&a, &b], limits, MAX_DECOMPRESSED_BYTES);
        assert_eq!(image.unwrap().len(), 10);
        let (files, err) = open_layers_with(&[&a, &b, &c], limits, MAX_DECOMPRESSED_BYTES);
        let err = err.unwrap_err();
        assert!(
            matches!(&err, ImageError::TooManyEntries { image, limit: 10 } if image == files[2].path()),
            "{err:?}"
        );
    }

    #[test]
    fn a_bad_layer_is_named_in_the_error() {
        let good = tar(|b| add_file(b, "ok", b"ok"));
        let (files, err) = open_layers(&[&good, b"garbage that is not a tar"]);
        let err = err.unwrap_err();
        let prefix = format!("image `{}`: ", files[1].path().display());
        assert!(err.to_string().starts_with(&prefix), "{err}");
        let (files, err) = open_layers(&[&good, &[0x1f, 0x8b, 0, 0]]);
        let err = err.unwrap_err();
        assert!(matches!(&err, ImageError::Gzip { image, .. } if image == files[1].path()));
    }
}
