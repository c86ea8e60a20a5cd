/* zvm bench pipe guest: moves bytes through a pipe as fast as it can, built both for
 * wasm32-wasi (two VMs of a job, /dev/out/b and /dev/in/a) and natively (two processes joined
 * by a Unix pipe, /dev/stdout and /dev/stdin).
 *   pipe write PATH BYTES   writes BYTES bytes to PATH in 64 KiB writes
 *   pipe read PATH          reads PATH to its end; prints the byte count */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char buf[65536];

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    if (strcmp(argv[1], "write") == 0 && argc > 3) {
        int fd = open(argv[2], O_WRONLY);
        if (fd < 0)
            return 3;
        long long left = atoll(argv[3]);
        memset(buf, 'p', sizeof buf);
        while (left > 0) {
            size_t n = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
            ssize_t w = write(fd, buf, n);
            if (w <= 0)
                return 4;
            left -= w;
        }
        return close(fd) == 0 ? 0 : 5;
    }
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0)
        return 3;
    long long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0)
            return 4;
        if (n == 0)
            break;
        total += n;
    }
    printf("%lld\n", total);
    return 0;
}
