/*
 * scratch.c - the in-memory read-write scratch tree at "/".
 *
 *   scratch.wasm                 full tour (below), prints "ok"
 *   scratch.wasm check-absent    only checks that /tmp/persist.txt does not
 *                                exist (stat fails with ENOENT), prints "ok"
 *   scratch.wasm fill            writes 64 KiB chunks to /tmp/big until
 *                                write() fails; prints "errno=<name>"
 *                                (expected "errno=ENOSPC": the scratch size
 *                                limit).  Prints "errno=none" if 1 GiB was
 *                                written without an error.  The byte count
 *                                goes to stderr.  Exit 0.
 *
 * Full tour (self-checking, "FAIL ..." on stderr + exit 1 on a failure):
 *   /tmp/persist.txt must not exist at start; mkdir /tmp (EEXIST tolerated)
 *   and /tmp/a; create /tmp/a/f with known content; stat size; readdir
 *   /tmp/a lists exactly "f" (plus "." and ".." if present); rename to
 *   /tmp/a/g (f gone, g has the content); unlink g; rmdir /tmp/a; finally
 *   write /tmp/persist.txt.  Running the tour (or check-absent) again in a
 *   new zvm run proves the scratch tree is discarded at exit.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static const char content[] = "scratch content\n";

static void write_file(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    size_t len = strlen(data);
    CHECK(write(fd, data, len) == (ssize_t)len);
    CHECK(close(fd) == 0);
}

static void check_file(const char *path, const char *data) {
    char buf[256];
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    ssize_t n = read(fd, buf, sizeof buf);
    CHECK(n == (ssize_t)strlen(data));
    CHECK(memcmp(buf, data, (size_t)n) == 0);
    CHECK(close(fd) == 0);
}

static void check_absent(const char *path) {
    struct stat st;
    CHECK_ERRNO(stat(path, &st), ENOENT);
}

static int tour(void) {
    struct stat st;

    check_absent("/tmp/persist.txt");
    CHECK(mkdir("/tmp", 0755) == 0 || errno == EEXIST);
    CHECK(mkdir("/tmp/a", 0755) == 0);
    CHECK(stat("/tmp/a", &st) == 0);
    CHECK(S_ISDIR(st.st_mode));

    write_file("/tmp/a/f", content);
    CHECK(stat("/tmp/a/f", &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK(st.st_size == (off_t)strlen(content));
    check_file("/tmp/a/f", content);

    DIR *d = opendir("/tmp/a");
    CHECK(d != NULL);
    int entries = 0, seen_f = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        entries++;
        if (strcmp(de->d_name, "f") == 0)
            seen_f = 1;
    }
    CHECK(errno == 0);
    CHECK(closedir(d) == 0);
    CHECK(entries == 1 && seen_f);

    CHECK(rename("/tmp/a/f", "/tmp/a/g") == 0);
    check_absent("/tmp/a/f");
    check_file("/tmp/a/g", content);

    CHECK(unlink("/tmp/a/g") == 0);
    check_absent("/tmp/a/g");
    CHECK(rmdir("/tmp/a") == 0);
    check_absent("/tmp/a");

    write_file("/tmp/persist.txt", "should not survive the run\n");
    check_file("/tmp/persist.txt", "should not survive the run\n");
    return pass();
}

static int fill(void) {
    static char chunk[64 * 1024];
    const unsigned long long cap = 1ULL << 30;
    memset(chunk, 'F', sizeof chunk);

    CHECK(mkdir("/tmp", 0755) == 0 || errno == EEXIST);
    int fd = open("/tmp/big", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    unsigned long long total = 0;
    const char *why = "none";
    while (total < cap) {
        ssize_t n = write(fd, chunk, sizeof chunk);
        if (n < 0) {
            why = errno_name(errno);
            break;
        }
        if (n == 0) {
            why = "zero-write";
            break;
        }
        total += (unsigned long long)n;
    }
    fprintf(stderr, "wrote %llu bytes\n", total);
    printf("errno=%s\n", why);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "check-absent") == 0) {
        check_absent("/tmp/persist.txt");
        return pass();
    }
    if (strcmp(mode, "fill") == 0)
        return fill();
    if (mode[0] == '\0')
        return tour();
    fprintf(stderr, "usage: scratch [check-absent|fill]\n");
    return 2;
}
