//! Starting a server for a test, an HTTP client, and the guests (WAT text compiled at test
//! time).

use std::net::SocketAddr;
use std::time::Duration;

use zvm_server::{Server, ServerConfig};

/// A server running on a loopback port, stopped (gracefully) when dropped or by `stop`.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server with the defaults, changed by `edit`.
    pub async fn start(edit: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().join("data"),
            ..ServerConfig::default()
        };
        edit(&mut config);
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a bucket and stores `body` as `bucket/key` in it.
    pub async fn put_object(&self, bucket: &str, key: &str, body: impl Into<reqwest::Body>) {
        let r = self.put(&format!("/v1/buckets/{bucket}"), "").await;
        assert!(r.status() == 201 || r.status() == 409, "{}", r.status());
        let r = self.put(&format!("/v1/objects/{bucket}/{key}"), body).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// Asks the server to stop and waits until it has.
    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    /// Begins a graceful shutdown without waiting for it.
    pub fn begin_stop(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.take().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The JSON body of a response.
pub async fn json(r: reqwest::Response) -> serde_json::Value {
    let bytes = r.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

/// A header's value as text ("" if missing).
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The BLAKE3 hash of `data` in hex: an object's etag and a channel's.
pub fn etag(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Compiles a guest written as WAT.
pub fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

/// The imports and the copy loop every copying guest shares: `$copy` moves everything from
/// fd `$in` to fd `$out` in 4 KiB chunks.
const COPY_PRELUDE: &str = r#"
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func $copy (param $in i32) (param $out i32)
        (loop $l
            (i32.store (i32.const 0) (i32.const 8192))
            (i32.store (i32.const 4) (i32.const 4096))
            (i32.store (i32.const 8) (i32.const 0))
            (drop (call $read (local.get $in) (i32.const 0) (i32.const 1) (i32.const 8)))
            (if (i32.gt_u (i32.load (i32.const 8)) (i32.const 0))
                (then
                    (i32.store (i32.const 4) (i32.load (i32.const 8)))
                    (drop (call $write (local.get $out) (i32.const 0) (i32.const 1) (i32.const 12)))
                    (br $l)))))
"#;

/// Copies stdin to stdout.
pub fn echo() -> Vec<u8> {
    wasm(&format!(
        r#"(module {COPY_PRELUDE}
        (func (export "_start") (call $copy (i32.const 0) (i32.const 1))))"#
    ))
}

/// Code to data: copies `/dev/input` to `/dev/output`, then exits with 1 if stdin starts
/// with `f` (after writing its output), else writes `done` to stdout.
pub fn transform() -> Vec<u8> {
    wasm(&format!(
        r#"(module {COPY_PRELUDE}
        (data (i32.const 100) "dev/input")
        (data (i32.const 120) "dev/output")
        (data (i32.const 140) "done")
        (func (export "_start")
            ;; fd 3 is the root preopen; rights fd_read (2) and fd_write (64).
            (drop (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 9)
                (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200)))
            (drop (call $open (i32.const 3) (i32.const 0) (i32.const 120) (i32.const 10)
                (i32.const 0) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 204)))
            (call $copy (i32.load (i32.const 200)) (i32.load (i32.const 204)))
            (i32.store (i32.const 0) (i32.const 300))
            (i32.store (i32.const 4) (i32.const 1))
            (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
            (if (i32.eq (i32.load8_u (i32.const 300)) (i32.const 102))
                (then (call $exit (i32.const 1))))
            (i32.store (i32.const 0) (i32.const 140))
            (i32.store (i32.const 4) (i32.const 4))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    ))
}

/// Loops forever.
pub fn spin() -> Vec<u8> {
    wasm(
        r#"(module (memory (export "memory") 1)
        (func (export "_start") (loop $l (br $l))))"#,
    )
}

/// Grows its memory until refused, then traps.
pub fn memory_bomb() -> Vec<u8> {
    wasm(
        r#"(module (memory (export "memory") 1)
        (func (export "_start")
            (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
            unreachable))"#,
    )
}
