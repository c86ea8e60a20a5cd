"""{{name}}: a zvm guest in Python, run by CPython built for WASI.

Copies the channel /dev/input to standard output with every letter upper-cased.
`zvm run main.py --input input=input.txt` runs it with zvm's installed interpreter;
manifest.toml (after ./build.sh) runs it with a copy of the interpreter beside it, which is
what `zvm pack` puts in the zapp.
"""

import sys


def main():
    with open("/dev/input", "rb") as f:
        data = f.read()
    sys.stdout.buffer.write(data.upper())


main()
