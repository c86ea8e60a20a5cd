/*
 * escape.c - self-checking: the guest cannot reach host files.
 *
 *   escape.wasm [HOST_PATH [MOUNT]]
 *
 * HOST_PATH: absolute path of a file that exists on the host (not in the
 *            guest tree); opening it must fail.
 * MOUNT:     guest path where a writable host directory is mounted
 *            (e.g. /data); escapes through it must fail.
 *
 * Checks (every open() must return -1):
 *   - open("../etc/passwd"), open("/etc/passwd"), open("/proc/self/environ")
 *   - open("/../etc/passwd") fails with ENOENT: ".." at the guest root is
 *     the root itself, and the guest tree has no /etc.
 *     (Note: wasi-libc turns both "../etc/passwd" (cwd "/") and
 *     "/../etc/passwd" into path_open(<"/" preopen>, "../etc/passwd"), so
 *     zvm must clamp ".." at the root rather than reject it for this check.)
 *   - open(HOST_PATH)
 *   - scratch symlink /tmp/l -> /etc/passwd: open("/tmp/l") fails with
 *     ENOENT (the absolute target is resolved inside the guest tree).
 *     If zvm refuses to create symlinks with absolute targets, that is
 *     accepted too (reported on stderr).
 *   - scratch symlink /tmp/up -> ../../../../.. : open("/tmp/up/etc/passwd")
 *   - with MOUNT: open("MOUNT/../../etc/passwd"), and symlinks created inside
 *     MOUNT pointing to "/etc/passwd" and "../../../etc/passwd" cannot be
 *     opened (creating them may also be refused).  The symlinks are removed
 *     again so the host directory is left as it was.
 * Diagnostics (which errno each case got) go to stderr; stdout is "ok".
 * Exit 0 on success, 1 on the first failed check.
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

/* open(path) must fail; returns the errno it failed with. */
static int must_not_open(const char *path) {
    errno = 0;
    int fd = open(path, O_RDONLY);
    int e = errno;
    if (fd >= 0) {
        fprintf(stderr, "FAIL escape.c: open(\"%s\") succeeded (fd %d)\n", path, fd);
        exit(1);
    }
    fprintf(stderr, "open(\"%s\") -> %s\n", path, errno_name(e));
    errno = e;
    return e;
}

/* Try symlink(target, link); if created, opening it must fail.  Returns the
 * errno of the failed open, or -1 if the symlink could not be created. */
static int check_symlink(const char *target, const char *link, const char *open_path) {
    if (symlink(target, link) != 0) {
        fprintf(stderr, "symlink(\"%s\", \"%s\") refused: %s\n", target, link,
                errno_name(errno));
        return -1;
    }
    int e = must_not_open(open_path);
    CHECK(unlink(link) == 0);
    return e;
}

int main(int argc, char **argv) {
    const char *host_path = argc > 1 ? argv[1] : NULL;
    const char *mount = argc > 2 ? argv[2] : NULL;

    must_not_open("../etc/passwd");
    CHECK(must_not_open("/../etc/passwd") == ENOENT);
    must_not_open("/etc/passwd");
    must_not_open("/etc");
    must_not_open("/proc/self/environ");
    if (host_path != NULL)
        must_not_open(host_path);

    CHECK(mkdir("/tmp", 0755) == 0 || errno == EEXIST);

    int e = check_symlink("/etc/passwd", "/tmp/l", "/tmp/l");
    CHECK(e == -1 || e == ENOENT);

    CHECK(symlink("../../../../..", "/tmp/up") == 0);
    must_not_open("/tmp/up/etc/passwd");
    if (host_path != NULL) {
        /* HOST_PATH again, via a symlink that climbs "above" the root. */
        char p[4096];
        snprintf(p, sizeof p, "/tmp/up%s", host_path);
        must_not_open(p);
    }
    CHECK(unlink("/tmp/up") == 0);

    if (mount != NULL) {
        char p[4096], link[4096];
        snprintf(p, sizeof p, "%s/../../etc/passwd", mount);
        must_not_open(p);
        snprintf(p, sizeof p, "%s/../../../../../../etc/passwd", mount);
        must_not_open(p);

        snprintf(link, sizeof link, "%s/zvm_escape_abs", mount);
        check_symlink("/etc/passwd", link, link);
        snprintf(link, sizeof link, "%s/zvm_escape_rel", mount);
        check_symlink("../../../etc/passwd", link, link);
        snprintf(link, sizeof link, "%s/zvm_escape_up", mount);
        snprintf(p, sizeof p, "%s/zvm_escape_up/etc/passwd", mount);
        check_symlink("../../../../../../../..", link, p);
        if (host_path != NULL) {
            snprintf(link, sizeof link, "%s/zvm_escape_host", mount);
            check_symlink(host_path, link, link);
        }
    }

    return pass();
}
