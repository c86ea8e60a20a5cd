/*
 * quota.c - hit a channel quota and report where it stopped.
 *
 *   quota.wasm SCENARIO [CHUNK]
 *
 * Uses raw read()/write() (no stdio buffering on the channel).  CHUNK is the
 * size of each read/write call in bytes (default 1).  Output on stdout:
 *
 *   write-bytes   write CHUNK-byte pieces to /dev/output until write() fails;
 *                 prints "written=<bytes accepted> errno=<name>"
 *   write-calls   same, prints "calls=<successful write calls> errno=<name>"
 *   read-bytes    read /dev/input CHUNK bytes at a time until read() fails or
 *                 returns 0; prints "read=<bytes> errno=<name, or 0 at EOF>"
 *   read-calls    same, prints "calls=<successful read calls that returned
 *                 data> errno=<name, or 0 at EOF>"
 *
 * Expected: the errno is EDQUOT when a quota stops the loop.  errno names
 * come from check.h (EDQUOT, ENOSPC, EBADF, EIO and other common ones;
 * unknown values are printed as WASI errno numbers).  A partial write
 * (fewer bytes than asked) is counted and the loop goes on, so the byte
 * count is exact.  As a safety net the write loops stop after 2^26 calls
 * or 1 GiB and then print "errno=none" (no quota was enforced).  Exit 0;
 * exit 2 on bad arguments, 1 if the channel cannot be opened.
 */
#include <fcntl.h>
#include <unistd.h>

#include "check.h"

#define MAX_CALLS (1ULL << 26)
#define MAX_BYTES (1ULL << 30)

static char buf[1 << 20];

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    long chunk = argc > 2 ? strtol(argv[2], NULL, 10) : 1;
    if (chunk < 1 || chunk > (long)sizeof buf) {
        fprintf(stderr, "quota: bad chunk size\n");
        return 2;
    }
    memset(buf, 'x', sizeof buf);

    int writing, count_calls;
    if (strcmp(mode, "write-bytes") == 0) {
        writing = 1;
        count_calls = 0;
    } else if (strcmp(mode, "write-calls") == 0) {
        writing = 1;
        count_calls = 1;
    } else if (strcmp(mode, "read-bytes") == 0) {
        writing = 0;
        count_calls = 0;
    } else if (strcmp(mode, "read-calls") == 0) {
        writing = 0;
        count_calls = 1;
    } else {
        fprintf(stderr, "usage: quota write-bytes|write-calls|read-bytes|read-calls [CHUNK]\n");
        return 2;
    }

    const char *path = writing ? "/dev/output" : "/dev/input";
    int fd = open(path, writing ? O_WRONLY : O_RDONLY);
    CHECK(fd >= 0);

    unsigned long long bytes = 0, calls = 0;
    const char *why = "none";
    while (!writing || (calls < MAX_CALLS && bytes < MAX_BYTES)) {
        ssize_t n = writing ? write(fd, buf, (size_t)chunk)
                            : read(fd, buf, (size_t)chunk);
        if (n < 0) {
            why = errno_name(errno);
            break;
        }
        if (n == 0) {
            /* EOF on read; a 0-byte write would loop forever, stop too. */
            why = "0";
            break;
        }
        bytes += (unsigned long long)n;
        calls++;
    }

    if (count_calls)
        printf("calls=%llu errno=%s\n", calls, why);
    else
        printf("%s=%llu errno=%s\n", writing ? "written" : "read", bytes, why);
    return 0;
}
