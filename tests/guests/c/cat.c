/*
 * cat.c - copy input to stdout with raw read()/write() in 64 KiB chunks.
 *
 *   cat.wasm              copies stdin to stdout
 *   cat.wasm F1 F2 ...    copies each named file in turn ("-" means stdin)
 *
 * Expects: stdout is byte-for-byte the concatenation of the inputs, exit 0.
 * On an error, prints "cat: <name>: <strerror>" to stderr, carries on with
 * the next file and exits 1 at the end.  A failed write to stdout (e.g. a
 * write quota hit) ends the program at once with exit 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

static char buf[CHUNK];

/* Returns 0 on success, -1 on a read error, -2 on a write error. */
static int copy_fd(int fd) {
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = write(STDOUT_FILENO, buf + off, (size_t)(n - off));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return -2;
            }
            off += w;
        }
    }
}

static void complain(const char *name, int err) {
    fprintf(stderr, "cat: %s: %s\n", name, strerror(err));
}

int main(int argc, char **argv) {
    int status = 0;

    if (argc < 2) {
        int r = copy_fd(STDIN_FILENO);
        if (r == -1) {
            complain("stdin", errno);
            return 1;
        }
        if (r == -2) {
            complain("stdout", errno);
            return 1;
        }
        return 0;
    }

    for (int i = 1; i < argc; i++) {
        const char *name = argv[i];
        int fd = strcmp(name, "-") == 0 ? STDIN_FILENO : open(name, O_RDONLY);
        if (fd < 0) {
            complain(name, errno);
            status = 1;
            continue;
        }
        int r = copy_fd(fd);
        if (r == -1) {
            complain(name, errno);
            status = 1;
        } else if (r == -2) {
            complain("stdout", errno);
            return 1;
        }
        if (fd != STDIN_FILENO)
            close(fd);
    }
    return status;
}
