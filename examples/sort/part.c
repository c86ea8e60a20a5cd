/* part: makes one split of the records and sends each record to the sorter that owns its
 * key. Its plan (which records, the seed, the splitters) arrives from the sampler on its one
 * pipe in (see sample.c); the sorters are the members behind /dev/out, in member order, and
 * must be one more than the splitters. Records stream out as they are made: a partitioner
 * holds one 64 KB buffer per sorter, never its split.
 * Prints "records <first>..<last>: <n1> <n2> ... to sorters 1..R" on stdout. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "record.h"
#include "topology.h"

/* Records a partitioner buffers per sorter: 64,000 bytes, one write fills most of a pipe. */
#define BUFFER_RECORDS 640

static void flush(int fd, const char *name, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            fprintf(stderr, "part: writing to %s: %s\n", name, strerror(errno));
            exit(2);
        }
        p += w;
        n -= (size_t)w;
    }
}

int main(void) {
    int n_in, r;
    char **in = peers("/dev/in", NULL, &n_in);
    char **sorters = peers("/dev/out", NULL, &r);
    if (n_in != 1) {
        fprintf(stderr, "part: expected one member (the sampler) behind /dev/in, found %d\n", n_in);
        return 2;
    }
    FILE *plan = open_pipe("/dev/in", in[0], "r");
    uint64_t seed, first, count;
    int splitters_n;
    if (fscanf(plan, "sort-plan 1 seed %" SCNu64 " records %" SCNu64 " %" SCNu64 " splitters %d",
               &seed, &first, &count, &splitters_n) != 4) {
        fprintf(stderr, "part: the plan from %s is not a sort-plan\n", in[0]);
        return 2;
    }
    if (splitters_n + 1 != r) {
        fprintf(stderr, "part: the plan has %d splitters for %d sorters behind /dev/out\n",
                splitters_n, r);
        return 2;
    }
    unsigned char *splitters = malloc((size_t)r * KEY_SIZE);
    if (!splitters) return 2;
    for (int j = 0; j < splitters_n; j++) {
        char hex[2 * KEY_SIZE + 2];
        if (fscanf(plan, "%21s", hex) != 1 || strlen(hex) != 2 * KEY_SIZE ||
            !key_from_hex(hex, splitters + j * KEY_SIZE)) {
            fprintf(stderr, "part: splitter %d of the plan is malformed\n", j + 1);
            return 2;
        }
    }
    fclose(plan);

    int *out = malloc((size_t)r * sizeof *out);
    uint64_t *sent = calloc((size_t)r, sizeof *sent);
    unsigned char *buf = malloc((size_t)r * BUFFER_RECORDS * RECORD_SIZE);
    if (!out || !sent || !buf) return 2;
    for (int j = 0; j < r; j++) {
        char path[300];
        snprintf(path, sizeof path, "/dev/out/%s", sorters[j]);
        out[j] = open(path, O_WRONLY);
        if (out[j] < 0) {
            perror(path);
            return 2;
        }
    }
    /* Each record is made straight into its sorter's buffer. */
    unsigned char key[KEY_SIZE];
    for (uint64_t i = first; i < first + count; i++) {
        record_key(seed, i, key);
        int j = owner(splitters, r, key);
        unsigned char *mine = buf + (size_t)j * BUFFER_RECORDS * RECORD_SIZE;
        record_make(seed, i, mine + (sent[j] % BUFFER_RECORDS) * RECORD_SIZE);
        if (++sent[j] % BUFFER_RECORDS == 0)
            flush(out[j], sorters[j], mine, BUFFER_RECORDS * RECORD_SIZE);
    }
    for (int j = 0; j < r; j++) {
        unsigned char *mine = buf + (size_t)j * BUFFER_RECORDS * RECORD_SIZE;
        flush(out[j], sorters[j], mine, (sent[j] % BUFFER_RECORDS) * RECORD_SIZE);
        if (close(out[j]) != 0) {
            fprintf(stderr, "part: closing the pipe to %s: %s\n", sorters[j], strerror(errno));
            return 2;
        }
    }
    printf("records %" PRIu64 "..%" PRIu64 ":", first, first + count - (count > 0));
    for (int j = 0; j < r; j++) printf(" %" PRIu64, sent[j]);
    printf(" to sorters 1..%d\n", r);
    return 0;
}
