#!/bin/sh
# Builds the hello program both ways into OUT_DIR (default: target/bench-hello): `hello`
# natively with cc -O2 and `hello.wasm` with clang for wasm32-wasi, -O2; and, when ZVM names
# a zvm binary, `hello.zapp` (zapp.toml, hello.toml and hello.wasm packed), which scripts/load
# deploys as an endpoint. Needs cc, clang, lld and wasi-libc (scripts/install-deps).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT_DIR:-$here/../../target/bench-hello}
mkdir -p "$out"
"${CC:-cc}" -O2 -Wall -Wextra -o "$out/hello" "$here/hello.c"
"${WASM_CC:-clang}" --target=wasm32-wasi -O2 -Wall -Wextra -o "$out/hello.wasm" "$here/hello.c"
if [ -n "${ZVM:-}" ]; then
  rm -rf "$out/app"
  mkdir -p "$out/app"
  cp "$here/zapp.toml" "$here/hello.toml" "$out/hello.wasm" "$out/app/"
  "$ZVM" pack "$out/app" -o "$out/hello.zapp" >/dev/null
fi
