/*
 * exit_code.c - exit with the status given on the command line.
 *
 *   exit_code.wasm N    calls exit(N)   (no argument: exit(0))
 *
 * Expects: no output, process exit status N.  N is parsed with strtol, so
 * negative and large values are passed through to proc_exit unchanged
 * (as an unsigned 32-bit value); tests should use 0..125 for portability.
 */
#include <stdlib.h>

int main(int argc, char **argv) {
    int code = argc > 1 ? (int)strtol(argv[1], NULL, 0) : 0;
    exit(code);
}
