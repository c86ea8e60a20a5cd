// A program with an expensive initialisation before it opens its script, for the snapshot
// tests: it reads the clock, randomness, environment and (if there is one) the size of
// /dev/config before /dev/script, and again after, so that a run from a snapshot must
// continue the world exactly where a plain start would be.
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static unsigned table[1 << 16];

static long long now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    (void)argv;
    for (int round = 0; round < 300; round++)
        for (unsigned i = 0; i < (1u << 16); i++)
            table[i] = table[i] * 31u + i + (unsigned)round;
    long long t0 = now();
    unsigned r0 = 0;
    getentropy(&r0, sizeof r0);
    const char *greeting = getenv("GREETING");
    struct stat st;
    long long config = stat("/dev/config", &st) == 0 ? (long long)st.st_size : -1;

    FILE *script = fopen("/dev/script", "r");  // the snapshot point
    if (!script) {
        perror("/dev/script");
        return 2;
    }
    FILE *out = fopen("/dev/output", "w");
    char line[512];
    unsigned long long sum = 0;
    int lines = 0;
    while (fgets(line, sizeof line, script)) {
        lines++;
        for (char *p = line; *p; p++)
            sum = sum * 131u + (unsigned char)*p + table[(unsigned char)*p];
        if (out)
            fprintf(out, "%d: %s", lines, line);
    }
    long long t1 = now();
    unsigned r1 = 0;
    getentropy(&r1, sizeof r1);
    printf("args=%d lines=%d sum=%llu t0=%lld r0=%u greeting=%s config=%lld t1=%lld r1=%u\n",
           argc, lines, sum, t0, r0, greeting ? greeting : "-", config, t1, r1);
    return lines == 0 ? 3 : 0;
}
