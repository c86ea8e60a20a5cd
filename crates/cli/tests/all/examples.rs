//! The runnable job examples (`examples/wordcount`, `examples/grep`, `examples/sort`): each
//! job's members are built with clang, the job runs with `zvm job` in a copy of the example's
//! directory (so the repository stays clean), and its output is checked against the same
//! computation done here in Rust, from the same inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::support::{self, channel, stderr, stdout};

/// Member `member` of example `example`, built from `examples/<example>/<member>.c` into
/// `target/zvm-test/examples/<example>/` with the flags of the example's `run` script; again
/// only when a `.c` or `.h` file of the example is newer than the build.
fn member(example: &str, member: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src_dir = support::repo().join("examples").join(example);
    let out = support::repo()
        .join("target/zvm-test/examples")
        .join(example)
        .join(format!("{member}.wasm"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let common = src_dir.join("../common");
    let newest_source = std::fs::read_dir(&src_dir)
        .unwrap()
        .chain(std::fs::read_dir(&common).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("c" | "h")))
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let fresh = std::fs::metadata(&out).is_ok_and(|o| o.modified().unwrap() >= newest_source);
    if !fresh {
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let status = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
            .args([
                "--target=wasm32-wasi",
                "-O2",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-I",
            ])
            .arg(&common)
            .arg("-o")
            .arg(&tmp)
            .arg(src_dir.join(format!("{member}.c")))
            .status()
            .unwrap_or_else(|e| panic!("cannot run clang ({e}); see scripts/install-deps"));
        assert!(
            status.success(),
            "clang failed to build `{example}/{member}.c`"
        );
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

/// A copy of example `example` in a temporary directory: its job files, its `data/`, its
/// `members` built, and an empty `out/` (outputs are staged beside their files).
pub(crate) fn scene(example: &str, members: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = support::repo().join("examples").join(example);
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    if src.join("data").is_dir() {
        std::fs::create_dir(dir.path().join("data")).unwrap();
        for entry in std::fs::read_dir(src.join("data")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(
                &path,
                dir.path().join("data").join(path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    for m in members {
        std::fs::copy(member(example, m), dir.path().join(format!("{m}.wasm"))).unwrap();
    }
    std::fs::create_dir(dir.path().join("out")).unwrap();
    dir
}

/// Runs `zvm job <dir>/<job>` with a JSON job report; returns zvm's output and the report.
fn job(dir: &Path, job: &str) -> (std::process::Output, serde_json::Value) {
    let report = dir.join("job-report.json");
    let out = support::run_cmd(
        support::zvm()
            .arg("job")
            .arg(dir.join(job))
            .arg("--report-file")
            .arg(&report),
        b"",
    );
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!("no job report ({e}); stderr: {}", stderr(&out));
    });
    (out, serde_json::from_str(&text).unwrap())
}

/// Runs a job that must succeed, and checks that it did: every member ok, outputs committed.
pub(crate) fn job_ok(dir: &Path, file: &str, members: &[&str]) -> (String, serde_json::Value) {
    let (out, report) = job(dir, file);
    assert!(
        out.status.success(),
        "zvm job failed: {}\nstderr: {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(report["outcome"]["kind"], "ok", "{report:#}");
    assert_eq!(report["committed"], true);
    let names: Vec<&str> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, members);
    for m in report["members"].as_array().unwrap() {
        assert_eq!(m["report"]["state"]["kind"], "ok", "member {}", m["name"]);
    }
    (stdout(&out), report)
}

/// The member report of `name` in a job report.
fn member_report<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &report["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no member `{name}` in the job report"))["report"]
}

// ----- wordcount ---------------------------------------------------------------------------

const WORDCOUNT: &[&str] = &["mapper", "reducer", "merge"];

/// `<count> <word>` lines for the words (runs of ASCII letters and digits, lower-cased) of
/// every file in `data`, most frequent first, ties in byte order; and the number of words.
fn count_words(data: &Path) -> (String, u64) {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0;
    for entry in std::fs::read_dir(data).unwrap() {
        let text = std::fs::read(entry.unwrap().path()).unwrap();
        for word in text
            .split(|b| !b.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            *counts
                .entry(String::from_utf8(word.to_ascii_lowercase()).unwrap())
                .or_default() += 1;
            total += 1;
        }
    }
    let mut list: Vec<(String, u64)> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let text = list.iter().map(|(w, c)| format!("{c} {w}\n")).collect();
    (text, total)
}

#[test]
fn wordcount_matches_a_count_in_rust() {
    let dir = scene("wordcount", WORDCOUNT);
    let (out, report) = job_ok(
        dir.path(),
        "job.toml",
        &[
            "map-1", "map-2", "map-3", "map-4", "reduce-1", "reduce-2", "merge",
        ],
    );
    let (expected, words) = count_words(&dir.path().join("data"));
    let got = std::fs::read_to_string(dir.path().join("out/counts.txt")).unwrap();
    assert!(
        got == expected,
        "out/counts.txt differs:\n{got}\nexpected:\n{expected}"
    );
    let distinct = expected.lines().count();
    assert!(
        out.contains(&format!(
            "{words} words, {distinct} distinct, from 2 reducers\n"
        )),
        "stdout: {out}"
    );
    // The words are split between the reducers, and each reducer heard from every mapper.
    for r in ["reduce-1", "reduce-2"] {
        let vm = member_report(&report, r);
        assert!(channel(vm, "out/merge")["write_bytes"].as_u64().unwrap() > 0);
        for m in 1..=4 {
            assert!(
                channel(vm, &format!("in/map-{m}"))["read_bytes"]
                    .as_u64()
                    .unwrap()
                    > 0
            );
        }
    }
}

#[test]
fn wordcount_keeps_the_old_output_when_a_mapper_fails() {
    let dir = scene("wordcount", WORDCOUNT);
    std::fs::write(dir.path().join("out/counts.txt"), "old\n").unwrap();
    // Too little fuel for the mappers: the job fails, and nothing lands.
    let job_file = dir.path().join("job.toml");
    let text = std::fs::read_to_string(&job_file).unwrap();
    let starved = text.replacen(
        "[group.limits]\nmemory = \"32 MiB\"\n",
        "[group.limits]\nmemory = \"32 MiB\"\nfuel = 100_000\n",
        1,
    );
    assert_ne!(
        starved, text,
        "the job file changed shape; update this test"
    );
    std::fs::write(&job_file, starved).unwrap();
    let (out, report) = job(dir.path(), "job.toml");
    assert!(!out.status.success());
    assert_ne!(report["outcome"]["kind"], "ok");
    assert_eq!(report["committed"], false);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/counts.txt")).unwrap(),
        "old\n"
    );
    // Whichever mapper ran out first failed the job; the others were cancelled.
    let failed = report["outcome"]["member"].as_str().unwrap();
    assert!(failed.starts_with("map-"), "{report:#}");
    assert_eq!(
        member_report(&report, failed)["state"]["kind"],
        "out_of_fuel"
    );
}

// ----- grep --------------------------------------------------------------------------------

const GREP: &[&str] = &["gen", "search", "collect"];

// The word lists of examples/grep/gen.c, in the same order.
const FIRST: &[&str] = &[
    "ada", "alan", "grace", "edsger", "barbara", "donald", "frances", "ken", "margaret", "niklaus",
    "radia", "tony", "leslie", "john",
];
const LAST: &[&str] = &[
    "lovelace", "turing", "hopper", "dijkstra", "liskov", "knuth", "allen", "thompson", "hamilton",
    "wirth", "perlman", "hoare", "lamport", "backus",
];
const DOMAINS: &[&str] = &["example.org", "example.net", "example.com", "mail.test"];
const SUBJECT: &[&str] = &[
    "quarterly",
    "report",
    "meeting",
    "lunch",
    "budget",
    "invoice",
    "draft",
    "review",
    "minutes",
    "plan",
    "update",
    "the",
    "for",
    "about",
    "new",
    "old",
    "mill",
    "bakery",
    "river",
    "lighthouse",
    "schedule",
    "urgent",
    "friday",
    "monday",
    "agenda",
    "notes",
    "travel",
    "expenses",
    "project",
    "release",
    "question",
    "answer",
    "reminder",
    "party",
    "holiday",
    "order",
    "delivery",
    "payment",
    "status",
    "team",
    "weekly",
    "monthly",
    "summary",
    "proposal",
    "contract",
    "feedback",
    "call",
    "follow-up",
];
const BODY: &[&str] = &[
    "please",
    "send",
    "the",
    "report",
    "before",
    "meeting",
    "on",
    "friday",
    "we",
    "will",
    "need",
    "a",
    "new",
    "plan",
    "for",
    "next",
    "week",
    "thanks",
    "and",
    "regards",
    "budget",
    "is",
    "late",
    "again",
    "can",
    "you",
    "check",
    "numbers",
    "in",
    "table",
    "i",
    "think",
    "it",
    "looks",
    "good",
    "to",
    "me",
    "let",
    "us",
    "know",
    "if",
    "there",
    "are",
    "any",
    "changes",
    "bread",
    "river",
    "lamp",
    "order",
    "arrived",
    "yesterday",
    "payment",
    "due",
    "end",
    "of",
    "month",
    "call",
    "tomorrow",
    "morning",
    "notes",
    "attached",
    "draft",
    "ready",
    "review",
];
const MONTHS: &[&str] = &[
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// gen.c's xorshift64 and its `pick`.
struct XorShift(u64);

impl XorShift {
    fn pick(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn capital(w: &str) -> String {
    let mut c = w.chars();
    let first = c.next().unwrap().to_ascii_uppercase();
    std::iter::once(first).chain(c).collect()
}

/// Email `k` (the separator line "From <k>" included), made as gen.c makes it.
fn email(rng: &mut XorShift, k: u64) -> String {
    let person = |rng: &mut XorShift| {
        let first = FIRST[rng.pick(FIRST.len())];
        let last = LAST[rng.pick(LAST.len())];
        let domain = DOMAINS[rng.pick(DOMAINS.len())];
        format!(
            "{} {} <{first}.{last}@{domain}>\n",
            capital(first),
            capital(last)
        )
    };
    let words = |rng: &mut XorShift, list: &[&str], n: usize| {
        (0..n)
            .map(|i| {
                let w = list[rng.pick(list.len())];
                if i == 0 { capital(w) } else { w.to_string() }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut e = format!("From {k}\nFrom: {}", person(rng));
    e += &format!("To: {}", person(rng));
    let n = 3 + rng.pick(4);
    e += &format!("Subject: {}\n", words(rng, SUBJECT, n));
    let (day, month) = (1 + rng.pick(28), rng.pick(12));
    let (h, m, s) = (rng.pick(24), rng.pick(60), rng.pick(60));
    e += &format!(
        "Date: {day:02} {} 2024 {h:02}:{m:02}:{s:02} +0000\n\n",
        MONTHS[month]
    );
    for _ in 0..2 + rng.pick(4) {
        let n = 6 + rng.pick(7);
        e += &format!("{}.\n", words(rng, BODY, n));
    }
    if rng.pick(50) == 0 {
        e += "The INVOICE is attached.\n";
    }
    e + "\n"
}

#[test]
fn grep_matches_a_search_in_rust() {
    let dir = scene("grep", GREP);
    let text = std::fs::read_to_string(dir.path().join("job.toml")).unwrap();
    assert!(text.contains("args = [\"100000\"]") && text.contains("args = [\"invoice\"]"));
    let (out, report) = job_ok(
        dir.path(),
        "job.toml",
        &["gen", "search-1", "search-2", "search-3", "collect"],
    );

    let (emails, searchers) = (100_000u64, 3);
    let mut rng = XorShift(88172645463325252);
    let mut dealt = [0u64; 3];
    let mut expected = String::new();
    let mut matches = 0;
    for k in 1..=emails {
        let e = email(&mut rng, k);
        dealt[((k - 1) % searchers) as usize] += e.len() as u64;
        let (_, message) = e.split_once('\n').unwrap();
        if message.to_ascii_lowercase().contains("invoice") {
            let subject = message
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap();
            expected += &format!("{k}\t{subject}\n");
            matches += 1;
        }
    }
    let summary = format!("{matches} of {emails} emails match \"invoice\"\n");
    expected += &summary;
    // A search that finds nothing, or everything, proves little.
    assert!(
        matches > emails / 20 && matches < emails / 5,
        "{matches} matches"
    );

    let got = std::fs::read_to_string(dir.path().join("out/matches.txt")).unwrap();
    assert!(
        got == expected,
        "out/matches.txt differs from the search in Rust"
    );
    assert!(out.contains(&summary), "stdout: {out}");
    // Round-robin: every searcher got exactly its emails' bytes.
    let generator = member_report(&report, "gen");
    for (j, bytes) in dealt.iter().enumerate() {
        let c = channel(generator, &format!("out/search-{}", j + 1));
        assert_eq!(c["write_bytes"].as_u64().unwrap(), *bytes);
    }
}

// ----- sort --------------------------------------------------------------------------------

const SORT: &[&str] = &["sample", "part", "sort"];
const RECORD: usize = 100;

/// splitmix64's output function, as in examples/sort/record.h.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Record `i`, as record.h's `record_make` makes it.
fn record(seed: u64, i: u64) -> [u8; RECORD] {
    let a = mix64(seed.wrapping_add(i.wrapping_mul(2)));
    let b = mix64(seed.wrapping_add(i.wrapping_mul(2)).wrapping_add(1));
    let mut r = [0u8; RECORD];
    r[..8].copy_from_slice(&a.to_be_bytes());
    r[8..10].copy_from_slice(&b.to_be_bytes()[..2]);
    r[10..12].copy_from_slice(b"  ");
    r[12..44].copy_from_slice(format!("{i:032X}").as_bytes());
    r[44..46].copy_from_slice(b"  ");
    for (k, c) in r[46..98].iter_mut().enumerate() {
        *c = b'A' + ((b % 26) as usize + k) as u8 % 26;
    }
    r[98..].copy_from_slice(b"\r\n");
    r
}

#[test]
fn sort_matches_a_sort_in_rust() {
    let dir = scene("sort", SORT);
    let text = std::fs::read_to_string(dir.path().join("job-small.toml")).unwrap();
    assert!(
        text.contains("args = [\"200000\"]"),
        "job-small.toml changed"
    );
    let sorters = 8;
    let mut members = vec!["sample".to_string()];
    members.extend((1..=4).map(|i| format!("part-{i}")));
    members.extend((1..=sorters).map(|j| format!("sort-{j}")));
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let (_, report) = job_ok(dir.path(), "job-small.toml", &members);

    let n = 200_000u64;
    let mut expected: Vec<[u8; RECORD]> =
        (0..n).map(|i| record(0x5eed_5eed_5eed_5eed, i)).collect();
    expected.sort_unstable();
    let mut got = Vec::new();
    for j in 1..=sorters {
        let part = std::fs::read(dir.path().join(format!("out/part-{j}.dat"))).unwrap();
        // Sampling splits the records evenly, give or take a few per cent.
        let share = part.len() as u64 / RECORD as u64;
        assert!(
            share.abs_diff(n / sorters) < n / sorters / 10,
            "sorter {j} got {share} records"
        );
        got.extend_from_slice(&part);
    }
    assert_eq!(got.len() as u64, n * RECORD as u64);
    assert!(
        got == expected.concat(),
        "the parts, read in order, are not the generated records sorted"
    );
    // The records streamed through the pipes (N records and the sampler's small plans).
    let pipes = report["totals"]["pipe_bytes"].as_u64().unwrap();
    assert!(pipes >= n * RECORD as u64 && pipes < n * RECORD as u64 + 10_000);
}
