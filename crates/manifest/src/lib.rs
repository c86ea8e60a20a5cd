//! zvm's VM manifests: what the user wrote, parsed and checked, and nothing else.
//!
//! Two phases: parse (TOML syntax, or the legacy ZeroVM key = value format) and resolve
//! (meaning: defaults, paths, impossible combinations) into [`Manifest`], the fully checked
//! form the runtime consumes. This crate knows nothing of wasmtime.

mod model;

pub use model::*;
