//! Behaviour of the whole cache: round trips, deduplication, damage, eviction order, limits,
//! and concurrent use by threads and by processes (the test binary re-runs itself as the
//! children, see `concurrent_processes_never_see_partial_or_wrong_outputs`).

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use tempfile::TempDir;

use super::*;

thread_local! {
    /// Damaged entries this thread's `get`s removed. Concurrency alone must never damage an
    /// entry, so the stress tests expect zero.
    pub(crate) static DISCARDED: Cell<u64> = const { Cell::new(0) };
}

fn key(n: u64) -> [u8; 32] {
    *blake3::hash(&n.to_le_bytes()).as_bytes()
}

/// Deterministic bytes that differ for every seed.
fn pseudo_random(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    out
}

fn open(max_bytes: u64) -> (TempDir, ResultCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = ResultCache::open(dir.path(), max_bytes).unwrap();
    (dir, cache)
}

fn put_bytes(cache: &ResultCache, k: u64, record: &[u8], outputs: &[(&str, &[u8])]) -> Stored {
    let outputs: Vec<(String, OutputSource<'_>)> = outputs
        .iter()
        .map(|(name, bytes)| (name.to_string(), OutputSource::Bytes(bytes)))
        .collect();
    cache.put(&key(k), record, &outputs).unwrap()
}

fn assert_written(stored: Stored) {
    assert!(matches!(stored, Stored::Written { .. }), "{stored:?}");
}

/// Reads every output of a hit, checking each against the size and hash it claims.
fn read_hit(hit: Hit) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let outputs = hit
        .outputs
        .into_iter()
        .map(|mut out| {
            let mut bytes = Vec::new();
            out.file.read_to_end(&mut bytes).unwrap();
            assert_eq!(bytes.len() as u64, out.size, "size of `{}`", out.name);
            assert_eq!(
                blake3::hash(&bytes).to_hex().as_str(),
                out.blake3,
                "hash of `{}`",
                out.name
            );
            (out.name, bytes)
        })
        .collect();
    (hit.record, outputs)
}

fn entry_path(cache: &ResultCache, k: u64) -> PathBuf {
    cache.layout.entry_path(&blake3::Hash::from_bytes(key(k)))
}

fn blob_path(cache: &ResultCache, content: &[u8]) -> PathBuf {
    cache.layout.blob_path(&blake3::hash(content))
}

fn temp_files(cache: &ResultCache) -> Vec<PathBuf> {
    fs::read_dir(&cache.layout.tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn set_mtime(path: &Path, time: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

#[test]
fn round_trip_returns_identical_bytes() {
    let (dir, cache) = open(64 << 20);
    // Larger than the copy buffer, so the copy takes several reads.
    let big = pseudo_random(b"big", 300_000);
    let host = dir.path().join("host.bin");
    fs::write(&host, &big).unwrap();
    let opened = pseudo_random(b"opened", 70_000);
    let mut opened_file = tempfile::tempfile().unwrap();
    opened_file.write_all(&opened).unwrap();
    opened_file.seek(SeekFrom::Start(5)).unwrap();

    let record = br#"{"state":"ok","fuel":12345}"#;
    let stored = cache
        .put(
            &key(1),
            record,
            &[
                ("path".to_string(), OutputSource::Path(&host)),
                ("memory".to_string(), OutputSource::Bytes(b"hello\n")),
                ("empty".to_string(), OutputSource::Bytes(b"")),
                ("file".to_string(), OutputSource::File(&opened_file)),
            ],
        )
        .unwrap();
    assert_written(stored);
    assert_eq!(
        opened_file.stream_position().unwrap(),
        5,
        "the caller's offset is left alone"
    );

    let (got_record, outputs) = read_hit(cache.get(&key(1)).unwrap().expect("a hit"));
    assert_eq!(got_record, record);
    let expected: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("file".into(), opened),
        ("memory".into(), b"hello\n".to_vec()),
        ("path".into(), big),
    ];
    assert_eq!(
        outputs, expected,
        "outputs come back sorted by name, byte for byte"
    );
    assert!(temp_files(&cache).is_empty());
}

#[test]
fn unknown_key_is_a_miss() {
    let (_dir, cache) = open(1 << 20);
    assert!(cache.get(&key(7)).unwrap().is_none());
    assert_written(put_bytes(&cache, 1, b"r", &[("out", b"x")]));
    assert!(cache.get(&key(7)).unwrap().is_none());
}

#[test]
fn put_replaces_the_entry_of_its_key() {
    let (_dir, cache) = open(1 << 20);
    assert_written(put_bytes(&cache, 1, b"first", &[("out", b"one")]));
    assert_written(put_bytes(&cache, 1, b"second", &[("out", b"two")]));
    let (record, outputs) = read_hit(cache.get(&key(1)).unwrap().unwrap());
    assert_eq!(record, b"second");
    assert_eq!(outputs, vec![("out".to_string(), b"two".to_vec())]);
}

#[test]
fn identical_outputs_are_stored_once() {
    let (_dir, cache) = open(1 << 20);
    let x = pseudo_random(b"x", 5000);
    let y = pseudo_random(b"y", 3000);
    assert_written(put_bytes(&cache, 1, b"r1", &[("a", &x), ("b", &x)]));
    assert_written(put_bytes(&cache, 2, b"r2", &[("c", &x), ("d", &y)]));
    let usage = cache.usage().unwrap();
    let entry_bytes: u64 = [1, 2]
        .iter()
        .map(|&k| fs::metadata(entry_path(&cache, k)).unwrap().len())
        .sum();
    assert_eq!(
        usage,
        Usage {
            bytes: entry_bytes + 5000 + 3000,
            entries: 2,
            blobs: 2
        }
    );
    let (_, outputs) = read_hit(cache.get(&key(2)).unwrap().unwrap());
    assert_eq!(outputs[0].1, x);
    assert_eq!(outputs[1].1, y);
}

#[test]
fn damaged_entries_are_misses_and_are_removed() {
    let content = pseudo_random(b"content", 4000);
    type Damage = fn(&ResultCache, &[u8]);
    let damages: [(&str, Damage); 6] = [
        ("garbage entry", |cache, _| {
            fs::write(entry_path(cache, 1), b"{not json").unwrap()
        }),
        ("empty entry", |cache, _| {
            fs::write(entry_path(cache, 1), b"").unwrap()
        }),
        ("record changed", |cache, _| {
            let path = entry_path(cache, 1);
            let mut bytes = fs::read(&path).unwrap();
            *bytes.last_mut().unwrap() ^= 1;
            fs::write(&path, bytes).unwrap();
        }),
        ("missing blob", |cache, content| {
            fs::remove_file(blob_path(cache, content)).unwrap()
        }),
        ("short blob", |cache, content| {
            let blob = File::options()
                .write(true)
                .open(blob_path(cache, content))
                .unwrap();
            blob.set_len(content.len() as u64 - 1).unwrap();
        }),
        ("entry of another key", |cache, _| {
            fs::copy(entry_path(cache, 2), entry_path(cache, 1)).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let (_dir, cache) = open(1 << 20);
        assert_written(put_bytes(&cache, 1, b"record", &[("out", &content)]));
        assert_written(put_bytes(&cache, 2, b"other", &[("other", b"o")]));
        damage(&cache, &content);
        let discarded = DISCARDED.get();
        assert!(cache.get(&key(1)).unwrap().is_none(), "{what}: a miss");
        assert_eq!(DISCARDED.get(), discarded + 1, "{what}: counted as damage");
        assert!(
            !entry_path(&cache, 1).exists(),
            "{what}: the entry is removed"
        );
        // The cache heals: storing again (which replaces a damaged blob) gives a good hit.
        assert_written(put_bytes(&cache, 1, b"record", &[("out", &content)]));
        let (_, outputs) = read_hit(cache.get(&key(1)).unwrap().expect("a hit after repair"));
        assert_eq!(outputs[0].1, content, "{what}");
        assert!(
            cache.get(&key(2)).unwrap().is_some(),
            "{what}: others are untouched"
        );
    }
}

#[test]
fn eviction_keeps_the_cache_within_its_bound() {
    const MAX: u64 = 64 * 1024;
    let (_dir, cache) = open(MAX);
    let mut evicted = 0;
    for k in 0..60u64 {
        let out = pseudo_random(&k.to_le_bytes(), 4000 + (k as usize * 997) % 8000);
        match put_bytes(&cache, k, b"record", &[("out", &out), ("same", b"shared")]) {
            Stored::Written { evicted: e } => evicted += e.entries,
            other => panic!("{other:?}"),
        }
        assert!(cache.usage().unwrap().bytes <= MAX, "after put {k}");
        let (_, outputs) = read_hit(cache.get(&key(k)).unwrap().expect("the newest entry stays"));
        assert_eq!(outputs[0].1, out);
    }
    assert!(evicted > 0);
    let after = cache.usage().unwrap();
    assert_eq!(
        cache.evict().unwrap(),
        Evicted::default(),
        "a full pass finds nothing more"
    );
    assert_eq!(cache.usage().unwrap(), after);
}

#[test]
fn eviction_removes_the_least_recently_used_entry() {
    // Each entry takes about 1.8 KiB: four fit in 8 KiB, five do not.
    let (_dir, cache) = open(8192);
    let put = |k: u64| {
        let out = pseudo_random(&k.to_le_bytes(), 1500);
        assert_written(put_bytes(&cache, k, b"record", &[("out", &out)]));
    };
    let present = |k: u64| entry_path(&cache, k).exists();
    for k in 1..=4 {
        put(k);
    }
    assert!((1..=4).all(present));
    assert!(cache.get(&key(1)).unwrap().is_some(), "refreshes 1");
    put(5);
    assert_eq!(
        (1..=5).map(present).collect::<Vec<_>>(),
        [true, false, true, true, true]
    );
    put(6);
    assert_eq!(
        (1..=6).map(present).collect::<Vec<_>>(),
        [true, false, false, true, true, true]
    );
    assert!(cache.usage().unwrap().bytes <= 8192);
}

#[test]
fn entries_of_equal_age_are_evicted_in_key_order() {
    let (dir, cache) = open(1 << 20);
    let keys = [3u64, 1, 4, 5, 9, 2];
    for k in keys {
        assert_written(put_bytes(
            &cache,
            k,
            b"r",
            &[("out", &pseudo_random(&k.to_le_bytes(), 1000))],
        ));
    }
    let when = SystemTime::now() - Duration::from_secs(10);
    for k in keys {
        set_mtime(&entry_path(&cache, k), when);
    }
    let entry_size = fs::metadata(entry_path(&cache, 3)).unwrap().len();
    // Room for exactly two entries with their blobs.
    let small = ResultCache::open(dir.path(), 2 * (entry_size + 1000)).unwrap();
    assert_eq!(small.evict().unwrap().entries, 4);
    let mut by_key = keys;
    by_key.sort_by_key(|&k| key(k));
    for (i, k) in by_key.iter().enumerate() {
        assert_eq!(entry_path(&cache, *k).exists(), i >= 4, "key {k}");
    }
}

#[test]
fn too_large_entries_are_not_stored() {
    let (dir, cache) = open(4096);
    assert_eq!(cache.entry_limit(), 1024);
    let too_large = Stored::TooLarge { limit: 1024 };
    let big = pseudo_random(b"big", 2000);
    let host = dir.path().join("big");
    fs::write(&host, &big).unwrap();
    let half = pseudo_random(b"half", 600);

    assert_eq!(put_bytes(&cache, 1, b"r", &[("out", &big)]), too_large);
    let from_path = [("out".to_string(), OutputSource::Path(&host))];
    assert_eq!(cache.put(&key(2), b"r", &from_path).unwrap(), too_large);
    assert_eq!(
        put_bytes(&cache, 3, b"r", &[("a", &half), ("b", &half)]),
        too_large
    );
    assert_eq!(put_bytes(&cache, 4, &[b' '; 1100], &[]), too_large);
    // Within the limit on its own, but not with its header.
    assert_eq!(
        put_bytes(&cache, 5, b"r", &[("out", &big[..1020])]),
        too_large
    );
    for k in 1..=5 {
        assert!(cache.get(&key(k)).unwrap().is_none());
    }
    assert_eq!(cache.usage().unwrap(), Usage::default());
    assert!(
        temp_files(&cache).is_empty(),
        "refused copies are cleaned up"
    );

    assert_written(put_bytes(&cache, 6, b"r", &[("out", &big[..700])]));
}

#[test]
fn a_source_that_grows_past_its_budget_is_refused() {
    let (dir, cache) = open(1 << 20);
    let host = dir.path().join("host");
    fs::write(&host, pseudo_random(b"grow", 100)).unwrap();
    let source = OutputSource::Path(&host);
    assert!(
        stage::stage(&cache.layout.tmp, "out", &source, 99)
            .unwrap()
            .is_none()
    );
    assert!(temp_files(&cache).is_empty());
    let staged = stage::stage(&cache.layout.tmp, "out", &source, 100)
        .unwrap()
        .unwrap();
    assert_eq!(staged.content.size, 100);
}

#[test]
fn duplicate_output_names_are_rejected() {
    let (_dir, cache) = open(1 << 20);
    let outputs = [
        ("a".to_string(), OutputSource::Bytes(b"1")),
        ("b".to_string(), OutputSource::Bytes(b"2")),
        ("a".to_string(), OutputSource::Bytes(b"3")),
    ];
    let err = cache.put(&key(1), b"r", &outputs).unwrap_err();
    assert_eq!(err.to_string(), "result cache: output `a` is given twice");
}

#[test]
fn a_missing_output_file_is_an_error_naming_it() {
    let (dir, cache) = open(1 << 20);
    let missing = dir.path().join("missing");
    let outputs = [("out".to_string(), OutputSource::Path(&missing))];
    let err = cache.put(&key(1), b"r", &outputs).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "result cache: cannot read output `out` from `{}`",
            missing.display()
        )
    );
}

#[test]
fn stale_temporary_and_foreign_files_are_removed_by_eviction() {
    let (_dir, cache) = open(1 << 20);
    let stale = cache.layout.tmp.join("blob-stale");
    let fresh = cache.layout.tmp.join("blob-fresh");
    fs::write(&stale, b"abandoned").unwrap();
    fs::write(&fresh, b"in progress").unwrap();
    set_mtime(&stale, SystemTime::now() - Duration::from_secs(2 * 60 * 60));
    let foreign_entry = cache.layout.entries.join("README");
    let foreign_blob = cache.layout.blobs.join("notahash");
    fs::write(&foreign_entry, b"x").unwrap();
    fs::create_dir(&foreign_blob).unwrap();

    assert_written(put_bytes(&cache, 1, b"r", &[("out", b"x")]));
    assert!(!stale.exists());
    assert!(fresh.exists());
    assert!(!foreign_entry.exists());
    assert!(!foreign_blob.exists());
}

#[test]
fn unreferenced_blobs_are_collected() {
    let (_dir, cache) = open(1 << 20);
    assert_written(put_bytes(&cache, 1, b"r", &[("out", b"old content")]));
    assert_written(put_bytes(&cache, 1, b"r", &[("out", b"new content")]));
    assert_eq!(cache.usage().unwrap().blobs, 2);
    let evicted = cache.evict().unwrap();
    assert_eq!(
        evicted,
        Evicted {
            entries: 0,
            blobs: 1,
            bytes: 11
        }
    );
    assert!(!blob_path(&cache, b"old content").exists());
    assert!(blob_path(&cache, b"new content").exists());
}

#[test]
fn clear_removes_everything() {
    let (_dir, cache) = open(1 << 20);
    for k in 0..5 {
        assert_written(put_bytes(
            &cache,
            k,
            b"r",
            &[("out", &pseudo_random(&[k as u8], 100))],
        ));
    }
    cache.clear().unwrap();
    assert_eq!(cache.usage().unwrap(), Usage::default());
    assert!((0..5).all(|k| cache.get(&key(k)).unwrap().is_none()));
}

#[test]
fn an_open_hit_survives_eviction() {
    let (_dir, cache) = open(1 << 20);
    let content = pseudo_random(b"survivor", 10_000);
    assert_written(put_bytes(&cache, 1, b"r", &[("out", &content)]));
    let hit = cache.get(&key(1)).unwrap().unwrap();
    cache.clear().unwrap();
    let (_, outputs) = read_hit(hit);
    assert_eq!(outputs[0].1, content);
}

#[test]
fn layout_is_versioned_and_private() {
    let (dir, cache) = open(1 << 20);
    assert_written(put_bytes(&cache, 1, b"r", &[("out", b"x")]));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for sub in ["", "entries", "blobs", "tmp"] {
        assert_eq!(mode(&dir.path().join("v1").join(sub)), 0o700, "v1/{sub}");
    }
    assert_eq!(mode(&entry_path(&cache, 1)), 0o600);
    assert_eq!(mode(&blob_path(&cache, b"x")), 0o600);
    assert_eq!(
        entry_path(&cache, 1),
        dir.path()
            .join("v1/entries")
            .join(blake3::Hash::from_bytes(key(1)).to_hex().as_str())
    );
}

// ---------------------------------------------------------------------------------------
// Concurrency. Every worker puts, gets, evicts, clears and counts over a small key space in
// a cache small enough that nearly every put evicts. What a key maps to is a pure function
// of (key, variant), and the record names the variant, so a hit can be checked completely:
// the right key, every output present with the content the variant implies, and every
// output's bytes matching the hash and size the hit claims.

const STRESS_MAX: u64 = 32 * 1024;
const STRESS_KEYS: u64 = 16;
const STRESS_OPS: u64 = 200;

/// The outputs stored for `(k, variant)`: one shared by all keys, one shared by keys of the
/// same variant (different blobs, different names, shared across entries), one unique.
fn stress_outputs(k: u64, variant: u64) -> Vec<(String, Vec<u8>)> {
    let unique_len = 200 + ((k * 131 + variant * 977) % 3000) as usize;
    vec![
        ("everyone".to_string(), pseudo_random(b"everyone", 3000)),
        (
            format!("variant-{variant}"),
            pseudo_random(&variant.to_le_bytes(), 1000),
        ),
        (
            "zunique".to_string(),
            pseudo_random(format!("{k}/{variant}").as_bytes(), unique_len),
        ),
    ]
}

fn stress_record(k: u64, variant: u64) -> Vec<u8> {
    format!("key={k} variant={variant}").into_bytes()
}

/// Checks a hit for `k` completely; panics on anything partial or wrong.
fn verify_stress_hit(k: u64, hit: Hit) {
    let (record, outputs) = read_hit(hit);
    let text = String::from_utf8(record).expect("record is text");
    let variant: u64 = text
        .strip_prefix(&format!("key={k} variant="))
        .unwrap_or_else(|| panic!("record `{text}` is not one of key {k}"))
        .parse()
        .unwrap();
    assert_eq!(
        outputs,
        stress_outputs(k, variant),
        "outputs of key {k} variant {variant}"
    );
}

/// Runs `ops` random operations; returns how many damaged entries its `get`s found.
fn hammer(cache: &ResultCache, worker: u64, ops: u64) -> u64 {
    let discarded_before = DISCARDED.get();
    for i in 0..ops {
        let hash = blake3::hash(format!("{worker}/{i}").as_bytes());
        let r = u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap());
        let k = r % STRESS_KEYS;
        match (r >> 8) % 20 {
            0..=9 => {
                let variant = (r >> 16) % 3;
                let outputs = stress_outputs(k, variant);
                let sources: Vec<(String, OutputSource<'_>)> = outputs
                    .iter()
                    .map(|(name, bytes)| (name.clone(), OutputSource::Bytes(bytes)))
                    .collect();
                let stored = cache
                    .put(&key(k), &stress_record(k, variant), &sources)
                    .unwrap();
                assert_written(stored);
            }
            10..=17 => {
                if let Some(hit) = cache.get(&key(k)).unwrap() {
                    verify_stress_hit(k, hit);
                }
            }
            18 => {
                cache.evict().unwrap();
            }
            _ if (r >> 24) % 4 == 0 => cache.clear().unwrap(),
            _ => {
                cache.usage().unwrap();
            }
        }
    }
    DISCARDED.get() - discarded_before
}

/// Once every worker is done: within the bound, no temporary file left, and every entry on
/// disk is a complete, correct hit (eviction never deleted a blob an entry still needs).
fn check_quiescent(dir: &Path) {
    let cache = ResultCache::open(dir, STRESS_MAX).unwrap();
    assert!(cache.usage().unwrap().bytes <= STRESS_MAX);
    assert!(temp_files(&cache).is_empty(), "{:?}", temp_files(&cache));
    let mut hits = 0;
    for k in 0..STRESS_KEYS {
        if entry_path(&cache, k).exists() {
            let hit = cache
                .get(&key(k))
                .unwrap()
                .unwrap_or_else(|| panic!("entry {k} is damaged"));
            verify_stress_hit(k, hit);
            hits += 1;
        }
    }
    assert_eq!(cache.usage().unwrap().entries, hits);
}

#[test]
fn concurrent_threads_never_see_partial_or_wrong_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let shared = ResultCache::open(dir.path(), STRESS_MAX).unwrap();
    let discarded: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|worker| {
                let shared = &shared;
                let path = dir.path();
                s.spawn(move || {
                    if worker < 2 {
                        hammer(shared, worker, STRESS_OPS)
                    } else {
                        let own = ResultCache::open(path, STRESS_MAX).unwrap();
                        hammer(&own, worker, STRESS_OPS)
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(discarded, 0, "entries were damaged by concurrency");
    check_quiescent(dir.path());
}

/// Set in the environment of a child of the process test: the cache directory to hammer.
const CHILD_DIR_VAR: &str = "ZVM_RESULTS_STRESS_DIR";
/// Set with [`CHILD_DIR_VAR`]: which worker the child is.
const CHILD_WORKER_VAR: &str = "ZVM_RESULTS_STRESS_WORKER";
/// How a child reports the damaged entries it found, on a line of its own.
const DISCARDED_LINE: &str = "stress child discarded: ";

/// The child side of `concurrent_processes_never_see_partial_or_wrong_outputs`. Run directly
/// (`--ignored`), it hammers a cache of its own.
#[test]
#[ignore = "run as a child process by `concurrent_processes_never_see_partial_or_wrong_outputs`"]
fn stress_child() {
    match std::env::var_os(CHILD_DIR_VAR) {
        Some(dir) => {
            let worker: u64 = std::env::var(CHILD_WORKER_VAR).unwrap().parse().unwrap();
            let cache = ResultCache::open(Path::new(&dir), STRESS_MAX).unwrap();
            let discarded = hammer(&cache, worker, STRESS_OPS);
            println!("{DISCARDED_LINE}{discarded}");
        }
        None => {
            let dir = tempfile::tempdir().unwrap();
            let cache = ResultCache::open(dir.path(), STRESS_MAX).unwrap();
            assert_eq!(hammer(&cache, 0, STRESS_OPS), 0);
            check_quiescent(dir.path());
        }
    }
}

#[test]
fn concurrent_processes_never_see_partial_or_wrong_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (1..=3u64)
        .map(|worker| {
            Command::new(&exe)
                .args(["--exact", "tests::stress_child", "--ignored", "--nocapture"])
                .env(CHILD_DIR_VAR, dir.path())
                .env(CHILD_WORKER_VAR, worker.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // This process is a worker too, alongside its children.
    let mut discarded = hammer(
        &ResultCache::open(dir.path(), STRESS_MAX).unwrap(),
        0,
        STRESS_OPS,
    );
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        // libtest succeeds when the filter matches nothing, so check the child really ran.
        assert!(
            stdout.contains("test tests::stress_child ... ok"),
            "child did not run the worker:\n{stdout}"
        );
        let line = stdout.lines().find_map(|l| l.strip_prefix(DISCARDED_LINE));
        discarded += line
            .expect("a child reports its count")
            .trim()
            .parse::<u64>()
            .unwrap();
    }
    assert_eq!(discarded, 0, "entries were damaged by concurrency");
    check_quiescent(dir.path());
}

// ---------------------------------------------------------------------------------------
// Random operation sequences against a model of what each key last stored.

#[derive(Debug, Clone)]
enum Op {
    Put { k: u64, len: usize, fill: u8 },
    Get { k: u64 },
    Evict,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u64, 0..2200usize, any::<u8>())
            .prop_map(|(k, len, fill)| Op::Put { k, len, fill }),
        4 => (0..6u64).prop_map(|k| Op::Get { k }),
        1 => Just(Op::Evict),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_agree_with_a_model(ops in proptest::collection::vec(op(), 1..30)) {
        const MAX: u64 = 8192;
        /// Generous upper bound on an entry header with one output.
        const HEADER: u64 = 400;
        let (_dir, cache) = open(MAX);
        let mut model: HashMap<u64, (Vec<u8>, Vec<u8>)> = HashMap::new();
        for op in ops {
            match op {
                Op::Put { k, len, fill } => {
                    let record = format!("{k}:{fill}").into_bytes();
                    let content = vec![fill; len];
                    match put_bytes(&cache, k, &record, &[("out", &content)]) {
                        Stored::Written { .. } => {
                            prop_assert!(entry_path(&cache, k).exists(), "the newest entry stays");
                            model.insert(k, (record, content));
                        }
                        Stored::TooLarge { limit } => {
                            prop_assert!((record.len() + len) as u64 + HEADER > limit);
                        }
                    }
                    prop_assert!(cache.usage().unwrap().bytes <= MAX);
                }
                Op::Get { k } => {
                    if let Some(hit) = cache.get(&key(k)).unwrap() {
                        let (record, outputs) = read_hit(hit);
                        let (want_record, want) = model.get(&k).expect("only stored keys hit");
                        prop_assert_eq!(&record, want_record);
                        prop_assert_eq!(&outputs, &vec![("out".to_string(), want.clone())]);
                    }
                }
                Op::Evict => {
                    cache.evict().unwrap();
                    prop_assert!(cache.usage().unwrap().bytes <= MAX);
                }
            }
        }
    }
}
