/*
 * many_files.c - exhaust the guest's file descriptor table.
 *
 * Opens /dev/null again and again without closing until open() fails, then
 * prints "opened=<n> errno=<name>" on stdout, where n counts the successful
 * opens (stdin/stdout/stderr and preopens are not included).
 *
 * Expects: errno EMFILE (or ENFILE), with n a little below zvm's
 * descriptor limit; exit 0.  As a safety net it stops after 2^20 opens and
 * prints "errno=none" (no limit enforced).
 */
#include <fcntl.h>
#include <unistd.h>

#include "check.h"

int main(void) {
    unsigned long opened = 0;
    const char *why = "none";
    while (opened < (1UL << 20)) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0) {
            why = errno_name(errno);
            break;
        }
        opened++;
    }
    printf("opened=%lu errno=%s\n", opened, why);
    return 0;
}
