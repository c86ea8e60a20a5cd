//! Transactions: a run's outputs land whole, or not at all, even across a crash.
//!
//! # A guided tour
//!
//! * **Staging.** Every output of a run is written somewhere the user does not look until the
//!   run commits: an output file into a hidden temporary file beside it
//!   (`.<name>.zvm-<id>.tmp`, [`Transaction::stage_file`]); a writable host directory into a
//!   hidden sibling tree (`.<name>.zvm-<id>.stage`, [`Transaction::stage_dir`]) that starts as
//!   hard links to the original's files, so that staging costs one link per file rather than
//!   a copy, and the guest's writes break a link before changing a file (zvm-fs does that).
//!   Staging never writes outside the output's own directory (files) or its parent (a
//!   directory is replaced as a whole, so its stage has to sit beside it).
//! * **The journal.** Before a staged name is created, an intent record naming it is appended
//!   to the transaction's journal file in zvm's state directory ([`Journal`]). The journal is
//!   locked (`flock`) by its process for the transaction's lifetime, so another zvm can tell a
//!   live transaction from one whose process died.
//! * **Commit** ([`Transaction::commit`]) is a redo log: fsync every staged file (and the
//!   staged trees' filesystems) and their directories; append one commit record listing every
//!   (stage, destination) pair with a checksum, and fsync it: that fsync is the commit point.
//!   Then rename each staged file over its destination, exchange each staged tree with its
//!   directory (`renameat2(RENAME_EXCHANGE)`, atomic) and delete the old tree, fsync the
//!   destinations' directories, and remove the journal.
//! * **Recovery** ([`Journal::recover`], run by zvm at start-up and by `zvm recover`) looks at
//!   every journal whose lock is free (its process is gone). Without a valid commit record the
//!   transaction never reached its commit point: every staged name it recorded is removed and
//!   the destinations were never touched (roll back). With one, every step is redone where it
//!   has not happened yet (roll forward): a staged file that still exists is renamed; a staged
//!   tree is exchanged unless the destination already is that tree (recognised by its inode).
//!   Either way, each destination ends entirely old or entirely new, and all destinations of
//!   a transaction agree.
//!
//! What this does not promise is in `docs/transactions.md`.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Version of the journal's record format; a journal of another version is left alone.
pub const JOURNAL_VERSION: u32 = 1;

/// Suffix of journal files; a journal is created under a temporary name and renamed to this
/// once locked, so recovery never mistakes a journal being born for an abandoned one.
const JOURNAL_SUFFIX: &str = ".journal";

/// Errors of staging, committing and recovering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot stage output `{path}`: {error}")]
    Stage { path: PathBuf, error: io::Error },
    #[error("cannot stage writable directory `{path}`: {reason}")]
    StageDir { path: PathBuf, reason: String },
    /// The commit failed before its commit point: nothing changed on the host.
    #[error("cannot commit `{path}`: {error}")]
    Commit { path: PathBuf, error: io::Error },
    /// The commit failed after its commit point: the journal stays, and recovery (at the next
    /// zvm start, or `zvm recover`) completes it.
    #[error(
        "commit of `{path}` interrupted: {error}; the next zvm start (or `zvm recover`) completes it"
    )]
    Incomplete { path: PathBuf, error: io::Error },
    #[error("journal `{path}`: {error}")]
    Journal { path: PathBuf, error: io::Error },
}

/// The directory holding journals of transactions in flight.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// What recovery did with one abandoned transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The journal file.
    pub journal: PathBuf,
    pub outcome: Outcome,
    /// The destinations concerned (rolled forward) or the staged names removed (rolled back).
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The transaction had committed: its remaining steps were redone.
    RolledForward,
    /// The transaction had not committed: its staged outputs were removed.
    RolledBack,
}

impl Journal {
    /// Opens (creating, mode 0700) the journal directory `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Journal, Error> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|error| Error::Journal {
            path: dir.clone(),
            error,
        })?;
        // Journals name the user's files; keep them private.
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        Ok(Journal { dir })
    }

    /// The default journal directory: `$ZVM_STATE_DIR/journal`, else
    /// `$XDG_STATE_HOME/zvm/journal`, else `$HOME/.local/state/zvm/journal`.
    pub fn default_dir() -> Option<PathBuf> {
        let state = if let Some(d) = std::env::var_os("ZVM_STATE_DIR") {
            PathBuf::from(d)
        } else if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
            PathBuf::from(d).join("zvm")
        } else {
            PathBuf::from(std::env::var_os("HOME")?).join(".local/state/zvm")
        };
        Some(state.join("journal"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Finishes or rolls back every transaction whose process is gone. Transactions of live
    /// processes (their journal is locked) are left alone.
    pub fn recover(&self) -> Result<Vec<Recovery>, Error> {
        remove_stale_births(&self.dir);
        let jerr = |path: &Path| {
            let path = path.to_path_buf();
            move |error| Error::Journal { path, error }
        };
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(jerr(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(OsStr::to_str)
                    .is_some_and(|n| n.ends_with(JOURNAL_SUFFIX))
            })
            .collect();
        names.sort();
        let mut done = Vec::new();
        for path in names {
            let file = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                // Recovered (and removed) by a concurrent zvm.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(jerr(&path)(e)),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => return Err(jerr(&path)(e)),
            }
            // Locked, but possibly already recovered and unlinked by another zvm between our
            // listing and our lock: only a journal still linked under its name is ours to act on.
            let still_there = std::fs::metadata(&path)
                .ok()
                .zip(file.metadata().ok())
                .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
            if !still_there {
                continue;
            }
            let records = read_records(&file).map_err(jerr(&path))?;
            let recovery = match records.commit {
                Some(entries) => {
                    for e in &entries {
                        redo(e).map_err(|error| Error::Incomplete {
                            path: e.dest.clone(),
                            error,
                        })?;
                        crash_point("recovery redid a step");
                    }
                    sync_parents(entries.iter().map(|e| e.dest.as_path()));
                    Recovery {
                        journal: path.clone(),
                        outcome: Outcome::RolledForward,
                        paths: entries.into_iter().map(|e| e.dest).collect(),
                    }
                }
                None => {
                    for s in &records.staged {
                        remove_staged(s.kind, &s.temp).map_err(jerr(&s.temp))?;
                        crash_point("recovery removed a staged output");
                    }
                    Recovery {
                        journal: path.clone(),
                        outcome: Outcome::RolledBack,
                        paths: records.staged.into_iter().map(|s| s.temp).collect(),
                    }
                }
            };
            std::fs::remove_file(&path).map_err(jerr(&path))?;
            tracing::info!(journal = %path.display(), outcome = ?recovery.outcome, "recovered");
            done.push(recovery);
        }
        Ok(done)
    }
}

/// What a staged name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
}

/// A path in a journal record: UTF-8 text as itself, anything else as hex behind a NUL (a
/// character no Unix path contains), so that every path survives the round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PathText(PathBuf);

impl Serialize for PathText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.to_str() {
            Some(text) => s.serialize_str(text),
            None => {
                let hex: String = self
                    .0
                    .as_os_str()
                    .as_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                s.serialize_str(&format!("\0{hex}"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for PathText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let Some(hex) = text.strip_prefix('\0') else {
            return Ok(PathText(PathBuf::from(text)));
        };
        let bytes = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(serde::de::Error::custom)?;
        Ok(PathText(PathBuf::from(OsString::from_vec(bytes))))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Begin {
        version: u32,
        pid: u32,
    },
    Stage {
        kind: Kind,
        temp: PathText,
        dest: PathText,
    },
    Commit {
        entries: Vec<CommitEntry>,
        /// BLAKE3 of the entries' JSON: a commit record torn or garbled by a power loss is
        /// not a commit.
        sum: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CommitEntry {
    kind: Kind,
    temp: PathText,
    dest: PathText,
    /// Inode of the staged tree, to tell later whether the exchange happened.
    ino: u64,
}

struct Staged {
    kind: Kind,
    temp: PathBuf,
}

struct Committed {
    kind: Kind,
    temp: PathBuf,
    dest: PathBuf,
    ino: u64,
}

struct Records {
    staged: Vec<Staged>,
    commit: Option<Vec<Committed>>,
}

fn entries_sum(entries: &[CommitEntry]) -> String {
    let json = serde_json::to_vec(entries).unwrap_or_default();
    blake3::hash(&json).to_hex().to_string()
}

fn read_records(file: &File) -> io::Result<Records> {
    let mut out = Records {
        staged: Vec::new(),
        commit: None,
    };
    let mut version_ok = false;
    for line in io::BufReader::new(file).split(b'\n') {
        // A line torn by a crash does not parse and is skipped: it can only be the last one,
        // and a record that was not completely written never took effect.
        let Ok(record) = serde_json::from_slice::<Record>(&line?) else {
            continue;
        };
        match record {
            Record::Begin { version, .. } => version_ok = version == JOURNAL_VERSION,
            Record::Stage { kind, temp, .. } if version_ok => {
                out.staged.push(Staged { kind, temp: temp.0 })
            }
            Record::Commit { entries, sum } if version_ok && sum == entries_sum(&entries) => {
                out.commit = Some(
                    entries
                        .into_iter()
                        .map(|e| Committed {
                            kind: e.kind,
                            temp: e.temp.0,
                            dest: e.dest.0,
                            ino: e.ino,
                        })
                        .collect(),
                );
            }
            _ => {}
        }
    }
    if !version_ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a version {JOURNAL_VERSION} journal"),
        ));
    }
    Ok(out)
}

/// Redoes one step of a committed transaction, if it has not happened yet.
fn redo(e: &Committed) -> io::Result<()> {
    match e.kind {
        Kind::File => match std::fs::rename(&e.temp, &e.dest) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
        Kind::Dir => {
            let dest_ino = std::fs::symlink_metadata(&e.dest).map(|m| m.ino()).ok();
            if dest_ino != Some(e.ino) {
                exchange(&e.temp, &e.dest)?;
                crash_point("exchanged");
            }
            // The stage now holds the old tree.
            remove_staged(Kind::Dir, &e.temp)
        }
    }
}

fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(io::Error::from)
}

fn remove_staged(kind: Kind, path: &Path) -> io::Result<()> {
    let result = match kind {
        Kind::File => std::fs::remove_file(path),
        // `remove_dir_all` does not follow symbolic links inside the tree.
        Kind::Dir => std::fs::remove_dir_all(path),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes renames in these paths' directories durable. Best effort: the renames have happened;
/// a failure here only weakens what a power loss can undo, and recovery redoes them anyway.
fn sync_parents<'a>(paths: impl Iterator<Item = &'a Path>) {
    let dirs: BTreeSet<&Path> = paths.map(parent_of).collect();
    for dir in dirs {
        if let Err(e) = sync_dir(dir) {
            tracing::warn!("fsync of `{}`: {e}", dir.display());
        }
    }
}

/// A fresh name for a staged file or tree: unique to this process and call.
fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&n.to_le_bytes());
    h.update(&now.to_le_bytes());
    h.finalize().to_hex()[..12].to_string()
}

fn hidden_name(dest: &Path, suffix: &str) -> io::Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut hidden = OsString::from(".");
    hidden.push(name);
    hidden.push(format!(".zvm-{}{suffix}", unique_id()));
    Ok(parent_of(dest).join(hidden))
}

/// Test hook for crash injection: with `ZVM_CRASH_AT=<n>` in the environment, the process
/// kills itself with SIGKILL at the n-th crash point it passes (counting from 1), after
/// naming it on stderr. Crash points sit between every two steps of staging, commit and
/// recovery, so a test can stop zvm at each of them in turn.
pub fn crash_point(label: &str) {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let Some(at) = *AT.get_or_init(|| {
        std::env::var("ZVM_CRASH_AT")
            .ok()
            .and_then(|s| s.parse().ok())
    }) else {
        return;
    };
    if PASSED.fetch_add(1, Ordering::SeqCst) + 1 == at {
        let _ = writeln!(io::stderr(), "zvm: crash point {at}: {label}");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

/// A staged writable directory: the guest works in `path`, which replaces the directory when
/// the transaction commits.
#[derive(Debug)]
pub struct StagedDir {
    pub path: PathBuf,
    /// Inode numbers of the staged tree's files that are hard links to the original's: a
    /// file among them must get an inode of its own before it is changed (zvm-fs does that),
    /// while files the guest creates, and links among those, need not.
    pub shared: std::collections::HashSet<u64>,
}

/// A staged output file: write into `file`; it replaces `dest` when the transaction commits.
#[derive(Debug)]
pub struct StagedFile {
    pub file: File,
    pub temp: PathBuf,
    pub dest: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Committed, or failed after its commit point (recovery owns it then).
    Done,
    Aborted,
}

struct Entry {
    kind: Kind,
    temp: PathBuf,
    dest: PathBuf,
    /// A handle on the staged file, to fsync it at commit.
    file: Option<File>,
}

struct Log {
    file: File,
    path: PathBuf,
}

struct Inner {
    log: Option<Log>,
    entries: Vec<Entry>,
    phase: Phase,
}

/// The outputs of one run (or one job), committed together.
pub struct Transaction {
    journal: Option<Journal>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    /// A transaction journalled in `journal`, so that a crash is recovered; `None` stages and
    /// commits the same way but leaves no trace for recovery (for embedders without a state
    /// directory, and tests): a crash then can leave hidden staged names, and a crash in the
    /// middle of a commit can leave some outputs new and others old.
    pub fn new(journal: Option<Journal>) -> Transaction {
        Transaction {
            journal,
            inner: Mutex::new(Inner {
                log: None,
                entries: Vec::new(),
                phase: Phase::Open,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the entries consistent (each push is atomic).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether nothing has been staged.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// The staged files so far as (destination, staged file) pairs, in staging order: to read
    /// an output's content before it lands (the result cache stores it).
    pub fn staged_files(&self) -> Vec<(PathBuf, PathBuf)> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| (e.dest.clone(), e.temp.clone()))
            .collect()
    }

    /// Appends a record to the journal (creating it on first use); without a journal, nothing.
    fn record(&self, inner: &mut Inner, record: &Record, durable: bool) -> io::Result<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        if inner.log.is_none() {
            inner.log = Some(create_log(journal)?);
        }
        let log = inner.log.as_mut().expect("created above");
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        // One write per record: a crash leaves a record whole or torn at its end, never
        // interleaved with another.
        log.file.write_all(&line)?;
        if durable {
            log.file.sync_data()?;
        }
        Ok(())
    }

    /// Stages an output file for `dest`: a new hidden file beside it, empty or (with
    /// `keep_content`) a copy of `dest`'s current content. It gets the mode a new file would
    /// get (0666 less the umask), or keeps the mode of the file it will replace.
    pub fn stage_file(&self, dest: &Path, keep_content: bool) -> Result<StagedFile, Error> {
        let err = |error| Error::Stage {
            path: dest.to_path_buf(),
            error,
        };
        if dest.is_dir() {
            return Err(err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            )));
        }
        let existing_mode = std::fs::metadata(dest)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777);
        let mut inner = self.lock();
        let (file, temp) = loop {
            let temp = hidden_name(dest, ".tmp").map_err(err)?;
            self.record(
                &mut inner,
                &Record::Stage {
                    kind: Kind::File,
                    temp: PathText(temp.clone()),
                    dest: PathText(dest.to_path_buf()),
                },
                false,
            )
            .map_err(err)?;
            crash_point("stage recorded");
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(&temp)
            {
                Ok(f) => break (f, temp),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(e)),
            }
        };
        // From here on the entry exists, so an abort removes the file whatever happens next.
        inner.entries.push(Entry {
            kind: Kind::File,
            temp: temp.clone(),
            dest: dest.to_path_buf(),
            file: file.try_clone().ok(),
        });
        drop(inner);
        if let Some(mode) = existing_mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(err)?;
        }
        if keep_content {
            match File::open(dest) {
                Ok(mut src) => {
                    io::copy(&mut src, &mut &file).map_err(err)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(StagedFile {
            file,
            temp,
            dest: dest.to_path_buf(),
        })
    }

    /// Stages a writable directory: a hidden sibling tree of hard links to `dest`'s files
    /// (copies where a link is refused), in which the guest works; it replaces `dest` as a
    /// whole when the transaction commits. Returns the staged tree's path.
    pub fn stage_dir(&self, dest: &Path) -> Result<StagedDir, Error> {
        let fail = |reason: String| Error::StageDir {
            path: dest.to_path_buf(),
            reason,
        };
        let cannot_open =
            |e: io::Error| fail(format!("cannot open directory `{}`: {e}", dest.display()));
        let real = std::fs::canonicalize(dest).map_err(cannot_open)?;
        let meta = std::fs::metadata(&real).map_err(cannot_open)?;
        if !meta.is_dir() {
            return Err(fail("not a directory".into()));
        }
        let parent = real
            .parent()
            .ok_or_else(|| fail("the root directory cannot be replaced".into()))?;
        let parent_meta = std::fs::metadata(parent).map_err(|e| fail(e.to_string()))?;
        if parent_meta.dev() != meta.dev() {
            return Err(fail(
                "it is the root of a mounted filesystem, which cannot be replaced atomically; \
                 mount a directory inside it instead"
                    .into(),
            ));
        }
        let mut inner = self.lock();
        if inner.entries.iter().any(|e| e.dest == real) {
            return Err(fail("staged twice in one transaction".into()));
        }
        let temp = loop {
            let temp = hidden_name(&real, ".stage").map_err(|e| fail(e.to_string()))?;
            self.record(
                &mut inner,
                &Record::Stage {
                    kind: Kind::Dir,
                    temp: PathText(temp.clone()),
                    dest: PathText(real.clone()),
                },
                false,
            )
            .map_err(|e| fail(format!("journal: {e}")))?;
            crash_point("stage recorded");
            match std::fs::create_dir(&temp) {
                Ok(()) => break temp,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(fail(e.to_string())),
            }
        };
        inner.entries.push(Entry {
            kind: Kind::Dir,
            temp: temp.clone(),
            dest: real.clone(),
            file: None,
        });
        drop(inner);
        let mut shared = std::collections::HashSet::new();
        link_tree(&real, &temp, &mut shared)
            .map_err(|e| fail(format!("cannot replicate it for staging: {e}")))?;
        Ok(StagedDir { path: temp, shared })
    }

    /// Commits every staged output together (see the module documentation for the protocol).
    /// An error before the commit point leaves every destination untouched and the
    /// transaction aborted; [`Error::Incomplete`] means the commit point was passed and
    /// recovery will finish the job.
    pub fn commit(&self) -> Result<(), Error> {
        let mut inner = self.lock();
        assert_eq!(inner.phase, Phase::Open, "a transaction commits once");
        if inner.entries.is_empty() {
            inner.phase = Phase::Done;
            return Ok(());
        }
        // 1. Make every staged byte and name durable.
        for e in &inner.entries {
            let synced = match (&e.kind, &e.file) {
                (Kind::File, Some(f)) => f.sync_all(),
                (Kind::File, None) => File::open(&e.temp).and_then(|f| f.sync_all()),
                // A staged tree holds many new files and directories; one syncfs covers all.
                (Kind::Dir, _) => File::open(&e.temp)
                    .and_then(|d| rustix::fs::syncfs(&d).map_err(io::Error::from)),
            };
            synced.map_err(|error| Error::Commit {
                path: e.dest.clone(),
                error,
            })?;
            crash_point("staged data synced");
        }
        let dirs: BTreeSet<PathBuf> = inner
            .entries
            .iter()
            .map(|e| parent_of(&e.temp).to_path_buf())
            .collect();
        for dir in &dirs {
            sync_dir(dir).map_err(|error| Error::Commit {
                path: dir.clone(),
                error,
            })?;
        }
        crash_point("staged names synced");
        // 2. The commit point: a durable record of every step still to take.
        let mut entries = Vec::with_capacity(inner.entries.len());
        for e in &inner.entries {
            let ino = std::fs::symlink_metadata(&e.temp)
                .map(|m| m.ino())
                .map_err(|error| Error::Commit {
                    path: e.dest.clone(),
                    error,
                })?;
            entries.push(CommitEntry {
                kind: e.kind,
                temp: PathText(e.temp.clone()),
                dest: PathText(e.dest.clone()),
                ino,
            });
        }
        let first = inner.entries[0].dest.clone();
        let sum = entries_sum(&entries);
        let committed: Vec<Committed> = entries
            .iter()
            .map(|e| Committed {
                kind: e.kind,
                temp: e.temp.0.clone(),
                dest: e.dest.0.clone(),
                ino: e.ino,
            })
            .collect();
        self.record(&mut inner, &Record::Commit { entries, sum }, true)
            .map_err(|error| Error::Commit {
                path: first.clone(),
                error,
            })?;
        inner.phase = Phase::Done;
        crash_point("commit record durable");
        // 3. Apply; from here on, a failure is finished by recovery.
        for e in &committed {
            redo(e).map_err(|error| Error::Incomplete {
                path: e.dest.clone(),
                error,
            })?;
            crash_point("output replaced");
        }
        sync_parents(committed.iter().map(|e| e.dest.as_path()));
        crash_point("destinations synced");
        // 4. Forget the transaction.
        if let Some(log) = inner.log.take() {
            std::fs::remove_file(&log.path).map_err(|error| Error::Journal {
                path: log.path.clone(),
                error,
            })?;
        }
        Ok(())
    }

    /// Takes over a file another transaction staged for `dest` (another process of the same
    /// job, say): from now on this transaction commits or removes it. The other transaction
    /// must then [`detach`](Transaction::detach) (after this call, so that a crash between
    /// the two leaves the file recorded in at least one journal).
    pub fn adopt(&self, dest: &Path, temp: &Path) -> Result<(), Error> {
        let err = |error| Error::Stage {
            path: dest.to_path_buf(),
            error,
        };
        if parent_of(dest) != parent_of(temp) {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a staged file must sit beside its destination",
            )));
        }
        let mut inner = self.lock();
        self.record(
            &mut inner,
            &Record::Stage {
                kind: Kind::File,
                temp: PathText(temp.to_path_buf()),
                dest: PathText(dest.to_path_buf()),
            },
            false,
        )
        .map_err(err)?;
        inner.entries.push(Entry {
            kind: Kind::File,
            temp: temp.to_path_buf(),
            dest: dest.to_path_buf(),
            file: None,
        });
        Ok(())
    }

    /// Gives up this transaction's staged files without removing them: another transaction
    /// has [adopted](Transaction::adopt) them. Its journal goes away.
    pub fn detach(&self) {
        let mut inner = self.lock();
        if inner.phase != Phase::Open {
            return;
        }
        inner.phase = Phase::Aborted;
        inner.entries.clear();
        if let Some(log) = inner.log.take() {
            let _ = std::fs::remove_file(&log.path);
        }
    }

    /// Removes every staged output; the destinations were never touched.
    pub fn abort(&self) {
        let mut inner = self.lock();
        if inner.phase != Phase::Open {
            return;
        }
        inner.phase = Phase::Aborted;
        for e in inner.entries.drain(..) {
            if let Err(err) = remove_staged(e.kind, &e.temp) {
                tracing::warn!("removing staged `{}`: {err}", e.temp.display());
            }
        }
        if let Some(log) = inner.log.take() {
            let _ = std::fs::remove_file(&log.path);
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A journal born under a temporary name whose process died before naming it is removed by
/// recovery once it is this old (and unlocked): it holds no intent yet, and a younger one
/// may belong to a process that has not locked it yet.
const STALE_BIRTH: std::time::Duration = std::time::Duration::from_secs(60);

/// Creates a locked journal file. Preferably it is born unnamed (`O_TMPFILE`), locked and
/// written, then linked into the directory under its final name, so that no journal is ever
/// visible unlocked and a crash before the link leaves nothing. On filesystems without
/// `O_TMPFILE`, it is born under a temporary name and renamed (recovery removes stale ones).
fn create_log(journal: &Journal) -> io::Result<Log> {
    let id = format!("{}-{}", std::process::id(), unique_id());
    let path = journal.dir.join(format!("{id}{JOURNAL_SUFFIX}"));
    let mut line = serde_json::to_vec(&Record::Begin {
        version: JOURNAL_VERSION,
        pid: std::process::id(),
    })
    .map_err(io::Error::other)?;
    line.push(b'\n');
    let unnamed = rustix::fs::open(
        &journal.dir,
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    );
    if let Ok(fd) = unnamed {
        let mut file = File::from(fd);
        file.lock()?;
        file.write_all(&line)?;
        use std::os::fd::AsRawFd;
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        if rustix::fs::linkat(
            rustix::fs::CWD,
            proc_path.as_str(),
            rustix::fs::CWD,
            &path,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        )
        .is_ok()
        {
            return Ok(Log { file, path });
        }
    }
    let birth = journal.dir.join(format!("{id}.new"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&birth)?;
    file.lock()?;
    file.write_all(&line)?;
    std::fs::rename(&birth, &path)?;
    Ok(Log { file, path })
}

/// Removes journals born under a temporary name by processes that died before naming them
/// (see [`create_log`]).
fn remove_stale_births(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(OsStr::to_str) != Some("new") {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_BIRTH);
        if old
            && let Ok(f) = File::open(&path)
            && f.try_lock().is_ok()
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Fills `to` (an empty directory) with a replica of `from`: directories recreated with their
/// modes and times, everything else hard-linked (copied where the kernel refuses a link).
fn link_tree(
    from: &Path,
    to: &Path,
    shared: &mut std::collections::HashSet<u64>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&src)?;
        if meta.is_dir() {
            std::fs::create_dir(&dst)?;
            link_tree(&src, &dst, shared)?;
        } else if let Err(link_err) = std::fs::hard_link(&src, &dst) {
            // Linux refuses links to others' files under `fs.protected_hardlinks`.
            if meta.is_file() {
                std::fs::copy(&src, &dst)?;
            } else if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
            } else {
                return Err(io::Error::new(
                    link_err.kind(),
                    format!("`{}`: {link_err}", src.display()),
                ));
            }
        } else {
            shared.insert(meta.ino());
        }
    }
    let meta = std::fs::metadata(from)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    // The guest should see an unchanged directory as unchanged, times included.
    if let Ok(modified) = meta.modified() {
        let _ = File::open(to).and_then(|d| {
            d.set_times(
                std::fs::FileTimes::new()
                    .set_modified(modified)
                    .set_accessed(meta.accessed().unwrap_or(modified)),
            )
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn files_land_together_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let journal = Journal::open(state.path()).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"old a").unwrap();
        let t = Transaction::new(Some(journal.clone()));
        let mut fa = t.stage_file(&a, false).unwrap();
        let mut fb = t.stage_file(&b, false).unwrap();
        fa.file.write_all(b"new a").unwrap();
        fb.file.write_all(b"new b").unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        assert!(!b.exists());
        assert_eq!(names(state.path()).len(), 1, "one journal while staged");
        t.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new a");
        assert_eq!(std::fs::read(&b).unwrap(), b"new b");
        assert_eq!(names(dir.path()), ["a", "b"]);
        assert!(names(state.path()).is_empty(), "journal removed");
    }

    #[test]
    fn abort_and_drop_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let journal = Journal::open(state.path()).unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"old").unwrap();
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        std::fs::write(dir.path().join("tree/x"), b"x").unwrap();
        {
            let t = Transaction::new(Some(journal.clone()));
            t.stage_file(&a, true).unwrap();
            t.stage_dir(&dir.path().join("tree")).unwrap();
            assert_eq!(names(dir.path()).len(), 4);
        }
        assert_eq!(names(dir.path()), ["a", "tree"]);
        assert_eq!(std::fs::read(&a).unwrap(), b"old");
        assert_eq!(names(&dir.path().join("tree")), ["x"]);
        assert!(names(state.path()).is_empty());
    }

    #[test]
    fn keep_content_copies_and_modes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"one\n").unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o640)).unwrap();
        let t = Transaction::new(None);
        let mut f = t.stage_file(&a, true).unwrap();
        use std::io::Seek;
        f.file.seek(io::SeekFrom::End(0)).unwrap();
        f.file.write_all(b"two\n").unwrap();
        t.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"one\ntwo\n");
        assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o777, 0o640);
    }

    #[test]
    fn a_staged_tree_replaces_the_directory_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("keep"), b"keep").unwrap();
        std::fs::write(tree.join("gone"), b"gone").unwrap();
        std::fs::write(tree.join("sub/deep"), b"deep").unwrap();
        std::os::unix::fs::symlink("keep", tree.join("link")).unwrap();
        let t = Transaction::new(None);
        let staged = t.stage_dir(&tree).unwrap();
        assert_eq!(staged.shared.len(), 4, "keep, gone, link, sub/deep");
        let staged = staged.path;
        assert_eq!(names(&staged), ["gone", "keep", "link", "sub"]);
        std::fs::remove_file(staged.join("gone")).unwrap();
        std::fs::write(staged.join("new"), b"new").unwrap();
        assert_eq!(names(&tree), ["gone", "keep", "link", "sub"]);
        t.commit().unwrap();
        assert_eq!(names(&tree), ["keep", "link", "new", "sub"]);
        assert_eq!(std::fs::read(tree.join("sub/deep")).unwrap(), b"deep");
        assert_eq!(
            std::fs::read_link(tree.join("link")).unwrap(),
            Path::new("keep")
        );
        assert_eq!(names(dir.path()), ["tree"], "old tree removed");
    }

    #[test]
    fn recovery_rolls_back_an_uncommitted_transaction_of_a_dead_process() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let journal = Journal::open(state.path()).unwrap();
        let a = dir.path().join("a");
        let t = Transaction::new(Some(journal.clone()));
        t.stage_file(&a, false).unwrap();
        // A live transaction is left alone.
        assert!(journal.recover().unwrap().is_empty());
        // Simulate the process dying: keep the files, release the lock.
        {
            let mut inner = t.lock();
            inner.entries.clear();
            inner.log = None;
            inner.phase = Phase::Done;
        }
        assert_eq!(names(dir.path()).len(), 1);
        let done = journal.recover().unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].outcome, Outcome::RolledBack);
        assert!(names(dir.path()).is_empty());
        assert!(names(state.path()).is_empty());
    }

    #[test]
    fn adopted_files_commit_with_the_adopter() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let journal = Journal::open(state.path()).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let worker = Transaction::new(Some(journal.clone()));
        let mut staged = worker.stage_file(&a, false).unwrap();
        staged.file.write_all(b"from the worker").unwrap();
        let coordinator = Transaction::new(Some(journal.clone()));
        coordinator.adopt(&a, &staged.temp).unwrap();
        coordinator
            .stage_file(&b, false)
            .unwrap()
            .file
            .write_all(b"own")
            .unwrap();
        worker.detach();
        drop(worker);
        assert!(staged.temp.exists(), "detaching keeps the file");
        coordinator.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"from the worker");
        assert_eq!(std::fs::read(&b).unwrap(), b"own");
        assert_eq!(names(dir.path()), ["a", "b"]);
        assert!(names(state.path()).is_empty());
    }

    #[test]
    fn paths_that_are_not_utf8_survive_the_journal() {
        let p = PathText(PathBuf::from(OsString::from_vec(vec![
            b'a', 0xff, b'/', b'b',
        ])));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PathText>(&json).unwrap(), p);
        let q = PathText(PathBuf::from("plain/ütf8"));
        let json = serde_json::to_string(&q).unwrap();
        assert_eq!(json, "\"plain/ütf8\"");
        assert_eq!(serde_json::from_str::<PathText>(&json).unwrap(), q);
    }

    #[test]
    fn mount_points_and_the_root_cannot_be_staged() {
        let t = Transaction::new(None);
        let err = t.stage_dir(Path::new("/")).unwrap_err().to_string();
        assert!(err.contains("root directory"), "{err}");
        if Path::new("/proc/self").exists() {
            let err = t.stage_dir(Path::new("/proc")).unwrap_err().to_string();
            assert!(err.contains("mounted filesystem"), "{err}");
        }
    }
}
