/*
 * memory_bomb.c - allocate until the memory limit is reached.
 *
 *   memory_bomb.wasm           malloc 1 MiB blocks, writing to every 4 KiB
 *                              page of each, until malloc returns NULL; then
 *                              print "allocated=<N> MiB" and exit(3)
 *   memory_bomb.wasm abort     same, but after printing call abort()
 *                              (the test then sees a trap / abnormal exit)
 *
 * Expects: with a memory limit L MiB in the manifest, N is a bit less than
 * L (the module's static data, stack and malloc overhead use the rest) and
 * the exit code is 3, proving malloc failure (memory.grow returning -1) is
 * reported to the guest rather than killing it.  The blocks are kept
 * reachable through a volatile global so the optimiser cannot drop them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK (1024 * 1024)
#define PAGE 4096

struct block {
    struct block *next;
};

/* Storing each block here makes it escape, so malloc cannot be elided. */
static struct block *volatile head;

int main(int argc, char **argv) {
    int use_abort = argc > 1 && strcmp(argv[1], "abort") == 0;
    unsigned long mib = 0;

    for (;;) {
        char *p = malloc(BLOCK);
        if (p == NULL)
            break;
        for (size_t off = 0; off < BLOCK; off += PAGE)
            ((volatile char *)p)[off] = (char)(off / PAGE + 1);
        struct block *b = (struct block *)p;
        b->next = head;
        head = b;
        mib++;
    }

    printf("allocated=%lu MiB\n", mib);
    fflush(stdout);
    if (use_abort)
        abort();
    exit(3);
}
