//! zvm's WASI preview1 host: the ABI between a guest and its [`Fs`] world.
//!
//! Each function here only moves values across the boundary: it checks and decodes guest
//! pointers (every out-of-bounds access is `EFAULT`, never a host fault), calls the world,
//! and encodes the answer with the preview1 layouts. Semantics (paths, quotas, time,
//! randomness) live in the world, so that they are enforced in one place.
//!
//! Like wasmtime, `fd_read`/`fd_write` and their positioned forms transfer through the first
//! non-empty buffer of the vector only; this is a permitted short transfer, it keeps one guest
//! call equal to one channel call (ZeroVM's quotas count calls), and every libc loops.

use wasmtime::{Caller, Linker};
use zvm_fs::{Dirent, Errno, Filestat, Fs, SetTime, Whence, fstflags, lookupflags};

use crate::VmState;

/// The import module every preview1 function lives in.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// Longest single transfer the host makes for one call, so that one guest call never makes
/// the host allocate or copy more than this at once.
pub const MAX_IO_CHUNK: usize = 16 << 20;

/// The guest asked to exit; carried through wasmtime as the error ending the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest exited with code {0}")]
pub struct Exit(pub u32);

/// `ptr + off` as a guest address, or EFAULT when it leaves the 32-bit address space: a
/// hostile pointer must get an errno, never an arithmetic overflow in the host.
fn offset(ptr: u32, off: u32) -> Result<u32, Errno> {
    ptr.checked_add(off).ok_or(Errno::Fault)
}

/// Bounds-checked view of the guest's linear memory. While a snapshot is being made
/// ([`crate::snapshot`]), it also notes which bytes the host read and wrote, so that the call
/// can be replayed against another VM's world.
struct Mem<'a>(
    &'a mut [u8],
    Option<std::cell::RefCell<crate::snapshot::MemLog>>,
);

impl Mem<'_> {
    fn range(&self, ptr: u32, len: u32) -> Result<std::ops::Range<usize>, Errno> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Errno::Fault)?;
        if end > self.0.len() {
            return Err(Errno::Fault);
        }
        Ok(start..end)
    }

    fn slice(&self, ptr: u32, len: u32) -> Result<&[u8], Errno> {
        let r = self.range(ptr, len)?;
        if let Some(log) = &self.1 {
            log.borrow_mut().read(ptr, &self.0[r.clone()]);
        }
        Ok(&self.0[r])
    }

    fn slice_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Errno> {
        let r = self.range(ptr, len)?;
        if let Some(log) = &self.1 {
            log.borrow_mut().wrote(ptr, len);
        }
        Ok(&mut self.0[r])
    }

    fn str(&self, ptr: u32, len: u32) -> Result<&str, Errno> {
        std::str::from_utf8(self.slice(ptr, len)?).map_err(|_| Errno::Ilseq)
    }

    fn u32(&self, ptr: u32) -> Result<u32, Errno> {
        Ok(u32::from_le_bytes(
            self.slice(ptr, 4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&self, ptr: u32) -> Result<u64, Errno> {
        Ok(u64::from_le_bytes(
            self.slice(ptr, 8)?.try_into().expect("8 bytes"),
        ))
    }

    fn u16(&self, ptr: u32) -> Result<u16, Errno> {
        Ok(u16::from_le_bytes(
            self.slice(ptr, 2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u8(&self, ptr: u32) -> Result<u8, Errno> {
        Ok(self.slice(ptr, 1)?[0])
    }

    fn put(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), Errno> {
        self.slice_mut(ptr, bytes.len() as u32)?
            .copy_from_slice(bytes);
        Ok(())
    }

    fn put_u32(&mut self, ptr: u32, v: u32) -> Result<(), Errno> {
        self.put(ptr, &v.to_le_bytes())
    }

    fn put_u64(&mut self, ptr: u32, v: u64) -> Result<(), Errno> {
        self.put(ptr, &v.to_le_bytes())
    }

    /// The first non-empty buffer of an iovec array: (pointer, length).
    fn first_iovec(&self, iovs: u32, count: u32) -> Result<(u32, u32), Errno> {
        for i in 0..count {
            let at = iovs
                .checked_add(i.checked_mul(8).ok_or(Errno::Fault)?)
                .ok_or(Errno::Fault)?;
            let ptr = self.u32(at)?;
            let len = self.u32(offset(at, 4)?)?;
            if len > 0 {
                self.range(ptr, len)?;
                return Ok((ptr, len.min(MAX_IO_CHUNK as u32)));
            }
        }
        Ok((0, 0))
    }

    fn filestat(&mut self, ptr: u32, st: &Filestat) -> Result<(), Errno> {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&st.dev.to_le_bytes());
        b[8..16].copy_from_slice(&st.ino.to_le_bytes());
        b[16] = st.filetype as u8;
        b[24..32].copy_from_slice(&st.nlink.to_le_bytes());
        b[32..40].copy_from_slice(&st.size.to_le_bytes());
        b[40..48].copy_from_slice(&st.atim.to_le_bytes());
        b[48..56].copy_from_slice(&st.mtim.to_le_bytes());
        b[56..64].copy_from_slice(&st.ctim.to_le_bytes());
        self.put(ptr, &b)
    }
}

/// Runs `f` with the guest's memory and world, turning the outcome into an errno.
fn with(
    caller: &mut Caller<'_, VmState>,
    f: impl FnOnce(&mut Mem<'_>, &mut VmState) -> Result<(), Errno>,
) -> i32 {
    let Some(memory) = caller.data().memory else {
        return Errno::Fault.raw() as i32;
    };
    let (data, state) = memory.data_and_store_mut(caller);
    let log = state
        .snapshot
        .as_ref()
        .map(|_| std::cell::RefCell::new(crate::snapshot::MemLog::default()));
    let mut mem = Mem(data, log);
    let errno = match f(&mut mem, state) {
        Ok(()) => 0,
        Err(e) => e.raw() as i32,
    };
    if let (Some(log), Some(rec)) = (mem.1, state.snapshot.as_mut()) {
        rec.note(log.into_inner(), mem.0);
    }
    errno
}

fn fs(state: &mut VmState) -> &mut Fs {
    &mut state.fs
}

/// Writes a list of NUL-terminated strings (argv or environ) and the pointer array.
fn put_strings(mem: &mut Mem<'_>, list: &[String], ptrs: u32, buf: u32) -> Result<(), Errno> {
    let mut at = buf;
    for (i, s) in list.iter().enumerate() {
        let slot = offset(ptrs, (i as u32).checked_mul(4).ok_or(Errno::Fault)?)?;
        mem.put_u32(slot, at)?;
        mem.put(at, s.as_bytes())?;
        let nul = offset(at, s.len() as u32)?;
        mem.put(nul, &[0])?;
        at = offset(nul, 1)?;
    }
    Ok(())
}

fn sizes(list: &[String]) -> (u32, u32) {
    let bytes: usize = list.iter().map(|s| s.len() + 1).sum();
    (list.len() as u32, bytes as u32)
}

fn set_time(flags: u16, atim: u64, mtim: u64) -> Result<(SetTime, SetTime), Errno> {
    Ok((
        SetTime::decode(flags, atim, fstflags::ATIM, fstflags::ATIM_NOW)?,
        SetTime::decode(flags, mtim, fstflags::MTIM, fstflags::MTIM_NOW)?,
    ))
}

fn encode_dirents(entries: &[Dirent], cookie: u64, out: &mut Vec<u8>, max: usize) {
    for (i, e) in entries.iter().enumerate().skip(cookie as usize) {
        if out.len() >= max {
            break;
        }
        let mut head = [0u8; 24];
        head[0..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        head[8..16].copy_from_slice(&e.ino.to_le_bytes());
        head[16..20].copy_from_slice(&(e.name.len() as u32).to_le_bytes());
        head[20] = e.filetype as u8;
        out.extend_from_slice(&head);
        out.extend_from_slice(e.name.as_bytes());
    }
}

/// Adds every preview1 function to `linker`.
/// The host for VMs run as futures ([`crate::Program::run_async`]): the same functions, but
/// `fd_read` and `fd_write` on a pipe that cannot move bytes now await the other end instead
/// of returning `EAGAIN`, so that the guest sees an ordinary blocking call while its thread
/// runs other VMs.
pub fn add_to_linker_async(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    add_to_linker(linker)?;
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        MODULE,
        "fd_read",
        |mut c: Caller<'_, VmState>, (fd, iovs, n, out): (u32, u32, u32, u32)| {
            Box::new(async move {
                loop {
                    let r = with(&mut c, |m, s| {
                        let (ptr, len) = m.first_iovec(iovs, n)?;
                        let got = fs(s).read(fd, m.slice_mut(ptr, len)?)?;
                        m.put_u32(out, got as u32)
                    });
                    match pipe_wait(&mut c, r) {
                        Some(wait) => wait.await,
                        None => return r,
                    }
                }
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "fd_write",
        |mut c: Caller<'_, VmState>, (fd, iovs, n, out): (u32, u32, u32, u32)| {
            Box::new(async move {
                loop {
                    let r = with(&mut c, |m, s| {
                        let (ptr, len) = m.first_iovec(iovs, n)?;
                        let put = fs(s).write(fd, m.slice(ptr, len)?)?;
                        m.put_u32(out, put as u32)
                    });
                    match pipe_wait(&mut c, r) {
                        Some(wait) => wait.await,
                        None => return r,
                    }
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The pipe to await when a call returned `EAGAIN` because a pipe could not move bytes.
fn pipe_wait(c: &mut Caller<'_, VmState>, result: i32) -> Option<zvm_channel::PipeWait> {
    if result != Errno::Again.raw() as i32 {
        return None;
    }
    c.data_mut().fs.take_wait()
}

pub fn add_to_linker(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "args_get",
        |mut c: Caller<'_, VmState>, argv: u32, buf: u32| {
            with(&mut c, |m, s| put_strings(m, &s.args, argv, buf))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "args_sizes_get",
        |mut c: Caller<'_, VmState>, count: u32, size: u32| {
            with(&mut c, |m, s| {
                let (n, bytes) = sizes(&s.args);
                m.put_u32(count, n)?;
                m.put_u32(size, bytes)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_get",
        |mut c: Caller<'_, VmState>, env: u32, buf: u32| {
            with(&mut c, |m, s| put_strings(m, &s.env, env, buf))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        |mut c: Caller<'_, VmState>, count: u32, size: u32| {
            with(&mut c, |m, s| {
                let (n, bytes) = sizes(&s.env);
                m.put_u32(count, n)?;
                m.put_u32(size, bytes)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut c: Caller<'_, VmState>, id: u32, out: u32| {
            with(&mut c, |m, _| {
                if id > 3 {
                    return Err(Errno::Inval);
                }
                m.put_u64(out, zvm_fs::clock::CLOCK_RESOLUTION_NS)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: Caller<'_, VmState>, id: u32, _precision: u64, out: u32| {
            with(&mut c, |m, s| {
                let clock = &mut s.fs.clock;
                let t = match id {
                    0 => clock.realtime(),
                    // Process and thread CPU time are the monotonic clock: the guest's only CPU
                    // is its own.
                    1..=3 => clock.monotonic(),
                    _ => return Err(Errno::Inval),
                };
                m.put_u64(out, t)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_advise",
        |mut c: Caller<'_, VmState>, fd: u32, off: u64, len: u64, advice: u32| {
            with(&mut c, |_, s| fs(s).advise(fd, off, len, advice as u8))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_allocate",
        |mut c: Caller<'_, VmState>, fd: u32, off: u64, len: u64| {
            with(&mut c, |_, s| fs(s).allocate(fd, off, len))
        },
    )?;
    linker.func_wrap(MODULE, "fd_close", |mut c: Caller<'_, VmState>, fd: u32| {
        with(&mut c, |_, s| fs(s).close(fd))
    })?;
    linker.func_wrap(
        MODULE,
        "fd_datasync",
        |mut c: Caller<'_, VmState>, fd: u32| with(&mut c, |_, s| fs(s).sync(fd)),
    )?;
    linker.func_wrap(MODULE, "fd_sync", |mut c: Caller<'_, VmState>, fd: u32| {
        with(&mut c, |_, s| fs(s).sync(fd))
    })?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        |mut c: Caller<'_, VmState>, fd: u32, out: u32| {
            with(&mut c, |m, s| {
                let st = fs(s).fdstat(fd)?;
                let mut b = [0u8; 24];
                b[0] = st.filetype as u8;
                b[2..4].copy_from_slice(&st.flags.to_le_bytes());
                b[8..16].copy_from_slice(&st.rights_base.to_le_bytes());
                b[16..24].copy_from_slice(&st.rights_inheriting.to_le_bytes());
                m.put(out, &b)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        |mut c: Caller<'_, VmState>, fd: u32, flags: u32| {
            with(&mut c, |_, s| fs(s).set_fdflags(fd, flags as u16))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_rights",
        |mut c: Caller<'_, VmState>, fd: u32, base: u64, inh: u64| {
            with(&mut c, |_, s| fs(s).set_rights(fd, base, inh))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_get",
        |mut c: Caller<'_, VmState>, fd: u32, out: u32| {
            with(&mut c, |m, s| {
                let st = fs(s).filestat(fd)?;
                m.filestat(out, &st)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_size",
        |mut c: Caller<'_, VmState>, fd: u32, size: u64| {
            with(&mut c, |_, s| fs(s).set_size(fd, size))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_times",
        |mut c: Caller<'_, VmState>, fd: u32, atim: u64, mtim: u64, flags: u32| {
            with(&mut c, |_, s| {
                let (a, m) = set_time(flags as u16, atim, mtim)?;
                fs(s).set_times(fd, a, m)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pread",
        |mut c: Caller<'_, VmState>, fd: u32, iovs: u32, n: u32, off: u64, out: u32| {
            with(&mut c, |m, s| {
                let (ptr, len) = m.first_iovec(iovs, n)?;
                let got = fs(s).pread(fd, m.slice_mut(ptr, len)?, off)?;
                m.put_u32(out, got as u32)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        |mut c: Caller<'_, VmState>, fd: u32, out: u32| {
            with(&mut c, |m, s| {
                let len = fs(s).prestat(fd)?.len() as u32;
                m.put_u32(out, 0)?;
                m.put_u32(offset(out, 4)?, len)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |mut c: Caller<'_, VmState>, fd: u32, buf: u32, len: u32| {
            with(&mut c, |m, s| {
                let name = fs(s).prestat(fd)?;
                if name.len() > len as usize {
                    return Err(Errno::Nametoolong);
                }
                m.put(buf, name.as_bytes())
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pwrite",
        |mut c: Caller<'_, VmState>, fd: u32, iovs: u32, n: u32, off: u64, out: u32| {
            with(&mut c, |m, s| {
                let (ptr, len) = m.first_iovec(iovs, n)?;
                let put = fs(s).pwrite(fd, m.slice(ptr, len)?, off)?;
                m.put_u32(out, put as u32)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |mut c: Caller<'_, VmState>, fd: u32, iovs: u32, n: u32, out: u32| {
            with(&mut c, |m, s| {
                let (ptr, len) = m.first_iovec(iovs, n)?;
                let got = fs(s).read(fd, m.slice_mut(ptr, len)?)?;
                m.put_u32(out, got as u32)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_readdir",
        |mut c: Caller<'_, VmState>, fd: u32, buf: u32, len: u32, cookie: u64, out: u32| {
            with(&mut c, |m, s| {
                let entries = fs(s).readdir(fd)?;
                let mut bytes = Vec::new();
                encode_dirents(&entries, cookie, &mut bytes, len as usize);
                // A full buffer tells the guest to call again with the last cookie it saw.
                let n = bytes.len().min(len as usize);
                m.put(buf, &bytes[..n])?;
                m.put_u32(out, n as u32)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_renumber",
        |mut c: Caller<'_, VmState>, from: u32, to: u32| {
            with(&mut c, |_, s| fs(s).renumber(from, to))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |mut c: Caller<'_, VmState>, fd: u32, delta: i64, whence: u32, out: u32| {
            with(&mut c, |m, s| {
                let whence = Whence::from_raw(whence as u8).ok_or(Errno::Inval)?;
                let pos = fs(s).seek(fd, delta, whence)?;
                m.put_u64(out, pos)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_tell",
        |mut c: Caller<'_, VmState>, fd: u32, out: u32| {
            with(&mut c, |m, s| {
                let pos = fs(s).tell(fd)?;
                m.put_u64(out, pos)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut c: Caller<'_, VmState>, fd: u32, iovs: u32, n: u32, out: u32| {
            with(&mut c, |m, s| {
                let (ptr, len) = m.first_iovec(iovs, n)?;
                let put = fs(s).write(fd, m.slice(ptr, len)?)?;
                m.put_u32(out, put as u32)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_create_directory",
        |mut c: Caller<'_, VmState>, fd: u32, p: u32, pl: u32| {
            with(&mut c, |m, s| fs(s).mkdir(fd, m.str(p, pl)?))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_get",
        |mut c: Caller<'_, VmState>, fd: u32, flags: u32, p: u32, pl: u32, out: u32| {
            // A snapshot point may be here too (see `crate::snapshot`).
            if c.data().rewind.is_some() {
                crate::snapshot::finish_rewind(&mut c)?;
            }
            Ok(with(&mut c, |m, s| {
                let follow = flags & lookupflags::SYMLINK_FOLLOW != 0;
                let st = fs(s).path_filestat(fd, m.str(p, pl)?, follow)?;
                m.filestat(out, &st)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_set_times",
        |mut c: Caller<'_, VmState>,
         fd: u32,
         flags: u32,
         p: u32,
         pl: u32,
         atim: u64,
         mtim: u64,
         fst: u32| {
            with(&mut c, |m, s| {
                let follow = flags & lookupflags::SYMLINK_FOLLOW != 0;
                let (a, t) = set_time(fst as u16, atim, mtim)?;
                let path = m.str(p, pl)?;
                fs(s).path_set_times(fd, path, follow, a, t)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_link",
        |mut c: Caller<'_, VmState>,
         ofd: u32,
         flags: u32,
         op: u32,
         opl: u32,
         nfd: u32,
         np: u32,
         npl: u32| {
            with(&mut c, |m, s| {
                let follow = flags & lookupflags::SYMLINK_FOLLOW != 0;
                let (old, new) = (m.str(op, opl)?, m.str(np, npl)?);
                fs(s).link(ofd, old, follow, nfd, new)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_open",
        |mut c: Caller<'_, VmState>,
         fd: u32,
         dirflags: u32,
         p: u32,
         pl: u32,
         oflags: u32,
         base: u64,
         inh: u64,
         fdflags: u32,
         out: u32| {
            // A VM started from a snapshot resumes inside this call (see `crate::snapshot`).
            if c.data().rewind.is_some() {
                crate::snapshot::finish_rewind(&mut c)?;
            }
            Ok(with(&mut c, |m, s| {
                let follow = dirflags & lookupflags::SYMLINK_FOLLOW != 0;
                let path = m.str(p, pl)?;
                let new = fs(s).open(fd, path, follow, oflags as u16, base, inh, fdflags as u16)?;
                if let Err(e) = m.put_u32(out, new) {
                    let _ = fs(s).close(new);
                    return Err(e);
                }
                Ok(())
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_readlink",
        |mut c: Caller<'_, VmState>, fd: u32, p: u32, pl: u32, buf: u32, len: u32, out: u32| {
            // A snapshot point may be here too (see `crate::snapshot`).
            if c.data().rewind.is_some() {
                crate::snapshot::finish_rewind(&mut c)?;
            }
            Ok(with(&mut c, |m, s| {
                let target = fs(s).readlink(fd, m.str(p, pl)?)?;
                // Like readlink(2), the result is truncated to the buffer.
                let n = target.len().min(len as usize);
                m.put(buf, &target.as_bytes()[..n])?;
                m.put_u32(out, n as u32)
            }))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_remove_directory",
        |mut c: Caller<'_, VmState>, fd: u32, p: u32, pl: u32| {
            with(&mut c, |m, s| fs(s).rmdir(fd, m.str(p, pl)?))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_rename",
        |mut c: Caller<'_, VmState>, ofd: u32, op: u32, opl: u32, nfd: u32, np: u32, npl: u32| {
            with(&mut c, |m, s| {
                let (old, new) = (m.str(op, opl)?, m.str(np, npl)?);
                fs(s).rename(ofd, old, nfd, new)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_symlink",
        |mut c: Caller<'_, VmState>, op: u32, opl: u32, fd: u32, np: u32, npl: u32| {
            with(&mut c, |m, s| {
                let (target, path) = (m.str(op, opl)?, m.str(np, npl)?);
                fs(s).symlink(target, fd, path)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_unlink_file",
        |mut c: Caller<'_, VmState>, fd: u32, p: u32, pl: u32| {
            with(&mut c, |m, s| fs(s).unlink(fd, m.str(p, pl)?))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        |mut c: Caller<'_, VmState>, subs: u32, events: u32, n: u32, out: u32| {
            with(&mut c, |m, s| poll_oneoff(m, s, subs, events, n, out))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |_c: Caller<'_, VmState>, code: u32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(Exit(code)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_raise",
        |_c: Caller<'_, VmState>, _sig: u32| -> i32 {
            // There are no signals in a zvm guest.
            Errno::Notsup.raw() as i32
        },
    )?;
    linker.func_wrap(MODULE, "sched_yield", |_c: Caller<'_, VmState>| -> i32 {
        0
    })?;
    linker.func_wrap(
        MODULE,
        "random_get",
        |mut c: Caller<'_, VmState>, buf: u32, len: u32| {
            with(&mut c, |m, s| {
                let out = m.slice_mut(buf, len)?;
                s.fs.random(out);
                Ok(())
            })
        },
    )?;
    // Sockets: zvm guests talk through channels only.
    linker.func_wrap(
        MODULE,
        "sock_accept",
        |_c: Caller<'_, VmState>, _fd: u32, _flags: u32, _out: u32| -> i32 {
            Errno::Notsup.raw() as i32
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_recv",
        |_c: Caller<'_, VmState>,
         _fd: u32,
         _iovs: u32,
         _n: u32,
         _flags: u32,
         _out: u32,
         _oflags: u32|
         -> i32 { Errno::Notsup.raw() as i32 },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send",
        |_c: Caller<'_, VmState>, _fd: u32, _iovs: u32, _n: u32, _flags: u32, _out: u32| -> i32 {
            Errno::Notsup.raw() as i32
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_shutdown",
        |_c: Caller<'_, VmState>, _fd: u32, _how: u32| -> i32 { Errno::Notsup.raw() as i32 },
    )?;
    Ok(())
}

/// Largest number of subscriptions one poll_oneoff call may pass; the guest's memory bounds
/// it anyway, this keeps the host's scratch vector small.
const MAX_SUBSCRIPTIONS: u32 = 4096;

/// poll_oneoff: descriptors are always ready (files and host streams do not block in zvm);
/// clock subscriptions are satisfied by advancing virtual time to the earliest deadline, so
/// a sleeping guest never waits on the host.
fn poll_oneoff(
    m: &mut Mem<'_>,
    s: &mut VmState,
    subs: u32,
    events: u32,
    n: u32,
    out: u32,
) -> Result<(), Errno> {
    if n == 0 {
        return Err(Errno::Inval);
    }
    if n > MAX_SUBSCRIPTIONS {
        return Err(Errno::TooBig);
    }
    m.range(subs, n.checked_mul(48).ok_or(Errno::Fault)?)?;
    m.range(events, n.checked_mul(32).ok_or(Errno::Fault)?)?;
    let mut ready = Vec::new();
    let mut earliest: Option<(u64, u32, bool)> = None; // (deadline, index, realtime?)
    for i in 0..n {
        let at = subs + i * 48;
        let userdata = m.u64(at)?;
        let tag = m.u8(at + 8)?;
        match tag {
            0 => {
                let id = m.u32(at + 16)?;
                let timeout = m.u64(at + 24)?;
                let abstime = m.u16(at + 40)? & 1 != 0;
                let clock = &s.fs.clock;
                let (now, realtime) = match id {
                    0 => (clock.peek_realtime(), true),
                    1..=3 => (clock.peek_monotonic(), false),
                    _ => {
                        ready.push((userdata, Errno::Inval.raw(), 0u8, 0u64));
                        continue;
                    }
                };
                let deadline = if abstime {
                    timeout
                } else {
                    now.saturating_add(timeout)
                };
                if earliest.is_none_or(|(d, _, _)| deadline < d) {
                    earliest = Some((deadline, i, realtime));
                }
            }
            1 | 2 => {
                let fd = m.u32(at + 16)?;
                match s.fs.poll_ready(fd, tag == 2) {
                    Ok(nbytes) => ready.push((userdata, 0, tag, nbytes)),
                    Err(e) => ready.push((userdata, e.raw(), tag, 0)),
                }
            }
            _ => return Err(Errno::Inval),
        }
    }
    if ready.is_empty()
        && let Some((deadline, i, realtime)) = earliest
    {
        if realtime {
            s.fs.clock.advance_realtime_to(deadline);
        } else {
            s.fs.clock.advance_monotonic_to(deadline);
        }
        ready.push((m.u64(subs + i * 48)?, 0, 0, 0));
    }
    for (k, (userdata, err, tag, nbytes)) in ready.iter().enumerate() {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&userdata.to_le_bytes());
        b[8..10].copy_from_slice(&err.to_le_bytes());
        b[10] = *tag;
        b[16..24].copy_from_slice(&nbytes.to_le_bytes());
        m.put(events + 32 * k as u32, &b)?;
    }
    m.put_u32(out, ready.len() as u32)
}
