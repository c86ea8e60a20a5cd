/* Writes a new version of everything a run can change, for the transaction tests.
 *
 *   versions TAG OUTPUTS BYTES [EXIT]
 *
 * - output channels /dev/out1 .. /dev/out<OUTPUTS>: "TAG <i>\n" then BYTES-long filler of
 *   TAG's first letter;
 * - if /data (a writable mount) exists: /data/a becomes "TAG a", /data/b is removed,
 *   /data/c is created as "TAG c", /data/sub/d becomes "TAG d";
 * - if /out is exported: /out/x holds "TAG x";
 * then exits with EXIT (default 0). Used with a crash injected between any two steps of
 * the commit, every output must end entirely old or entirely new, all agreeing. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

int main(int argc, char **argv) {
    CHECK(argc >= 4);
    const char *tag = argv[1];
    int outputs = atoi(argv[2]);
    long bytes = atol(argv[3]);
    int code = argc > 4 ? atoi(argv[4]) : 0;

    char *filler = malloc(bytes + 1);
    CHECK(filler != NULL);
    memset(filler, tag[0], bytes);
    filler[bytes] = 0;
    for (int i = 1; i <= outputs; i++) {
        char path[32];
        snprintf(path, sizeof path, "/dev/out%d", i);
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        CHECK(fprintf(f, "%s %d\n", tag, i) > 0);
        CHECK(fwrite(filler, 1, bytes, f) == (size_t)bytes);
        CHECK(fclose(f) == 0);
    }

    struct stat st;
    if (stat("/data", &st) == 0) {
        char text[64];
        snprintf(text, sizeof text, "%s a", tag);
        put("/data/a", text);
        CHECK(unlink("/data/b") == 0);
        snprintf(text, sizeof text, "%s c", tag);
        put("/data/c", text);
        snprintf(text, sizeof text, "%s d", tag);
        put("/data/sub/d", text);
    }
    if (mkdir("/out", 0755) == 0) {
        char text[64];
        snprintf(text, sizeof text, "%s x", tag);
        put("/out/x", text);
    } else {
        CHECK(errno == EEXIST);
    }
    return code;
}
