//! The guest's whole world: one tree, one table of file descriptors, one clock.
//!
//! # A guided tour
//!
//! The tree the guest sees is stitched together from several backends:
//!
//! * the in-memory [scratch](crate::scratch) tree at `/` (unless something is mounted at `/`);
//! * `/dev`, a small synthetic tree of devices (`null`, `zero`, `full`, `random`, `urandom`)
//!   and of the manifest's channels (`/dev/<name>`, names may nest: `/dev/in/map-1`);
//! * read-only [tar images](crate::image) and [host directories](crate::host) mounted at paths
//!   (several image mounts at one path are the layers of one image).
//!
//! Mount points (and `/dev`) are *overlays*: entries keyed by (parent directory, name) that hide
//! whatever the parent has under that name. Their parents are always the root or scratch
//! directories, created at setup, so an overlay key is simply "root" or a scratch inode.
//!
//! Paths are resolved by [`Fs::resolve`], one component at a time, keeping the stack of
//! directories walked so far: `..` pops the stack (never above the root), a symbolic link's
//! target is spliced into the remaining components (absolute targets restart at the guest's
//! root). No host path is ever built from guest input, which is what confines the guest.
//!
//! File descriptors map to [`Handle`]s: an open scratch inode, an open host file, an image
//! entry, a device, a channel (whose position and quotas live in the channel itself), or a
//! directory (its resolved stack). The first three descriptors are the standard channels,
//! followed by one preopened directory per mount and finally `/`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use zvm_channel::{ChannelHandle, ChannelSummary, SetupError as ChannelSetupError};
use zvm_manifest::{Clock, Limits, Mount, MountSource, StdStream};

use crate::clock::{Entropy, VirtualClock};
use crate::host::{self, HostDir, HostKind};
use crate::image::{EntryId, EntryKind, Image};
use crate::scratch::{self, Data, Scratch};
use crate::types::*;

/// Longest path a guest may pass, like Linux's `PATH_MAX`.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single name, like Linux's `NAME_MAX`.
pub const MAX_NAME_LEN: usize = 255;
/// Symbolic links followed while resolving one path, like Linux's limit before `ELOOP`.
pub const MAX_SYMLINK_FOLLOWS: usize = 40;

/// Device numbers the guest sees for each backend.
const DEV_SCRATCH: u64 = 1;
const DEV_DEVICES: u64 = 2;
const DEV_IMAGE_BASE: u64 = 0x10;

/// Errors while building the world for a run: these are the manifest's fault or the host's,
/// and name the mount or channel.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Channel(#[from] ChannelSetupError),
    #[error("mount `{guest}`: {message}")]
    Mount { guest: String, message: String },
    #[error("channel `{0}` clashes with a device or another channel under `/dev`")]
    DevClash(String),
    #[error("channel `{0}` is required but not declared")]
    MissingStdio(&'static str),
}

/// A device under `/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Null,
    Zero,
    Full,
    Random,
    Urandom,
}

const DEVICES: [(&str, Device); 5] = [
    ("full", Device::Full),
    ("null", Device::Null),
    ("random", Device::Random),
    ("urandom", Device::Urandom),
    ("zero", Device::Zero),
];

/// A node of the guest's tree.
#[derive(Debug, Clone)]
enum Node {
    Scratch(u32),
    DevDir(u32),
    Device(Device),
    Channel(u32),
    Image {
        img: u32,
        id: EntryId,
    },
    HostDir(HostDir),
    HostEntry {
        dir: HostDir,
        name: String,
        kind: HostKind,
    },
}

impl Node {
    fn same(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Scratch(a), Node::Scratch(b)) => a == b,
            (Node::DevDir(a), Node::DevDir(b)) => a == b,
            (Node::Image { img: a, id: x }, Node::Image { img: b, id: y }) => a == b && x == y,
            _ => false,
        }
    }
}

/// A handful of names mapped to nodes, kept sorted: `/dev` holds a few devices (whose names
/// are static) and the channels, so a sorted vector beats a tree or a hash map, and looking a
/// name up allocates nothing.
#[derive(Debug, Default)]
struct NameMap(Vec<(Cow<'static, str>, Node)>);

impl NameMap {
    fn get(&self, name: &str) -> Option<&Node> {
        self.0
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Adds `name`; false if it is already there.
    fn insert(&mut self, name: Cow<'static, str>, node: Node) -> bool {
        match self.0.binary_search_by(|(n, _)| n.as_ref().cmp(&name)) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, (name, node));
                true
            }
        }
    }
}

/// A mount point (or `/dev`) hiding whatever its parent has under its name.
#[derive(Debug)]
struct Overlay {
    parent: OverlayParent,
    name: Cow<'static, str>,
    node: Node,
}

/// Where overlays hang: the root, or a scratch directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OverlayParent {
    Root,
    Scratch(u32),
}

/// A resolved directory: the stack of directories from the root.
#[derive(Debug, Clone)]
struct Loc {
    stack: Vec<Node>,
}

impl Loc {
    fn top(&self) -> &Node {
        self.stack.last().expect("a location always holds the root")
    }
}

/// The outcome of resolving a path.
enum Resolved {
    /// The path names `name` in directory `parent`; `node` is what is there, if anything.
    Entry {
        parent: Loc,
        name: String,
        node: Option<Node>,
        trailing_slash: bool,
    },
    /// The path names a directory itself (`.`, `..`, `/`).
    Dir(Loc),
}

#[derive(Debug)]
enum Handle {
    Dir(Loc),
    Scratch(u32),
    Host { file: File, mount: u32 },
    Image { img: u32, id: EntryId },
    Device(Device),
    Channel(u32),
}

#[derive(Debug)]
struct FdEntry {
    handle: Handle,
    pos: u64,
    read: bool,
    write: bool,
    flags: u16,
    rights_base: u64,
    rights_inheriting: u64,
    preopen: Option<String>,
}

/// What the world is built from.
#[derive(Debug)]
pub struct WorldConfig<'a> {
    /// Opened channels, in manifest order; must include stdin, stdout and stderr.
    pub channels: Vec<ChannelHandle>,
    pub mounts: &'a [Mount],
    /// For each writable host mount staged as hard links to the user's files (zvm-txn), by
    /// mount index: the inode numbers still shared with the user's tree, which must be
    /// separated before they are changed ([`crate::host::break_link`]). Empty: no mount is.
    pub shared_inodes: Vec<Option<std::sync::Arc<std::collections::HashSet<u64>>>>,
    pub limits: Limits,
    pub clock: Clock,
    pub seed: u64,
}

struct MountInfo {
    writable: bool,
    shared: Option<std::sync::Arc<std::collections::HashSet<u64>>>,
}

/// The guest's world. See the module documentation.
pub struct Fs {
    scratch: Scratch,
    dev_dirs: Vec<NameMap>,
    /// Few (one per mount, plus `/dev`), so a vector searched in order.
    overlays: Vec<Overlay>,
    root: Node,
    images: Vec<Image>,
    mounts: Vec<MountInfo>,
    channels: Vec<ChannelHandle>,
    fds: Vec<Option<FdEntry>>,
    open: usize,
    open_limit: usize,
    /// The guest's clocks.
    pub clock: VirtualClock,
    /// The guest's random stream.
    pub entropy: Entropy,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("channels", &self.channels)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

fn split_parent(abs: &str) -> (Vec<&str>, &str) {
    let parts: Vec<&str> = abs.split('/').filter(|p| !p.is_empty()).collect();
    match parts.split_last() {
        Some((last, rest)) => (rest.to_vec(), last),
        None => (Vec::new(), ""),
    }
}

impl Fs {
    /// Builds the world: scratch root, `/dev`, mounts, and the descriptor table.
    pub fn new(config: WorldConfig<'_>) -> Result<Fs, SetupError> {
        let clock = VirtualClock::new(config.clock);
        let now = clock.peek_realtime();
        let mut fs = Fs {
            scratch: Scratch::new(config.limits.scratch.max(scratch::NODE_COST), now),
            dev_dirs: vec![NameMap::default()],
            overlays: Vec::new(),
            root: Node::Scratch(scratch::ROOT),
            images: Vec::new(),
            mounts: Vec::new(),
            channels: Vec::new(),
            fds: Vec::new(),
            open: 0,
            open_limit: config.limits.open_files as usize,
            clock,
            entropy: Entropy::new(config.seed),
        };
        // /dev: devices, then channels (which may nest: `in/map-1`).
        for (name, dev) in DEVICES {
            fs.dev_dirs[0].insert(Cow::Borrowed(name), Node::Device(dev));
        }
        for (i, ch) in config.channels.iter().enumerate() {
            let name = ch.name().as_str().to_string();
            let mut dir = 0usize;
            let parts: Vec<&str> = name.split('/').collect();
            let (last, parents) = parts.split_last().expect("channel names are not empty");
            for part in parents {
                let next = match fs.dev_dirs[dir].get(part) {
                    Some(Node::DevDir(d)) => *d as usize,
                    Some(_) => return Err(SetupError::DevClash(name.clone())),
                    None => {
                        fs.dev_dirs.push(NameMap::default());
                        let d = fs.dev_dirs.len() - 1;
                        fs.dev_dirs[dir]
                            .insert(Cow::Owned(part.to_string()), Node::DevDir(d as u32));
                        d
                    }
                };
                dir = next;
            }
            if !fs.dev_dirs[dir].insert(Cow::Owned(last.to_string()), Node::Channel(i as u32)) {
                return Err(SetupError::DevClash(name.clone()));
            }
        }
        fs.channels = config.channels;

        // Mounts: the one at `/` (if any) becomes the root; the others hang as overlays on the
        // root or on scratch directories created for them. Image mounts at the same path are
        // the layers of one image, opened together at the first of them.
        let mut preopens = Vec::new();
        let mut mount_nodes = Vec::new();
        let guests: Vec<String> = config.mounts.iter().map(Mount::guest_abs).collect();
        // The image mounts among the first `n` mounts whose guest path is `abs`, in order.
        let images_at = |n: usize, abs: &str| -> Vec<&std::path::Path> {
            config.mounts[..n]
                .iter()
                .zip(&guests)
                .filter_map(|(m, guest)| match &m.source {
                    MountSource::Image(path) if guest == abs => Some(path.as_path()),
                    _ => None,
                })
                .collect()
        };
        for (i, m) in config.mounts.iter().enumerate() {
            let mount_err = |message: String| SetupError::Mount {
                guest: m.guest.clone(),
                message,
            };
            let abs = &guests[i];
            let node = match &m.source {
                MountSource::Image(_) if !images_at(i, abs).is_empty() => {
                    // A layer of the image mounted at the first of them.
                    fs.mounts.push(MountInfo {
                        writable: false,
                        shared: None,
                    });
                    continue;
                }
                MountSource::Image(_) => {
                    let layers = images_at(config.mounts.len(), abs);
                    let image =
                        Image::open_layers(&layers).map_err(|e| mount_err(error_chain(&e)))?;
                    fs.images.push(image);
                    let img = (fs.images.len() - 1) as u32;
                    Node::Image {
                        img,
                        id: fs.images[img as usize].root(),
                    }
                }
                MountSource::Dir { path, .. } => {
                    let fd = host::open_root(path).map_err(|e| {
                        mount_err(format!("cannot open directory `{}`: {e}", path.display()))
                    })?;
                    Node::HostDir(HostDir {
                        mount: i as u32,
                        fd: std::sync::Arc::new(fd),
                        shared: config.shared_inodes.get(i).cloned().flatten(),
                    })
                }
            };
            fs.mounts.push(MountInfo {
                writable: matches!(m.source, MountSource::Dir { writable: true, .. }),
                shared: config.shared_inodes.get(i).cloned().flatten(),
            });
            mount_nodes.push((abs.clone(), node));
        }
        // Root first, so that later overlays know whether the root is scratch.
        if let Some(pos) = mount_nodes.iter().position(|(abs, _)| abs == "/") {
            let (_, node) = mount_nodes.remove(pos);
            fs.root = node;
        }
        fs.overlays.push(Overlay {
            parent: OverlayParent::Root,
            name: Cow::Borrowed("dev"),
            node: Node::DevDir(0),
        });
        for (abs, node) in mount_nodes {
            let (parents, last) = split_parent(&abs);
            let mount_err = |message: &str| SetupError::Mount {
                guest: abs.clone(),
                message: message.to_string(),
            };
            if parents.first() == Some(&"dev") || (parents.is_empty() && last == "dev") {
                return Err(mount_err("`/dev` is reserved for channels and devices"));
            }
            let mut parent = OverlayParent::Root;
            for part in parents {
                let dir = match parent {
                    OverlayParent::Root => match fs.root {
                        Node::Scratch(id) => id,
                        _ => {
                            return Err(mount_err(
                                "a mount at `/` can only have mounts directly below it",
                            ));
                        }
                    },
                    OverlayParent::Scratch(id) => id,
                };
                if fs.overlay(parent, part).is_some() {
                    return Err(mount_err("it lies inside another mount"));
                }
                let child = match fs.scratch.lookup(dir, part) {
                    Some(id) => id,
                    None => fs
                        .scratch
                        .create(dir, part, Data::Dir(BTreeMap::new()), now)
                        .map_err(|_| {
                            mount_err("the scratch limit is too small for its parent directories")
                        })?,
                };
                parent = OverlayParent::Scratch(child);
            }
            if fs.overlay(parent, last).is_some() {
                return Err(mount_err("it is mounted twice"));
            }
            fs.overlays.push(Overlay {
                parent,
                name: Cow::Owned(last.to_string()),
                node,
            });
        }

        // Descriptors: stdio, then one preopen per mount, then `/`.
        for stream in [StdStream::Stdin, StdStream::Stdout, StdStream::Stderr] {
            let idx = fs
                .channels
                .iter()
                .position(|c| c.name().as_str() == stream.name())
                .ok_or(SetupError::MissingStdio(stream.name()))?;
            let ch = &fs.channels[idx];
            let (read, write) = (ch.mode().can_read(), ch.mode().can_write());
            let rights = fs.channel_rights(idx as u32, read, write);
            fs.fds.push(Some(FdEntry {
                handle: Handle::Channel(idx as u32),
                pos: 0,
                read,
                write,
                flags: 0,
                rights_base: rights,
                rights_inheriting: 0,
                preopen: None,
            }));
        }
        for (i, m) in config.mounts.iter().enumerate() {
            // One preopen per directory, however many layers it has.
            if !guests[..i].contains(&guests[i]) {
                preopens.push(m.guest.clone());
            }
        }
        if !config.mounts.iter().any(|m| m.guest == "/") {
            preopens.push("/".to_string());
        }
        for name in preopens {
            let loc = match fs.resolve(&fs.root_loc(), &name, true) {
                Ok(Resolved::Dir(loc)) => loc,
                Ok(Resolved::Entry {
                    parent,
                    node: Some(node),
                    ..
                }) => {
                    let mut loc = parent;
                    loc.stack.push(node);
                    loc
                }
                _ => {
                    return Err(SetupError::Mount {
                        guest: name,
                        message: "cannot be resolved".into(),
                    });
                }
            };
            // A preopen is an open descriptor like any other: closing it releases the node.
            if let Node::Scratch(id) = loc.top() {
                fs.scratch.opened(*id);
            }
            fs.fds.push(Some(FdEntry {
                handle: Handle::Dir(loc),
                pos: 0,
                read: true,
                write: false,
                flags: 0,
                rights_base: rights::DIR,
                rights_inheriting: rights::DIR | rights::FILE,
                preopen: Some(name),
            }));
        }
        fs.open = fs.fds.len();
        Ok(fs)
    }

    fn root_loc(&self) -> Loc {
        Loc {
            stack: vec![self.root.clone()],
        }
    }

    fn now(&self) -> u64 {
        self.clock.peek_realtime()
    }

    fn channel_rights(&self, idx: u32, read: bool, write: bool) -> u64 {
        let ch = &self.channels[idx as usize];
        let mut r = rights::FD_FILESTAT_GET
            | rights::POLL_FD_READWRITE
            | rights::FD_FDSTAT_SET_FLAGS
            | rights::FD_SYNC
            | rights::FD_DATASYNC;
        if read {
            r |= rights::FD_READ;
        }
        if write {
            r |= rights::FD_WRITE;
        }
        if ch.mode().can_seek() && !ch.is_stream() {
            r |= rights::FD_SEEK | rights::FD_TELL;
        }
        r
    }

    // ----- resolution -----------------------------------------------------------------------

    fn overlay_parent(&self, loc: &Loc) -> Option<OverlayParent> {
        if loc.stack.len() == 1 {
            return Some(OverlayParent::Root);
        }
        match loc.top() {
            Node::Scratch(id) => Some(OverlayParent::Scratch(*id)),
            _ => None,
        }
    }

    fn overlay(&self, parent: OverlayParent, name: &str) -> Option<&Node> {
        self.overlays
            .iter()
            .find(|o| o.parent == parent && o.name == name)
            .map(|o| &o.node)
    }

    fn has_overlays(&self, parent: OverlayParent) -> bool {
        self.overlays.iter().any(|o| o.parent == parent)
    }

    fn lookup(&self, loc: &Loc, name: &str) -> Result<Option<Node>, Errno> {
        if name.len() > MAX_NAME_LEN {
            return Err(Errno::Nametoolong);
        }
        if let Some(parent) = self.overlay_parent(loc)
            && let Some(node) = self.overlay(parent, name)
        {
            return Ok(Some(node.clone()));
        }
        Ok(match loc.top() {
            Node::Scratch(id) => {
                if self.scratch.is_removed(*id) {
                    return Err(Errno::Noent);
                }
                self.scratch.lookup(*id, name).map(Node::Scratch)
            }
            Node::DevDir(d) => self.dev_dirs[*d as usize].get(name).cloned(),
            Node::Image { img, id } => {
                self.images[*img as usize]
                    .lookup(*id, name)
                    .map(|child| Node::Image {
                        img: *img,
                        id: child,
                    })
            }
            Node::HostDir(dir) => match host::kind_of(dir, name)? {
                None => None,
                Some(HostKind::Dir) => Some(Node::HostDir(host::open_dir(dir, name)?)),
                Some(kind) => Some(Node::HostEntry {
                    dir: dir.clone(),
                    name: name.to_string(),
                    kind,
                }),
            },
            _ => return Err(Errno::Notdir),
        })
    }

    fn is_dir(&self, node: &Node) -> bool {
        match node {
            Node::Scratch(id) => matches!(self.scratch.get(*id).data, Data::Dir(_)),
            Node::DevDir(_) | Node::HostDir(_) => true,
            Node::Image { img, id } => self.images[*img as usize].kind(*id) == EntryKind::Dir,
            _ => false,
        }
    }

    fn symlink_target(&self, node: &Node) -> Result<Option<String>, Errno> {
        Ok(match node {
            Node::Scratch(id) => match &self.scratch.get(*id).data {
                Data::Symlink(t) => Some(t.clone()),
                _ => None,
            },
            Node::Image { img, id } => self.images[*img as usize]
                .symlink_target(*id)
                .map(str::to_string),
            Node::HostEntry {
                dir,
                name,
                kind: HostKind::Symlink,
            } => Some(host::read_link(dir, name)?),
            _ => None,
        })
    }

    /// Resolves `path` from `start`. See the module documentation.
    fn resolve(&self, start: &Loc, path: &str, follow_final: bool) -> Result<Resolved, Errno> {
        if path.is_empty() {
            return Err(Errno::Noent);
        }
        if path.len() > MAX_PATH_LEN {
            return Err(Errno::Nametoolong);
        }
        if path.contains('\0') {
            return Err(Errno::Ilseq);
        }
        let mut loc = if path.starts_with('/') {
            self.root_loc()
        } else {
            start.clone()
        };
        let mut comps: std::collections::VecDeque<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mut trailing_slash = path.ends_with('/');
        let mut follows = 0;
        while let Some(comp) = comps.pop_front() {
            match comp.as_str() {
                "." => continue,
                ".." => {
                    if let Node::Scratch(id) = loc.top()
                        && self.scratch.is_removed(*id)
                    {
                        return Err(Errno::Noent);
                    }
                    if loc.stack.len() > 1 {
                        loc.stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let is_final = comps.is_empty();
            let node = self.lookup(&loc, &comp)?;
            let Some(node) = node else {
                if is_final {
                    return Ok(Resolved::Entry {
                        parent: loc,
                        name: comp,
                        node: None,
                        trailing_slash,
                    });
                }
                return Err(Errno::Noent);
            };
            if (!is_final || follow_final || trailing_slash)
                && let Some(target) = self.symlink_target(&node)?
            {
                follows += 1;
                if follows > MAX_SYMLINK_FOLLOWS {
                    return Err(Errno::Loop);
                }
                if target.is_empty() {
                    return Err(Errno::Noent);
                }
                if target.starts_with('/') {
                    loc.stack.truncate(1);
                }
                if is_final {
                    trailing_slash = trailing_slash || target.ends_with('/');
                }
                for c in target.split('/').filter(|c| !c.is_empty()).rev() {
                    comps.push_front(c.to_string());
                }
                continue;
            }
            if is_final {
                return Ok(Resolved::Entry {
                    parent: loc,
                    name: comp,
                    node: Some(node),
                    trailing_slash,
                });
            }
            if !self.is_dir(&node) {
                return Err(Errno::Notdir);
            }
            loc.stack.push(node);
        }
        Ok(Resolved::Dir(loc))
    }

    // ----- descriptors ----------------------------------------------------------------------

    fn entry(&self, fd: u32) -> Result<&FdEntry, Errno> {
        self.fds
            .get(fd as usize)
            .and_then(Option::as_ref)
            .ok_or(Errno::Badf)
    }

    fn entry_mut(&mut self, fd: u32) -> Result<&mut FdEntry, Errno> {
        self.fds
            .get_mut(fd as usize)
            .and_then(Option::as_mut)
            .ok_or(Errno::Badf)
    }

    fn dir_loc(&self, fd: u32) -> Result<Loc, Errno> {
        match &self.entry(fd)?.handle {
            Handle::Dir(loc) => Ok(loc.clone()),
            _ => Err(Errno::Notdir),
        }
    }

    fn insert_fd(&mut self, entry: FdEntry) -> Result<u32, Errno> {
        if self.open >= self.open_limit {
            self.release_handle(entry.handle);
            return Err(Errno::Mfile);
        }
        self.open += 1;
        if let Some(i) = self.fds.iter().position(Option::is_none) {
            self.fds[i] = Some(entry);
            return Ok(i as u32);
        }
        self.fds.push(Some(entry));
        Ok((self.fds.len() - 1) as u32)
    }

    fn release_handle(&mut self, handle: Handle) {
        if let Handle::Scratch(id) = handle {
            self.scratch.closed(id);
        }
        if let Handle::Dir(loc) = handle
            && let Node::Scratch(id) = loc.top()
        {
            self.scratch.closed(*id);
        }
    }

    /// The preopened directory name of `fd`, if it is a preopen.
    pub fn prestat(&self, fd: u32) -> Result<&str, Errno> {
        self.entry(fd)?.preopen.as_deref().ok_or(Errno::Badf)
    }

    pub fn close(&mut self, fd: u32) -> Result<(), Errno> {
        let entry = self
            .fds
            .get_mut(fd as usize)
            .and_then(Option::take)
            .ok_or(Errno::Badf)?;
        self.open -= 1;
        self.release_handle(entry.handle);
        Ok(())
    }

    pub fn renumber(&mut self, from: u32, to: u32) -> Result<(), Errno> {
        self.entry(from)?;
        self.entry(to)?;
        if from == to {
            return Ok(());
        }
        self.close(to)?;
        let entry = self.fds[from as usize].take();
        self.fds[to as usize] = entry;
        Ok(())
    }

    pub fn fdstat(&self, fd: u32) -> Result<Fdstat, Errno> {
        let e = self.entry(fd)?;
        Ok(Fdstat {
            filetype: self.handle_filetype(&e.handle),
            flags: e.flags,
            rights_base: e.rights_base,
            rights_inheriting: e.rights_inheriting,
        })
    }

    fn handle_filetype(&self, h: &Handle) -> Filetype {
        match h {
            Handle::Dir(_) => Filetype::Directory,
            Handle::Scratch(_) | Handle::Host { .. } | Handle::Image { .. } => {
                Filetype::RegularFile
            }
            Handle::Device(_) => Filetype::CharacterDevice,
            Handle::Channel(i) => {
                if self.channels[*i as usize].is_stream() {
                    Filetype::CharacterDevice
                } else {
                    Filetype::RegularFile
                }
            }
        }
    }

    pub fn set_fdflags(&mut self, fd: u32, flags: u16) -> Result<(), Errno> {
        let e = self.entry_mut(fd)?;
        // Only APPEND and NONBLOCK change anything observable here; the sync flags are
        // accepted because every write of a committed output is synced at commit anyway.
        e.flags = flags;
        Ok(())
    }

    pub fn set_rights(&mut self, fd: u32, base: u64, inheriting: u64) -> Result<(), Errno> {
        let e = self.entry_mut(fd)?;
        // Rights may only be dropped, never gained.
        if base & !e.rights_base != 0 || inheriting & !e.rights_inheriting != 0 {
            return Err(Errno::Notcapable);
        }
        e.rights_base = base;
        e.rights_inheriting = inheriting;
        e.read &= base & rights::FD_READ != 0;
        e.write &= base & rights::FD_WRITE != 0;
        Ok(())
    }

    // ----- data -----------------------------------------------------------------------------

    /// Reads at the descriptor's position (fd_read).
    pub fn read(&mut self, fd: u32, buf: &mut [u8]) -> Result<usize, Errno> {
        let pos = self.entry(fd)?.pos;
        let n = self.read_at(fd, buf, pos, false)?;
        self.entry_mut(fd)?.pos += n as u64;
        Ok(n)
    }

    /// Reads at `offset` (fd_pread).
    pub fn pread(&mut self, fd: u32, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        self.read_at(fd, buf, offset, true)
    }

    fn read_at(
        &mut self,
        fd: u32,
        buf: &mut [u8],
        pos: u64,
        positioned: bool,
    ) -> Result<usize, Errno> {
        let e = data_entry(&self.fds, fd, false)?;
        match &e.handle {
            Handle::Dir(_) => Err(Errno::Isdir),
            Handle::Scratch(id) => self.scratch.read_at(*id, pos, buf),
            Handle::Host { file, .. } => Ok(file.read_at(buf, pos)?),
            Handle::Image { img, id } => Ok(self.images[*img as usize].read_at(*id, pos, buf)?),
            Handle::Device(dev) => {
                let dev = *dev;
                match dev {
                    Device::Null => Ok(0),
                    Device::Zero | Device::Full => {
                        buf.fill(0);
                        Ok(buf.len())
                    }
                    Device::Random | Device::Urandom => {
                        self.entropy.fill(buf);
                        Ok(buf.len())
                    }
                }
            }
            Handle::Channel(i) => {
                let ch = &mut self.channels[*i as usize];
                Ok(if positioned {
                    ch.pread(buf, pos)?
                } else {
                    ch.read(buf)?
                })
            }
        }
    }

    /// Writes at the descriptor's position, or at the end in append mode (fd_write).
    pub fn write(&mut self, fd: u32, data: &[u8]) -> Result<usize, Errno> {
        let e = self.entry(fd)?;
        let pos = if e.flags & fdflags::APPEND != 0 {
            self.size_of(&e.handle)?
        } else {
            e.pos
        };
        let n = self.write_at(fd, data, pos, false)?;
        let e = self.entry_mut(fd)?;
        e.pos = pos + n as u64;
        Ok(n)
    }

    /// Writes at `offset` (fd_pwrite).
    pub fn pwrite(&mut self, fd: u32, data: &[u8], offset: u64) -> Result<usize, Errno> {
        self.write_at(fd, data, offset, true)
    }

    fn write_at(
        &mut self,
        fd: u32,
        data: &[u8],
        pos: u64,
        positioned: bool,
    ) -> Result<usize, Errno> {
        let now = self.now();
        let e = data_entry(&self.fds, fd, true)?;
        match &e.handle {
            Handle::Dir(_) => Err(Errno::Isdir),
            Handle::Scratch(id) => self.scratch.write_at(*id, pos, data, now),
            Handle::Host { file, .. } => Ok(file.write_at(data, pos)?),
            Handle::Image { .. } => Err(Errno::Badf),
            Handle::Device(Device::Full) => Err(Errno::Nospc),
            Handle::Device(_) => Ok(data.len()),
            Handle::Channel(i) => {
                let ch = &mut self.channels[*i as usize];
                Ok(if positioned {
                    ch.pwrite(data, pos)?
                } else {
                    ch.write(data)?
                })
            }
        }
    }

    fn size_of(&self, h: &Handle) -> Result<u64, Errno> {
        Ok(match h {
            Handle::Dir(_) => 0,
            Handle::Scratch(id) => self.scratch.get(*id).size(),
            Handle::Host { file, .. } => file.metadata()?.len(),
            Handle::Image { img, id } => self.images[*img as usize].meta(*id).size,
            Handle::Device(_) => 0,
            Handle::Channel(i) => self.channels[*i as usize].size(),
        })
    }

    pub fn seek(&mut self, fd: u32, delta: i64, whence: Whence) -> Result<u64, Errno> {
        let e = self.entry(fd)?;
        match &e.handle {
            Handle::Dir(_) => return Err(Errno::Badf),
            Handle::Channel(i) => {
                let ch = &self.channels[*i as usize];
                if !ch.mode().can_seek() || ch.is_stream() {
                    return Err(Errno::Spipe);
                }
            }
            _ => {}
        }
        let base = match whence {
            Whence::Set => 0,
            Whence::Cur => match &e.handle {
                Handle::Channel(i) => self.channels[*i as usize].position(),
                _ => e.pos,
            },
            Whence::End => self.size_of(&e.handle)?,
        };
        let new = base.checked_add_signed(delta).ok_or(Errno::Inval)?;
        if new > i64::MAX as u64 {
            return Err(Errno::Inval);
        }
        let e = self.entry_mut(fd)?;
        e.pos = new;
        if let Handle::Channel(i) = e.handle {
            self.channels[i as usize].set_position(new)?;
        }
        Ok(new)
    }

    pub fn tell(&self, fd: u32) -> Result<u64, Errno> {
        let e = self.entry(fd)?;
        match &e.handle {
            Handle::Dir(_) => Err(Errno::Badf),
            Handle::Channel(i) => {
                let ch = &self.channels[*i as usize];
                if !ch.mode().can_seek() || ch.is_stream() {
                    return Err(Errno::Spipe);
                }
                Ok(ch.position())
            }
            _ => Ok(e.pos),
        }
    }

    pub fn sync(&mut self, fd: u32) -> Result<(), Errno> {
        let e = self
            .fds
            .get_mut(fd as usize)
            .and_then(Option::as_mut)
            .ok_or(Errno::Badf)?;
        match &mut e.handle {
            Handle::Host { file, .. } => Ok(file.sync_all()?),
            Handle::Channel(i) => Ok(self.channels[*i as usize].flush()?),
            _ => Ok(()),
        }
    }

    pub fn advise(&self, fd: u32, _offset: u64, _len: u64, advice: u8) -> Result<(), Errno> {
        let e = self.entry(fd)?;
        if matches!(e.handle, Handle::Dir(_)) {
            return Err(Errno::Badf);
        }
        if advice > 5 {
            return Err(Errno::Inval);
        }
        Ok(())
    }

    pub fn allocate(&mut self, fd: u32, offset: u64, len: u64) -> Result<(), Errno> {
        let end = offset.checked_add(len).ok_or(Errno::Fbig)?;
        let e = self.entry(fd)?;
        if !e.write {
            return Err(Errno::Badf);
        }
        let size = self.size_of(&e.handle)?;
        if end <= size {
            return Ok(());
        }
        self.set_size(fd, end)
    }

    pub fn set_size(&mut self, fd: u32, size: u64) -> Result<(), Errno> {
        let now = self.now();
        let e = entry_in(&self.fds, fd)?;
        if matches!(e.handle, Handle::Dir(_)) {
            return Err(Errno::Isdir);
        }
        if !e.write {
            return Err(Errno::Badf);
        }
        match &e.handle {
            Handle::Scratch(id) => self.scratch.set_size(*id, size, now),
            Handle::Host { file, .. } => Ok(file.set_len(size)?),
            Handle::Channel(i) => Ok(self.channels[*i as usize].set_size(size)?),
            Handle::Device(_) => Ok(()),
            Handle::Image { .. } | Handle::Dir(_) => Err(Errno::Badf),
        }
    }

    pub fn filestat(&self, fd: u32) -> Result<Filestat, Errno> {
        let e = self.entry(fd)?;
        match &e.handle {
            Handle::Dir(loc) => self.stat_node(loc.top(), loc),
            Handle::Scratch(id) => Ok(self.scratch_stat(*id)),
            Handle::Host { file, mount } => host::stat_fd(*mount, file),
            Handle::Image { img, id } => Ok(self.image_stat(*img, *id)),
            Handle::Device(d) => Ok(self.device_stat(*d)),
            Handle::Channel(i) => Ok(self.channel_stat(*i)),
        }
    }

    fn scratch_stat(&self, id: u32) -> Filestat {
        let n = self.scratch.get(id);
        Filestat {
            dev: DEV_SCRATCH,
            ino: id as u64 + 1,
            filetype: n.filetype(),
            nlink: if matches!(n.data, Data::Dir(_)) {
                2
            } else {
                n.nlink as u64
            },
            size: n.size(),
            atim: n.atim,
            mtim: n.mtim,
            ctim: n.ctim,
        }
    }

    fn image_stat(&self, img: u32, id: EntryId) -> Filestat {
        let image = &self.images[img as usize];
        let m = image.meta(id);
        Filestat {
            dev: DEV_IMAGE_BASE + img as u64,
            ino: m.ino,
            filetype: match image.kind(id) {
                EntryKind::Dir => Filetype::Directory,
                EntryKind::File => Filetype::RegularFile,
                EntryKind::Symlink => Filetype::SymbolicLink,
            },
            nlink: 1,
            size: m.size,
            atim: m.mtime_ns,
            mtim: m.mtime_ns,
            ctim: m.mtime_ns,
        }
    }

    fn device_stat(&self, d: Device) -> Filestat {
        Filestat {
            dev: DEV_DEVICES,
            ino: 10 + d as u64,
            filetype: Filetype::CharacterDevice,
            nlink: 1,
            size: 0,
            atim: 0,
            mtim: 0,
            ctim: 0,
        }
    }

    fn channel_stat(&self, i: u32) -> Filestat {
        let ch = &self.channels[i as usize];
        Filestat {
            dev: DEV_DEVICES,
            ino: 1_000 + i as u64,
            filetype: if ch.is_stream() {
                Filetype::CharacterDevice
            } else {
                Filetype::RegularFile
            },
            nlink: 1,
            size: ch.size(),
            atim: 0,
            mtim: 0,
            ctim: 0,
        }
    }

    fn stat_node(&self, node: &Node, _loc: &Loc) -> Result<Filestat, Errno> {
        Ok(match node {
            Node::Scratch(id) => self.scratch_stat(*id),
            Node::DevDir(d) => Filestat {
                dev: DEV_DEVICES,
                ino: 100 + *d as u64,
                filetype: Filetype::Directory,
                nlink: 2,
                size: 0,
                atim: 0,
                mtim: 0,
                ctim: 0,
            },
            Node::Device(d) => self.device_stat(*d),
            Node::Channel(i) => self.channel_stat(*i),
            Node::Image { img, id } => self.image_stat(*img, *id),
            Node::HostDir(dir) => host::stat_fd(dir.mount, &*dir.fd)?,
            Node::HostEntry { dir, name, .. } => host::stat_at(dir, name)?,
        })
    }

    pub fn set_times(&mut self, fd: u32, atim: SetTime, mtim: SetTime) -> Result<(), Errno> {
        let (atim, mtim) = (self.virtual_time(atim), self.virtual_time(mtim));
        let e = self.entry(fd)?;
        match &e.handle {
            Handle::Scratch(id) => {
                let id = *id;
                self.set_scratch_times(id, atim, mtim);
                Ok(())
            }
            Handle::Host { file, mount } => {
                let shared = self
                    .mounts
                    .get(*mount as usize)
                    .and_then(|m| m.shared.as_deref());
                host::set_times_fd(file, shared, atim, mtim)
            }
            Handle::Dir(loc) => {
                let node = loc.top().clone();
                self.set_node_times(&node, atim, mtim)
            }
            Handle::Image { .. } => Err(Errno::Rofs),
            Handle::Device(_) | Handle::Channel(_) => Ok(()),
        }
    }

    /// "Now" means the guest's virtual now, so that timestamps stay deterministic.
    fn virtual_time(&self, t: SetTime) -> SetTime {
        match t {
            SetTime::Now => SetTime::To(self.now()),
            other => other,
        }
    }

    fn set_scratch_times(&mut self, id: u32, atim: SetTime, mtim: SetTime) {
        let now = self.now();
        let n = self.scratch.get_mut(id);
        if let SetTime::To(t) = atim {
            n.atim = t;
        }
        if let SetTime::To(t) = mtim {
            n.mtim = t;
        }
        n.ctim = now;
    }

    fn set_node_times(&mut self, node: &Node, atim: SetTime, mtim: SetTime) -> Result<(), Errno> {
        match node {
            Node::Scratch(id) => {
                self.set_scratch_times(*id, atim, mtim);
                Ok(())
            }
            Node::HostDir(dir) => {
                self.check_writable(dir.mount)?;
                host::set_times_fd(&*dir.fd, dir.shared.as_deref(), atim, mtim)
            }
            Node::HostEntry { dir, name, .. } => {
                self.check_writable(dir.mount)?;
                host::set_times_at(dir, name, atim, mtim)
            }
            Node::Image { .. } | Node::DevDir(_) => Err(Errno::Rofs),
            Node::Device(_) | Node::Channel(_) => Ok(()),
        }
    }

    fn check_writable(&self, mount: u32) -> Result<(), Errno> {
        if self.mounts[mount as usize].writable {
            Ok(())
        } else {
            Err(Errno::Rofs)
        }
    }

    /// Lists a directory: `.`, `..`, then every entry in name order (fd_readdir).
    pub fn readdir(&self, fd: u32) -> Result<Vec<Dirent>, Errno> {
        let loc = match &self.entry(fd)?.handle {
            Handle::Dir(loc) => loc.clone(),
            _ => return Err(Errno::Notdir),
        };
        let top = loc.top();
        let self_ino = self.stat_node(top, &loc)?.ino;
        // A removed directory's ancestors may be gone too; it is its own parent, like `/`.
        let removed = matches!(top, Node::Scratch(id) if self.scratch.is_removed(*id));
        let parent_ino = if loc.stack.len() > 1 && !removed {
            self.stat_node(&loc.stack[loc.stack.len() - 2], &loc)?.ino
        } else {
            self_ino
        };
        let mut entries: BTreeMap<String, (u64, Filetype)> = BTreeMap::new();
        match top {
            Node::Scratch(id) => {
                if let Data::Dir(children) = &self.scratch.get(*id).data {
                    for (name, child) in children {
                        let n = self.scratch.get(*child);
                        entries.insert(name.clone(), (*child as u64 + 1, n.filetype()));
                    }
                }
            }
            Node::DevDir(d) => {
                for (name, node) in &self.dev_dirs[*d as usize].0 {
                    let st = self.stat_node(node, &loc)?;
                    entries.insert(name.to_string(), (st.ino, st.filetype));
                }
            }
            Node::Image { img, id } => {
                for (name, child) in self.images[*img as usize].children(*id) {
                    let st = self.image_stat(*img, *child);
                    entries.insert(name.clone(), (st.ino, st.filetype));
                }
            }
            Node::HostDir(dir) => {
                for (name, ino, ft) in host::list(dir)? {
                    entries.insert(name, (ino, ft));
                }
            }
            _ => return Err(Errno::Notdir),
        }
        if let Some(parent) = self.overlay_parent(&loc) {
            for o in self.overlays.iter().filter(|o| o.parent == parent) {
                let st = self.stat_node(&o.node, &loc)?;
                entries.insert(o.name.to_string(), (st.ino, st.filetype));
            }
        }
        let mut out = Vec::with_capacity(entries.len() + 2);
        out.push(Dirent {
            name: ".".into(),
            ino: self_ino,
            filetype: Filetype::Directory,
        });
        out.push(Dirent {
            name: "..".into(),
            ino: parent_ino,
            filetype: Filetype::Directory,
        });
        for (name, (ino, filetype)) in entries {
            out.push(Dirent {
                name,
                ino,
                filetype,
            });
        }
        Ok(out)
    }

    /// Readiness of a descriptor for poll_oneoff: bytes available to read (files), or 0 for
    /// streams and writes, which are always ready.
    pub fn poll_ready(&self, fd: u32, write: bool) -> Result<u64, Errno> {
        let e = self.entry(fd)?;
        if matches!(e.handle, Handle::Dir(_)) {
            return Err(Errno::Badf);
        }
        if write {
            return Ok(0);
        }
        let size = self.size_of(&e.handle)?;
        let pos = match &e.handle {
            Handle::Channel(i) => self.channels[*i as usize].position(),
            _ => e.pos,
        };
        Ok(size.saturating_sub(pos))
    }

    /// Fills `buf` from the guest's random stream (random_get).
    pub fn random(&mut self, buf: &mut [u8]) {
        self.entropy.fill(buf);
    }

    // ----- paths ----------------------------------------------------------------------------

    /// Opens `path` relative to directory `dirfd` (path_open).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        dirfd: u32,
        path: &str,
        follow: bool,
        oflags: u16,
        rights_base: u64,
        rights_inheriting: u64,
        fdflags: u16,
    ) -> Result<u32, Errno> {
        let start = self.dir_loc(dirfd)?;
        let creat = oflags & oflags::CREAT != 0;
        let excl = oflags & oflags::EXCL != 0;
        let trunc = oflags & oflags::TRUNC != 0;
        let directory = oflags & oflags::DIRECTORY != 0;
        let read = rights_base & (rights::FD_READ | rights::FD_READDIR) != 0;
        let write = rights_base
            & (rights::FD_WRITE | rights::FD_ALLOCATE | rights::FD_FILESTAT_SET_SIZE)
            != 0
            || trunc;
        let resolved = self.resolve(&start, path, follow)?;
        let (parent, name, node, trailing_slash) = match resolved {
            Resolved::Dir(loc) => {
                if excl && creat {
                    return Err(Errno::Exist);
                }
                if write {
                    return Err(Errno::Isdir);
                }
                return self.open_dir(loc, rights_base, rights_inheriting, fdflags);
            }
            Resolved::Entry {
                parent,
                name,
                node,
                trailing_slash,
            } => (parent, name, node, trailing_slash),
        };
        let now = self.now();
        let node = match node {
            Some(_) if creat && excl => return Err(Errno::Exist),
            Some(node) => node,
            None if creat => {
                if directory || trailing_slash {
                    return Err(Errno::Isdir);
                }
                return self.create_file(
                    &parent,
                    &name,
                    read,
                    write,
                    rights_base,
                    rights_inheriting,
                    fdflags,
                    now,
                );
            }
            None => return Err(Errno::Noent),
        };
        if self.symlink_target(&node)?.is_some() {
            // Only reached without SYMLINK_FOLLOW: POSIX's O_NOFOLLOW answer.
            return Err(Errno::Loop);
        }
        if self.is_dir(&node) {
            if write {
                return Err(Errno::Isdir);
            }
            let mut loc = parent;
            loc.stack.push(node);
            return self.open_dir(loc, rights_base, rights_inheriting, fdflags);
        }
        if directory || trailing_slash {
            return Err(Errno::Notdir);
        }
        let file_rights = |extra: u64| rights_base & extra;
        let (handle, base) = match node {
            Node::Scratch(id) => {
                if trunc && write {
                    self.scratch.set_size(id, 0, now)?;
                }
                self.scratch.opened(id);
                (Handle::Scratch(id), file_rights(rights::FILE))
            }
            Node::Device(d) => (
                Handle::Device(d),
                file_rights(rights::FILE & !(rights::FD_SEEK | rights::FD_TELL)),
            ),
            Node::Channel(i) => {
                let ch = &self.channels[i as usize];
                if (read && !ch.mode().can_read() && !write) || (write && !ch.mode().can_write()) {
                    return Err(Errno::Acces);
                }
                let r = read && ch.mode().can_read();
                let rights =
                    self.channel_rights(i, r, write) & (rights_base | rights::FD_FILESTAT_GET);
                return self.insert_fd(FdEntry {
                    handle: Handle::Channel(i),
                    pos: 0,
                    read: r,
                    write,
                    flags: fdflags,
                    rights_base: rights,
                    rights_inheriting: 0,
                    preopen: None,
                });
            }
            Node::Image { img, id } => {
                if write {
                    return Err(Errno::Rofs);
                }
                (
                    Handle::Image { img, id },
                    file_rights(
                        rights::FILE
                            & !(rights::FD_WRITE
                                | rights::FD_ALLOCATE
                                | rights::FD_FILESTAT_SET_SIZE),
                    ),
                )
            }
            Node::HostEntry { dir, name, kind } => {
                if kind != HostKind::File {
                    return Err(Errno::Acces);
                }
                if write {
                    self.check_writable(dir.mount)?;
                }
                let file = host::open_file(
                    &dir,
                    &name,
                    read || !write,
                    write,
                    false,
                    false,
                    trunc && write,
                )?;
                (
                    Handle::Host {
                        file,
                        mount: dir.mount,
                    },
                    file_rights(rights::FILE),
                )
            }
            Node::DevDir(_) | Node::HostDir(_) => return Err(Errno::Isdir),
        };
        self.insert_fd(FdEntry {
            handle,
            pos: 0,
            read,
            write,
            flags: fdflags,
            rights_base: base,
            rights_inheriting: rights_inheriting & rights::FILE,
            preopen: None,
        })
    }

    fn open_dir(
        &mut self,
        loc: Loc,
        rights_base: u64,
        rights_inheriting: u64,
        fdflags: u16,
    ) -> Result<u32, Errno> {
        if let Node::Scratch(id) = loc.top() {
            self.scratch.opened(*id);
        }
        self.insert_fd(FdEntry {
            handle: Handle::Dir(loc),
            pos: 0,
            read: true,
            write: false,
            flags: fdflags,
            rights_base: rights_base & rights::DIR,
            rights_inheriting: rights_inheriting & (rights::DIR | rights::FILE),
            preopen: None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn create_file(
        &mut self,
        parent: &Loc,
        name: &str,
        read: bool,
        write: bool,
        rights_base: u64,
        rights_inheriting: u64,
        fdflags: u16,
        now: u64,
    ) -> Result<u32, Errno> {
        let handle = match parent.top() {
            Node::Scratch(dir) => {
                let id = self
                    .scratch
                    .create(*dir, name, Data::File(Vec::new()), now)?;
                self.scratch.opened(id);
                Handle::Scratch(id)
            }
            Node::HostDir(dir) => {
                self.check_writable(dir.mount)?;
                let file = host::open_file(dir, name, read || !write, write, true, true, false)?;
                Handle::Host {
                    file,
                    mount: dir.mount,
                }
            }
            _ => return Err(Errno::Rofs),
        };
        self.insert_fd(FdEntry {
            handle,
            pos: 0,
            read,
            write,
            flags: fdflags,
            rights_base: rights_base & rights::FILE,
            rights_inheriting: rights_inheriting & rights::FILE,
            preopen: None,
        })
    }

    /// Resolves a path whose final component is to be created: it must not exist.
    fn resolve_new(&self, dirfd: u32, path: &str) -> Result<(Loc, String), Errno> {
        let start = self.dir_loc(dirfd)?;
        match self.resolve(&start, path, false)? {
            Resolved::Dir(_) => Err(Errno::Exist),
            Resolved::Entry { node: Some(_), .. } => Err(Errno::Exist),
            Resolved::Entry { parent, name, .. } => {
                self.check_parent_writable(&parent)?;
                Ok((parent, name))
            }
        }
    }

    /// Resolves a path whose final component must exist, without following it.
    fn resolve_existing(
        &self,
        dirfd: u32,
        path: &str,
        follow: bool,
    ) -> Result<(Loc, String, Node, bool), Errno> {
        let start = self.dir_loc(dirfd)?;
        match self.resolve(&start, path, follow)? {
            Resolved::Dir(_) => Err(Errno::Busy),
            Resolved::Entry { node: None, .. } => Err(Errno::Noent),
            Resolved::Entry {
                parent,
                name,
                node: Some(node),
                trailing_slash,
            } => Ok((parent, name, node, trailing_slash)),
        }
    }

    fn check_parent_writable(&self, parent: &Loc) -> Result<(), Errno> {
        match parent.top() {
            Node::Scratch(id) if self.scratch.is_removed(*id) => Err(Errno::Noent),
            Node::Scratch(_) => Ok(()),
            Node::HostDir(dir) => self.check_writable(dir.mount),
            _ => Err(Errno::Rofs),
        }
    }

    fn is_overlay(&self, parent: &Loc, name: &str) -> bool {
        self.overlay_parent(parent)
            .is_some_and(|p| self.overlay(p, name).is_some())
    }

    pub fn mkdir(&mut self, dirfd: u32, path: &str) -> Result<(), Errno> {
        let (parent, name) = self.resolve_new(dirfd, path)?;
        let now = self.now();
        match parent.top() {
            Node::Scratch(dir) => {
                self.scratch
                    .create(*dir, &name, Data::Dir(BTreeMap::new()), now)?;
                Ok(())
            }
            Node::HostDir(dir) => host::mkdir(dir, &name),
            _ => Err(Errno::Rofs),
        }
    }

    pub fn path_filestat(&self, dirfd: u32, path: &str, follow: bool) -> Result<Filestat, Errno> {
        let start = self.dir_loc(dirfd)?;
        match self.resolve(&start, path, follow)? {
            Resolved::Dir(loc) => self.stat_node(loc.top(), &loc),
            Resolved::Entry { node: None, .. } => Err(Errno::Noent),
            Resolved::Entry {
                parent,
                node: Some(node),
                trailing_slash,
                ..
            } => {
                if trailing_slash && !self.is_dir(&node) {
                    return Err(Errno::Notdir);
                }
                self.stat_node(&node, &parent)
            }
        }
    }

    pub fn path_set_times(
        &mut self,
        dirfd: u32,
        path: &str,
        follow: bool,
        atim: SetTime,
        mtim: SetTime,
    ) -> Result<(), Errno> {
        let (atim, mtim) = (self.virtual_time(atim), self.virtual_time(mtim));
        let start = self.dir_loc(dirfd)?;
        let node = match self.resolve(&start, path, follow)? {
            Resolved::Dir(loc) => loc.top().clone(),
            Resolved::Entry { node: None, .. } => return Err(Errno::Noent),
            Resolved::Entry {
                node: Some(node), ..
            } => node,
        };
        self.set_node_times(&node, atim, mtim)
    }

    pub fn readlink(&self, dirfd: u32, path: &str) -> Result<String, Errno> {
        let (_, _, node, _) = self
            .resolve_existing(dirfd, path, false)
            .map_err(|e| if e == Errno::Busy { Errno::Inval } else { e })?;
        self.symlink_target(&node)?.ok_or(Errno::Inval)
    }

    pub fn symlink(&mut self, target: &str, dirfd: u32, path: &str) -> Result<(), Errno> {
        if target.is_empty() {
            return Err(Errno::Noent);
        }
        if target.len() > MAX_PATH_LEN {
            return Err(Errno::Nametoolong);
        }
        let (parent, name) = self.resolve_new(dirfd, path)?;
        let now = self.now();
        match parent.top() {
            Node::Scratch(dir) => {
                self.scratch
                    .create(*dir, &name, Data::Symlink(target.to_string()), now)?;
                Ok(())
            }
            Node::HostDir(dir) => {
                // The link will exist on the host too, where host tools follow it. A target
                // that is absolute or has a `..` could point outside the mount, at once or
                // after the link (or a directory above it) is moved; one that only descends
                // stays inside wherever it is moved to.
                if target.starts_with('/') || target.split('/').any(|c| c == "..") {
                    return Err(Errno::Perm);
                }
                host::symlink(target, dir, &name)
            }
            _ => Err(Errno::Rofs),
        }
    }

    pub fn unlink(&mut self, dirfd: u32, path: &str) -> Result<(), Errno> {
        let (parent, name, node, trailing_slash) = self.resolve_existing(dirfd, path, false)?;
        if self.is_dir(&node) {
            return Err(Errno::Isdir);
        }
        if trailing_slash {
            return Err(Errno::Notdir);
        }
        if self.is_overlay(&parent, &name) {
            return Err(Errno::Busy);
        }
        self.check_parent_writable(&parent)?;
        let now = self.now();
        match parent.top() {
            Node::Scratch(dir) => {
                self.scratch.unlink(*dir, &name, now);
                Ok(())
            }
            Node::HostDir(dir) => host::unlink(dir, &name, false),
            _ => Err(Errno::Rofs),
        }
    }

    pub fn rmdir(&mut self, dirfd: u32, path: &str) -> Result<(), Errno> {
        let (parent, name, node, _) = self.resolve_existing(dirfd, path, false)?;
        if !self.is_dir(&node) {
            return Err(Errno::Notdir);
        }
        if self.is_overlay(&parent, &name) {
            return Err(Errno::Busy);
        }
        self.check_parent_writable(&parent)?;
        let now = self.now();
        match (parent.top(), &node) {
            (Node::Scratch(dir), Node::Scratch(id)) => {
                let has_children =
                    matches!(&self.scratch.get(*id).data, Data::Dir(e) if !e.is_empty());
                let has_overlays = self.has_overlays(OverlayParent::Scratch(*id));
                if has_children || has_overlays {
                    return Err(Errno::Notempty);
                }
                self.scratch.unlink(*dir, &name, now);
                Ok(())
            }
            (Node::HostDir(dir), _) => host::unlink(dir, &name, true),
            _ => Err(Errno::Rofs),
        }
    }

    pub fn rename(&mut self, from_fd: u32, from: &str, to_fd: u32, to: &str) -> Result<(), Errno> {
        let (from_parent, from_name, from_node, _) = self.resolve_existing(from_fd, from, false)?;
        let to_start = self.dir_loc(to_fd)?;
        let (to_parent, to_name, to_node, to_slash) = match self.resolve(&to_start, to, false)? {
            Resolved::Dir(_) => return Err(Errno::Busy),
            Resolved::Entry {
                parent,
                name,
                node,
                trailing_slash,
            } => (parent, name, node, trailing_slash),
        };
        if self.is_overlay(&from_parent, &from_name) || self.is_overlay(&to_parent, &to_name) {
            return Err(Errno::Busy);
        }
        self.check_parent_writable(&from_parent)?;
        self.check_parent_writable(&to_parent)?;
        let from_is_dir = self.is_dir(&from_node);
        if to_slash && !from_is_dir {
            return Err(Errno::Notdir);
        }
        let now = self.now();
        match (from_parent.top(), to_parent.top()) {
            (Node::Scratch(fdir), Node::Scratch(tdir)) => {
                let (fdir, tdir) = (*fdir, *tdir);
                let Node::Scratch(src) = from_node else {
                    return Err(Errno::Xdev);
                };
                // Moving a directory into itself or below it.
                if from_is_dir && to_parent.stack.iter().any(|n| n.same(&Node::Scratch(src))) {
                    return Err(Errno::Inval);
                }
                if let Some(existing) = to_node {
                    let Node::Scratch(dst) = existing else {
                        return Err(Errno::Xdev);
                    };
                    if dst == src {
                        return Ok(());
                    }
                    let dst_is_dir = self.is_dir(&existing);
                    match (from_is_dir, dst_is_dir) {
                        (true, false) => return Err(Errno::Notdir),
                        (false, true) => return Err(Errno::Isdir),
                        (true, true) => {
                            if matches!(&self.scratch.get(dst).data, Data::Dir(e) if !e.is_empty())
                                || self.has_overlays(OverlayParent::Scratch(dst))
                            {
                                return Err(Errno::Notempty);
                            }
                        }
                        (false, false) => {}
                    }
                    self.scratch.unlink(tdir, &to_name, now);
                }
                self.scratch.rename(fdir, &from_name, tdir, &to_name, now)
            }
            (Node::HostDir(fdir), Node::HostDir(tdir)) if fdir.mount == tdir.mount => {
                host::rename(fdir, &from_name, tdir, &to_name)
            }
            _ => Err(Errno::Xdev),
        }
    }

    pub fn link(
        &mut self,
        from_fd: u32,
        from: &str,
        follow: bool,
        to_fd: u32,
        to: &str,
    ) -> Result<(), Errno> {
        let (_, _, from_node, _) = self.resolve_existing(from_fd, from, follow)?;
        if self.is_dir(&from_node) {
            return Err(Errno::Perm);
        }
        let (to_parent, to_name) = self.resolve_new(to_fd, to)?;
        let now = self.now();
        match (&from_node, to_parent.top()) {
            (Node::Scratch(id), Node::Scratch(dir)) => self.scratch.link(*dir, &to_name, *id, now),
            (
                Node::HostEntry {
                    dir: fdir, name, ..
                },
                Node::HostDir(tdir),
            ) if fdir.mount == tdir.mount => host::link(fdir, name, tdir, &to_name),
            _ => Err(Errno::Xdev),
        }
    }

    // ----- the end of a run -----------------------------------------------------------------

    /// Writes the scratch directory at guest path `guest` as a tar archive (see
    /// [`crate::scratch::Scratch::write_tar`]); the error says why it cannot.
    pub fn export_tar(&self, guest: &str, out: &mut dyn std::io::Write) -> Result<(), String> {
        let id = match self.resolve(&self.root_loc(), guest, true) {
            Ok(Resolved::Dir(loc)) => match loc.top() {
                Node::Scratch(id) => *id,
                _ => return Err("not a directory of the scratch filesystem".into()),
            },
            Ok(Resolved::Entry {
                node: Some(Node::Scratch(id)),
                ..
            }) if matches!(self.scratch.get(id).data, crate::scratch::Data::Dir(_)) => id,
            Ok(Resolved::Entry { node: None, .. }) | Err(Errno::Noent) => {
                return Err("the guest did not create this directory".into());
            }
            Ok(_) => return Err("not a directory of the scratch filesystem".into()),
            Err(e) => return Err(format!("cannot resolve it: {e:?}")),
        };
        self.scratch
            .write_tar(id, out)
            .map_err(|e| format!("cannot write the tar file: {e}"))
    }

    /// Closes everything and ends every channel; pipes the guest wrote end cleanly, or as
    /// failed with `failure` (why the VM failed). Summaries come in manifest order; staged
    /// outputs land (or not) with the run's transaction.
    pub fn finish(mut self, failure: Option<&str>) -> Vec<ChannelSummary> {
        self.fds.clear();
        self.channels.drain(..).map(|c| c.finish(failure)).collect()
    }

    /// Makes every pipe end of this VM return `EAGAIN` instead of waiting on the thread; the
    /// caller then awaits [`Fs::take_wait`] (VMs run as futures).
    pub fn set_nonblocking(&mut self) {
        for c in &mut self.channels {
            c.set_nonblocking(true);
        }
    }

    /// What the last call that returned `EAGAIN` on a pipe waits for.
    pub fn take_wait(&mut self) -> Option<zvm_channel::PipeWait> {
        self.channels.iter_mut().find_map(ChannelHandle::take_wait)
    }

    /// The channels, for reading counters during or after a run.
    pub fn channels(&self) -> &[ChannelHandle] {
        &self.channels
    }
}

/// An error and its causes on one line, `outer: inner: ...`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The entry of `fd` if it may transfer data in that direction.
fn data_entry(fds: &[Option<FdEntry>], fd: u32, write: bool) -> Result<&FdEntry, Errno> {
    let e = entry_in(fds, fd)?;
    if matches!(e.handle, Handle::Dir(_)) {
        return Err(Errno::Isdir);
    }
    if !(if write { e.write } else { e.read }) {
        return Err(Errno::Badf);
    }
    Ok(e)
}

fn entry_in(fds: &[Option<FdEntry>], fd: u32) -> Result<&FdEntry, Errno> {
    fds.get(fd as usize)
        .and_then(Option::as_ref)
        .ok_or(Errno::Badf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zvm_manifest::{AccessMode, Channel, ChannelName, ChannelSource, Quota};

    const ROOT_FD: u32 = 3;
    const RW: u64 = rights::FD_READ | rights::FD_WRITE;

    fn null_channel(name: &str, mode: AccessMode) -> ChannelHandle {
        ChannelHandle::open(
            &Channel {
                name: ChannelName::new(name).unwrap(),
                source: ChannelSource::Null,
                mode,
                quota: Quota::default(),
                etag: None,
            },
            &zvm_channel::Transaction::new(None),
        )
        .unwrap()
    }

    fn world(mounts: Vec<Mount>, limits: Limits) -> Fs {
        let mounts = &mounts;
        Fs::new(WorldConfig {
            channels: vec![
                null_channel("stdin", AccessMode::SequentialRead),
                null_channel("stdout", AccessMode::SequentialWrite),
                null_channel("stderr", AccessMode::SequentialWrite),
                null_channel("in/part-1", AccessMode::SequentialRead),
            ],
            mounts,
            shared_inodes: Vec::new(),
            limits,
            clock: Clock::default(),
            seed: 1,
        })
        .unwrap()
    }

    fn names(fs: &Fs, fd: u32) -> Vec<String> {
        fs.readdir(fd)
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect()
    }

    fn create(fs: &mut Fs, path: &str, data: &[u8]) {
        let fd = fs
            .open(ROOT_FD, path, true, oflags::CREAT | oflags::TRUNC, RW, 0, 0)
            .unwrap();
        assert_eq!(fs.write(fd, data).unwrap(), data.len());
        fs.close(fd).unwrap();
    }

    #[test]
    fn root_lists_dev_and_dev_lists_devices_and_channels() {
        let fs = world(Vec::new(), Limits::default());
        assert_eq!(fs.prestat(ROOT_FD).unwrap(), "/");
        assert_eq!(names(&fs, ROOT_FD), [".", "..", "dev"]);
        let mut fs = fs;
        let dev = fs
            .open(
                ROOT_FD,
                "dev",
                true,
                oflags::DIRECTORY,
                rights::FD_READDIR,
                0,
                0,
            )
            .unwrap();
        assert_eq!(
            names(&fs, dev),
            [
                ".", "..", "full", "in", "null", "random", "stderr", "stdin", "stdout", "urandom",
                "zero"
            ]
        );
        assert!(
            fs.open(ROOT_FD, "/dev/in/part-1", true, 0, rights::FD_READ, 0, 0)
                .is_ok()
        );
    }

    #[test]
    fn dotdot_stops_at_the_root_and_symlinks_stay_inside() {
        let mut fs = world(Vec::new(), Limits::default());
        create(&mut fs, "f", b"x");
        assert!(fs.path_filestat(ROOT_FD, "../../../f", true).is_ok());
        fs.symlink("/../../f", ROOT_FD, "abs").unwrap();
        assert_eq!(fs.path_filestat(ROOT_FD, "abs", true).unwrap().size, 1);
        assert_eq!(
            fs.path_filestat(ROOT_FD, "abs", false).unwrap().filetype,
            Filetype::SymbolicLink
        );
        fs.symlink("loop2", ROOT_FD, "loop1").unwrap();
        fs.symlink("loop1", ROOT_FD, "loop2").unwrap();
        assert_eq!(fs.path_filestat(ROOT_FD, "loop1", true), Err(Errno::Loop));
        assert_eq!(
            fs.open(ROOT_FD, "abs", false, 0, rights::FD_READ, 0, 0),
            Err(Errno::Loop)
        );
    }

    #[test]
    fn export_writes_a_deterministic_tar_of_a_scratch_directory() {
        let build = || {
            let mut fs = world(Vec::new(), Limits::default());
            fs.mkdir(ROOT_FD, "out").unwrap();
            fs.mkdir(ROOT_FD, "out/sub").unwrap();
            create(&mut fs, "out/b.txt", b"bee");
            create(&mut fs, "out/sub/a.txt", b"ay");
            fs.symlink("b.txt", ROOT_FD, "out/link").unwrap();
            create(&mut fs, "elsewhere", b"not exported");
            fs
        };
        let (mut one, mut two) = (Vec::new(), Vec::new());
        build().export_tar("/out", &mut one).unwrap();
        build().export_tar("out/", &mut two).unwrap();
        assert_eq!(one, two, "same tree, same bytes");
        let mut archive = tar::Archive::new(one.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
            let link = entry.link_name().unwrap().map(|l| l.display().to_string());
            seen.push((path, body, link, entry.header().uid().unwrap()));
        }
        let e = |p: &str, b: &str, l: Option<&str>| {
            (p.to_string(), b.to_string(), l.map(str::to_string), 0)
        };
        assert_eq!(
            seen,
            [
                e("b.txt", "bee", None),
                e("link", "", Some("b.txt")),
                e("sub/", "", None),
                e("sub/a.txt", "ay", None),
            ]
        );
        let fs = build();
        let err = fs.export_tar("/missing", &mut Vec::new()).unwrap_err();
        assert!(err.contains("did not create"), "{err}");
        let err = fs.export_tar("/dev", &mut Vec::new()).unwrap_err();
        assert!(err.contains("not a directory of the scratch"), "{err}");
        let err = fs.export_tar("/elsewhere", &mut Vec::new()).unwrap_err();
        assert!(err.contains("not a directory of the scratch"), "{err}");
    }

    #[test]
    fn rename_rules() {
        let mut fs = world(Vec::new(), Limits::default());
        fs.mkdir(ROOT_FD, "a").unwrap();
        fs.mkdir(ROOT_FD, "a/b").unwrap();
        assert_eq!(fs.rename(ROOT_FD, "a", ROOT_FD, "a/b/c"), Err(Errno::Inval));
        create(&mut fs, "a/f", b"1");
        assert_eq!(fs.rename(ROOT_FD, "a/f", ROOT_FD, "a/b"), Err(Errno::Isdir));
        assert_eq!(
            fs.rename(ROOT_FD, "a/b", ROOT_FD, "a/f"),
            Err(Errno::Notdir)
        );
        assert_eq!(fs.rmdir(ROOT_FD, "a"), Err(Errno::Notempty));
        assert_eq!(fs.rename(ROOT_FD, "dev", ROOT_FD, "x"), Err(Errno::Busy));
        assert_eq!(fs.unlink(ROOT_FD, "dev/stdin"), Err(Errno::Rofs));
        fs.rename(ROOT_FD, "a/f", ROOT_FD, "g").unwrap();
        assert_eq!(names(&fs, ROOT_FD), [".", "..", "a", "dev", "g"]);
    }

    #[test]
    fn closing_the_root_preopen_releases_it_cleanly() {
        let mut fs = world(Vec::new(), Limits::default());
        let again = fs
            .open(
                ROOT_FD,
                "/",
                true,
                oflags::DIRECTORY,
                rights::FD_READDIR,
                0,
                0,
            )
            .unwrap();
        fs.close(ROOT_FD).unwrap();
        fs.close(again).unwrap();
        assert_eq!(fs.close(ROOT_FD), Err(Errno::Badf));
    }

    #[test]
    fn a_removed_directory_stays_usable_through_its_descriptor() {
        let mut fs = world(Vec::new(), Limits::default());
        fs.mkdir(ROOT_FD, "a").unwrap();
        fs.mkdir(ROOT_FD, "a/b").unwrap();
        let b = fs
            .open(
                ROOT_FD,
                "a/b",
                true,
                oflags::DIRECTORY,
                rights::FD_READDIR,
                0,
                0,
            )
            .unwrap();
        fs.rmdir(ROOT_FD, "a/b").unwrap();
        fs.rmdir(ROOT_FD, "a").unwrap();
        // Reuse the freed inode of `a`.
        create(&mut fs, "c", b"reuse");
        assert_eq!(names(&fs, b), [".", ".."]);
        assert_eq!(fs.path_filestat(b, "..", true), Err(Errno::Noent));
        assert_eq!(
            fs.open(b, "new", true, oflags::CREAT, RW, 0, 0),
            Err(Errno::Noent)
        );
        fs.close(b).unwrap();
    }

    #[test]
    fn open_files_and_scratch_are_limited() {
        let limits = Limits {
            open_files: 6,
            scratch: 4096,
            ..Limits::default()
        };
        let mut fs = world(Vec::new(), limits);
        // 3 stdio + 1 preopen are open; two more fit.
        let a = fs
            .open(ROOT_FD, "dev/null", true, 0, rights::FD_READ, 0, 0)
            .unwrap();
        fs.open(ROOT_FD, "dev/zero", true, 0, rights::FD_READ, 0, 0)
            .unwrap();
        assert_eq!(
            fs.open(ROOT_FD, "dev/null", true, 0, rights::FD_READ, 0, 0),
            Err(Errno::Mfile)
        );
        fs.close(a).unwrap();
        let f = fs
            .open(ROOT_FD, "big", true, oflags::CREAT, RW, 0, 0)
            .unwrap();
        assert_eq!(fs.write(f, &[0; 8192]), Err(Errno::Nospc));
        assert_eq!(fs.filestat(f).unwrap().size, 0);
    }

    #[test]
    fn host_mount_is_confined_and_read_only_when_asked() {
        let host = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        std::fs::write(host.path().join("in.txt"), b"data").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), host.path().join("planted"))
            .unwrap();
        let mount = Mount {
            guest: "/data".into(),
            source: MountSource::Dir {
                path: host.path().to_path_buf(),
                writable: false,
            },
        };
        let mut fs = world(vec![mount], Limits::default());
        // fd 3 is the mount's preopen, fd 4 the root.
        assert_eq!(fs.prestat(3).unwrap(), "/data");
        assert_eq!(fs.prestat(4).unwrap(), "/");
        assert_eq!(fs.path_filestat(4, "data/in.txt", true).unwrap().size, 4);
        // The planted absolute link resolves inside the guest's tree, where there is no such
        // path.
        assert_eq!(
            fs.open(4, "data/planted", true, 0, rights::FD_READ, 0, 0),
            Err(Errno::Noent)
        );
        assert_eq!(
            fs.open(4, "data/new", true, oflags::CREAT, RW, 0, 0),
            Err(Errno::Rofs)
        );
        assert_eq!(
            fs.open(4, "data/in.txt", true, 0, RW, 0, 0),
            Err(Errno::Rofs)
        );
        assert_eq!(
            fs.path_filestat(3, "../data/../data/in.txt", true)
                .unwrap()
                .size,
            4
        );
    }
}
