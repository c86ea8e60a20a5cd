/*
 * wc.c - count lines, words and bytes of a channel.
 *
 *   wc.wasm [INPUT [OUTPUT]]
 *
 * Reads INPUT (default /dev/input) with raw read() and writes one line
 *     "<lines> <words> <bytes>\n"
 * to OUTPUT (default /dev/output).  Lines are counted as '\n' bytes, words
 * as maximal runs of non-whitespace (isspace() in the C locale), like wc(1).
 * OUTPUT is opened O_WRONLY; if it does not exist it is created
 * (O_CREAT|O_TRUNC), so a scratch path works too.
 *
 * Expects: the output line above, nothing on stdout, exit 0.  On any error a
 * message "wc: ..." goes to stderr and the exit code is 2.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char buf[64 * 1024];

static void die(const char *what, const char *name) {
    fprintf(stderr, "wc: %s %s: %s\n", what, name, strerror(errno));
    exit(2);
}

int main(int argc, char **argv) {
    const char *in = argc > 1 ? argv[1] : "/dev/input";
    const char *out = argc > 2 ? argv[2] : "/dev/output";

    int ifd = open(in, O_RDONLY);
    if (ifd < 0)
        die("cannot open", in);

    unsigned long long lines = 0, words = 0, bytes = 0;
    int in_word = 0;
    for (;;) {
        ssize_t n = read(ifd, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0)
            die("cannot read", in);
        bytes += (unsigned long long)n;
        for (ssize_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)buf[i];
            if (c == '\n')
                lines++;
            if (isspace(c)) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                words++;
            }
        }
    }
    close(ifd);

    int ofd = open(out, O_WRONLY);
    if (ofd < 0 && errno == ENOENT)
        ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (ofd < 0)
        die("cannot open", out);

    char line[80];
    int len = snprintf(line, sizeof line, "%llu %llu %llu\n", lines, words, bytes);
    int off = 0;
    while (off < len) {
        ssize_t w = write(ofd, line + off, (size_t)(len - off));
        if (w < 0)
            die("cannot write", out);
        off += (int)w;
    }
    if (close(ofd) != 0)
        die("cannot close", out);
    return 0;
}
