/*
 * channel_modes.c - self-checking tests of the channel access modes.
 *
 *   channel_modes.wasm SCENARIO [CONTENT]
 *
 * Each scenario prints "ok" on stdout and exits 0, or prints
 * "FAIL <file>:<line>: <cond> (errno=...)" on stderr and exits 1.
 *
 *   seq-read [CONTENT]   /dev/input is a sequential read channel: read it
 *                        fully (if CONTENT is given it must match), a further
 *                        read returns 0, lseek() fails with ESPIPE (also
 *                        lseek(fd, 0, SEEK_CUR), which wasi-libc turns
 *                        into fd_tell).
 *   random-read CONTENT  /dev/input is a random-read channel whose content is
 *                        CONTENT: pread at offset 5 and at 0 return the right
 *                        bytes and do not move the file offset, lseek
 *                        SEEK_END returns strlen(CONTENT), lseek SEEK_SET 0 +
 *                        read returns CONTENT.
 *   seq-write            /dev/output is a sequential write channel: write
 *                        "abc" then "def" (the host file must end up
 *                        "abcdef"); lseek (incl. fd_tell) and pwrite fail
 *                        with ESPIPE; read fails with EBADF.
 *   random-write         /dev/output is a random-write channel: write
 *                        "hello world", pwrite "W" at offset 6; the host
 *                        file must end up "hello World".
 *   append               /dev/output opened O_WRONLY|O_APPEND: write
 *                        "tail\n"; F_GETFL shows O_APPEND.  The test checks
 *                        the host file is <previous content> + "tail\n".
 *   read-write CONTENT   /dev/output is a read-write channel holding CONTENT:
 *                        opened O_RDWR, read it fully (must equal CONTENT),
 *                        then pwrite "X" at offset 0; the host file must end
 *                        up as CONTENT with its first byte replaced by 'X'.
 */
#include <fcntl.h>
#include <unistd.h>

#include "check.h"

static char buf[64 * 1024];

/* Read fd until EOF into buf; returns the number of bytes read. */
static size_t read_all(int fd) {
    size_t len = 0;
    for (;;) {
        CHECK(len < sizeof buf);
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        CHECK(n >= 0);
        if (n == 0)
            return len;
        len += (size_t)n;
    }
}

static void write_str(int fd, const char *s) {
    size_t len = strlen(s);
    CHECK(write(fd, s, len) == (ssize_t)len);
}

static int seq_read(const char *expect) {
    int fd = open("/dev/input", O_RDONLY);
    CHECK(fd >= 0);
    size_t len = read_all(fd);
    if (expect != NULL) {
        CHECK(len == strlen(expect));
        CHECK(memcmp(buf, expect, len) == 0);
    }
    CHECK(read(fd, buf, sizeof buf) == 0);
    CHECK_ERRNO(lseek(fd, 0, SEEK_SET), ESPIPE);
    CHECK_ERRNO(lseek(fd, 0, SEEK_END), ESPIPE);
    /* wasi-libc turns lseek(fd, 0, SEEK_CUR) into fd_tell. */
    CHECK_ERRNO(lseek(fd, 0, SEEK_CUR), ESPIPE);
    CHECK(close(fd) == 0);
    return pass();
}

static int random_read(const char *content) {
    size_t clen = strlen(content);
    int fd = open("/dev/input", O_RDONLY);
    CHECK(fd >= 0);

    size_t want5 = clen > 5 ? clen - 5 : 0;
    ssize_t n = pread(fd, buf, sizeof buf, 5);
    CHECK(n == (ssize_t)want5);
    CHECK(memcmp(buf, content + (clen > 5 ? 5 : clen), want5) == 0);

    n = pread(fd, buf, sizeof buf, 0);
    CHECK(n == (ssize_t)clen);
    CHECK(memcmp(buf, content, clen) == 0);

    /* pread must not have moved the offset. */
    CHECK(lseek(fd, 0, SEEK_CUR) == 0);

    CHECK(lseek(fd, 0, SEEK_END) == (off_t)clen);
    CHECK(read(fd, buf, sizeof buf) == 0);

    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    size_t len = read_all(fd);
    CHECK(len == clen);
    CHECK(memcmp(buf, content, clen) == 0);
    CHECK(close(fd) == 0);
    return pass();
}

static int seq_write(void) {
    int fd = open("/dev/output", O_WRONLY);
    CHECK(fd >= 0);
    write_str(fd, "abc");
    write_str(fd, "def");
    CHECK_ERRNO(lseek(fd, 0, SEEK_SET), ESPIPE);
    CHECK_ERRNO(lseek(fd, 0, SEEK_CUR), ESPIPE); /* fd_tell */
    CHECK_ERRNO(pwrite(fd, "Z", 1, 0), ESPIPE);
    CHECK_ERRNO(read(fd, buf, 1), EBADF);
    CHECK(close(fd) == 0);
    return pass();
}

static int random_write(void) {
    int fd = open("/dev/output", O_WRONLY);
    CHECK(fd >= 0);
    write_str(fd, "hello world");
    CHECK(pwrite(fd, "W", 1, 6) == 1);
    /* pwrite must not have moved the offset. */
    CHECK(lseek(fd, 0, SEEK_CUR) == 11);
    CHECK(lseek(fd, 0, SEEK_END) == 11);
    CHECK(close(fd) == 0);
    return pass();
}

static int append(void) {
    int fd = open("/dev/output", O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    int fl = fcntl(fd, F_GETFL);
    CHECK(fl != -1);
    CHECK((fl & O_APPEND) != 0);
    write_str(fd, "tail\n");
    CHECK(close(fd) == 0);
    return pass();
}

static int read_write(const char *content) {
    size_t clen = strlen(content);
    int fd = open("/dev/output", O_RDWR);
    CHECK(fd >= 0);
    size_t len = read_all(fd);
    CHECK(len == clen);
    CHECK(memcmp(buf, content, clen) == 0);
    CHECK(pwrite(fd, "X", 1, 0) == 1);
    CHECK(pread(fd, buf, 1, 0) == 1);
    CHECK(buf[0] == 'X');
    CHECK(close(fd) == 0);
    return pass();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    const char *arg = argc > 2 ? argv[2] : NULL;

    if (strcmp(mode, "seq-read") == 0)
        return seq_read(arg);
    if (strcmp(mode, "random-read") == 0 && arg != NULL)
        return random_read(arg);
    if (strcmp(mode, "seq-write") == 0)
        return seq_write();
    if (strcmp(mode, "random-write") == 0)
        return random_write();
    if (strcmp(mode, "append") == 0)
        return append();
    if (strcmp(mode, "read-write") == 0 && arg != NULL)
        return read_write(arg);

    fprintf(stderr,
            "usage: channel_modes seq-read [CONTENT] | random-read CONTENT |"
            " seq-write | random-write | append | read-write CONTENT\n");
    return 2;
}
