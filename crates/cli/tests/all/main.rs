//! zvm's integration tests: one binary (so it links once), one module per area.
//!
//! Every test drives the real `zvm` binary. Guests are `.wat` text written in the test or C
//! programs from `tests/guests/c`, compiled with clang for `wasm32-wasi` on first use (see
//! [`support`]).

mod bench;
mod channels;
mod cluster;
mod determinism;
mod devices;
mod examples;
mod filesystem;
mod hostile;
mod interpreters;
mod jobs;
mod languages;
mod limits;
mod manifests;
mod mounts;
mod run;
mod serve;
mod snapshots;
mod support;
mod transactions;
mod zapps;
