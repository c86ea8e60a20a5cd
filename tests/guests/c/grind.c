/*
 * grind.c - compute for a while, then report what was computed.
 *
 * Usage: grind MILLIONS [SALT]
 * Runs a xorshift64 chain of MILLIONS million steps, seeded from SALT (default 1) and from
 * $ZVM_JOB_MEMBER when it runs in a job, then prints the final value in hex on stdout and,
 * when the channel /dev/output exists, writes the same line there. A deterministic member
 * that takes as long as asked: the cluster tests use it to have a node killed while its
 * members are still running, and the elasticity bench as a member of known cost.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    unsigned long long millions = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
    uint64_t x = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    const char *member = getenv("ZVM_JOB_MEMBER");
    for (const char *p = member ? member : ""; *p; p++)
        x = x * 1099511628211ULL + (unsigned char)*p;
    if (x == 0)
        x = 1;
    for (unsigned long long i = 0; i < millions * 1000000ULL; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    printf("%s %016llx\n", member ? member : "grind", (unsigned long long)x);
    FILE *out = fopen("/dev/output", "w");
    if (out) {
        fprintf(out, "%s %016llx\n", member ? member : "grind", (unsigned long long)x);
        if (fclose(out) != 0)
            return 2;
    }
    return 0;
}
