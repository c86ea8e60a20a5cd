//! Crashes: a child process (this test binary, re-executed to run [`child`]) writes objects
//! and batches and is killed with SIGKILL, either at every crash point of the protocol in
//! turn (`ZVM_STORE_CRASH_AT`) or at random moments; then the store is opened and must hold
//! only whole objects, and each batch entirely or not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use zvm_store::{CRASH_AT_VAR, Error, ObjectStore, PutMeta};

use crate::support::{etag, files_under, meta};

/// The store directory a child works in; without it, [`child`] runs as an ordinary test.
const DIR_VAR: &str = "ZVM_STORE_TEST_DIR";
/// What the child does: `script`, `random` or `open`.
const MODE_VAR: &str = "ZVM_STORE_TEST_MODE";
/// Printed by the script child after each step it completed (libtest may have printed the
/// test's name before it on the same line).
const COMPLETED: &str = "completed step ";

/// The content of version `ver` of `key`, `len` bytes: anyone can recompute it from the
/// key and the object's metadata, so a mismatch shows a torn or mixed-up object.
fn content(key: &str, ver: u64, len: u64) -> Vec<u8> {
    let mut data = vec![0u8; len as usize];
    let mut hasher = blake3::Hasher::new();
    hasher.update(key.as_bytes()).update(&ver.to_le_bytes());
    hasher.finalize_xof().fill(&mut data);
    data
}

fn version_meta(ver: u64) -> PutMeta {
    meta(Some("application/x-test"), &[("ver", &ver.to_string())])
}

/// Buckets, and every object as (version, length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    buckets: BTreeSet<String>,
    objects: BTreeMap<(String, String), (u64, u64)>,
}

/// What the store holds, checking that every object is whole: its content is the one its
/// metadata names, and its etag is the hash of that content.
fn observe(store: &ObjectStore) -> State {
    let mut state = State::default();
    for bucket in store.list_buckets() {
        let (page, truncated) = store.list(&bucket.name, "", None, 10_000).unwrap();
        assert!(!truncated);
        for info in page {
            let mut got = store.get(&bucket.name, &info.key, None).unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut got.body, &mut data).unwrap();
            assert_eq!(got.info, info, "the index and the file disagree");
            let ver: u64 = info.user["ver"].parse().unwrap();
            assert_eq!(info.size, data.len() as u64, "{}", info.key);
            assert_eq!(info.etag, etag(&data), "{}: torn content", info.key);
            assert!(
                data == content(&info.key, ver, info.size),
                "{}: content of another version than its metadata says",
                info.key
            );
            state
                .objects
                .insert((bucket.name.clone(), info.key), (ver, info.size));
        }
        state.buckets.insert(bucket.name);
    }
    state
}

/// After `open`, nothing of a crash is left over.
fn assert_clean(dir: &Path) {
    for sub in ["tmp", "batches"] {
        let left: Vec<_> = std::fs::read_dir(dir.join(sub)).unwrap().collect();
        assert!(left.is_empty(), "{sub}/ not emptied: {left:?}");
    }
}

// ---------------------------------------------------------------------------------------
// A fixed script, killed at each crash point in turn.

#[derive(Debug, Clone)]
enum Change {
    Put(&'static str, &'static str, u64, u64),
    Delete(&'static str, &'static str),
}

#[derive(Debug, Clone)]
enum Step {
    CreateBucket(&'static str),
    DeleteBucket(&'static str),
    One(Change),
    Batch(Vec<Change>),
}

fn script() -> Vec<Step> {
    use Change::{Delete as D, Put as P};
    use Step::*;
    vec![
        CreateBucket("alpha"),
        One(P("alpha", "a", 10, 1)),
        One(P("alpha", "b", 150_000, 1)),
        One(P("alpha", "a", 70_000, 2)),
        Batch(vec![
            P("alpha", "x", 100, 1),
            P("alpha", "y", 80_000, 1),
            D("alpha", "b"),
            P("alpha", "a", 5, 3),
        ]),
        One(D("alpha", "x")),
        CreateBucket("beta"),
        Batch(vec![
            P("beta", "k", 1000, 1),
            P("alpha", "b", 20, 2),
            D("alpha", "y"),
        ]),
        Batch(vec![
            D("beta", "k"),
            D("alpha", "missing"),
            P("alpha", "../../z", 0, 1),
        ]),
        DeleteBucket("beta"),
        One(P("alpha", "../../etc/passwd", 3, 1)),
    ]
}

fn apply_to_model(state: &mut State, step: &Step) {
    let mut change = |c: &Change| match *c {
        Change::Put(b, k, len, ver) => {
            state.objects.insert((b.into(), k.into()), (ver, len));
        }
        Change::Delete(b, k) => {
            state.objects.remove(&(b.into(), k.into()));
        }
    };
    match step {
        Step::One(c) => change(c),
        Step::Batch(cs) => cs.iter().for_each(change),
        Step::CreateBucket(b) => {
            state.buckets.insert(b.to_string());
        }
        Step::DeleteBucket(b) => {
            state.buckets.remove(*b);
        }
    }
}

/// The model's state after each prefix of the script: `states[j]` after `j` steps.
fn model_states() -> Vec<State> {
    let mut states = vec![State::default()];
    for step in script() {
        let mut next = states.last().unwrap().clone();
        apply_to_model(&mut next, &step);
        states.push(next);
    }
    states
}

fn run_script(store: &ObjectStore, report: bool) {
    for (i, step) in script().iter().enumerate() {
        match step {
            Step::CreateBucket(b) => drop(store.create_bucket(b).unwrap()),
            Step::DeleteBucket(b) => store.delete_bucket(b).unwrap(),
            Step::One(Change::Put(b, k, len, ver)) => {
                store
                    .put(b, k, &content(k, *ver, *len)[..], version_meta(*ver))
                    .unwrap();
            }
            Step::One(Change::Delete(b, k)) => drop(store.delete(b, k).unwrap()),
            Step::Batch(changes) => {
                let mut batch = store.batch();
                for c in changes {
                    match *c {
                        Change::Put(b, k, len, ver) => drop(
                            batch
                                .put(b, k, &content(k, ver, len)[..], version_meta(ver))
                                .unwrap(),
                        ),
                        Change::Delete(b, k) => batch.delete(b, k).unwrap(),
                    }
                }
                batch.commit().unwrap();
            }
        }
        if report {
            println!("{COMPLETED}{}", i + 1);
        }
    }
}

/// Runs this binary's [`child`] test in `mode` on `dir`, killed at crash point `crash_at`.
fn child_command(dir: &Path, mode: &str, crash_at: Option<u64>) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "crash::child", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .env(MODE_VAR, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match crash_at {
        Some(n) => cmd.env(CRASH_AT_VAR, n.to_string()),
        None => cmd.env_remove(CRASH_AT_VAR),
    };
    cmd
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether the child ran to the end (else it must have been killed by its crash point).
fn finished(out: &Output) -> bool {
    if out.status.success() {
        // libtest succeeds when its filter matches nothing: check the child really ran.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("test result: ok. 1 passed"),
            "{}",
            describe(out)
        );
        return true;
    }
    assert_eq!(
        out.status.signal(),
        Some(9),
        "the child failed: {}",
        describe(out)
    );
    false
}

#[test]
fn kill_at_every_crash_point() {
    let states = model_states();
    let mut crash_at = 1;
    let mut recovery_kills = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let out = child_command(dir.path(), "script", Some(crash_at))
            .output()
            .unwrap();
        if finished(&out) {
            // Past the last crash point: the whole script ran.
            let store = ObjectStore::open(dir.path()).unwrap();
            assert_eq!(observe(&store), *states.last().unwrap());
            assert!(crash_at > 30, "only {} crash points", crash_at - 1);
            eprintln!(
                "{} crash points, recovery itself killed {recovery_kills} times",
                crash_at - 1
            );
            break;
        }
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let point = stderr
            .lines()
            .find(|l| l.contains("crash point"))
            .unwrap_or("?")
            .to_owned();
        let completed = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(COMPLETED).nth(1)?.trim().parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        // Recovery may itself be killed, at each of its own crash points in turn.
        let mut recovery_crash = 1;
        while !finished(
            &child_command(dir.path(), "open", Some(recovery_crash))
                .output()
                .unwrap(),
        ) {
            recovery_crash += 1;
            assert!(recovery_crash < 100, "recovery never finishes");
        }
        recovery_kills += recovery_crash - 1;
        let store = ObjectStore::open(dir.path()).unwrap();
        let state = observe(&store);
        assert!(
            state == states[completed] || state == states[completed + 1],
            "after {point} (step {} in progress, recovery killed {} times): \
             neither the state before nor after it:\n{state:#?}",
            completed + 1,
            recovery_crash - 1,
        );
        assert_clean(dir.path());
        crash_at += 1;
        assert!(crash_at < 1000, "the script never finishes");
    }
}

// ---------------------------------------------------------------------------------------
// Random writers, killed at random moments.

/// Keys written one at a time.
const SOLO_KEYS: u64 = 6;
/// Keys every batch writes (or deletes) together.
const GROUP_KEYS: u64 = 4;
/// Largest object the random writers put: several copy buffers, so a kill can land in the
/// middle of one.
const MAX_RANDOM_LEN: u64 = 400_000;

/// A xorshift generator: the crash test needs no cryptographic randomness, just variety.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng((nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Writes forever: one thread puts and deletes single keys, another commits batches that put
/// all the group keys with one version, or delete them all.
fn random_writer(store: &ObjectStore) {
    if let Err(e) = store.create_bucket("bkt")
        && !matches!(e, Error::BucketAlreadyExists { .. })
    {
        panic!("{e}");
    }
    // Versions only grow across restarts: they start from the clock.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng::seeded(1);
            for ver in base.. {
                let key = format!("solo/{}", rng.below(SOLO_KEYS));
                if rng.below(5) == 0 {
                    store.delete("bkt", &key).unwrap();
                } else {
                    let len = rng.below(MAX_RANDOM_LEN);
                    let data = content(&key, ver, len);
                    store
                        .put("bkt", &key, &data[..], version_meta(ver))
                        .unwrap();
                }
            }
        });
        s.spawn(|| {
            let mut rng = Rng::seeded(2);
            for ver in base.. {
                let mut batch = store.batch();
                let delete = rng.below(4) == 0;
                for g in 0..GROUP_KEYS {
                    let key = format!("group/{g}");
                    if delete {
                        batch.delete("bkt", &key).unwrap();
                    } else {
                        let data = content(&key, ver, rng.below(MAX_RANDOM_LEN / 4));
                        batch
                            .put("bkt", &key, &data[..], version_meta(ver))
                            .unwrap();
                    }
                }
                batch.commit().unwrap();
            }
        });
    });
}

/// The group keys are all there with one version, or all absent; the version, if any.
fn check_group(state: &State) -> Option<u64> {
    let versions: Vec<Option<u64>> = (0..GROUP_KEYS)
        .map(|g| {
            state
                .objects
                .get(&("bkt".to_string(), format!("group/{g}")))
                .map(|&(ver, _)| ver)
        })
        .collect();
    assert!(
        versions.iter().all(|v| *v == versions[0]),
        "a batch landed in part: {versions:?}"
    );
    versions[0]
}

#[test]
fn kill_at_random_moments() {
    const ROUNDS: u64 = 6;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::seeded(3);
    let mut group_versions = Vec::new();
    let mut objects_seen = 0;
    for _ in 0..ROUNDS {
        let mut child = child_command(dir.path(), "random", None).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(150 + rng.below(500)));
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the writer stopped by itself ({status}): {}",
                describe(&out)
            );
        }
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.signal(), Some(9), "{}", describe(&out));

        let store = ObjectStore::open(dir.path()).unwrap();
        assert_clean(dir.path());
        let state = observe(&store);
        objects_seen += state.objects.len();
        group_versions.push(check_group(&state));
        eprintln!(
            "killed; {} objects, group at version {:?}",
            state.objects.len(),
            group_versions.last().unwrap()
        );
    }
    // The test proves something only if the writers got to write.
    assert!(objects_seen > 0, "no object was ever written");
    assert!(
        group_versions.iter().any(Option::is_some),
        "no batch ever landed"
    );
    // Everything the children left is complete; no stray files either.
    for file in files_under(&dir.path().join("buckets/bkt")) {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(name == "bucket.json" || name.len() == 64, "{file:?}");
    }
}

/// The child process of the crash tests; run without its environment, an ordinary test that
/// the script reaches the model's final state.
#[test]
fn child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        run_script(&store, false);
        assert_eq!(observe(&store), *model_states().last().unwrap());
        drop(store);
        assert_clean(dir.path());
        return;
    };
    let store = ObjectStore::open(&dir).unwrap();
    match std::env::var(MODE_VAR).unwrap().as_str() {
        "script" => run_script(&store, true),
        "random" => random_writer(&store),
        "open" => {}
        other => panic!("unknown mode {other}"),
    }
}
