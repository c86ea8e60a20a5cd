//! Fingerprints of runs: everything a run's result depends on, for the result cache and for
//! replay.
//!
//! A zvm run is a function of its program, its manifest (arguments, environment, limits, seed,
//! clock, channels' modes and quotas, mounts, commit policy) and the content of its inputs.
//! [`fingerprint`] hashes all three into a cache key, with the host paths of channels, exports
//! and images left out (the same computation on a copy of the input, writing elsewhere, is the
//! same result), and records the inputs' etags for a later replay.
//!
//! Some runs depend on things zvm cannot hash up front; they are not cached, and the
//! fingerprint says why: a host directory mount (a whole tree, which the guest may walk), an
//! input that is not a regular file (a device, a pipe), an output that starts from its file's
//! existing content (`append`, `read-write`). Standard input is left out of the key; a run
//! that actually reads it is not stored (determinism makes "did not read stdin" a property of
//! the key: the same key never reads it).
//!
//! Inputs are hashed before the run starts, so a file replaced between hashing and reading
//! would make the key lie. [`Fingerprint::changed_input`] compares each input's file version
//! (device, inode, size, modification and change times) after the run with the one hashed.

use std::path::{Path, PathBuf};

use zvm_channel::{FileVersion, file_etag};
use zvm_manifest::{ChannelSource, ContentHash, Manifest, MountSource};

use crate::report::{InputReport, ReplayInfo};

/// Bumped whenever what a key covers changes, so old cache entries stop matching.
const KEY_VERSION: &str = "zvm-result-key-v1";

/// What a run depends on.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    /// The result cache key.
    pub key: [u8; 32],
    /// What a replay needs (the manifest, its hash, the inputs).
    pub replay: ReplayInfo,
    /// Why the run cannot be cached, if it cannot.
    pub uncacheable: Option<String>,
    versions: Vec<(String, PathBuf, Option<FileVersion>)>,
}

/// Fingerprints `manifest` for a program with hash `program`. Inputs that cannot be read are
/// left to the run itself to report (it fails opening them); the run is then not cacheable.
pub fn fingerprint(manifest: &Manifest, program: &ContentHash) -> Fingerprint {
    let mut uncacheable = None;
    let mut inputs = Vec::new();
    let mut versions = Vec::new();
    let mut keyed = manifest.clone();
    keyed.program.path = PathBuf::from("program");
    keyed.program.hash = None;
    let mut hash_input = |name: String, path: &Path, uncacheable: &mut Option<String>| {
        let opened = std::fs::File::open(path).and_then(|f| {
            let meta = f.metadata()?;
            Ok((f, meta))
        });
        match opened {
            Ok((file, meta)) if meta.is_file() => match file_etag(&file) {
                Ok(etag) => {
                    versions.push((
                        name.clone(),
                        path.to_path_buf(),
                        Some(FileVersion::of(&meta)),
                    ));
                    inputs.push(InputReport {
                        name,
                        path: path.display().to_string(),
                        etag,
                    });
                }
                Err(e) => {
                    uncacheable.get_or_insert(format!("input `{name}` cannot be read: {e}"));
                }
            },
            Ok(_) => {
                uncacheable.get_or_insert(format!("input `{name}` is not a regular file"));
            }
            Err(e) => {
                uncacheable.get_or_insert(format!("input `{name}` cannot be read: {e}"));
            }
        }
    };
    for ch in &mut keyed.channels {
        let ChannelSource::File(path) = &ch.source else {
            continue;
        };
        if ch.mode.can_write() {
            if ch.mode.keeps_content() {
                uncacheable.get_or_insert(format!(
                    "channel `{}` ({}) starts from its file's existing content",
                    ch.name,
                    ch.mode.as_str()
                ));
            }
        } else {
            hash_input(ch.name.to_string(), path, &mut uncacheable);
        }
        ch.source = ChannelSource::File(PathBuf::from(format!("/channel/{}", ch.name)));
    }
    for (i, m) in keyed.mounts.iter_mut().enumerate() {
        match &m.source {
            MountSource::Image(path) => {
                hash_input(
                    format!("image {} (mount {})", m.guest_abs(), i + 1),
                    path,
                    &mut uncacheable,
                );
                m.source = MountSource::Image(PathBuf::from(format!("/image/{i}")));
            }
            MountSource::Dir { path, .. } => {
                uncacheable.get_or_insert(format!(
                    "mounts host directory `{}` at `{}`",
                    path.display(),
                    m.guest
                ));
            }
        }
    }
    for e in &mut keyed.exports {
        e.path = PathBuf::from(format!("/export{}", e.guest));
    }
    let mut h = blake3::Hasher::new();
    for part in [
        KEY_VERSION,
        env!("CARGO_PKG_VERSION"),
        &program.to_string(),
        &zvm_manifest::canonical_toml(&keyed),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for input in &inputs {
        h.update(input.name.as_bytes());
        h.update(b"\0");
        h.update(input.etag.as_bytes());
    }
    let text = zvm_manifest::canonical_toml(manifest);
    Fingerprint {
        key: *h.finalize().as_bytes(),
        replay: ReplayInfo {
            manifest_hash: ContentHash::of(text.as_bytes()).to_string(),
            manifest: text,
            seed: manifest.seed,
            start_time_ns: manifest.clock.start_ns,
            inputs,
        },
        uncacheable,
        versions,
    }
}

impl Fingerprint {
    /// The first input whose file is no longer the version that was hashed, if any.
    pub fn changed_input(&self) -> Option<&str> {
        self.versions.iter().find_map(|(name, path, before)| {
            let now = std::fs::metadata(path).ok().map(|m| FileVersion::of(&m));
            (now != *before).then_some(name.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zvm_manifest::{AccessMode, Channel, ChannelName, Quota};

    fn manifest_with(input: &Path, output: &Path) -> Manifest {
        let mut m = Manifest::for_program("p.wasm");
        for (name, path, mode) in [
            ("input", input, AccessMode::SequentialRead),
            ("output", output, AccessMode::SequentialWrite),
        ] {
            m.channels.push(Channel {
                name: ChannelName::new(name).unwrap(),
                source: ChannelSource::File(path.to_path_buf()),
                mode,
                quota: Quota::default(),
                etag: None,
            });
        }
        m
    }

    #[test]
    fn keys_follow_content_not_paths() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"same").unwrap();
        std::fs::write(&b, b"same").unwrap();
        let p = ContentHash::of(b"program");
        let fa = fingerprint(&manifest_with(&a, &dir.path().join("o1")), &p);
        let fb = fingerprint(&manifest_with(&b, &dir.path().join("o2")), &p);
        assert_eq!(fa.key, fb.key, "same content, other paths: same key");
        assert!(fa.uncacheable.is_none());
        assert_eq!(
            fa.replay.inputs[0].etag,
            blake3::hash(b"same").to_hex().as_str()
        );
        std::fs::write(&b, b"other").unwrap();
        let fc = fingerprint(&manifest_with(&b, &dir.path().join("o2")), &p);
        assert_ne!(fa.key, fc.key, "other content: other key");
        let fd = fingerprint(
            &manifest_with(&a, &dir.path().join("o1")),
            &ContentHash::of(b"x"),
        );
        assert_ne!(fa.key, fd.key, "other program: other key");
        let mut m = manifest_with(&a, &dir.path().join("o1"));
        m.seed = 7;
        assert_ne!(fa.key, fingerprint(&m, &p).key, "other seed: other key");
    }

    #[test]
    fn a_replaced_input_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"one").unwrap();
        let f = fingerprint(
            &manifest_with(&a, &dir.path().join("o")),
            &ContentHash::of(b"p"),
        );
        assert_eq!(f.changed_input(), None);
        std::fs::write(&a, b"two!").unwrap();
        assert_eq!(f.changed_input(), Some("input"));
    }

    #[test]
    fn what_cannot_be_hashed_is_not_cacheable() {
        let dir = tempfile::tempdir().unwrap();
        let p = ContentHash::of(b"p");
        let f = fingerprint(
            &manifest_with(Path::new("/dev/urandom"), &dir.path().join("o")),
            &p,
        );
        assert!(f.uncacheable.unwrap().contains("not a regular file"));
        let mut m = Manifest::for_program("p.wasm");
        m.mounts.push(zvm_manifest::Mount {
            guest: "/data".into(),
            source: MountSource::Dir {
                path: dir.path().to_path_buf(),
                writable: false,
            },
        });
        assert!(
            fingerprint(&m, &p)
                .uncacheable
                .unwrap()
                .contains("host directory")
        );
    }
}
