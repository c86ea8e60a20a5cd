#!/bin/sh
# Runs {{name}}'s main.py with zvm's Python interpreter, then from its manifest and as a
# packed zapp, and checks what it prints. Skips (and says so) when no Python interpreter is
# installed. ZVM names the zvm binary (default: zvm on PATH).
set -eu
ZVM=${ZVM:-zvm}
case $ZVM in */*) ZVM=$(cd "$(dirname "$ZVM")" && pwd)/$(basename "$ZVM") ;; esac
cd "$(dirname "$0")"

fail() {
    echo "test.sh: $1" >&2
    exit 1
}

if ! "$ZVM" run --help | grep -q -- --interpreter; then
    echo "test.sh: SKIPPED: this zvm cannot run scripts (its \`zvm run\` has no --interpreter)"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! got=$("$ZVM" run main.py --input input=input.txt 2>"$tmp/stderr"); then
    if grep -q "no interpreter" "$tmp/stderr"; then
        echo "test.sh: SKIPPED: zvm has no Python interpreter installed ($(cat "$tmp/stderr"))"
        exit 0
    fi
    cat "$tmp/stderr" >&2
    fail "zvm run main.py failed"
fi
[ "$got" = "HELLO, ZVM" ] || fail "zvm run main.py printed: $got"

./build.sh
got=$("$ZVM" run manifest.toml) || fail "zvm run manifest.toml failed"
[ "$got" = "HELLO, ZVM" ] || fail "zvm run manifest.toml printed: $got"

"$ZVM" pack . -o "$tmp/{{name}}.zapp" >/dev/null || fail "zvm pack failed"
printf 'from a zapp\n' > "$tmp/input.txt"
got=$(cd "$tmp" && "$ZVM" run {{name}}.zapp) || fail "zvm run {{name}}.zapp failed"
[ "$got" = "FROM A ZAPP" ] || fail "zvm run {{name}}.zapp printed: $got"
echo "test.sh: {{name}} ok"
