#!/bin/sh
# Builds the hello program both ways into OUT_DIR (default: this directory's `out/`):
# `hello` natively with cc -O2 and `hello.wasm` with clang for wasm32-wasi, -O2. scripts/load
# calls it; it needs cc, clang, lld and wasi-libc (scripts/install-deps).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT_DIR:-$here/out}
mkdir -p "$out"
"${CC:-cc}" -O2 -Wall -Wextra -o "$out/hello" "$here/hello.c"
"${WASM_CC:-clang}" --target=wasm32-wasi -O2 -Wall -Wextra -o "$out/hello.wasm" "$here/hello.c"
