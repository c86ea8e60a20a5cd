#!/bin/sh
# Prepares {{name}} for manifest.toml and zapp.toml: copies zvm's installed Python
# interpreter here as python.wasm (install it with zvm's scripts/install-interpreters), and
# puts main.py in app.tar, the image the manifest mounts at /app. The tar is reproducible
# (sorted, times, owners and modes fixed), so packs are too.
set -eu
cd "$(dirname "$0")"
dir=${ZVM_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/zvm}/interpreters
program=$(awk '/^\[\[interpreter\]\]/ { python = 0 }
    /^name *= *"python"/ { python = 1 }
    python && /^program *=/ { sub(/^program *= *"/, ""); sub(/".*$/, ""); print; exit }' \
    "$dir/interpreters.toml" 2>/dev/null || true)
if [ -z "$program" ] || [ ! -f "$dir/$program" ]; then
    echo "build.sh: no interpreter for Python is installed in $dir" >&2
    exit 1
fi
cp "$dir/$program" python.wasm
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --mode=0644 \
    --format=ustar -cf app.tar main.py
