/*
 * trap.c - trap at the bottom of a named call chain.
 *
 * main -> level_one -> level_two -> level_three -> __builtin_trap()
 * (wasm `unreachable`).
 *
 * Expects: stdout is "before trap\n" (flushed before trapping), then the
 * module traps with "unreachable".  zvm's trap report/backtrace should show
 * level_three, level_two and level_one (the functions are noinline and wasm-ld
 * keeps the "name" section by default; don't build this one with -s or
 * -Wl,--strip-all).  Exit status is zvm's trap status, not 0.
 */
#include <stdio.h>

/* Each level stores its depth, so the three bodies differ and none is empty. */
volatile int depth;

__attribute__((noinline)) void level_three(void) {
    depth = 3;
    __builtin_trap();
}

__attribute__((noinline)) void level_two(void) {
    depth = 2;
    level_three();
}

__attribute__((noinline)) void level_one(void) {
    depth = 1;
    level_two();
}

int main(void) {
    fputs("before trap\n", stdout);
    fflush(stdout);
    level_one();
    return 0;
}
