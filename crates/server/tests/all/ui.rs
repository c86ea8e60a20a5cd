//! The status page: `GET /v1/status` after runs of every kind of ending, then the page itself
//! rendered by headless Chromium (`chromium`, Debian's package), checked twice: its DOM (a row
//! per run, timeline bars, one coloured by a VM still running) and a screenshot, decoded and
//! checked for the colours of the states it must show. The screenshot is kept as
//! `target/ui/status.png` for people to look at.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{TestServer, echo, header, json, spin, wasm};

/// Where Debian installs the browser; `ZVM_CHROMIUM` names another.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest one browser run may take (it usually takes a second or two).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// The window the page is drawn in.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;

/// The width of a phone held upright, where the page drops its less useful columns.
const NARROW: u32 = 400;

/// Traps at once.
fn trap() -> Vec<u8> {
    wasm(r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#)
}

/// The browser to use, or None when the test is told to skip it (`ZVM_SKIP_BROWSER=1`);
/// a missing browser otherwise fails the test, since the page would go untested.
fn chromium() -> Option<PathBuf> {
    if std::env::var_os("ZVM_SKIP_BROWSER").is_some_and(|v| v == "1") {
        eprintln!("ZVM_SKIP_BROWSER=1: the page is not rendered");
        return None;
    }
    let path =
        std::env::var_os("ZVM_CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from);
    assert!(
        path.exists(),
        "`{}` not found: install chromium: apt-get install chromium chromium-driver \
         (or set ZVM_SKIP_BROWSER=1 to skip rendering the status page)",
        path.display()
    );
    Some(path)
}

/// Runs headless Chromium on `url` in a window `width` pixels wide with `mode` (`--dump-dom`
/// or `--screenshot=FILE`) and returns its stdout. Each run gets a new profile directory, so
/// runs share nothing.
fn browse(chromium: &Path, url: &str, mode: &str, width: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--window-size={width},{HEIGHT}"),
            "--virtual-time-budget=5000",
            mode,
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{}`: {e}", chromium.display()));
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "chromium {mode} took over {BROWSER_TIMEOUT:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium {mode}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A decoded screenshot: RGB pixels, row by row.
struct Image {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn read(path: &Path) -> Image {
        let mut decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![
            0;
            reader
                .output_buffer_size()
                .expect("a frame that fits in memory")
        ];
        let info = reader.next_frame(&mut buf).unwrap();
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            other => panic!("unexpected colour type {other:?}"),
        };
        let (width, height) = (info.width as usize, info.height as usize);
        let mut rgb = Vec::with_capacity(width * height);
        for y in 0..height {
            let row = &buf[y * info.line_size..][..width * channels];
            for px in row.chunks(channels) {
                rgb.push(if channels >= 3 {
                    [px[0], px[1], px[2]]
                } else {
                    [px[0]; 3]
                });
            }
        }
        Image { width, height, rgb }
    }

    fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        self.rgb[y * self.width + x]
    }

    /// Pixels within a small distance of `colour` (anti-aliasing blurs edges, not fills).
    fn count_near(&self, colour: [u8; 3]) -> usize {
        self.rgb
            .iter()
            .filter(|p| (0..3).all(|i| p[i].abs_diff(colour[i]) <= 6))
            .count()
    }
}

fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

/// Waits until `/v1/status` satisfies `ready`, and returns it.
async fn status_when(
    s: &TestServer,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let st = json(s.get("/v1/status").await).await;
        if ready(&st) {
            return st;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_status_page_shows_runs_vms_and_reports() {
    let s = TestServer::start(|c| {
        c.max_vms = 2;
        // The spinning guest runs until this limit: long enough to be drawn in flight.
        c.request_timeout = Duration::from_secs(15);
        c.max_fuel = 1_000_000_000_000;
    })
    .await;
    s.put_object("bin", "echo.wasm", echo()).await;
    s.put_object("bin", "trap.wasm", trap()).await;
    s.put_object("bin", "spin.wasm", spin()).await;

    let empty = json(s.get("/v1/status").await).await;
    assert_eq!(empty["runs"].as_array().unwrap().len(), 0, "{empty}");
    assert_eq!(empty["totals"]["runs"], 0);

    let r = s.post("/v1/run?program=bin/echo.wasm", "hello page").await;
    assert_eq!(header(&r, "x-zvm-state"), "ok");
    let r = s.post("/v1/run?program=bin/trap.wasm", "").await;
    assert_eq!(header(&r, "x-zvm-state"), "trap");
    let r = s
        .post("/v1/run?program=bin/spin.wasm&fuel=5000000", "")
        .await;
    assert_eq!(header(&r, "x-zvm-state"), "out_of_fuel");
    let r = s
        .post("/v1/run?program=bin/echo.wasm&report=json", "again")
        .await;
    assert_eq!(json(r).await["state"]["kind"], "ok");

    // The JSON the page polls.
    let st = json(s.get("/v1/status").await).await;
    let runs = st["runs"].as_array().unwrap();
    let states: Vec<&str> = runs
        .iter()
        .map(|r| r["summary"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["ok", "out_of_fuel", "trap", "ok"],
        "newest first: {st}"
    );
    let first = &runs[3];
    assert_eq!(first["kind"], "run");
    assert_eq!(first["label"], "bin/echo.wasm");
    assert!(first["ended_ms"].as_u64() >= first["started_ms"].as_u64());
    assert_eq!(first["summary"]["exit_code"], 0);
    assert!(first["summary"]["fuel_used"].as_u64().unwrap() > 0);
    let stdout = first["summary"]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "stdout")
        .unwrap();
    assert_eq!(stdout["etag"], crate::support::etag(b"hello page"));
    assert_eq!(stdout["write_bytes"], 10);
    assert_eq!(
        first["report"]["program"], "bin/echo.wasm",
        "the full report"
    );
    assert_eq!(runs[1]["summary"]["fuel_used"], 5_000_000);
    assert!(
        runs[2]["report"]["state_text"]
            .as_str()
            .unwrap()
            .starts_with("trap")
    );
    assert_eq!(st["totals"]["runs"], 4);
    assert_eq!(st["totals"]["by_state"]["ok"], 2);
    assert_eq!(st["server"]["max_vms"], 2);
    assert_eq!(st["server"]["vms_in_flight"], 0);
    assert!(st["server"]["version"].is_string());
    let vms = st["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 4);
    assert!(
        vms.iter().all(|v| v["ended_ms"].is_u64() && v["lane"] == 0),
        "one after the other, all in the first lane: {st}"
    );
    let vm_states: Vec<&str> = vms.iter().map(|v| v["state"].as_str().unwrap()).collect();
    assert_eq!(vm_states, ["ok", "out_of_fuel", "trap", "ok"]);
    assert_eq!(
        json(s.get("/v1/status?runs=2").await).await["runs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(s.get("/v1/status?runs=0").await.status(), 400);

    // The page and its files, and nothing else under /ui/.
    let page = s.get("/").await;
    assert_eq!(page.status(), 200);
    assert!(header(&page, "content-type").starts_with("text/html"));
    assert!(header(&page, "content-security-policy").contains("default-src 'self'"));
    assert!(page.text().await.unwrap().contains("/ui/app.js"));
    let js = s.get("/ui/app.js").await;
    assert!(header(&js, "content-type").starts_with("text/javascript"));
    assert_eq!(s.get("/ui/style.css").await.status(), 200);
    assert_eq!(s.get("/ui/secret.txt").await.status(), 404);

    let Some(chromium) = chromium() else {
        s.stop().await;
        return;
    };

    // A VM in flight while the page is drawn: it spins until the request timeout.
    let spinning = {
        let client = s.client.clone();
        let url = s.url("/v1/run?program=bin/spin.wasm");
        tokio::spawn(async move { client.post(url).send().await.unwrap() })
    };
    let st = status_when(&s, "the spinning VM in flight", |st| {
        st["vms_in_flight"] == 1
    })
    .await;
    assert_eq!(st["server"]["vms_in_flight"], 1);
    let running = st["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["ended_ms"].is_null())
        .unwrap()
        .clone();
    assert_eq!(running["state"], "running");
    assert_eq!(running["label"], "bin/spin.wasm");

    let url = s.url("/");
    let dom = {
        let (chromium, url) = (chromium.clone(), url.clone());
        tokio::task::spawn_blocking(move || browse(&chromium, &url, "--dump-dom", WIDTH))
            .await
            .unwrap()
    };
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("status.html"), &dom).unwrap();
    let shot = out_dir.join("status.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot_started = Instant::now();
    {
        let (chromium, url, shot) = (chromium.clone(), url.clone(), shot.clone());
        tokio::task::spawn_blocking(move || {
            browse(
                &chromium,
                &url,
                &format!("--screenshot={}", shot.display()),
                WIDTH,
            )
        })
        .await
        .unwrap();
    }
    eprintln!(
        "screenshot in {:?}: {}",
        screenshot_started.elapsed(),
        shot.display()
    );
    let narrow = out_dir.join("status-narrow.png");
    let _ = std::fs::remove_file(&narrow);
    {
        let (chromium, url, narrow) = (chromium.clone(), url.clone(), narrow.clone());
        tokio::task::spawn_blocking(move || {
            browse(
                &chromium,
                &url,
                &format!("--screenshot={}", narrow.display()),
                NARROW,
            )
        })
        .await
        .unwrap();
    }
    // The spinning VM must still have been running for the in-flight bar to mean anything.
    assert!(
        !spinning.is_finished(),
        "the spinning VM ended before the page was drawn; raise request_timeout"
    );

    // The DOM: a row per run with its state, the timeline with a bar per VM, one running.
    let count = |needle: &str| dom.matches(needle).count();
    assert_eq!(count("<tr class=\"run"), 4, "{dom}");
    for state in ["ok", "trap", "out_of_fuel"] {
        assert!(
            dom.contains(&format!("class=\"badge s-{state}\"")),
            "no {state} badge: {dom}"
        );
    }
    assert!(dom.contains("bin/trap.wasm"));
    assert!(dom.contains("<svg class=\"timeline\""), "{dom}");
    assert_eq!(count("class=\"bar s-"), 5, "{dom}");
    assert_eq!(count("class=\"bar s-running\""), 1, "{dom}");
    assert!(
        dom.contains("class=\"conn live\""),
        "the page got its status: {dom}"
    );

    // The screenshot: the window's size, not blank, and the colours of the states drawn.
    let img = Image::read(&shot);
    assert_eq!((img.width, img.height), (WIDTH as usize, HEIGHT as usize));
    let background = hex("#f6f7f9");
    let mut distinct = std::collections::BTreeSet::new();
    for p in &img.rgb {
        distinct.insert([p[0] >> 4, p[1] >> 4, p[2] >> 4]);
    }
    assert!(distinct.len() >= 20, "{} colours only", distinct.len());
    assert!(
        img.count_near(hex("#1f2a37")) > WIDTH as usize * 20,
        "the header bar"
    );
    for (what, colour, at_least) in [
        ("ok (badges, bars)", "#2e9d5b", 200),
        ("trap", "#d33a3a", 100),
        ("out_of_fuel", "#8e5bd6", 100),
        ("the running VM's bar", "#2f6fdb", 30),
    ] {
        let n = img.count_near(hex(colour));
        assert!(n >= at_least, "{what}: {n} pixels of {colour}");
    }
    // Content down the page: in each 100-pixel band of the top 600 pixels, something that is
    // not the background (panels, text, bars).
    for band in 0..6 {
        let drawn = (band * 100..band * 100 + 100)
            .flat_map(|y| (0..img.width).map(move |x| (x, y)))
            .filter(|&(x, y)| img.pixel(x, y) != background)
            .count();
        assert!(drawn > 2000, "band {band}: only {drawn} pixels drawn");
    }

    // In a narrow window the states are still there, in the table and on the timeline.
    let img = Image::read(&narrow);
    assert_eq!((img.width, img.height), (NARROW as usize, HEIGHT as usize));
    for (what, colour) in [
        ("ok", "#2e9d5b"),
        ("trap", "#d33a3a"),
        ("out_of_fuel", "#8e5bd6"),
        ("running", "#2f6fdb"),
    ] {
        let n = img.count_near(hex(colour));
        assert!(n >= 30, "narrow window, {what}: {n} pixels of {colour}");
    }

    let r = spinning.await.unwrap();
    assert_eq!(header(&r, "x-zvm-state"), "timed_out");
    s.stop().await;
}

/// A guest for a job's pipes: opens the channels `reads` and `writes` (paths under the root
/// preopen, such as `dev/in/gen`), writes `hello` lines `hellos` times to every channel it
/// writes, then copies each channel it reads, in order, to its first written channel (or to
/// stdout when it writes none).
fn pipe_guest(reads: &[&str], writes: &[&str], hellos: u32) -> Vec<u8> {
    const LINE: &str = "hello through a pipe\n";
    let mut data = String::new();
    let mut body = String::new();
    for (i, path) in reads.iter().chain(writes).enumerate() {
        let at = 1024 + 64 * i;
        data.push_str(&format!("(data (i32.const {at}) \"{path}\")\n"));
        // Rights: fd_read (2) for a read channel, fd_write (64) for a written one.
        let rights = if i < reads.len() { 2 } else { 64 };
        body.push_str(&format!(
            "(local.set $fd{i} (call $open (i32.const {at}) (i32.const {}) (i64.const {rights})))\n",
            path.len()
        ));
    }
    let out = if writes.is_empty() {
        "(i32.const 1)".to_owned()
    } else {
        format!("(local.get $fd{})", reads.len())
    };
    for w in 0..writes.len() {
        body.push_str(&format!(
            "(call $hello (local.get $fd{}) (i32.const {hellos}))\n",
            reads.len() + w
        ));
    }
    for r in 0..reads.len() {
        body.push_str(&format!("(call $copy (local.get $fd{r}) {out})\n"));
    }
    let locals: String = (0..reads.len() + writes.len())
        .map(|i| format!("(local $fd{i} i32) "))
        .collect();
    wasm(&format!(
        r#"(module
        (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
        (memory (export "memory") 1)
        {data}
        (data (i32.const 4096) "{line}")
        (func $open (param $path i32) (param $len i32) (param $rights i64) (result i32)
            ;; fd 3 is the root preopen.
            (drop (call $path_open (i32.const 3) (i32.const 0) (local.get $path) (local.get $len)
                (i32.const 0) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 200)))
            (i32.load (i32.const 200)))
        (func $hello (param $out i32) (param $n i32)
            (block $done (loop $l
                (br_if $done (i32.eqz (local.get $n)))
                (i32.store (i32.const 0) (i32.const 4096))
                (i32.store (i32.const 4) (i32.const {len}))
                (drop (call $write (local.get $out) (i32.const 0) (i32.const 1) (i32.const 12)))
                (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                (br $l))))
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
        (func (export "_start") {locals}
            {body}))"#,
        line = LINE.replace('\n', "\\0a"),
        len = LINE.len(),
    ))
}

/// `gen` → `mid` → `sink` ← `side`: a chain and a fan-in, pipes of different sizes.
const PIPE_JOB: &str = r#"version = 1
name = "pipes"

[[group]]
name = "gen"
program = "bin/gen.wasm"
connect = ["mid"]

[[group]]
name = "mid"
program = "bin/mid.wasm"
connect = ["sink"]

[[group]]
name = "side"
program = "bin/side.wasm"
connect = ["sink"]

[[group]]
name = "sink"
program = "bin/sink.wasm"
"#;

#[tokio::test]
async fn a_job_is_drawn_as_a_graph_with_the_bytes_its_pipes_moved() {
    let s = TestServer::start(|c| c.max_vms = 4).await;
    s.put_object("bin", "gen.wasm", pipe_guest(&[], &["dev/out/mid"], 100))
        .await;
    s.put_object(
        "bin",
        "mid.wasm",
        pipe_guest(&["dev/in/gen"], &["dev/out/sink"], 0),
    )
    .await;
    s.put_object("bin", "side.wasm", pipe_guest(&[], &["dev/out/sink"], 10))
        .await;
    s.put_object(
        "bin",
        "sink.wasm",
        pipe_guest(&["dev/in/mid", "dev/in/side"], &[], 0),
    )
    .await;
    let line = "hello through a pipe\n";
    let r = s.post("/v1/jobs", PIPE_JOB).await;
    assert_eq!(header(&r, "x-zvm-state"), "ok", "{:?}", r.headers());
    assert_eq!(r.text().await.unwrap(), line.repeat(110));

    let st = json(s.get("/v1/status").await).await;
    let jobs = st["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{st}");
    let job = &jobs[0];
    assert_eq!(job["state"], "ok");
    let mut members: Vec<&str> = job["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    members.sort();
    assert_eq!(members, ["gen", "mid", "side", "sink"]);
    assert!(
        job["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] == "ok" && m["fuel"].as_u64() > Some(0)),
        "{job}"
    );
    let mut pipes: Vec<(String, String, u64)> = job["pipes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["from"].as_str().unwrap().to_owned(),
                p["to"].as_str().unwrap().to_owned(),
                p["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    pipes.sort();
    let n = line.len() as u64;
    assert_eq!(
        pipes,
        [
            ("gen".into(), "mid".into(), 100 * n),
            ("mid".into(), "sink".into(), 100 * n),
            ("side".into(), "sink".into(), 10 * n),
        ]
    );

    let Some(chromium) = chromium() else {
        s.stop().await;
        return;
    };
    let url = s.url("/");
    let dom = {
        let (chromium, url) = (chromium.clone(), url.clone());
        tokio::task::spawn_blocking(move || browse(&chromium, &url, "--dump-dom", WIDTH))
            .await
            .unwrap()
    };
    let id = job["id"].as_str().unwrap();
    assert!(
        dom.contains(&format!("<svg class=\"job-graph\" data-job=\"{id}\"")),
        "{dom}"
    );
    assert_eq!(dom.matches("<g class=\"node ").count(), 4, "{dom}");
    assert_eq!(dom.matches("<g class=\"edge\"").count(), 3, "{dom}");
    for (from, to, bytes) in &pipes {
        assert!(
            dom.contains(&format!(
                "data-from=\"{from}\" data-to=\"{to}\" data-bytes=\"{bytes}\""
            )),
            "no pipe {from} -> {to} of {bytes} bytes: {dom}"
        );
    }
    // The layered layout: gen and side first, then mid, then sink.
    let x_of = |member: &str| -> f64 {
        let at = dom
            .find(&format!("data-member=\"{member}\""))
            .unwrap_or_else(|| panic!("no node {member}"));
        let rest = &dom[at..];
        let t = rest.find("translate(").unwrap() + "translate(".len();
        rest[t..rest[t..].find(',').unwrap() + t].parse().unwrap()
    };
    assert_eq!(x_of("gen"), x_of("side"));
    assert!(x_of("gen") < x_of("mid") && x_of("mid") < x_of("sink"));
    // The pipe from side to sink spans two layers: it runs straight through a slot of its own
    // beside mid (a line in its path), not through mid.
    let edge_path = |from: &str, to: &str| -> String {
        let at = dom
            .find(&format!("data-from=\"{from}\" data-to=\"{to}\""))
            .unwrap();
        let d = dom[at..].find(" d=\"").unwrap() + at + 4;
        dom[d..d + dom[d..].find('"').unwrap()].to_owned()
    };
    assert!(edge_path("side", "sink").contains(" L"), "{dom}");
    assert!(!edge_path("gen", "mid").contains(" L"), "{dom}");

    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("job.png");
    let _ = std::fs::remove_file(&shot);
    {
        let (chromium, shot) = (chromium.clone(), shot.clone());
        tokio::task::spawn_blocking(move || {
            browse(
                &chromium,
                &url,
                &format!("--screenshot={}", shot.display()),
                WIDTH,
            )
        })
        .await
        .unwrap();
    }
    let img = Image::read(&shot);
    assert_eq!((img.width, img.height), (WIDTH as usize, HEIGHT as usize));
    // The members' outlines are drawn in the colour of `ok`, the pipes in their grey.
    assert!(img.count_near(hex("#2e9d5b")) > 400, "member outlines");
    assert!(img.count_near(hex("#8c96a3")) > 200, "pipes");
    s.stop().await;
}

#[tokio::test]
async fn with_tenants_the_page_asks_for_a_token() {
    let s = TestServer::start(|c| {
        c.tenants = zvm_server::tenants::resolve(&[zvm_server::tenants::TenantFile {
            name: "alice".into(),
            token: Some("alice-token-0123".into()),
            ..Default::default()
        }])
        .unwrap();
    })
    .await;
    // The page and its files are open; the status is not.
    assert_eq!(s.get("/").await.status(), 200);
    assert_eq!(s.get("/ui/app.js").await.status(), 200);
    assert_eq!(s.get("/v1/status").await.status(), 401);
    let ok = s
        .client
        .get(s.url("/v1/status"))
        .bearer_auth("alice-token-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let Some(chromium) = chromium() else {
        s.stop().await;
        return;
    };
    let url = s.url("/");
    let dom = tokio::task::spawn_blocking(move || browse(&chromium, &url, "--dump-dom", WIDTH))
        .await
        .unwrap();
    assert!(
        dom.contains("<form id=\"auth\" class=\"panel\">"),
        "the token box shows: {dom}"
    );
    assert!(
        dom.contains("<main id=\"main\" hidden=\"\">"),
        "the status does not: {dom}"
    );
    assert!(dom.contains("token needed"), "{dom}");
    s.stop().await;
}
