//! The data plane: pipes between job members on different nodes, as TCP connections.
//!
//! Every node listens on one data address (advertised in its heartbeat). A pipe whose
//! writer runs on node A and reader on node B is one connection from A to B: A's pump
//! ([`DataPlane::send`]) connects, names the pipe in a header (the attempt's id and the
//! pipe's index in the job, as a 32-bit little-endian length and JSON), then streams it with
//! the framing and end-of-stream digest of [`zvm_job::remote`]. B's listener reads the
//! header and hands the connection to the pipe's local writer, registered by
//! [`DataPlane::expect`] when B planned its part. Either may happen first: a connection
//! waits (for [`UNCLAIMED_TIMEOUT`]) for its pipe to be registered, and a registered pipe
//! waits for its connection.
//!
//! [`DataPlane::cancel`] ends an attempt's pipes on this node: a registered pipe not yet
//! connected fails (its reader sees `EIO`), and every pump of the attempt stops, which
//! fails the streams at both ends. An attempt is called off when a node it used is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use zvm_channel::{EndOfStream, PipeReader, PipeWriter};

use crate::Error;

/// How long a connection may wait for its pipe to be registered here.
pub const UNCLAIMED_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a pump keeps trying to connect to the reading node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest header.
const MAX_HEADER: u32 = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    attempt: String,
    pipe: u32,
}

enum Slot {
    /// The pipe was registered; its connection has not arrived.
    Waiting(PipeWriter),
    /// The connection arrived first.
    Arrived(TcpStream, Instant),
}

/// This node's end of the data plane.
pub struct DataPlane {
    addr: String,
    slots: Mutex<HashMap<(String, u32), Slot>>,
    tasks: Mutex<HashMap<String, Vec<AbortHandle>>>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// Listens on `addr` (`host:port`, port 0 for any) and serves connections on the current
    /// tokio runtime. `advertise_host` replaces the host of the bound address in what
    /// other nodes are told (for a wildcard bind).
    pub async fn bind(addr: &str, advertise_host: Option<&str>) -> Result<Arc<DataPlane>, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Io(format!("listening for pipes on `{addr}`: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Io(format!("the pipe listener's address: {e}")))?;
        let advertised = match advertise_host {
            Some(h) => format!("{h}:{}", local.port()),
            None => local.to_string(),
        };
        let plane = Arc::new(DataPlane {
            addr: advertised,
            slots: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&plane);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Some(plane) = weak.upgrade() else { return };
                tokio::spawn(async move { plane.arrived(stream).await });
            }
        });
        Ok(plane)
    }

    /// The address other nodes connect to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn arrived(self: Arc<Self>, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let header = async {
            let len = stream.read_u32_le().await.ok()?;
            if len > MAX_HEADER {
                return None;
            }
            let mut buf = vec![0u8; len as usize];
            stream.read_exact(&mut buf).await.ok()?;
            serde_json::from_slice::<Header>(&buf).ok()
        };
        let Ok(Some(header)) = tokio::time::timeout(Duration::from_secs(10), header).await else {
            return;
        };
        let key = (header.attempt.clone(), header.pipe);
        let mut slots = self.slots.lock().expect("slots");
        // Forget connections that waited too long for a pipe that never came.
        slots.retain(|_, s| !matches!(s, Slot::Arrived(_, at) if at.elapsed() > UNCLAIMED_TIMEOUT));
        match slots.remove(&key) {
            Some(Slot::Waiting(writer)) => {
                drop(slots);
                self.spawn_receive(&header.attempt, writer, stream);
            }
            _ => {
                slots.insert(key, Slot::Arrived(stream, Instant::now()));
            }
        }
    }

    fn spawn_receive(&self, attempt: &str, writer: PipeWriter, stream: TcpStream) {
        let task = tokio::spawn(async move {
            zvm_job::remote::receive(writer, stream).await;
        });
        self.track(attempt, task.abort_handle());
    }

    fn track(&self, attempt: &str, task: AbortHandle) {
        let mut tasks = self.tasks.lock().expect("tasks");
        let list = tasks.entry(attempt.to_string()).or_default();
        list.retain(|t| !t.is_finished());
        list.push(task);
    }

    /// Registers the local writer of pipe `pipe` of `attempt`, read here and written
    /// elsewhere: the connection that carries it feeds it.
    pub fn expect(&self, attempt: &str, pipe: u32, writer: PipeWriter) {
        let key = (attempt.to_string(), pipe);
        let mut slots = self.slots.lock().expect("slots");
        match slots.remove(&key) {
            Some(Slot::Arrived(stream, _)) => {
                drop(slots);
                self.spawn_receive(attempt, writer, stream);
            }
            _ => {
                slots.insert(key, Slot::Waiting(writer));
            }
        }
    }

    /// Pumps pipe `pipe` of `attempt`, written here, to the node reading it at `to`.
    pub fn send(&self, attempt: &str, pipe: u32, to: &str, reader: PipeReader) {
        let header = serde_json::to_vec(&Header {
            attempt: attempt.to_string(),
            pipe,
        })
        .expect("plain JSON");
        let to = to.to_string();
        let task = tokio::spawn(async move {
            let deadline = Instant::now() + CONNECT_TIMEOUT;
            let mut stream = loop {
                match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&to)).await {
                    Ok(Ok(s)) => break s,
                    _ if Instant::now() > deadline => {
                        tracing::warn!("pipe {pipe}: cannot connect to `{to}`");
                        return; // dropping the reader breaks the writer's pipe
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let _ = stream.set_nodelay(true);
            if stream.write_u32_le(header.len() as u32).await.is_err()
                || stream.write_all(&header).await.is_err()
            {
                return;
            }
            if let Err(e) = zvm_job::remote::send(reader, stream).await {
                tracing::debug!("pipe {pipe} to `{to}`: {e}");
            }
        });
        self.track(attempt, task.abort_handle());
    }

    /// Ends every pipe of `attempt` on this node (see the module documentation).
    pub fn cancel(&self, attempt: &str) {
        let mut slots = self.slots.lock().expect("slots");
        let keys: Vec<_> = slots
            .keys()
            .filter(|(a, _)| a == attempt)
            .cloned()
            .collect();
        for key in keys {
            if let Some(Slot::Waiting(writer)) = slots.remove(&key) {
                writer.finish(EndOfStream::Failed(
                    "the job's attempt was called off (a node was lost)".into(),
                ));
            }
        }
        drop(slots);
        if let Some(tasks) = self.tasks.lock().expect("tasks").remove(attempt) {
            for t in tasks {
                t.abort();
            }
        }
    }

    /// Forgets a finished attempt's bookkeeping (its pumps have ended).
    pub fn finish(&self, attempt: &str) {
        self.cancel(attempt);
    }
}
