/*
 * stack_overflow.c - unbounded recursion.
 *
 *   stack_overflow.wasm          recurse with a 256-byte volatile local array
 *                                per frame (lives on the shadow stack in
 *                                linear memory)
 *   stack_overflow.wasm native   recurse through a volatile function pointer
 *                                with no locals in memory, so only the
 *                                engine's native wasm call stack grows
 *
 * Expects: the module traps (abnormal exit, never exit code 0, never a host
 * crash).  Which trap depends on what runs out first: the engine's call
 * stack ("call stack exhausted" / stack overflow) or, in the default mode,
 * the shadow stack pointer wrapping below address 0 of linear memory
 * ("out of bounds memory access").  Tests should accept any trap.  If
 * built with -Wl,--stack-first, the shadow stack overflow traps as soon as
 * it leaves its region instead of first walking over static data.
 * Prints "start\n" to stdout before recursing.
 */
#include <stdio.h>
#include <string.h>

/* Never reached in practice (the stack runs out long before), but the
 * compiler cannot know that, so the recursion is not "infinite" to it. */
static volatile unsigned limit = 0xffffffffu;

static unsigned recurse(unsigned n) {
    volatile unsigned char frame[256];
    if (n == limit)
        return 0;
    for (unsigned i = 0; i < sizeof frame; i++)
        frame[i] = (unsigned char)(n + i);
    /* The result depends on the callee and on the frame, so this is neither
     * a tail call nor removable. */
    return recurse(n + 1) + frame[0] + frame[255];
}

static unsigned native(unsigned n);
static unsigned (*volatile native_fp)(unsigned) = native;

static unsigned native(unsigned n) {
    if (n == limit)
        return 0;
    return native_fp(n + 1) * 3u + n;
}

int main(int argc, char **argv) {
    fputs("start\n", stdout);
    fflush(stdout);
    unsigned r;
    if (argc > 1 && strcmp(argv[1], "native") == 0)
        r = native(0);
    else
        r = recurse(0);
    printf("unreachable: %u\n", r);
    return 0;
}
