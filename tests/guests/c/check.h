/*
 * check.h - tiny shared helpers for the zvm C guest programs.
 *
 * CHECK(cond): if cond is false, print
 *     FAIL <file>:<line>: <cond> (errno=<n> <strerror>)
 * to stderr and exit(1).  errno is captured right after cond is evaluated,
 * so CHECK(open(...) >= 0) reports the errno of the failed call.
 *
 * CHECK_ERRNO(expr, err): expr must evaluate to -1 with errno == err
 * (the failure message shows the errno actually seen; if expr did not
 * return -1 it is usually 0).
 *
 * pass(): print "ok\n" to stdout and return 0 from main (use as
 * `return pass();`).
 *
 * errno_name(e): symbolic name ("ENOENT", ...) for an errno value, or its
 * decimal value for ones not in the table.  Note: errno values in WASI are
 * WASI's own numbering (e.g. ENOENT == 44), not Linux's.
 */
#ifndef ZVM_GUEST_CHECK_H
#define ZVM_GUEST_CHECK_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __FILE_NAME__
#define CHECK_FILE __FILE_NAME__
#else
#define CHECK_FILE __FILE__
#endif

static inline void check_fail(const char *file, int line, const char *what,
                              int err) {
    fprintf(stderr, "FAIL %s:%d: %s (errno=%d %s)\n", file, line, what, err,
            strerror(err));
    exit(1);
}

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond))                                                         \
            check_fail(CHECK_FILE, __LINE__, #cond, errno);                  \
    } while (0)

/* expr is stringified here, before wasi-libc macros such as lseek() are
 * expanded in it. */
#define CHECK_ERRNO(expr, err)                                               \
    do {                                                                     \
        errno = 0;                                                           \
        long long check_ret_ = (long long)(expr);                            \
        if (check_ret_ != -1 || errno != (err))                              \
            check_fail(CHECK_FILE, __LINE__,                                 \
                       #expr " == -1 && errno == " #err, errno);             \
    } while (0)

static inline int pass(void) {
    fputs("ok\n", stdout);
    fflush(stdout);
    return 0;
}

static inline const char *errno_name(int e) {
    static char buf[16];
    switch (e) {
#define ZVM_E(x) case x: return #x;
        ZVM_E(EACCES) ZVM_E(EAGAIN) ZVM_E(EBADF) ZVM_E(EBUSY)
        ZVM_E(EDQUOT) ZVM_E(EEXIST) ZVM_E(EFAULT) ZVM_E(EFBIG)
        ZVM_E(EINTR) ZVM_E(EINVAL) ZVM_E(EIO) ZVM_E(EISDIR)
        ZVM_E(ELOOP) ZVM_E(EMFILE) ZVM_E(EMLINK) ZVM_E(ENAMETOOLONG)
        ZVM_E(ENFILE) ZVM_E(ENODEV) ZVM_E(ENOENT) ZVM_E(ENOMEM)
        ZVM_E(ENOSPC) ZVM_E(ENOSYS) ZVM_E(ENOTDIR) ZVM_E(ENOTEMPTY)
        ZVM_E(ENOTSUP) ZVM_E(ENXIO) ZVM_E(EOVERFLOW) ZVM_E(EPERM)
        ZVM_E(EPIPE) ZVM_E(EROFS) ZVM_E(ESPIPE) ZVM_E(EXDEV)
#ifdef ENOTCAPABLE
        ZVM_E(ENOTCAPABLE)
#endif
#undef ZVM_E
    default:
        snprintf(buf, sizeof buf, "%d", e);
        return buf;
    }
}

#endif /* ZVM_GUEST_CHECK_H */
