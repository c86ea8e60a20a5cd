//! Host directories mounted into the guest's tree, confined by construction.
//!
//! The guest never hands the host a path. zvm's own walker resolves every path one component
//! at a time (following symbolic links inside the guest's tree), and each host operation is a
//! single `*at` system call on a directory descriptor with a single, validated name and
//! `AT_SYMLINK_NOFOLLOW`/`O_NOFOLLOW`. A symbolic link planted on the host, a `..` or an
//! absolute path therefore can never lead outside the mounted directory.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::types::{Errno, Filestat, Filetype};

/// Device number reported for files of host mounts that the guest sees (the real one is
/// not revealed).
pub const HOST_DEV_BASE: u64 = 0x100;

/// A directory of a host mount.
#[derive(Debug, Clone)]
pub struct HostDir {
    pub mount: u32,
    pub fd: Arc<OwnedFd>,
    /// Inodes this mount still shares with the user's tree, when it is a staged replica.
    pub shared: Option<Arc<std::collections::HashSet<u64>>>,
}

/// What a name in a host directory is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Dir,
    File,
    Symlink,
    Other,
}

pub fn open_root(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

pub fn kind_of(dir: &HostDir, name: &str) -> Result<Option<HostKind>, Errno> {
    match rustix::fs::statat(&*dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => HostKind::Dir,
            FileType::RegularFile => HostKind::File,
            FileType::Symlink => HostKind::Symlink,
            _ => HostKind::Other,
        })),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn open_dir(dir: &HostDir, name: &str) -> Result<HostDir, Errno> {
    let fd = rustix::fs::openat(
        &*dir.fd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(HostDir {
        mount: dir.mount,
        fd: Arc::new(fd),
        shared: dir.shared.clone(),
    })
}

/// Gives `name` an inode of its own before it is changed, if it shares one with the user's
/// tree.
///
/// A writable mount is staged as a tree of hard links to the user's files (zvm-txn), so that
/// nothing is copied up front; a file must leave that sharing before the guest writes it, or
/// the write would reach the user's file before the run commits. Only inodes the staging
/// linked are separated: files the guest creates, and links it makes among them, behave as
/// usual. (Two names the user had linked to one file become two files once the guest
/// changes one of them.)
pub fn break_link(dir: &HostDir, name: &str) -> Result<(), Errno> {
    let Some(shared) = &dir.shared else {
        return Ok(());
    };
    let st = match rustix::fs::statat(&*dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || !shared.contains(&st.st_ino)
    {
        return Ok(());
    }
    let src = File::from(rustix::fs::openat(
        &*dir.fd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?);
    let temp = format!(".zvm-copy-{}", st.st_ino);
    let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
    let dst = File::from(rustix::fs::openat(
        &*dir.fd,
        &temp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        mode,
    )?);
    let copied = std::io::copy(&mut &src, &mut &dst)
        .map_err(Errno::from)
        .and_then(|_| {
            rustix::fs::fchmod(&dst, mode)?;
            let times = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: st.st_atime,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            rustix::fs::futimens(&dst, &times)?;
            Ok(rustix::fs::renameat(&*dir.fd, &temp, &*dir.fd, name)?)
        });
    if copied.is_err() {
        let _ = rustix::fs::unlinkat(&*dir.fd, &temp, AtFlags::empty());
    }
    copied
}

/// Opens (and possibly creates) a regular file; never follows a symbolic link. A file
/// opened for writing gets an inode of its own first ([`break_link`]).
pub fn open_file(
    dir: &HostDir,
    name: &str,
    read: bool,
    write: bool,
    create: bool,
    excl: bool,
    trunc: bool,
) -> Result<File, Errno> {
    let mut flags = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    flags |= match (read, write) {
        (_, false) => OFlags::RDONLY,
        (false, true) => OFlags::WRONLY,
        (true, true) => OFlags::RDWR,
    };
    if create {
        flags |= OFlags::CREATE;
    }
    if excl {
        flags |= OFlags::EXCL;
    }
    if trunc {
        flags |= OFlags::TRUNC;
    }
    if write || trunc {
        break_link(dir, name)?;
    }
    let fd = rustix::fs::openat(&*dir.fd, name, flags, Mode::from_raw_mode(0o644))?;
    Ok(File::from(fd))
}

pub fn stat_at(dir: &HostDir, name: &str) -> Result<Filestat, Errno> {
    let st = rustix::fs::statat(&*dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(filestat(dir.mount, &st))
}

pub fn stat_fd(mount: u32, fd: impl std::os::fd::AsFd) -> Result<Filestat, Errno> {
    let st = rustix::fs::fstat(fd)?;
    Ok(filestat(mount, &st))
}

fn filestat(mount: u32, st: &rustix::fs::Stat) -> Filestat {
    let ns = |s: i64, n: u64| {
        (s.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(n)
    };
    Filestat {
        dev: HOST_DEV_BASE + mount as u64,
        ino: st.st_ino,
        filetype: match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Filetype::Directory,
            FileType::RegularFile => Filetype::RegularFile,
            FileType::Symlink => Filetype::SymbolicLink,
            FileType::CharacterDevice => Filetype::CharacterDevice,
            FileType::BlockDevice => Filetype::BlockDevice,
            _ => Filetype::Unknown,
        },
        nlink: st.st_nlink,
        size: st.st_size as u64,
        atim: ns(st.st_atime, st.st_atime_nsec),
        mtim: ns(st.st_mtime, st.st_mtime_nsec),
        ctim: ns(st.st_ctime, st.st_ctime_nsec),
    }
}

pub fn read_link(dir: &HostDir, name: &str) -> Result<String, Errno> {
    let target = rustix::fs::readlinkat(&*dir.fd, name, Vec::new())?;
    target.into_string().map_err(|_| Errno::Ilseq)
}

pub fn list(dir: &HostDir) -> Result<Vec<(String, u64, Filetype)>, Errno> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(&*dir.fd)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            // A name that is not UTF-8 cannot be expressed to a WASI guest; skip it rather
            // than show a name that does not open.
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let ft = match entry.file_type() {
            FileType::Directory => Filetype::Directory,
            FileType::RegularFile => Filetype::RegularFile,
            FileType::Symlink => Filetype::SymbolicLink,
            _ => Filetype::Unknown,
        };
        out.push((name.to_string(), entry.ino(), ft));
    }
    // Host directory order is arbitrary; the guest sees a sorted, deterministic listing.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub fn mkdir(dir: &HostDir, name: &str) -> Result<(), Errno> {
    Ok(rustix::fs::mkdirat(
        &*dir.fd,
        name,
        Mode::from_raw_mode(0o755),
    )?)
}

pub fn unlink(dir: &HostDir, name: &str, is_dir: bool) -> Result<(), Errno> {
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    Ok(rustix::fs::unlinkat(&*dir.fd, name, flags)?)
}

pub fn rename(from: &HostDir, from_name: &str, to: &HostDir, to_name: &str) -> Result<(), Errno> {
    Ok(rustix::fs::renameat(
        &*from.fd, from_name, &*to.fd, to_name,
    )?)
}

pub fn link(from: &HostDir, from_name: &str, to: &HostDir, to_name: &str) -> Result<(), Errno> {
    Ok(rustix::fs::linkat(
        &*from.fd,
        from_name,
        &*to.fd,
        to_name,
        AtFlags::empty(),
    )?)
}

pub fn symlink(target: &str, dir: &HostDir, name: &str) -> Result<(), Errno> {
    Ok(rustix::fs::symlinkat(target, &*dir.fd, name)?)
}

fn timespec(t: crate::types::SetTime) -> rustix::fs::Timespec {
    use crate::types::SetTime;
    match t {
        SetTime::Keep => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        SetTime::Now => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        SetTime::To(ns) => rustix::fs::Timespec {
            tv_sec: (ns / 1_000_000_000) as i64,
            tv_nsec: (ns % 1_000_000_000) as _,
        },
    }
}

fn timestamps(atim: crate::types::SetTime, mtim: crate::types::SetTime) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: timespec(atim),
        last_modification: timespec(mtim),
    }
}

pub fn set_times_at(
    dir: &HostDir,
    name: &str,
    atim: crate::types::SetTime,
    mtim: crate::types::SetTime,
) -> Result<(), Errno> {
    break_link(dir, name)?;
    let ts = timestamps(atim, mtim);
    Ok(rustix::fs::utimensat(
        &*dir.fd,
        name,
        &ts,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Sets times through a descriptor. A regular file still sharing its inode with the user's
/// tree (opened for reading only, so not separated by [`break_link`]) is refused with
/// ENOTSUP: through a descriptor there is no name to separate, and the change would reach
/// the user's file before the run commits. Setting times by path works.
pub fn set_times_fd(
    fd: impl std::os::fd::AsFd,
    shared: Option<&std::collections::HashSet<u64>>,
    atim: crate::types::SetTime,
    mtim: crate::types::SetTime,
) -> Result<(), Errno> {
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
        && shared.is_some_and(|s| s.contains(&st.st_ino))
    {
        return Err(Errno::Notsup);
    }
    Ok(rustix::fs::futimens(fd, &timestamps(atim, mtim))?)
}
