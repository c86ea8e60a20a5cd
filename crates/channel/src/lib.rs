//! Channels: the only way bytes enter or leave a VM.
//!
//! A [`ChannelHandle`] is one declared channel of one running VM. It owns the host side
//! (a file, a host standard stream, a caller-supplied reader or writer, or nothing), enforces
//! the channel's access mode and ZeroVM's four quotas, counts every call and byte, and hashes
//! every byte that passes into the channel's etag. Output files are staged in the run's
//! [`Transaction`]: the guest writes into a hidden file beside the destination, which replaces
//! the destination only when the transaction commits, together with every other output of
//! the run; otherwise the staged file is removed and the destination is untouched.
//!
//! Input files are pinned and watched: a channel with an `etag` is refused before the run if
//! the file's content differs, and a file that changes while the guest reads it (its size,
//! modification or change time moves) makes [`ChannelHandle::finish`] report it, so the run
//! fails rather than mixing old and new bytes.

pub mod pipe;

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

pub use pipe::{EndOfStream, PipeError, PipeMonitor, PipeReader, PipeWait, PipeWriter};
use zvm_manifest::ContentHash;
pub use zvm_manifest::{AccessMode, Channel, ChannelName, ChannelSource, Quota, StdStream};
pub use zvm_txn::Transaction;

/// The etag of a channel no byte went through: BLAKE3 of nothing.
pub const EMPTY_ETAG: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

/// Which of the four quotas a call ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    Reads,
    ReadBytes,
    Writes,
    WriteBytes,
}

impl QuotaKind {
    /// The manifest key of this quota.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Reads => "reads",
            QuotaKind::ReadBytes => "read_bytes",
            QuotaKind::Writes => "writes",
            QuotaKind::WriteBytes => "write_bytes",
        }
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a channel call failed. The WASI host maps each to an errno.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// A quota is used up (EDQUOT).
    #[error("channel `{channel}`: quota `{quota}` exceeded")]
    Quota { channel: String, quota: QuotaKind },
    /// The mode does not allow this direction (EBADF).
    #[error("channel `{0}` is not open for this direction")]
    Direction(String),
    /// The mode does not allow seeking or positioned I/O (ESPIPE).
    #[error("channel `{0}` is sequential")]
    NotSeekable(String),
    /// The host side failed.
    #[error("channel `{channel}`: {error}")]
    Io { channel: String, error: io::Error },
    /// A non-blocking pipe end cannot move bytes now (EAGAIN); the wait is kept for
    /// [`ChannelHandle::take_wait`].
    #[error("channel `{0}` would block")]
    WouldBlock(String),
    /// The pipe's reader is gone (EPIPE).
    #[error("channel `{0}`: the reading end of the pipe is gone")]
    Broken(String),
}

/// Errors setting a channel up or committing it: these name the host file.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("channel `{channel}`: cannot open `{path}`: {error}")]
    Open {
        channel: String,
        path: PathBuf,
        error: io::Error,
    },
    #[error("channel `{channel}`: {error}")]
    Stage {
        channel: String,
        error: zvm_txn::Error,
    },
    /// Input pinning: the file's content is not the one the manifest pins.
    #[error(
        "channel `{channel}`: input `{path}` has etag {actual}, but the manifest pins {expected}"
    )]
    EtagMismatch {
        channel: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// Counters of one channel: ZeroVM's four accounting numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
}

/// What a finished channel reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSummary {
    pub name: String,
    pub mode: AccessMode,
    /// BLAKE3 of every byte through the channel, in call order, as lowercase hex.
    pub etag: String,
    pub counters: Counters,
    /// The first quota the guest ran into, if any.
    pub quota_hit: Option<QuotaKind>,
    /// The host file the channel's output is staged for, if it is an output file; it lands
    /// when the run's transaction commits.
    pub output: Option<PathBuf>,
    /// Set when the input file changed while the guest read it: the bytes the guest saw may
    /// mix two versions, so the run must not count.
    pub input_changed: bool,
}

/// A caller-supplied host side, for embedding (capturing output, feeding input from memory).
pub enum Endpoint {
    Reader(Box<dyn Read + Send>),
    Writer(Box<dyn Write + Send>),
    /// The reading end of a pipe from another VM.
    PipeReader(PipeReader),
    /// The writing end of a pipe to another VM.
    PipeWriter(PipeWriter),
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Reader(_) => f.write_str("Endpoint::Reader"),
            Endpoint::Writer(_) => f.write_str("Endpoint::Writer"),
            Endpoint::PipeReader(_) => f.write_str("Endpoint::PipeReader"),
            Endpoint::PipeWriter(_) => f.write_str("Endpoint::PipeWriter"),
        }
    }
}

/// An in-memory output an embedder reads after (or while) a VM writes it: bind a clone with
/// [`SharedBuffer::endpoint`] and read [`SharedBuffer::contents`].
#[derive(Clone, Debug, Default)]
pub struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuffer {
    pub fn new() -> SharedBuffer {
        SharedBuffer::default()
    }

    /// A writer endpoint appending to this buffer.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Writer(Box::new(self.clone()))
    }

    /// A copy of what has been written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("buffer poisoned by a panic"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Backend {
    /// A host file read in place (input channels), with what it looked like when opened.
    File(File, FileVersion),
    /// An output file being written into a staged file, to replace `dest` on commit.
    Staged {
        file: File,
        dest: PathBuf,
    },
    Stdin,
    Stdout,
    Stderr,
    Reader(Box<dyn Read + Send>),
    Writer(Box<dyn Write + Send>),
    PipeReader(PipeReader),
    /// `None` once the stream is ended.
    PipeWriter(Option<PipeWriter>),
    Null,
}

/// What identifies one version of an input file: a writer that changes it moves its size,
/// modification time or (which no one can set back) change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileVersion {
    pub fn of(meta: &std::fs::Metadata) -> FileVersion {
        FileVersion {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// BLAKE3 of a file's whole content, lowercase hex: the etag a guest reading it through from
/// start to end would produce.
pub fn file_etag(mut file: &File) -> io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&mut file)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// One channel of one running VM.
pub struct ChannelHandle {
    name: ChannelName,
    mode: AccessMode,
    quota: Quota,
    backend: Backend,
    pos: u64,
    counters: Counters,
    /// Created on the first byte: most channels of a short run carry nothing, and a hasher
    /// is two kilobytes to set up and move around.
    hasher: Option<Box<blake3::Hasher>>,
    quota_hit: Option<QuotaKind>,
    /// Pipe ends return [`ChannelError::WouldBlock`] instead of waiting on the thread.
    nonblocking: bool,
    /// What a call that would block waits for.
    wait: Option<PipeWait>,
    /// Bytes a pipe call that had to wait has already moved (it resumes from there).
    partial: usize,
}

impl fmt::Debug for ChannelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelHandle")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl ChannelHandle {
    /// Opens the host side of `channel`. Input files must exist (and match their pinned etag,
    /// if any); output files are staged in `txn`.
    pub fn open(channel: &Channel, txn: &Transaction) -> Result<ChannelHandle, SetupError> {
        let backend = match &channel.source {
            ChannelSource::Stdio(StdStream::Stdin) => Backend::Stdin,
            ChannelSource::Stdio(StdStream::Stdout) => Backend::Stdout,
            ChannelSource::Stdio(StdStream::Stderr) => Backend::Stderr,
            ChannelSource::Null => Backend::Null,
            ChannelSource::Pipe(_) => {
                return Err(SetupError::Open {
                    channel: channel.name.to_string(),
                    path: PathBuf::from("<pipe>"),
                    error: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a pipe end must be bound by the job runner",
                    ),
                });
            }
            ChannelSource::File(path) if !channel.mode.can_write() => {
                let open_err = |error| SetupError::Open {
                    channel: channel.name.to_string(),
                    path: path.clone(),
                    error,
                };
                let file = File::open(path).map_err(open_err)?;
                let meta = file.metadata().map_err(open_err)?;
                if meta.is_dir() {
                    return Err(open_err(io::Error::new(
                        io::ErrorKind::IsADirectory,
                        "is a directory",
                    )));
                }
                if let Some(pin) = &channel.etag {
                    check_pin(channel, path, &file, pin)?;
                }
                Backend::File(file, FileVersion::of(&meta))
            }
            ChannelSource::File(path) => {
                let staged =
                    txn.stage_file(path, channel.mode.keeps_content())
                        .map_err(|error| SetupError::Stage {
                            channel: channel.name.to_string(),
                            error,
                        })?;
                Backend::Staged {
                    file: staged.file,
                    dest: staged.dest,
                }
            }
        };
        Ok(Self::with_backend(channel, backend))
    }

    /// A channel whose host side is supplied by the embedder.
    pub fn with_endpoint(channel: &Channel, endpoint: Endpoint) -> ChannelHandle {
        let backend = match endpoint {
            Endpoint::Reader(r) => Backend::Reader(r),
            Endpoint::Writer(w) => Backend::Writer(w),
            Endpoint::PipeReader(r) => Backend::PipeReader(r),
            Endpoint::PipeWriter(w) => Backend::PipeWriter(Some(w)),
        };
        Self::with_backend(channel, backend)
    }

    fn with_backend(channel: &Channel, backend: Backend) -> ChannelHandle {
        let pos = match (&backend, channel.mode) {
            // Append mode writes after the existing content.
            (Backend::Staged { file, .. }, AccessMode::Append) => {
                file.metadata().map(|m| m.len()).unwrap_or(0)
            }
            _ => 0,
        };
        ChannelHandle {
            name: channel.name.clone(),
            mode: channel.mode,
            quota: channel.quota,
            backend,
            pos,
            counters: Counters::default(),
            hasher: None,
            quota_hit: None,
            nonblocking: false,
            wait: None,
            partial: 0,
        }
    }

    /// Makes pipe ends return [`ChannelError::WouldBlock`] rather than wait on the thread
    /// (for VMs run as futures).
    pub fn set_nonblocking(&mut self, nonblocking: bool) {
        self.nonblocking = nonblocking;
    }

    /// What the last call that would block waits for.
    pub fn take_wait(&mut self) -> Option<PipeWait> {
        self.wait.take()
    }

    fn pipe_error(&mut self, e: PipeError) -> ChannelError {
        match e {
            PipeError::WouldBlock(w) => {
                self.wait = Some(w);
                ChannelError::WouldBlock(self.name.to_string())
            }
            PipeError::Broken => ChannelError::Broken(self.name.to_string()),
            PipeError::WriterFailed(why) => ChannelError::Io {
                channel: self.name.to_string(),
                error: io::Error::other(format!("the writing VM failed: {why}")),
            },
        }
    }

    pub fn name(&self) -> &ChannelName {
        &self.name
    }

    pub fn mode(&self) -> AccessMode {
        self.mode
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The first quota the guest ran into, if any.
    pub fn quota_hit(&self) -> Option<QuotaKind> {
        self.quota_hit
    }

    /// Whether the channel is backed by a host stream (not seekable, no size).
    pub fn is_stream(&self) -> bool {
        !matches!(self.backend, Backend::File(..) | Backend::Staged { .. })
    }

    /// The current size of the channel's content, for files; 0 for streams.
    pub fn size(&self) -> u64 {
        let meta = match &self.backend {
            Backend::File(f, _) => f.metadata(),
            Backend::Staged { file, .. } => file.metadata(),
            _ => return 0,
        };
        meta.map(|m| m.len()).unwrap_or(0)
    }

    /// The sequential position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Moves the sequential position (random-access modes only).
    pub fn set_position(&mut self, pos: u64) -> Result<(), ChannelError> {
        if !self.mode.can_seek() || self.is_stream() {
            return Err(ChannelError::NotSeekable(self.name.to_string()));
        }
        self.pos = pos;
        Ok(())
    }

    fn quota_error(&mut self, quota: QuotaKind) -> ChannelError {
        self.quota_hit.get_or_insert(quota);
        ChannelError::Quota {
            channel: self.name.to_string(),
            quota,
        }
    }

    fn io_error(&self, error: io::Error) -> ChannelError {
        ChannelError::Io {
            channel: self.name.to_string(),
            error,
        }
    }

    fn hash(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.hasher
                .get_or_insert_with(|| Box::new(blake3::Hasher::new()))
                .update(bytes);
        }
    }

    /// Reads at the sequential position (or from the stream).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ChannelError> {
        let n = self.read_inner(buf, None)?;
        self.pos += n as u64;
        Ok(n)
    }

    /// Reads at `offset` without moving the position (random-access modes only).
    pub fn pread(&mut self, buf: &mut [u8], offset: u64) -> Result<usize, ChannelError> {
        if !self.mode.can_seek() || self.is_stream() {
            return Err(ChannelError::NotSeekable(self.name.to_string()));
        }
        self.read_inner(buf, Some(offset))
    }

    fn read_inner(&mut self, buf: &mut [u8], at: Option<u64>) -> Result<usize, ChannelError> {
        if !self.mode.can_read() {
            return Err(ChannelError::Direction(self.name.to_string()));
        }
        if self.counters.reads >= self.quota.reads {
            return Err(self.quota_error(QuotaKind::Reads));
        }
        let left = self.quota.read_bytes - self.counters.read_bytes;
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 && !buf.is_empty() {
            // The byte quota is used up. At the end of a file that is end of file, not an
            // error: a quota equal to the input's size must let the guest see EOF.
            if let Some(size) = self.file_size()
                && at.unwrap_or(self.pos) >= size
            {
                self.counters.reads += 1;
                return Ok(0);
            }
            return Err(self.quota_error(QuotaKind::ReadBytes));
        }
        let pos = at.unwrap_or(self.pos);
        let buf = &mut buf[..want];
        let result = match &mut self.backend {
            Backend::File(f, _) => f.read_at(buf, pos),
            Backend::Staged { file, .. } => file.read_at(buf, pos),
            Backend::Stdin => io::stdin().lock().read(buf),
            Backend::Reader(r) => r.read(buf),
            Backend::PipeReader(r) => {
                // A pipe read fills the whole buffer, or stops at the end of the stream: how
                // many bytes a read returns must not depend on when the writer wrote them, or
                // read counts and fuel would vary from run to run. Across waits, the bytes
                // read so far stay in the guest's buffer, and `partial` remembers them.
                loop {
                    match r.try_read(&mut buf[self.partial..]) {
                        Ok(0) => break,
                        Ok(n) => {
                            self.partial += n;
                            if self.partial == buf.len() {
                                break;
                            }
                        }
                        Err(PipeError::WouldBlock(w)) if !self.nonblocking => w.wait_blocking(),
                        Err(e) => {
                            if !matches!(e, PipeError::WouldBlock(_)) {
                                self.partial = 0;
                            }
                            return Err(self.pipe_error(e));
                        }
                    }
                }
                Ok(std::mem::take(&mut self.partial))
            }
            Backend::Null => Ok(0),
            Backend::Stdout | Backend::Stderr | Backend::Writer(_) | Backend::PipeWriter(_) => {
                return Err(ChannelError::Direction(self.name.to_string()));
            }
        };
        let n = result.map_err(|e| self.io_error(e))?;
        self.counters.reads += 1;
        self.counters.read_bytes += n as u64;
        self.hash(&buf[..n]);
        Ok(n)
    }

    fn file_size(&self) -> Option<u64> {
        match &self.backend {
            Backend::File(..) | Backend::Staged { .. } => Some(self.size()),
            Backend::Null => Some(0),
            _ => None,
        }
    }

    /// Writes at the sequential position (or to the stream); append mode always writes at
    /// the end.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, ChannelError> {
        if self.mode == AccessMode::Append {
            self.pos = self.size();
        }
        let n = self.write_inner(data, None)?;
        self.pos += n as u64;
        Ok(n)
    }

    /// Writes at `offset` without moving the position (random-access modes only).
    pub fn pwrite(&mut self, data: &[u8], offset: u64) -> Result<usize, ChannelError> {
        if !self.mode.can_seek() || self.is_stream() {
            return Err(ChannelError::NotSeekable(self.name.to_string()));
        }
        self.write_inner(data, Some(offset))
    }

    fn write_inner(&mut self, data: &[u8], at: Option<u64>) -> Result<usize, ChannelError> {
        if !self.mode.can_write() {
            return Err(ChannelError::Direction(self.name.to_string()));
        }
        if self.counters.writes >= self.quota.writes {
            return Err(self.quota_error(QuotaKind::Writes));
        }
        let left = self.quota.write_bytes - self.counters.write_bytes;
        let take = (data.len() as u64).min(left) as usize;
        if take == 0 && !data.is_empty() {
            return Err(self.quota_error(QuotaKind::WriteBytes));
        }
        let data = &data[..take];
        let pos = at.unwrap_or(self.pos);
        let result = match &mut self.backend {
            Backend::Staged { file, .. } => file.write_all_at(data, pos).map(|()| data.len()),
            Backend::Stdout => io::stdout().lock().write_all(data).map(|()| data.len()),
            Backend::Stderr => io::stderr().lock().write_all(data).map(|()| data.len()),
            Backend::Writer(w) => w.write_all(data).map(|()| data.len()),
            Backend::PipeWriter(Some(w)) => {
                // A pipe write returns once all its bytes are in the pipe (see the read side).
                while self.partial < data.len() {
                    match w.try_write(&data[self.partial..]) {
                        Ok(n) => self.partial += n,
                        Err(PipeError::WouldBlock(wait)) if !self.nonblocking => {
                            wait.wait_blocking()
                        }
                        Err(e) => {
                            if !matches!(e, PipeError::WouldBlock(_)) {
                                self.partial = 0;
                            }
                            return Err(self.pipe_error(e));
                        }
                    }
                }
                Ok(std::mem::take(&mut self.partial))
            }
            Backend::PipeWriter(None) => return Err(ChannelError::Broken(self.name.to_string())),
            Backend::Null => Ok(data.len()),
            Backend::File(..) | Backend::Stdin | Backend::Reader(_) | Backend::PipeReader(_) => {
                return Err(ChannelError::Direction(self.name.to_string()));
            }
        };
        let n = result.map_err(|e| self.io_error(e))?;
        self.counters.writes += 1;
        self.counters.write_bytes += n as u64;
        self.hash(&data[..n]);
        Ok(n)
    }

    /// Sets the size of a random-access output (ftruncate).
    pub fn set_size(&mut self, size: u64) -> Result<(), ChannelError> {
        match &self.backend {
            Backend::Staged { file, .. } if self.mode.can_seek() => {
                file.set_len(size).map_err(|e| self.io_error(e))
            }
            _ => Err(ChannelError::NotSeekable(self.name.to_string())),
        }
    }

    /// Flushes host buffers of stream outputs.
    pub fn flush(&mut self) -> Result<(), ChannelError> {
        let result = match &mut self.backend {
            Backend::Stdout => io::stdout().flush(),
            Backend::Stderr => io::stderr().flush(),
            Backend::Writer(w) => w.flush(),
            _ => Ok(()),
        };
        result.map_err(|e| self.io_error(e))
    }

    /// Ends the channel: flushes host streams, ends a pipe's stream (cleanly, or as failed
    /// with `failure`, the reason the VM failed), checks that an input file did not change
    /// under the guest, and summarises. Staged outputs land (or not) with the transaction.
    pub fn finish(mut self, failure: Option<&str>) -> ChannelSummary {
        // A flush failure of a host stream cannot be reported to the guest any more; the run
        // summary still stands.
        let _ = self.flush();
        if let Backend::PipeWriter(w) = &mut self.backend
            && let Some(w) = w.take()
        {
            w.finish(match failure {
                None => EndOfStream::Clean,
                Some(why) => EndOfStream::Failed(why.to_string()),
            });
        }
        let (output, input_changed) = match &self.backend {
            Backend::Staged { dest, .. } => (Some(dest.clone()), false),
            Backend::File(f, before) => (
                None,
                f.metadata().map(|m| FileVersion::of(&m)).ok() != Some(*before),
            ),
            _ => (None, false),
        };
        ChannelSummary {
            name: self.name.to_string(),
            mode: self.mode,
            etag: match &self.hasher {
                Some(h) => h.finalize().to_hex().to_string(),
                None => EMPTY_ETAG.to_string(),
            },
            counters: self.counters,
            quota_hit: self.quota_hit,
            output,
            input_changed,
        }
    }
}

fn check_pin(
    channel: &Channel,
    path: &std::path::Path,
    file: &File,
    pin: &ContentHash,
) -> Result<(), SetupError> {
    let actual = file_etag(file).map_err(|error| SetupError::Open {
        channel: channel.name.to_string(),
        path: path.to_path_buf(),
        error,
    })?;
    if actual != pin.hex() {
        return Err(SetupError::EtagMismatch {
            channel: channel.name.to_string(),
            path: path.to_path_buf(),
            expected: pin.hex(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn open(c: &Channel) -> ChannelHandle {
        // A detached transaction per channel: these tests look at one channel at a time.
        let txn = Box::leak(Box::new(Transaction::new(None)));
        ChannelHandle::open(c, txn).unwrap()
    }

    fn chan(name: &str, path: &Path, mode: AccessMode, quota: Quota) -> Channel {
        Channel {
            name: ChannelName::new(name).unwrap(),
            source: ChannelSource::File(path.to_path_buf()),
            mode,
            quota,
            etag: None,
        }
    }

    fn unlimited() -> Quota {
        Quota {
            reads: u64::MAX,
            read_bytes: u64::MAX,
            writes: u64::MAX,
            write_bytes: u64::MAX,
        }
    }

    #[test]
    fn empty_etag_is_blake3_of_nothing() {
        assert_eq!(EMPTY_ETAG, blake3::hash(b"").to_hex().as_str());
    }

    #[test]
    fn output_is_invisible_until_the_transaction_commits() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.txt");
        let txn = Transaction::new(None);
        let c = chan("output", &out, AccessMode::SequentialWrite, unlimited());
        let mut h = ChannelHandle::open(&c, &txn).unwrap();
        h.write(b"hello").unwrap();
        let s = h.finish(None);
        assert!(!out.exists());
        assert_eq!(s.output.as_deref(), Some(out.as_path()));
        txn.commit().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"hello");
        assert_eq!(s.etag, blake3::hash(b"hello").to_hex().to_string());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no stray files"
        );
    }

    #[test]
    fn aborted_outputs_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.txt");
        std::fs::write(&out, b"old").unwrap();
        let txn = Transaction::new(None);
        let c = chan("output", &out, AccessMode::SequentialWrite, unlimited());
        let mut h = ChannelHandle::open(&c, &txn).unwrap();
        h.write(b"new").unwrap();
        h.finish(None);
        txn.abort();
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no stray files"
        );
    }

    #[test]
    fn append_keeps_content_and_writes_at_end() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("log");
        std::fs::write(&out, b"one\n").unwrap();
        let txn = Transaction::new(None);
        let c = chan("log", &out, AccessMode::Append, unlimited());
        let mut h = ChannelHandle::open(&c, &txn).unwrap();
        h.write(b"two\n").unwrap();
        h.finish(None);
        txn.commit().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn pinned_inputs_are_refused_when_they_differ() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, b"abc").unwrap();
        let mut c = chan("input", &input, AccessMode::SequentialRead, unlimited());
        c.etag = Some(ContentHash::of(b"abc"));
        open(&c);
        c.etag = Some(ContentHash::of(b"abd"));
        let err = ChannelHandle::open(&c, &Transaction::new(None))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&ContentHash::of(b"abd").hex()), "{err}");
        assert!(err.contains(&ContentHash::of(b"abc").hex()), "{err}");
        assert!(err.contains("channel `input`"), "{err}");
    }

    #[test]
    fn an_input_changed_while_read_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, b"version one").unwrap();
        let c = chan("input", &input, AccessMode::SequentialRead, unlimited());
        let mut h = open(&c);
        h.read(&mut [0; 4]).unwrap();
        assert!(!open(&c).finish(None).input_changed);
        std::fs::write(&input, b"version two!").unwrap();
        h.read(&mut [0; 4]).unwrap();
        assert!(h.finish(None).input_changed);
    }

    #[test]
    fn quotas_fail_with_the_quota_named() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, b"0123456789").unwrap();
        let q = Quota {
            read_bytes: 4,
            ..unlimited()
        };
        let mut h = open(&chan("input", &input, AccessMode::SequentialRead, q));
        let mut buf = [0u8; 3];
        assert_eq!(h.read(&mut buf).unwrap(), 3);
        assert_eq!(h.read(&mut buf).unwrap(), 1);
        match h.read(&mut buf) {
            Err(ChannelError::Quota {
                quota: QuotaKind::ReadBytes,
                ..
            }) => {}
            other => panic!("expected read_bytes quota, got {other:?}"),
        }
        assert_eq!(h.quota_hit(), Some(QuotaKind::ReadBytes));

        let q = Quota {
            reads: 1,
            ..unlimited()
        };
        let mut h = open(&chan("input", &input, AccessMode::SequentialRead, q));
        h.read(&mut buf).unwrap();
        assert!(matches!(
            h.read(&mut buf),
            Err(ChannelError::Quota {
                quota: QuotaKind::Reads,
                ..
            })
        ));

        let out = dir.path().join("out");
        let q = Quota {
            writes: 2,
            ..unlimited()
        };
        let mut h = open(&chan("o", &out, AccessMode::SequentialWrite, q));
        h.write(b"a").unwrap();
        h.write(b"b").unwrap();
        assert!(matches!(
            h.write(b"c"),
            Err(ChannelError::Quota {
                quota: QuotaKind::Writes,
                ..
            })
        ));
        let q = Quota {
            write_bytes: 3,
            ..unlimited()
        };
        let mut h = open(&chan("o", &out, AccessMode::SequentialWrite, q));
        assert_eq!(h.write(b"abcd").unwrap(), 3);
        assert!(matches!(
            h.write(b"d"),
            Err(ChannelError::Quota {
                quota: QuotaKind::WriteBytes,
                ..
            })
        ));
    }

    #[test]
    fn byte_quota_equal_to_size_still_sees_eof() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, b"abc").unwrap();
        let q = Quota {
            read_bytes: 3,
            ..unlimited()
        };
        let mut h = open(&chan("input", &input, AccessMode::SequentialRead, q));
        let mut buf = [0u8; 8];
        assert_eq!(h.read(&mut buf).unwrap(), 3);
        assert_eq!(h.read(&mut buf).unwrap(), 0);
        assert_eq!(h.quota_hit(), None);
    }

    #[test]
    fn sequential_channels_refuse_seeks_and_wrong_direction() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, b"abc").unwrap();
        let mut h = open(&chan(
            "input",
            &input,
            AccessMode::SequentialRead,
            unlimited(),
        ));
        assert!(matches!(
            h.set_position(1),
            Err(ChannelError::NotSeekable(_))
        ));
        assert!(matches!(
            h.pread(&mut [0; 1], 0),
            Err(ChannelError::NotSeekable(_))
        ));
        assert!(matches!(h.write(b"x"), Err(ChannelError::Direction(_))));
        let missing = dir.path().join("missing");
        let err = ChannelHandle::open(
            &chan("input", &missing, AccessMode::SequentialRead, unlimited()),
            &Transaction::new(None),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot open"), "{err}");
    }
}
