//! The report of one run: what happened, in a form a person reads on a terminal and a
//! program reads as JSON. The JSON schema is documented in `docs/report.md`; it is versioned
//! by [`REPORT_VERSION`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the report's JSON schema.
pub const REPORT_VERSION: u32 = 2;

/// How the program got validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// Validated and compiled in this run.
    Compiled,
    /// Loaded from the compile cache, where it was stored after validation.
    Cached,
    /// Refused; see the state.
    Failed,
}

impl fmt::Display for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Validation::Compiled => "passed (compiled now)",
            Validation::Cached => "passed (cached)",
            Validation::Failed => "failed",
        })
    }
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum State {
    /// Exited with code 0 (or returned from `_start`) within every limit.
    Ok,
    /// Exited with a non-zero code.
    Exited { code: u32 },
    /// Used up its fuel.
    OutOfFuel,
    /// Ran past the wall-clock timeout.
    TimedOut,
    /// Asked for more memory (or table space) than the limit allows.
    MemoryLimit,
    /// Ran into a channel quota.
    QuotaExceeded { channel: String, quota: String },
    /// Trapped.
    Trap { message: String },
    /// Refused before it ran.
    ValidationFailed { reason: String },
    /// An input file changed while the guest read it: what the guest saw may mix two
    /// versions, so the run does not count and nothing commits.
    InputChanged { channel: String },
}

impl State {
    /// Whether the run counts as a success (outputs commit under the default policy).
    pub fn is_ok(&self) -> bool {
        matches!(self, State::Ok)
    }

    /// Whether a limit stopped the run.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            State::OutOfFuel | State::TimedOut | State::MemoryLimit | State::QuotaExceeded { .. }
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Ok => f.write_str("ok"),
            State::Exited { code } => write!(f, "exited with {code}"),
            State::OutOfFuel => f.write_str("out of fuel"),
            State::TimedOut => f.write_str("timed out"),
            State::MemoryLimit => f.write_str("memory limit"),
            State::QuotaExceeded { channel, quota } => {
                write!(f, "quota exceeded on `{channel}`: {quota}")
            }
            State::Trap { message } => write!(f, "trap: {message}"),
            State::ValidationFailed { reason } => write!(f, "validation failed: {reason}"),
            State::InputChanged { channel } => {
                write!(f, "input `{channel}` changed while the guest read it")
            }
        }
    }
}

/// One channel's etag and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelReport {
    pub name: String,
    pub mode: String,
    /// BLAKE3 of every byte through the channel, lowercase hex.
    pub etag: String,
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
    /// The quota the guest ran into, if any.
    pub quota_hit: Option<String>,
    /// Whether an output file was committed to its destination.
    pub committed: bool,
}

/// A scratch directory written out as a tar file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReport {
    /// The guest directory.
    pub guest: String,
    /// The host tar file.
    pub path: String,
    /// BLAKE3 of the tar file's bytes, lowercase hex.
    pub etag: String,
    pub size: u64,
}

/// An input as it was when the run started: what a replay must find again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputReport {
    /// The channel name, or the guest path of an image mount.
    pub name: String,
    /// The host file.
    pub path: String,
    /// BLAKE3 of the file's whole content, lowercase hex.
    pub etag: String,
}

/// Everything needed to run the same VM again and check it: the manifest itself, and the
/// inputs it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayInfo {
    /// The manifest in canonical TOML (host paths absolute).
    pub manifest: String,
    /// `blake3:<hex>` of `manifest`.
    pub manifest_hash: String,
    pub seed: u64,
    /// Realtime clock at the start, in nanoseconds since the Unix epoch.
    pub start_time_ns: u64,
    /// File inputs (channels and images), in manifest order.
    pub inputs: Vec<InputReport>,
}

/// How the result cache took part in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CacheStatus {
    /// Not asked (disabled, or an embedding that does not use it).
    Off,
    /// Served from the cache without executing.
    Hit,
    /// Executed; `stored` says whether the result went into the cache.
    Miss { stored: bool },
    /// This run cannot be cached, for the reason given.
    Bypassed { reason: String },
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheStatus::Off => f.write_str("off"),
            CacheStatus::Hit => f.write_str("hit (served without executing)"),
            CacheStatus::Miss { stored: true } => f.write_str("miss (result stored)"),
            CacheStatus::Miss { stored: false } => f.write_str("miss"),
            CacheStatus::Bypassed { reason } => write!(f, "bypassed: {reason}"),
        }
    }
}

/// The report of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    /// The program's path as given.
    pub program: String,
    /// `blake3:<hex>` of the program's bytes.
    pub program_hash: String,
    pub validation: Validation,
    pub state: State,
    /// The state as one line of text.
    pub state_text: String,
    /// The guest's exit code, when it exited (0 when `_start` returned).
    pub exit_code: Option<u32>,
    /// Wasm backtrace of a trap, innermost frame first.
    pub backtrace: Vec<String>,
    pub channels: Vec<ChannelReport>,
    pub fuel_used: u64,
    pub fuel_limit: u64,
    /// Wall time of the run (instantiate, run, commit), in microseconds.
    pub wall_time_us: u64,
    /// Largest linear memory size the guest reached, in bytes.
    pub peak_memory: u64,
    /// Whether outputs were committed.
    pub committed: bool,
    /// BLAKE3 of the final linear memory, when the manifest asks for it.
    pub memory_etag: Option<String>,
    /// Scratch directories written out as tar files (when the run committed).
    #[serde(default)]
    pub exports: Vec<ExportReport>,
    /// What a replay needs; filled in by callers that fingerprint their inputs (`zvm run`).
    #[serde(default)]
    pub replay: Option<ReplayInfo>,
    /// How the result cache took part.
    #[serde(default = "cache_off")]
    pub cache: CacheStatus,
    /// The snapshot the run started from, when it did not start plainly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotUse>,
}

/// A run that started from a pre-initialised snapshot (see `zvm_vm::snapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotUse {
    /// BLAKE3 of the snapshot's module and metadata.
    pub hash: String,
    /// Fuel the program used to reach the snapshot point (included in `fuel_used`).
    pub init_fuel: u64,
}

fn cache_off() -> CacheStatus {
    CacheStatus::Off
}

impl Report {
    /// A report for a program refused before it ran.
    pub fn refused(program: &str, program_hash: Option<String>, reason: String) -> Report {
        let state = State::ValidationFailed { reason };
        Report {
            version: REPORT_VERSION,
            program: program.to_string(),
            program_hash: program_hash.unwrap_or_default(),
            validation: Validation::Failed,
            state_text: state.to_string(),
            state,
            exit_code: None,
            backtrace: Vec::new(),
            channels: Vec::new(),
            fuel_used: 0,
            fuel_limit: 0,
            wall_time_us: 0,
            peak_memory: 0,
            committed: false,
            memory_etag: None,
            exports: Vec::new(),
            replay: None,
            cache: CacheStatus::Off,
            snapshot: None,
        }
    }

    /// Reads a report written with [`Report::to_json`].
    pub fn from_json(text: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// The report as human text, one fact per line.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "program     {} ({})", self.program, self.program_hash);
        let _ = writeln!(s, "validation  {}", self.validation);
        let _ = writeln!(s, "state       {}", self.state_text);
        if let Some(code) = self.exit_code {
            let _ = writeln!(s, "exit code   {code}");
        }
        for frame in &self.backtrace {
            let _ = writeln!(s, "  at        {frame}");
        }
        let _ = writeln!(s, "fuel        {} of {}", self.fuel_used, self.fuel_limit);
        let _ = writeln!(s, "wall time   {:.3} ms", self.wall_time_us as f64 / 1000.0);
        let _ = writeln!(s, "peak memory {} bytes", self.peak_memory);
        let _ = writeln!(
            s,
            "committed   {}",
            if self.committed { "yes" } else { "no" }
        );
        if let Some(etag) = &self.memory_etag {
            let _ = writeln!(s, "memory etag {etag}");
        }
        if let Some(snap) = &self.snapshot {
            let _ = writeln!(
                s,
                "snapshot    {} (its initialisation: {} fuel)",
                &snap.hash[..16.min(snap.hash.len())],
                snap.init_fuel
            );
        }
        if self.cache != CacheStatus::Off {
            let _ = writeln!(s, "cache       {}", self.cache);
        }
        for e in &self.exports {
            let _ = writeln!(
                s,
                "export      {} -> {} etag {} {} bytes",
                e.guest,
                e.path,
                &e.etag[..16],
                e.size
            );
        }
        for c in &self.channels {
            let _ = writeln!(
                s,
                "channel     /dev/{} ({}) etag {} reads {}/{}B writes {}/{}B{}",
                c.name,
                c.mode,
                &c.etag[..16],
                c.reads,
                c.read_bytes,
                c.writes,
                c.write_bytes,
                c.quota_hit
                    .as_ref()
                    .map(|q| format!(" quota `{q}` hit"))
                    .unwrap_or_default()
            );
        }
        s
    }
}
