//! The WASI preview1 vocabulary the guest's world speaks: errno values, file types, flags,
//! rights and stat records, as plain Rust values.
//!
//! They are defined here (not taken from a WASI crate) because this crate must know nothing
//! of wasmtime or of guest memory: the VM crate encodes these values into the guest's memory
//! with the preview1 layouts.

use std::io;

use zvm_channel::ChannelError;

/// A WASI preview1 errno. The discriminants are the ABI values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Errno {
    TooBig = 1,
    Acces = 2,
    Again = 6,
    Badf = 8,
    Busy = 10,
    Dquot = 19,
    Exist = 20,
    Fault = 21,
    Fbig = 22,
    Ilseq = 25,
    Inval = 28,
    Io = 29,
    Isdir = 31,
    Loop = 32,
    Mfile = 33,
    Mlink = 34,
    Nametoolong = 37,
    Nfile = 41,
    Noent = 44,
    Nomem = 48,
    Nospc = 51,
    Nosys = 52,
    Notdir = 54,
    Notempty = 55,
    Notsup = 58,
    Overflow = 61,
    Perm = 63,
    Pipe = 64,
    Rofs = 69,
    Spipe = 70,
    Xdev = 75,
    Notcapable = 76,
}

impl Errno {
    /// The ABI value.
    pub fn raw(self) -> u16 {
        self as u16
    }

    /// Maps a host OS error to the nearest WASI errno.
    pub fn from_host(err: &io::Error) -> Errno {
        let Some(code) = err.raw_os_error() else {
            return match err.kind() {
                io::ErrorKind::NotFound => Errno::Noent,
                io::ErrorKind::PermissionDenied => Errno::Acces,
                io::ErrorKind::AlreadyExists => Errno::Exist,
                io::ErrorKind::InvalidInput => Errno::Inval,
                _ => Errno::Io,
            };
        };
        match rustix::io::Errno::from_raw_os_error(code) {
            rustix::io::Errno::TOOBIG => Errno::TooBig,
            rustix::io::Errno::ACCESS => Errno::Acces,
            rustix::io::Errno::AGAIN => Errno::Again,
            rustix::io::Errno::BADF => Errno::Badf,
            rustix::io::Errno::BUSY => Errno::Busy,
            rustix::io::Errno::DQUOT => Errno::Dquot,
            rustix::io::Errno::EXIST => Errno::Exist,
            rustix::io::Errno::FBIG => Errno::Fbig,
            rustix::io::Errno::ILSEQ => Errno::Ilseq,
            rustix::io::Errno::INVAL => Errno::Inval,
            rustix::io::Errno::ISDIR => Errno::Isdir,
            rustix::io::Errno::LOOP => Errno::Loop,
            rustix::io::Errno::MFILE => Errno::Mfile,
            rustix::io::Errno::MLINK => Errno::Mlink,
            rustix::io::Errno::NAMETOOLONG => Errno::Nametoolong,
            rustix::io::Errno::NFILE => Errno::Nfile,
            rustix::io::Errno::NOENT => Errno::Noent,
            rustix::io::Errno::NOMEM => Errno::Nomem,
            rustix::io::Errno::NOSPC => Errno::Nospc,
            rustix::io::Errno::NOTDIR => Errno::Notdir,
            rustix::io::Errno::NOTEMPTY => Errno::Notempty,
            rustix::io::Errno::OPNOTSUPP => Errno::Notsup,
            rustix::io::Errno::OVERFLOW => Errno::Overflow,
            rustix::io::Errno::PERM => Errno::Perm,
            rustix::io::Errno::PIPE => Errno::Pipe,
            rustix::io::Errno::ROFS => Errno::Rofs,
            rustix::io::Errno::SPIPE => Errno::Spipe,
            rustix::io::Errno::XDEV => Errno::Xdev,
            _ => Errno::Io,
        }
    }
}

impl From<io::Error> for Errno {
    fn from(err: io::Error) -> Errno {
        Errno::from_host(&err)
    }
}

impl From<rustix::io::Errno> for Errno {
    fn from(err: rustix::io::Errno) -> Errno {
        Errno::from_host(&io::Error::from_raw_os_error(err.raw_os_error()))
    }
}

impl From<ChannelError> for Errno {
    fn from(err: ChannelError) -> Errno {
        match err {
            ChannelError::Quota { .. } => Errno::Dquot,
            ChannelError::Direction(_) => Errno::Badf,
            ChannelError::NotSeekable(_) => Errno::Spipe,
            ChannelError::Io { error, .. } => Errno::from_host(&error),
            ChannelError::WouldBlock(_) => Errno::Again,
            ChannelError::Broken(_) => Errno::Pipe,
        }
    }
}

/// WASI file types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Filetype {
    Unknown = 0,
    BlockDevice = 1,
    CharacterDevice = 2,
    Directory = 3,
    RegularFile = 4,
    SymbolicLink = 7,
}

/// `filestat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filestat {
    pub dev: u64,
    pub ino: u64,
    pub filetype: Filetype,
    pub nlink: u64,
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

/// `fdstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fdstat {
    pub filetype: Filetype,
    pub flags: u16,
    pub rights_base: u64,
    pub rights_inheriting: u64,
}

/// One directory entry, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirent {
    pub name: String,
    pub ino: u64,
    pub filetype: Filetype,
}

/// `fdflags`.
pub mod fdflags {
    pub const APPEND: u16 = 1;
    pub const DSYNC: u16 = 2;
    pub const NONBLOCK: u16 = 4;
    pub const RSYNC: u16 = 8;
    pub const SYNC: u16 = 16;
}

/// `oflags`.
pub mod oflags {
    pub const CREAT: u16 = 1;
    pub const DIRECTORY: u16 = 2;
    pub const EXCL: u16 = 4;
    pub const TRUNC: u16 = 8;
}

/// `lookupflags`.
pub mod lookupflags {
    pub const SYMLINK_FOLLOW: u32 = 1;
}

/// `fstflags`.
pub mod fstflags {
    pub const ATIM: u16 = 1;
    pub const ATIM_NOW: u16 = 2;
    pub const MTIM: u16 = 4;
    pub const MTIM_NOW: u16 = 8;
}

/// `rights`.
pub mod rights {
    pub const FD_DATASYNC: u64 = 1 << 0;
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    pub const FD_SYNC: u64 = 1 << 4;
    pub const FD_TELL: u64 = 1 << 5;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_ADVISE: u64 = 1 << 7;
    pub const FD_ALLOCATE: u64 = 1 << 8;
    pub const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    pub const PATH_CREATE_FILE: u64 = 1 << 10;
    pub const PATH_LINK_SOURCE: u64 = 1 << 11;
    pub const PATH_LINK_TARGET: u64 = 1 << 12;
    pub const PATH_OPEN: u64 = 1 << 13;
    pub const FD_READDIR: u64 = 1 << 14;
    pub const PATH_READLINK: u64 = 1 << 15;
    pub const PATH_RENAME_SOURCE: u64 = 1 << 16;
    pub const PATH_RENAME_TARGET: u64 = 1 << 17;
    pub const PATH_FILESTAT_GET: u64 = 1 << 18;
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    pub const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    pub const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    pub const PATH_SYMLINK: u64 = 1 << 24;
    pub const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    pub const PATH_UNLINK_FILE: u64 = 1 << 26;
    pub const POLL_FD_READWRITE: u64 = 1 << 27;

    /// Rights of a regular file, before removing the direction it was not opened for.
    pub const FILE: u64 = FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;
    /// Rights of a directory.
    pub const DIR: u64 = FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_ADVISE
        | PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_SIZE
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE;
}

/// `whence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whence {
    Set,
    Cur,
    End,
}

impl Whence {
    pub fn from_raw(raw: u8) -> Option<Whence> {
        match raw {
            0 => Some(Whence::Set),
            1 => Some(Whence::Cur),
            2 => Some(Whence::End),
            _ => None,
        }
    }
}

/// A requested time change for one timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Keep,
    Now,
    To(u64),
}

impl SetTime {
    /// Decodes the access (or modification) half of `fstflags`.
    pub fn decode(flags: u16, value: u64, set: u16, now: u16) -> Result<SetTime, Errno> {
        match (flags & set != 0, flags & now != 0) {
            (true, true) => Err(Errno::Inval),
            (true, false) => Ok(SetTime::To(value)),
            (false, true) => Ok(SetTime::Now),
            (false, false) => Ok(SetTime::Keep),
        }
    }
}
