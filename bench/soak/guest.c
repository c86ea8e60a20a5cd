/* The guests of scripts/soak, one program whose first argument picks the behaviour, so that
 * the soak uploads and compiles one module. Built with clang for wasm32-wasi.
 *
 *   upper       the normal tenant's work: /dev/input, ASCII upper-cased, to /dev/output;
 *               prints the byte count on stdout
 *   loop        spins until fuel or the wall-clock limit stops it
 *   bomb        grows linear memory a page at a time until refused, touching every page so
 *               the memory is really resident, then traps
 *   flood       writes stdout until the output quota stops it
 *   write-trap  writes /dev/output, then traps: the output object must never appear
 */
#include <stdio.h>
#include <string.h>

static int upper(void) {
    FILE *in = fopen("/dev/input", "rb");
    FILE *out = fopen("/dev/output", "wb");
    if (in == NULL || out == NULL) {
        perror("opening /dev/input or /dev/output");
        return 1;
    }
    static char buf[65536];
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        for (size_t i = 0; i < n; i++) {
            if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] -= 'a' - 'A';
        }
        if (fwrite(buf, 1, n, out) != n) {
            perror("writing /dev/output");
            return 1;
        }
        total += n;
    }
    if (fclose(out) != 0) {
        perror("closing /dev/output");
        return 1;
    }
    printf("%zu\n", total);
    return 0;
}

static void loop(void) {
    volatile unsigned long n = 0;
    for (;;) n++;
}

static void bomb(void) {
    for (;;) {
        long before = __builtin_wasm_memory_grow(0, 1);
        if (before < 0) break;
        /* Touch the new page so that it is resident, not only reserved. */
        memset((char *)(before * 65536), 0xAB, 65536);
    }
    fprintf(stderr, "bomb: memory refused at %lu pages\n", (unsigned long)__builtin_wasm_memory_size(0));
    __builtin_trap();
}

static void flood(void) {
    static char buf[65536];
    memset(buf, 'f', sizeof buf);
    for (;;) {
        if (fwrite(buf, 1, sizeof buf, stdout) != sizeof buf) {
            perror("flood");
            return;
        }
    }
}

static void write_trap(void) {
    FILE *out = fopen("/dev/output", "wb");
    if (out != NULL) {
        static char buf[65536];
        memset(buf, 'x', sizeof buf);
        fwrite(buf, 1, sizeof buf, out);
        fflush(out);
    }
    __builtin_trap();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "upper") == 0) return upper();
    if (strcmp(mode, "loop") == 0) loop();
    if (strcmp(mode, "bomb") == 0) bomb();
    if (strcmp(mode, "flood") == 0) {
        flood();
        return 3;
    }
    if (strcmp(mode, "write-trap") == 0) write_trap();
    fprintf(stderr, "usage: guest upper|loop|bomb|flood|write-trap\n");
    return 2;
}
