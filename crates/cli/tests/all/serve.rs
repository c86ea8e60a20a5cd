//! `zvm serve` as a process: started on a free loopback port, an object stored and a program
//! run over HTTP, then stopped with SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use crate::support::{self, stderr};

/// Copies stdin to stdout.
const ECHO: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")
        (loop $l
            (i32.store (i32.const 0) (i32.const 1024))
            (i32.store (i32.const 4) (i32.const 4096))
            (i32.store (i32.const 8) (i32.const 0))
            (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
            (if (i32.gt_u (i32.load (i32.const 8)) (i32.const 0))
                (then
                    (i32.store (i32.const 4) (i32.load (i32.const 8)))
                    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))
                    (br $l))))))"#;

/// A running `zvm serve`, its address, and everything it has logged so far.
struct Served {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

fn start(data: &std::path::Path) -> Served {
    let mut child = support::zvm()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-vms",
            "2",
            "--data-dir",
        ])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning zvm serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(String::new()));
    let addr = loop {
        let line = lines
            .next()
            .expect("zvm serve ended before it listened")
            .unwrap();
        log.lock().unwrap().push_str(&format!("{line}\n"));
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log, so that the server never blocks on a full pipe.
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    Served { child, addr, log }
}

/// One HTTP/1.1 request on its own connection: (status, headers in lowercase, body).
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut c = TcpStream::connect(addr).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(body).unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, answer[split + 4..].to_vec())
}

#[test]
fn serve_stores_a_program_runs_it_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = start(&dir.path().join("data"));
    let addr = served.addr.clone();

    let (status, _, _) = request(&addr, "GET", "/healthz", b"");
    assert_eq!(status, 200);
    let (status, _, _) = request(&addr, "PUT", "/v1/buckets/apps", b"");
    assert_eq!(status, 201);
    let wasm = wat::parse_str(ECHO).unwrap();
    let (status, head, _) = request(&addr, "PUT", "/v1/objects/apps/echo.wasm", &wasm);
    assert_eq!(status, 200);
    assert!(
        head.contains(&format!("etag: \"{}\"", blake3::hash(&wasm).to_hex())),
        "{head}"
    );

    let (status, head, body) = request(
        &addr,
        "POST",
        "/v1/run?program=apps/echo.wasm",
        b"hello, zvm serve",
    );
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, b"hello, zvm serve");
    assert!(head.contains("x-zvm-state: ok"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");

    let pid = served.child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = served.child.wait().unwrap();
    // Give the log thread a moment to read the last lines.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = served.log.lock().unwrap().clone();
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains("stopped"),
        "{log}"
    );
    assert!(
        log.contains("request done"),
        "one log line per request: {log}"
    );
}

#[test]
fn serve_explains_its_flags_and_refuses_a_bad_configuration() {
    let out = support::run(&["serve", "--help"], b"");
    assert!(out.status.success());
    let help = support::stdout(&out);
    for flag in [
        "--config",
        "--listen",
        "--data-dir",
        "--max-vms",
        "--queue",
        "--max-body",
        "--request-timeout",
        "SIGTERM",
    ] {
        assert!(help.contains(flag), "no `{flag}` in\n{help}");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "version = 1\nmax_body = \"lots\"\n").unwrap();
    let out = support::run(&["serve", "--config", config.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("configuration key `max_body`"),
        "{}",
        stderr(&out)
    );
}

/// The soak (`scripts/soak`) in its short form: a normal tenant's requests beside a hostile
/// tenant's loops, memory bombs, floods, failing writers and cut-off uploads, against this
/// build's `zvm serve`; the script checks the server stays up with bounded memory, the normal
/// tenant is always served, and every stored object is whole. The 10-minute run's figures
/// are in docs/benchmarks.md.
#[test]
fn a_short_soak_with_hostile_tenants_passes() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = std::process::Command::new("python3")
        .current_dir(root)
        .args([
            "scripts/soak",
            "--seconds",
            "20",
            "--no-build",
            "--tenants",
            "on",
            "--zvm",
        ])
        .arg(env!("CARGO_BIN_EXE_zvm"))
        .output()
        .expect("python3 runs scripts/soak");
    assert!(
        out.status.success(),
        "scripts/soak failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
