/*
 * time_random.c - print virtual clocks and seeded randomness.
 *
 * Prints on stdout, one item per line:
 *     realtime=<sec>.<nsec 9 digits>      x3  clock_gettime(CLOCK_REALTIME)
 *     monotonic=<sec>.<nsec 9 digits>     x3  clock_gettime(CLOCK_MONOTONIC)
 *     time=<sec>                              time(NULL)
 *     getentropy=<32 hex digits>              getentropy(16 bytes)
 *     urandom=<32 hex digits>                 16 bytes read from /dev/urandom
 *     random=<32 hex digits>                  16 bytes read from /dev/random
 *     sleep=0                                 nanosleep(1.5 s) return value
 *     monotonic=<sec>.<nsec>                  CLOCK_MONOTONIC after the sleep
 *     slept=<sec>.<nsec>                      monotonic difference across it
 *
 * Expects: with zvm's virtual clocks and seeded randomness two runs with the
 * same manifest print identical bytes; realtime starts at the manifest's
 * start time; clock values never go backwards; the run finishes without
 * waiting 1.5 s of real time.  Self-check: if the monotonic clock moved by
 * less than 1.5 s across the sleep, or went backwards, prints
 * "FAIL ..." to stderr and exits 1; otherwise exits 0.
 */
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static long long ns_of(const struct timespec *ts) {
    return (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

static void print_ts(const char *label, const struct timespec *ts) {
    printf("%s=%lld.%09ld\n", label, (long long)ts->tv_sec, (long)ts->tv_nsec);
}

static void print_hex(const char *label, const unsigned char *b, size_t n) {
    printf("%s=", label);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
}

static void read_dev(const char *path, unsigned char *b, size_t n) {
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        CHECK(r > 0);
        got += (size_t)r;
    }
    CHECK(close(fd) == 0);
}

int main(void) {
    struct timespec ts, prev;

    CHECK(clock_gettime(CLOCK_REALTIME, &prev) == 0);
    print_ts("realtime", &prev);
    for (int i = 1; i < 3; i++) {
        CHECK(clock_gettime(CLOCK_REALTIME, &ts) == 0);
        print_ts("realtime", &ts);
        CHECK(ns_of(&ts) >= ns_of(&prev));
        prev = ts;
    }

    CHECK(clock_gettime(CLOCK_MONOTONIC, &prev) == 0);
    print_ts("monotonic", &prev);
    for (int i = 1; i < 3; i++) {
        CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
        print_ts("monotonic", &ts);
        CHECK(ns_of(&ts) >= ns_of(&prev));
        prev = ts;
    }

    time_t now = time(NULL);
    CHECK(now != (time_t)-1);
    printf("time=%lld\n", (long long)now);

    unsigned char b[16];
    CHECK(getentropy(b, sizeof b) == 0);
    print_hex("getentropy", b, sizeof b);
    read_dev("/dev/urandom", b, sizeof b);
    print_hex("urandom", b, sizeof b);
    read_dev("/dev/random", b, sizeof b);
    print_hex("random", b, sizeof b);

    struct timespec before, after;
    struct timespec req = {.tv_sec = 1, .tv_nsec = 500000000L};
    CHECK(clock_gettime(CLOCK_MONOTONIC, &before) == 0);
    int r = nanosleep(&req, NULL);
    printf("sleep=%d\n", r);
    CHECK(r == 0);
    CHECK(clock_gettime(CLOCK_MONOTONIC, &after) == 0);
    print_ts("monotonic", &after);
    long long slept = ns_of(&after) - ns_of(&before);
    printf("slept=%lld.%09lld\n", slept / 1000000000LL, slept % 1000000000LL);
    fflush(stdout);
    CHECK(slept >= 1500000000LL);
    return 0;
}
