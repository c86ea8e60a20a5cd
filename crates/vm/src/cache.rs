//! The on-disk compile cache: compiled programs keyed by content hash and engine settings.
//!
//! Compiling a large program takes far longer than running it once, so `zvm run` stores what
//! it compiled and memory-maps it on later runs. The key covers the program's BLAKE3 hash and
//! the engine's compatibility hash (wasmtime version, target, every setting that changes
//! code), so a changed program or a different engine profile is simply a miss. Entries are
//! written to a temporary file and renamed into place, so concurrent zvm processes never see
//! half an entry.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::{Engine, Module};
use zvm_manifest::ContentHash;

/// A `Hasher` that feeds BLAKE3, so the engine's compatibility hash becomes a stable key
/// (std's `DefaultHasher` is not stable across Rust releases).
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let bytes = self.0.finalize();
        u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[derive(Debug)]
pub struct ModuleCache {
    dir: PathBuf,
    engine_key: String,
}

impl ModuleCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> ModuleCache {
        let mut h = Blake3Hasher(blake3::Hasher::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = h.0.finalize().to_hex()[..16].to_string();
        ModuleCache { dir, engine_key }
    }

    /// Where the compiled form of `hash` lives.
    pub fn entry_path(&self, hash: &ContentHash) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hash.hex(), self.engine_key))
    }

    /// The cached module for `hash`, if there is a usable one.
    pub fn get(&self, engine: &Engine, hash: &ContentHash) -> Option<Module> {
        let path = self.entry_path(hash);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file is one this cache wrote (atomically, by rename) into a directory
        // created private to the user, from a module that passed validation and policy;
        // wasmtime additionally checks its header for version and settings compatibility.
        // Someone able to write the user's cache directory could already run code as them.
        match unsafe { Module::deserialize_file(engine, &path) } {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::debug!("compile cache: ignoring `{}`: {e}", path.display());
                None
            }
        }
    }

    /// Stores the compiled form of `module` under `hash`.
    pub fn put(&self, hash: &ContentHash, module: &Module) -> std::io::Result<()> {
        create_private_dir(&self.dir)?;
        let bytes = module.serialize().map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        tmp.persist(self.entry_path(hash)).map_err(|e| e.error)?;
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
