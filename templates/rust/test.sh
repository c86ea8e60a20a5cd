#!/bin/sh
# Builds {{name}}, runs it with zvm from its manifest and as a packed zapp, and checks what
# it prints. ZVM names the zvm binary (default: zvm on PATH).
set -eu
ZVM=${ZVM:-zvm}
case $ZVM in */*) ZVM=$(cd "$(dirname "$ZVM")" && pwd)/$(basename "$ZVM") ;; esac
cd "$(dirname "$0")"

fail() {
    echo "test.sh: $1" >&2
    exit 1
}

./build.sh
got=$("$ZVM" run manifest.toml -- hello world) || fail "zvm run manifest.toml failed"
[ "$got" = "$(printf 'hello world\nHELLO, ZVM')" ] || fail "zvm run manifest.toml printed: $got"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$ZVM" pack . -o "$tmp/{{name}}.zapp" >/dev/null || fail "zvm pack failed"
printf 'from a zapp\n' > "$tmp/input.txt"
got=$(cd "$tmp" && "$ZVM" run {{name}}.zapp -- hi) || fail "zvm run {{name}}.zapp failed"
[ "$got" = "$(printf 'hi\nFROM A ZAPP')" ] || fail "zvm run {{name}}.zapp printed: $got"
echo "test.sh: {{name}} ok"
