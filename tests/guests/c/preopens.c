/*
 * preopens.c - list the preopened directories the runtime hands the guest.
 *
 *   preopens.wasm
 *
 * Calls fd_prestat_get / fd_prestat_dir_name (the raw WASI calls, not
 * wasi-libc's cached table) on fd 3, 4, ... until fd_prestat_get fails with
 * EBADF, and prints one line per preopen:
 *     <fd> <name>
 * then "end <errno name>" for the call that stopped the walk ("end EBADF").
 * Any other failure (a non-directory preopen type, dir_name failing) prints
 * "FAIL ..." to stderr and exits 1.  Exit 0 otherwise.
 */
#include <wasi/api.h>

#include "check.h"

int main(void) {
    for (__wasi_fd_t fd = 3;; fd++) {
        __wasi_prestat_t ps;
        __wasi_errno_t e = __wasi_fd_prestat_get(fd, &ps);
        if (e != 0) {
            printf("end %s\n", errno_name(e));
            break;
        }
        CHECK(ps.tag == __WASI_PREOPENTYPE_DIR);
        size_t len = ps.u.dir.pr_name_len;
        char name[4097];
        CHECK(len < sizeof name);
        e = __wasi_fd_prestat_dir_name(fd, (uint8_t *)name, (__wasi_size_t)len);
        errno = e;
        CHECK(e == 0);
        name[len] = '\0';
        printf("%u %s\n", (unsigned)fd, name);
    }
    return 0;
}
