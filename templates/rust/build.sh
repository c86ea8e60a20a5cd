#!/bin/sh
# Builds {{name}}.wasm for wasm32-wasi: with cargo when the wasm32-wasip1 target is installed
# (`rustup target add wasm32-wasip1`), else with Debian's rustc and its wasm32-wasi standard
# library (`apt-get install rustc libstd-rust-dev-wasm32`; WASM_RUSTC names another rustc).
set -eu
cd "$(dirname "$0")"
if command -v cargo >/dev/null 2>&1 && command -v rustc >/dev/null 2>&1 \
    && [ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip1" ]; then
    cargo build --quiet --release --target wasm32-wasip1
    cp target/wasm32-wasip1/release/{{name}}.wasm {{name}}.wasm
else
    "${WASM_RUSTC:-/usr/bin/rustc}" --target wasm32-wasi -O --edition 2021 \
        --crate-name "$(echo {{name}} | tr - _)" -o {{name}}.wasm src/main.rs
fi
