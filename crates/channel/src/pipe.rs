//! Pipes: bounded, one-way byte streams between two VMs of a job.
//!
//! A pipe is a ring of at most [`PIPE_CAPACITY`] bytes shared by one [`PipeWriter`] and one
//! [`PipeReader`]. A full pipe holds its writer back and an empty one its reader
//! (backpressure), in one of two ways: a *blocking* end waits on a condition variable (a VM
//! run on a thread of its own), a *non-blocking* end returns [`PipeError::WouldBlock`] with a
//! [`PipeWait`] the caller awaits (a VM run as a future, which then gives its thread to
//! another VM while it waits; see zvm-vm's async runs).
//!
//! End of stream is explicit: the writer ends it [`cleanly`](EndOfStream::Clean) when its VM
//! succeeded, or as [`failed`](EndOfStream::Failed) otherwise (a writer dropped without ending
//! counts as failed), and the reader learns which after the last byte. A reader that goes
//! away makes further writes fail (`EPIPE`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Bytes a pipe buffers. Measured (`zvm bench --only jobs`): with 64 KiB, as Linux's pipes
/// hold, writer and reader hand over every 64 KiB and two VMs move 2.5 GiB/s; with 1 MiB
/// they both keep busy and move over 6 GiB/s. The buffer grows only as far as it is filled,
/// so idle pipes cost nothing; a thousand full ones would hold 1 GiB.
pub const PIPE_CAPACITY: usize = 1 << 20;

/// How a writer ended its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOfStream {
    /// The writing VM succeeded: the reader has every byte.
    Clean,
    /// The writing VM failed (the reason, for the reader's report).
    Failed(String),
}

/// Why a pipe call did not transfer bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeError {
    /// Nothing can move now; await the [`PipeWait`] and try again.
    WouldBlock(PipeWait),
    /// The reader is gone (writes), like `EPIPE`.
    Broken,
    /// The writer ended the stream as failed (reads, after the last byte).
    WriterFailed(String),
}

/// What the pipes of one job share: how many bytes went through them, and how many of their
/// ends are waiting right now. A job runner reads it for progress, and to tell a deadlock
/// (every live VM waiting on a pipe, and no byte moving) from a slow job.
#[derive(Debug)]
pub struct PipeMonitor {
    transferred: AtomicU64,
    waiting: AtomicUsize,
    /// Test hook: the process kills itself once this many bytes have gone through.
    crash_after: AtomicU64,
}

impl Default for PipeMonitor {
    fn default() -> PipeMonitor {
        PipeMonitor {
            transferred: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            crash_after: AtomicU64::new(u64::MAX),
        }
    }
}

impl PipeMonitor {
    /// Test hook for host faults: kill this process (SIGKILL) as soon as `bytes` bytes have
    /// gone through the monitored pipes, in the middle of a job.
    pub fn crash_after(&self, bytes: u64) {
        self.crash_after.store(bytes, Ordering::SeqCst);
    }

    /// Bytes written into the pipes so far.
    pub fn transferred(&self) -> u64 {
        self.transferred.load(Ordering::Relaxed)
    }

    /// Waits in progress (each is one VM suspended on a full or empty pipe).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Something to await before retrying a pipe call that would block.
pub struct PipeWait {
    shared: Arc<Shared>,
    /// Waiting to write (space) rather than to read (bytes or end of stream).
    write: bool,
    /// Whether this wait is counted in the monitor's `waiting`.
    counted: bool,
}

impl Clone for PipeWait {
    fn clone(&self) -> PipeWait {
        PipeWait {
            shared: self.shared.clone(),
            write: self.write,
            counted: false,
        }
    }
}

impl PipeWait {
    /// Waits on this thread until the pipe may move bytes.
    pub fn wait_blocking(&self) {
        let mut st = self.shared.lock();
        while !self.ready(&st) {
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn ready(&self, st: &State) -> bool {
        if self.write {
            st.buf.len() < PIPE_CAPACITY || !st.reader_open
        } else {
            !st.buf.is_empty() || st.end.is_some()
        }
    }

    fn count(&mut self, on: bool) {
        if self.counted != on
            && let Some(m) = &self.shared.monitor
        {
            if on {
                m.waiting.fetch_add(1, Ordering::SeqCst);
            } else {
                m.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            self.counted = on;
        }
    }
}

impl Drop for PipeWait {
    fn drop(&mut self) {
        self.count(false);
    }
}

impl std::fmt::Debug for PipeWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.write {
            "PipeWait(writable)"
        } else {
            "PipeWait(readable)"
        })
    }
}

impl PartialEq for PipeWait {
    fn eq(&self, other: &PipeWait) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared) && self.write == other.write
    }
}

impl Eq for PipeWait {}

impl Future for PipeWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if self.ready(&st) {
            drop(st);
            self.count(false);
            return Poll::Ready(());
        }
        let wakers = if self.write {
            &mut st.write_wakers
        } else {
            &mut st.read_wakers
        };
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        drop(st);
        self.count(true);
        Poll::Pending
    }
}

struct State {
    buf: VecDeque<u8>,
    end: Option<EndOfStream>,
    reader_open: bool,
    read_wakers: Vec<Waker>,
    write_wakers: Vec<Waker>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    monitor: Option<Arc<PipeMonitor>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement; a panicking holder cannot tear it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self, st: &mut State, readers: bool, writers: bool) {
        if readers {
            st.read_wakers.drain(..).for_each(Waker::wake);
        }
        if writers {
            st.write_wakers.drain(..).for_each(Waker::wake);
        }
        self.changed.notify_all();
    }
}

/// Creates a pipe: its writing and reading ends.
pub fn pipe() -> (PipeWriter, PipeReader) {
    pipe_in(None)
}

/// Creates a pipe that reports to `monitor` (one per job).
pub fn pipe_monitored(monitor: Arc<PipeMonitor>) -> (PipeWriter, PipeReader) {
    pipe_in(Some(monitor))
}

fn pipe_in(monitor: Option<Arc<PipeMonitor>>) -> (PipeWriter, PipeReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: VecDeque::new(),
            end: None,
            reader_open: true,
            read_wakers: Vec::new(),
            write_wakers: Vec::new(),
        }),
        changed: Condvar::new(),
        monitor,
    });
    (
        PipeWriter {
            shared: shared.clone(),
        },
        PipeReader { shared },
    )
}

/// The writing end of a pipe.
pub struct PipeWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PipeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipeWriter")
    }
}

impl PipeWriter {
    /// Writes as much of `data` as fits now (at least one byte), or says why it cannot.
    pub fn try_write(&self, data: &[u8]) -> Result<usize, PipeError> {
        let mut st = self.shared.lock();
        if !st.reader_open {
            return Err(PipeError::Broken);
        }
        if st.end.is_some() {
            return Err(PipeError::Broken);
        }
        let room = PIPE_CAPACITY - st.buf.len().min(PIPE_CAPACITY);
        if room == 0 && !data.is_empty() {
            return Err(PipeError::WouldBlock(PipeWait {
                shared: self.shared.clone(),
                write: true,
                counted: false,
            }));
        }
        let n = data.len().min(room);
        st.buf.extend(&data[..n]);
        if n > 0 {
            self.shared.wake(&mut st, true, false);
            if let Some(m) = &self.shared.monitor {
                let total = m.transferred.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                if total >= m.crash_after.load(Ordering::Relaxed) {
                    drop(st);
                    let _ = rustix::process::kill_process(
                        rustix::process::getpid(),
                        rustix::process::Signal::KILL,
                    );
                }
            }
        }
        Ok(n)
    }

    /// Writes, waiting on this thread while the pipe is full.
    pub fn write_blocking(&self, data: &[u8]) -> Result<usize, PipeError> {
        loop {
            match self.try_write(data) {
                Err(PipeError::WouldBlock(_)) => {
                    let st = self.shared.lock();
                    if st.buf.len() >= PIPE_CAPACITY && st.reader_open {
                        drop(self.shared.changed.wait(st));
                    }
                }
                other => return other,
            }
        }
    }

    /// Ends the stream; the reader sees `end` after the last byte.
    pub fn finish(self, end: EndOfStream) {
        let mut st = self.shared.lock();
        if st.end.is_none() {
            st.end = Some(end);
        }
        self.shared.wake(&mut st, true, true);
    }

    /// Whether the reader has gone away.
    pub fn is_broken(&self) -> bool {
        !self.shared.lock().reader_open
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if st.end.is_none() {
            st.end = Some(EndOfStream::Failed(
                "the writer ended without finishing its stream".into(),
            ));
        }
        self.shared.wake(&mut st, true, true);
    }
}

/// The reading end of a pipe.
pub struct PipeReader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PipeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipeReader")
    }
}

impl PipeReader {
    /// Reads what is there now (0 bytes at a clean end of stream), or says why it cannot.
    pub fn try_read(&self, buf: &mut [u8]) -> Result<usize, PipeError> {
        let mut st = self.shared.lock();
        if st.buf.is_empty() {
            return match &st.end {
                Some(EndOfStream::Clean) => Ok(0),
                Some(EndOfStream::Failed(why)) => Err(PipeError::WriterFailed(why.clone())),
                None if buf.is_empty() => Ok(0),
                None => Err(PipeError::WouldBlock(PipeWait {
                    shared: self.shared.clone(),
                    write: false,
                    counted: false,
                })),
            };
        }
        let n = buf.len().min(st.buf.len());
        let (a, b) = st.buf.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        st.buf.drain(..n);
        self.shared.wake(&mut st, false, true);
        Ok(n)
    }

    /// Reads, waiting on this thread while the pipe is empty and open.
    pub fn read_blocking(&self, buf: &mut [u8]) -> Result<usize, PipeError> {
        loop {
            match self.try_read(buf) {
                Err(PipeError::WouldBlock(_)) => {
                    let st = self.shared.lock();
                    if st.buf.is_empty() && st.end.is_none() {
                        drop(self.shared.changed.wait(st));
                    }
                }
                other => return other,
            }
        }
    }

    /// How the writer ended the stream, once it has.
    pub fn end(&self) -> Option<EndOfStream> {
        self.shared.lock().end.clone()
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.reader_open = false;
        st.buf.clear();
        self.shared.wake(&mut st, false, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_flow_in_order_with_backpressure_and_a_clean_end() {
        let (w, r) = pipe();
        let data: Vec<u8> = (0..(PIPE_CAPACITY * 3)).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let writer = std::thread::spawn(move || {
            let mut off = 0;
            while off < data.len() {
                off += w.write_blocking(&data[off..]).unwrap();
            }
            w.finish(EndOfStream::Clean);
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            let n = r.read_blocking(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        writer.join().unwrap();
        assert_eq!(got, expect);
        assert_eq!(r.end(), Some(EndOfStream::Clean));
    }

    #[test]
    fn a_full_pipe_would_block_and_a_failed_writer_is_reported() {
        let (w, r) = pipe();
        assert_eq!(
            w.try_write(&vec![0; PIPE_CAPACITY + 10]).unwrap(),
            PIPE_CAPACITY
        );
        assert!(matches!(w.try_write(b"x"), Err(PipeError::WouldBlock(_))));
        let mut buf = vec![0; PIPE_CAPACITY];
        assert_eq!(r.try_read(&mut buf).unwrap(), PIPE_CAPACITY);
        assert!(matches!(
            r.try_read(&mut buf),
            Err(PipeError::WouldBlock(_))
        ));
        drop(w);
        match r.try_read(&mut buf) {
            Err(PipeError::WriterFailed(why)) => assert!(why.contains("without finishing")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_to_a_pipe_whose_reader_left_are_broken() {
        let (w, r) = pipe();
        drop(r);
        assert_eq!(w.try_write(b"x"), Err(PipeError::Broken));
        assert_eq!(w.write_blocking(b"x"), Err(PipeError::Broken));
    }

    #[test]
    fn waits_resolve_when_the_other_end_moves() {
        let (w, r) = pipe();
        let Err(PipeError::WouldBlock(wait)) = r.try_read(&mut [0; 4]) else {
            panic!("an empty pipe blocks");
        };
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let t = std::thread::spawn(move || {
            block_on(wait);
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
        w.try_write(b"abc").unwrap();
        t.join().unwrap();
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }

    /// A minimal executor for one future, for the test above.
    fn block_on<F: Future>(f: F) -> F::Output {
        struct ThreadWaker(std::thread::Thread);
        impl std::task::Wake for ThreadWaker {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
}
