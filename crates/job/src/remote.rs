//! Pipes across processes: a local pipe at each end, and a socket between them.
//!
//! The guests never see the difference: a member always holds an in-memory pipe end
//! ([`zvm_channel::pipe`]), and a pump task moves its bytes to or from a socket (Unix-domain
//! or TCP). Backpressure carries through: a full socket stops the sending pump, which stops
//! draining the writer's pipe, which holds the writer back.
//!
//! Framing (a lesson from ZeroVM's lost ZeroMQ messages): each frame is one tag byte, a
//! 32-bit little-endian length and the payload. `D` frames carry data; the stream ends with
//! one `E` frame whose payload is JSON: whether the writer ended cleanly (or why it failed),
//! the number of bytes sent and their BLAKE3. The receiver checks both, so a truncated or
//! corrupted stream is a failed stream (`EIO` for the reading guest), never short data that
//! looks complete. A connection lost before the `E` frame is a failure too.

use std::io;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zvm_channel::{EndOfStream, PipeError, PipeReader, PipeWriter};

/// Largest data frame: one pipe's worth, so a frame never waits on half a pipe.
pub const MAX_FRAME: usize = zvm_channel::pipe::PIPE_CAPACITY;

const DATA: u8 = b'D';
const END: u8 = b'E';

/// The last frame of a stream.
#[derive(Debug, Serialize, Deserialize)]
struct EndFrame {
    clean: bool,
    reason: Option<String>,
    bytes: u64,
    blake3: String,
}

/// Moves what a local writer puts into `reader` to `sock`, then the end frame. Returns the
/// bytes sent.
pub async fn send<W: AsyncWrite + Unpin>(reader: PipeReader, mut sock: W) -> io::Result<u64> {
    let mut buf = vec![0u8; MAX_FRAME];
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    let (clean, reason) = loop {
        match reader.try_read(&mut buf) {
            Ok(0) => break (true, None),
            Ok(n) => {
                hasher.update(&buf[..n]);
                bytes += n as u64;
                sock.write_u8(DATA).await?;
                sock.write_u32_le(n as u32).await?;
                sock.write_all(&buf[..n]).await?;
            }
            Err(PipeError::WouldBlock(wait)) => {
                // Nothing to send for now: make what was sent visible before waiting.
                sock.flush().await?;
                wait.await;
            }
            Err(PipeError::WriterFailed(why)) => break (false, Some(why)),
            Err(PipeError::Broken) => break (false, Some("the pipe broke".into())),
        }
    };
    let end = EndFrame {
        clean,
        reason,
        bytes,
        blake3: hasher.finalize().to_hex().to_string(),
    };
    let payload = serde_json::to_vec(&end).map_err(io::Error::other)?;
    sock.write_u8(END).await?;
    sock.write_u32_le(payload.len() as u32).await?;
    sock.write_all(&payload).await?;
    sock.flush().await?;
    Ok(bytes)
}

/// Moves a stream from `sock` into a local `writer` and ends it as the sender said, once the
/// byte count and digest check out. Returns the bytes received.
pub async fn receive<R: AsyncRead + Unpin>(writer: PipeWriter, mut sock: R) -> u64 {
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; MAX_FRAME];
    let end = loop {
        let tag = match sock.read_u8().await {
            Ok(t) => t,
            Err(_) => break EndOfStream::Failed("the connection to the writer was lost".into()),
        };
        let len = match sock.read_u32_le().await {
            Ok(n) => n as usize,
            Err(_) => break EndOfStream::Failed("the connection to the writer was lost".into()),
        };
        match tag {
            DATA if len <= MAX_FRAME => {
                if sock.read_exact(&mut buf[..len]).await.is_err() {
                    break EndOfStream::Failed("the connection to the writer was lost".into());
                }
                hasher.update(&buf[..len]);
                bytes += len as u64;
                if !put(&writer, &buf[..len]).await {
                    // The local reader left: stop receiving; the sender sees the socket close.
                    return bytes;
                }
            }
            END if len <= MAX_FRAME => {
                let mut payload = vec![0u8; len];
                if sock.read_exact(&mut payload).await.is_err() {
                    break EndOfStream::Failed("the connection to the writer was lost".into());
                }
                let Ok(end) = serde_json::from_slice::<EndFrame>(&payload) else {
                    break EndOfStream::Failed("a damaged end-of-stream frame".into());
                };
                let digest = hasher.finalize().to_hex().to_string();
                break if end.bytes != bytes || end.blake3 != digest {
                    EndOfStream::Failed(format!(
                        "the stream was damaged in transit: {bytes} bytes with BLAKE3 {digest} \
                         received, {} bytes with BLAKE3 {} sent",
                        end.bytes, end.blake3
                    ))
                } else if end.clean {
                    EndOfStream::Clean
                } else {
                    EndOfStream::Failed(end.reason.unwrap_or_else(|| "the writer failed".into()))
                };
            }
            other => {
                break EndOfStream::Failed(format!(
                    "a damaged frame (tag {other:#04x}, {len} bytes)"
                ));
            }
        }
    };
    writer.finish(end);
    bytes
}

/// Writes all of `data` into the local pipe, waiting while it is full; false if its reader
/// is gone.
async fn put(writer: &PipeWriter, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match writer.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(PipeError::WouldBlock(wait)) => wait.await,
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use zvm_channel::pipe::pipe;

    async fn read_all(r: &PipeReader) -> (Vec<u8>, Option<EndOfStream>) {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match r.try_read(&mut buf) {
                Ok(0) => return (out, Some(EndOfStream::Clean)),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(PipeError::WouldBlock(w)) => w.await,
                Err(PipeError::WriterFailed(why)) => return (out, Some(EndOfStream::Failed(why))),
                Err(PipeError::Broken) => return (out, None),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_crosses_a_socket_whole_and_ends_as_the_writer_said() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let (w1, r1) = pipe();
        let (w2, r2) = pipe();
        let sender = tokio::spawn(send(r1, a));
        let receiver = tokio::spawn(receive(w2, b));
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                put(&w1, &data).await;
                w1.finish(EndOfStream::Clean);
            })
        };
        let (got, end) = read_all(&r2).await;
        writer.await.unwrap();
        assert_eq!(sender.await.unwrap().unwrap(), 1_000_000);
        assert_eq!(receiver.await.unwrap(), 1_000_000);
        assert_eq!(got, data);
        assert_eq!(end, Some(EndOfStream::Clean));
    }

    #[tokio::test]
    async fn truncation_corruption_and_failure_are_detected() {
        // A stream cut before its end frame.
        let (w, r) = pipe();
        let frames = [DATA, 3, 0, 0, 0, b'a', b'b', b'c'];
        receive(w, &frames[..]).await;
        let (got, end) = read_all(&r).await;
        assert_eq!(got, b"abc");
        assert!(matches!(end, Some(EndOfStream::Failed(why)) if why.contains("lost")));

        // A data byte changed in transit: the digest no longer matches.
        let mut wire = Vec::new();
        let (w0, r0) = pipe();
        w0.try_write(b"hello").unwrap();
        w0.finish(EndOfStream::Clean);
        send(r0, &mut wire).await.unwrap();
        wire[5] ^= 1;
        let (w, r) = pipe();
        receive(w, &wire[..]).await;
        let (_, end) = read_all(&r).await;
        assert!(
            matches!(end, Some(EndOfStream::Failed(why)) if why.contains("damaged in transit"))
        );

        // A writer that failed: the reader learns why.
        let mut wire = Vec::new();
        let (w0, r0) = pipe();
        w0.finish(EndOfStream::Failed("exited with 3".into()));
        send(r0, &mut wire).await.unwrap();
        let (w, r) = pipe();
        receive(w, &wire[..]).await;
        let (_, end) = read_all(&r).await;
        assert_eq!(end, Some(EndOfStream::Failed("exited with 3".into())));
    }
}
