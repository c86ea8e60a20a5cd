//! The guest's world: zvm's virtual filesystem, descriptor table, clocks and randomness.
//!
//! Everything a guest can observe besides its own memory lives here, behind an API shaped
//! like WASI preview1 (descriptors, paths, errno values) but free of wasmtime and of guest
//! memory, so that it can be tested on its own and so that determinism, quotas and
//! confinement are enforced in one place. The VM crate only translates the ABI.

pub mod clock;
pub mod host;
pub mod image;
pub mod scratch;
pub mod types;
mod vfs;

pub use clock::{Entropy, VirtualClock};
pub use types::*;
pub use vfs::{
    Device, Fs, MAX_NAME_LEN, MAX_PATH_LEN, MAX_SYMLINK_FOLLOWS, SetupError, WorldConfig,
};
