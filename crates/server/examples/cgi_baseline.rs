//! The baseline `scripts/load` measures `zvm serve` against: an HTTP server that runs a
//! native program per request as a CGI process (fork+exec, RFC 3875 environment, the body as
//! stdin, stdout parsed as a CGI response).
//!
//! It is built on the same stack as `zvm serve` (axum on hyper, a multi-threaded tokio
//! runtime with one worker per core, the process started and waited for on tokio's blocking
//! pool as zvm runs its VMs), so that the two sides of the comparison differ only in how the
//! program is started: a fresh native process against a fresh VM. Nothing is tuned down: the
//! number of processes at once is bounded only by the blocking pool, as in a classic CGI
//! server, and no request log is written.
//!
//! ```sh
//! cargo build --release -p zvm-server --example cgi_baseline
//! target/release/examples/cgi_baseline --listen 127.0.0.1:0 --program bench/hello/out/hello
//! ```
//!
//! It prints `cgi_baseline: listening on http://<addr>` on stderr once it accepts requests,
//! and stops on ctrl-c or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Largest request body passed to the program; the same default as `zvm serve`'s `max_body`.
const MAX_BODY: usize = 64 << 20;

/// What every request shares.
struct Cgi {
    program: PathBuf,
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:8081".parse().expect("a valid address");
    let mut program = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("`{name}` needs a value"))
        };
        match arg.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                listen = v
                    .parse()
                    .with_context(|| format!("`--listen`: `{v}` is not host:port"))?;
            }
            "--program" => program = Some(PathBuf::from(value("--program")?)),
            "-h" | "--help" => {
                eprintln!("usage: cgi_baseline [--listen HOST:PORT] --program PATH");
                return Ok(());
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    let program = program.context("`--program PATH` is required")?;
    let program = std::fs::canonicalize(&program)
        .with_context(|| format!("program `{}`", program.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cgi-baseline")
        .build()?;
    runtime.block_on(serve(listen, program))
}

async fn serve(listen: SocketAddr, program: PathBuf) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on `{listen}`"))?;
    let local = listener.local_addr()?;
    let cgi = Arc::new(Cgi {
        program,
        listen: local,
    });
    let app = Router::new().fallback(handle).with_state(cgi);
    eprintln!("cgi_baseline: listening on http://{local}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(zvm_server::shutdown_signal())
    .await
    .context("serving HTTP")
}

/// Every request, whatever its path: one run of the program.
async fn handle(
    State(cgi): State<Arc<Cgi>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    match run(&cgi, peer, request).await {
        Ok(r) => r,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
    }
}

async fn run(cgi: &Cgi, peer: SocketAddr, request: Request) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .context("reading the request body")?;
    // RFC 3875's meta-variables; the program sees nothing of this server's own environment.
    let mut env: Vec<(String, String)> = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_SOFTWARE".into(), "cgi_baseline".into()),
        ("SERVER_PROTOCOL".into(), format!("{:?}", parts.version)),
        ("SERVER_NAME".into(), cgi.listen.ip().to_string()),
        ("SERVER_PORT".into(), cgi.listen.port().to_string()),
        ("REQUEST_METHOD".into(), parts.method.to_string()),
        (
            "SCRIPT_NAME".into(),
            cgi.program
                .file_name()
                .map_or_else(String::new, |n| format!("/{}", n.to_string_lossy())),
        ),
        ("PATH_INFO".into(), parts.uri.path().to_owned()),
        (
            "QUERY_STRING".into(),
            parts.uri.query().unwrap_or("").to_owned(),
        ),
        ("REMOTE_ADDR".into(), peer.ip().to_string()),
        ("REMOTE_PORT".into(), peer.port().to_string()),
        ("CONTENT_LENGTH".into(), body.len().to_string()),
    ];
    for (name, value) in &parts.headers {
        let Ok(value) = value.to_str() else { continue };
        if name == header::CONTENT_TYPE {
            env.push(("CONTENT_TYPE".into(), value.to_owned()));
        } else if name != header::CONTENT_LENGTH && name != header::AUTHORIZATION {
            let var = format!("HTTP_{}", name.as_str().to_uppercase().replace('-', "_"));
            env.push((var, value.to_owned()));
        }
    }
    let program = cgi.program.clone();
    let output = tokio::task::spawn_blocking(move || spawn(&program, env, body))
        .await
        .context("the process's task failed")??;
    if !output.status.success() {
        bail!(
            "`{}` ended with {}: {}",
            cgi.program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    cgi_response(&output.stdout)
}

/// fork+exec+wait, with the body on stdin.
fn spawn(
    program: &std::path::Path,
    env: Vec<(String, String)>,
    body: Bytes,
) -> anyhow::Result<std::process::Output> {
    let mut child = Command::new(program)
        .env_clear()
        .envs(env)
        .stdin(if body.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", program.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits without reading its input closes the pipe: not an error.
        let _ = stdin.write_all(&body);
    }
    child
        .wait_with_output()
        .with_context(|| format!("waiting for `{}`", program.display()))
}

/// A CGI response (RFC 3875 section 6): header lines, a blank line, the body. `Status:`
/// sets the status; other headers are passed on.
fn cgi_response(stdout: &[u8]) -> anyhow::Result<Response> {
    let (head, body) = split_head(stdout).context("the program's output has no header block")?;
    let head = std::str::from_utf8(head).context("the program's headers are not UTF-8")?;
    let mut response = Response::new(Body::from(body.to_vec()));
    for line in head.lines() {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("bad CGI header line `{line}`"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            *response.status_mut() = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .with_context(|| format!("bad CGI status `{value}`"))?;
        } else {
            response.headers_mut().append(
                HeaderName::from_bytes(name.trim().as_bytes())
                    .with_context(|| format!("bad CGI header name `{name}`"))?,
                HeaderValue::from_str(value)
                    .with_context(|| format!("bad CGI header value `{value}`"))?,
            );
        }
    }
    Ok(response)
}

/// The header block and the body, split at the first blank line (`\r\n\r\n` or `\n\n`).
fn split_head(out: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let (at, len) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 < b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&out[..at], &out[at + len..]))
}
