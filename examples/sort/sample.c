/* sample: plans the sort. Arguments: the number of records N, and optionally the seed.
 *
 * The partitioners are the members of group `part` behind /dev/out, the sorters those of
 * group `sort` (P and R of them). The sampler makes the keys of every stride-th record of
 * all N (records are made from their index alone, see record.h), sorts them, and picks R - 1
 * splitters at even quantiles of the sample, so that each sorter gets about N / R records.
 * Then it tells each partitioner which records to make and where to send them:
 *
 *   sort-plan 1
 *   seed <seed>
 *   records <first index> <count>
 *   splitters <R - 1>
 *   <splitter as 20 hex digits>       (R - 1 lines)
 *
 * and each sorter which keys it owns, so that it can check what it receives:
 *
 *   sort-plan 1
 *   sorter <j> of <R>
 *   low <20 hex digits, or - for none>
 *   high <20 hex digits, or - for none>
 *
 * Prints "<N> records, <P> partitioners, <R> sorters, <S> samples" on stdout. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "topology.h"

/* Samples per sorter: enough that the sorters' shares come out within a few per cent of
 * each other (the error of a quantile from s samples is about 1/sqrt(s)), few enough that
 * sampling costs a thousandth of making the records. */
#define SAMPLES_PER_SORTER 1000

static int by_key(const void *a, const void *b) { return memcmp(a, b, KEY_SIZE); }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: sample RECORDS [SEED] (give them in the group's `args`)\n");
        return 2;
    }
    uint64_t n = strtoull(argv[1], NULL, 10);
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : DEFAULT_SEED;
    int p, r;
    char **parts = peers("/dev/out", "part", &p);
    char **sorters = peers("/dev/out", "sort", &r);
    if (p == 0 || r == 0) {
        fprintf(stderr,
                "sample: needs pipes to groups `part` and `sort`, found %d and %d members\n", p,
                r);
        return 2;
    }

    uint64_t s = (uint64_t)SAMPLES_PER_SORTER * (uint64_t)r;
    if (s > n) s = n;
    uint64_t stride = s ? n / s : 1;
    unsigned char *sample = malloc((size_t)(s ? s : 1) * KEY_SIZE);
    if (!sample) return 2;
    for (uint64_t t = 0; t < s; t++) record_key(seed, t * stride, sample + t * KEY_SIZE);
    qsort(sample, (size_t)s, KEY_SIZE, by_key);
    /* Splitter j (from 1) is the sample at quantile j / R; with no samples (N = 0), all
     * splitters are zero and everything (nothing) goes to the last sorter. */
    unsigned char *splitters = calloc((size_t)r, KEY_SIZE);
    if (!splitters) return 2;
    if (s)
        for (int j = 1; j < r; j++)
            memcpy(splitters + (j - 1) * KEY_SIZE,
                   sample + (s * (uint64_t)j / (uint64_t)r) * KEY_SIZE, KEY_SIZE);

    char hex[2 * KEY_SIZE + 1];
    for (int i = 0; i < p; i++) {
        uint64_t first = n * (uint64_t)i / (uint64_t)p, end = n * (uint64_t)(i + 1) / (uint64_t)p;
        FILE *f = open_pipe("/dev/out", parts[i], "w");
        fprintf(f, "sort-plan 1\nseed %" PRIu64 "\nrecords %" PRIu64 " %" PRIu64 "\nsplitters %d\n",
                seed, first, end - first, r - 1);
        for (int j = 0; j < r - 1; j++) {
            key_to_hex(splitters + j * KEY_SIZE, hex);
            fprintf(f, "%s\n", hex);
        }
        if (fclose(f) != 0) {
            fprintf(stderr, "sample: writing to %s failed\n", parts[i]);
            return 2;
        }
    }
    for (int j = 0; j < r; j++) {
        FILE *f = open_pipe("/dev/out", sorters[j], "w");
        fprintf(f, "sort-plan 1\nsorter %d of %d\nlow ", j + 1, r);
        if (j == 0) {
            fputs("-", f);
        } else {
            key_to_hex(splitters + (j - 1) * KEY_SIZE, hex);
            fputs(hex, f);
        }
        fputs("\nhigh ", f);
        if (j == r - 1) {
            fputs("-", f);
        } else {
            key_to_hex(splitters + j * KEY_SIZE, hex);
            fputs(hex, f);
        }
        fputs("\n", f);
        if (fclose(f) != 0) {
            fprintf(stderr, "sample: writing to %s failed\n", sorters[j]);
            return 2;
        }
    }
    printf("%" PRIu64 " records, %d partitioners, %d sorters, %" PRIu64 " samples\n", n, p, r, s);
    return 0;
}
