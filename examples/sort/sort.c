/* sort: receives records from every partitioner, sorts them, and writes them to
 * /dev/output. Its range of keys arrives from the sampler (see sample.c) on /dev/in/sample;
 * the partitioners are the members of group `part` behind /dev/in, drained one after the
 * other in member order (every sorter takes them in the same order, so no two wait on each
 * other). A record outside the range, or a stream that is not whole records, is an error:
 * a sorter checks the partitioners' routing rather than trusting it.
 *
 * Records are kept in chunks (no reallocation of the data as it grows) and sorted through
 * an index of (first 8 key bytes, record number) pairs, by a radix sort of the 8 bytes: the
 * records themselves move once, on the way out.
 * Prints "sorter <j> of <R>: <n> records" on stdout. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "record.h"
#include "topology.h"

/* Records per chunk of storage: 6.4 MB, a small step of memory growth. */
#define CHUNK_RECORDS 65536

/* Records written to /dev/output per call: 1 MB. */
#define OUT_RECORDS 10000

static unsigned char **chunks;
static size_t n_chunks, records;

static unsigned char *record_at(size_t i) {
    return chunks[i / CHUNK_RECORDS] + (i % CHUNK_RECORDS) * RECORD_SIZE;
}

struct entry {
    uint64_t prefix;
    uint32_t index;
};

/* Sorts `a` (n entries) by prefix, least significant byte first (a stable radix sort, eight
 * passes through `tmp`), then puts runs of equal prefixes in order of their whole records.
 * Random keys make such runs all but absent, but the output must not depend on luck. */
static void sort_entries(struct entry *a, struct entry *tmp, size_t n) {
    for (int shift = 0; shift < 64; shift += 8) {
        size_t start[257] = {0};
        for (size_t i = 0; i < n; i++) start[((a[i].prefix >> shift) & 255) + 1]++;
        for (int d = 0; d < 256; d++) start[d + 1] += start[d];
        for (size_t i = 0; i < n; i++) tmp[start[(a[i].prefix >> shift) & 255]++] = a[i];
        struct entry *t = a;
        a = tmp;
        tmp = t;
    }
    /* Eight passes: the sorted entries are back in the caller's `a`. */
    for (size_t i = 1; i < n; i++) {
        struct entry e = a[i];
        size_t k = i;
        while (k > 0 && a[k - 1].prefix == e.prefix &&
               memcmp(record_at(a[k - 1].index), record_at(e.index), RECORD_SIZE) > 0) {
            a[k] = a[k - 1];
            k--;
        }
        a[k] = e;
    }
}

static void *checked(void *p) {
    if (!p) {
        fprintf(stderr, "sort: out of memory after %zu records\n", records);
        exit(2);
    }
    return p;
}

/* Reads one partitioner's stream to its end into the chunks. */
static void drain(const char *name) {
    char path[300];
    snprintf(path, sizeof path, "/dev/in/%s", name);
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(2);
    }
    int fd = fileno(f);
    size_t have = 0; /* bytes of the record at `records` already read */
    for (;;) {
        if (records % CHUNK_RECORDS == 0 && have == 0 && records / CHUNK_RECORDS == n_chunks) {
            chunks = checked(realloc(chunks, (n_chunks + 1) * sizeof *chunks));
            chunks[n_chunks++] = checked(malloc((size_t)CHUNK_RECORDS * RECORD_SIZE));
        }
        /* Read up to the end of the current chunk. */
        unsigned char *at = record_at(records) + have;
        size_t room = (CHUNK_RECORDS - records % CHUNK_RECORDS) * RECORD_SIZE - have;
        ssize_t n = read(fd, at, room);
        if (n < 0) {
            perror(path);
            exit(2);
        }
        if (n == 0) break;
        have += (size_t)n;
        records += have / RECORD_SIZE;
        have %= RECORD_SIZE;
    }
    if (have != 0) {
        fprintf(stderr, "sort: %s ended in the middle of a record\n", name);
        exit(2);
    }
    fclose(f);
}

int main(void) {
    int n_plan, p;
    char **plan_from = peers("/dev/in", "sample", &n_plan);
    char **parts = peers("/dev/in", "part", &p);
    if (n_plan != 1) {
        fprintf(stderr, "sort: expected a pipe from the sampler (/dev/in/sample)\n");
        return 2;
    }
    FILE *plan = open_pipe("/dev/in", plan_from[0], "r");
    int j, r;
    char low_hex[32], high_hex[32];
    unsigned char low[KEY_SIZE], high[KEY_SIZE];
    if (fscanf(plan, "sort-plan 1 sorter %d of %d low %31s high %31s", &j, &r, low_hex,
               high_hex) != 4 ||
        (strcmp(low_hex, "-") != 0 && !key_from_hex(low_hex, low)) ||
        (strcmp(high_hex, "-") != 0 && !key_from_hex(high_hex, high))) {
        fprintf(stderr, "sort: the plan from %s is not a sort-plan\n", plan_from[0]);
        return 2;
    }
    fclose(plan);
    int has_low = strcmp(low_hex, "-") != 0, has_high = strcmp(high_hex, "-") != 0;

    for (int i = 0; i < p; i++) drain(parts[i]);

    struct entry *index = checked(malloc((records ? records : 1) * sizeof *index));
    struct entry *tmp = checked(malloc((records ? records : 1) * sizeof *tmp));
    for (size_t i = 0; i < records; i++) {
        const unsigned char *rec = record_at(i);
        if ((has_low && memcmp(rec, low, KEY_SIZE) < 0) ||
            (has_high && memcmp(rec, high, KEY_SIZE) >= 0)) {
            char hex[2 * KEY_SIZE + 1];
            key_to_hex(rec, hex);
            fprintf(stderr, "sort: record with key %s is outside this sorter's range %s..%s\n",
                    hex, low_hex, high_hex);
            return 2;
        }
        uint64_t prefix = 0;
        for (int k = 0; k < 8; k++) prefix = prefix << 8 | rec[k];
        index[i].prefix = prefix;
        index[i].index = (uint32_t)i;
    }
    sort_entries(index, tmp, records);
    free(tmp);

    int out = open("/dev/output", O_WRONLY);
    if (out < 0) {
        perror("/dev/output");
        return 2;
    }
    static unsigned char buf[OUT_RECORDS * RECORD_SIZE];
    for (size_t i = 0; i < records; i += OUT_RECORDS) {
        size_t n = records - i < OUT_RECORDS ? records - i : OUT_RECORDS;
        for (size_t k = 0; k < n; k++)
            memcpy(buf + k * RECORD_SIZE, record_at(index[i + k].index), RECORD_SIZE);
        unsigned char *p = buf;
        size_t left = n * RECORD_SIZE;
        while (left > 0) {
            ssize_t w = write(out, p, left);
            if (w < 0) {
                perror("writing /dev/output");
                return 2;
            }
            p += w;
            left -= (size_t)w;
        }
    }
    if (close(out) != 0) {
        perror("closing /dev/output");
        return 2;
    }
    printf("sorter %d of %d: %zu records\n", j, r, records);
    return 0;
}
