#!/bin/sh
# Builds {{name}}.wasm with clang for wasm32-wasi. On Debian:
#   apt-get install clang lld wasi-libc libclang-rt-<clang major>-dev-wasm32
# WASM_CC names another clang.
set -eu
cd "$(dirname "$0")"
"${WASM_CC:-clang}" --target=wasm32-wasi -O2 -Wall -Wextra -o {{name}}.wasm main.c
