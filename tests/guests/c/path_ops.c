/*
 * path_ops.c - run a list of file operations given on the command line and
 * print one line per operation, so that a test can compare the whole output.
 *
 *   path_ops.wasm OP ARGS... [OP ARGS...]...
 *
 * Each operation prints "<op> <args...>: <result>", the arguments escaped
 * like "read" output (below); <result> is "ok" for a successful
 * modification, the data asked for, or the errno name (check.h's
 * errno_name, e.g. "ENOENT") of the call that failed.
 *
 *   read P           whole file, escaped: printable ASCII as is, "\\" for a
 *                    backslash, "\n", "\t", other bytes as "\xHH"
 *   hex P N          read exactly N bytes (several reads if needed), as hex;
 *                    a short read prints the bytes got and then " EOF"
 *   write P DATA     open(O_WRONLY|O_CREAT|O_TRUNC) and write DATA
 *   append P DATA    open(O_WRONLY|O_APPEND) (no O_CREAT) and write DATA
 *   create P         open(O_WRONLY|O_CREAT|O_EXCL), write nothing
 *   mkdir P | rmdir P | unlink P
 *   rename A B | link A B | symlink TARGET LINK
 *   readlink P       the target
 *   ls P             names in directory P (without . and ..) sorted, joined
 *                    by ","; a directory gets a "/" suffix, a symlink "@", a
 *                    character device "%"; "(empty)" for none
 *   stat P | lstat P "dir", "file <size>", "symlink <size>", "chardev" or
 *                    "other"
 *   truncate P N     truncate(P, N)
 *   utime P          utimensat(P) with fixed times
 *
 * Exit 0 after all operations (whatever they returned); exit 2 on a usage
 * error (unknown operation or missing argument).
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char buf[1 << 20];

static void print_escaped(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == '\\')
            fputs("\\\\", stdout);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c >= 0x20 && c < 0x7f)
            putchar(c);
        else
            printf("\\x%02x", c);
    }
}

static void fail(void) { printf("%s\n", errno_name(errno)); }

static void done(int rc) {
    if (rc == 0)
        printf("ok\n");
    else
        fail();
}

static void op_read(const char *p) {
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return fail();
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return fail();
        }
        if (n == 0 || len + (size_t)n == sizeof buf) {
            len += (size_t)n;
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    print_escaped((const unsigned char *)buf, len);
    putchar('\n');
}

static void op_hex(const char *p, size_t want) {
    if (want > sizeof buf)
        want = sizeof buf;
    int fd = open(p, O_RDONLY);
    if (fd < 0)
        return fail();
    size_t got = 0;
    int eof = 0;
    while (got < want) {
        ssize_t n = read(fd, buf + got, want - got);
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return fail();
        }
        if (n == 0) {
            eof = 1;
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    for (size_t i = 0; i < got; i++)
        printf("%02x", (unsigned char)buf[i]);
    printf("%s\n", eof ? " EOF" : "");
}

static void op_write(const char *p, int flags, const char *data) {
    int fd = open(p, flags, 0644);
    if (fd < 0)
        return fail();
    size_t len = data ? strlen(data) : 0;
    if (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n != (ssize_t)len) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            errno = e;
            return fail();
        }
    }
    done(close(fd));
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void op_ls(const char *p) {
    DIR *d = opendir(p);
    if (d == NULL)
        return fail();
    char *names[512];
    size_t count = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (count == sizeof names / sizeof names[0])
            break;
        const char *suffix = de->d_type == DT_DIR   ? "/"
                             : de->d_type == DT_LNK ? "@"
                             : de->d_type == DT_CHR ? "%"
                                                    : "";
        size_t len = strlen(de->d_name) + strlen(suffix) + 1;
        names[count] = malloc(len);
        CHECK(names[count] != NULL);
        snprintf(names[count], len, "%s%s", de->d_name, suffix);
        count++;
    }
    int e = errno;
    closedir(d);
    if (e != 0) {
        errno = e;
        return fail();
    }
    qsort(names, count, sizeof names[0], cmp_names);
    if (count == 0)
        printf("(empty)");
    for (size_t i = 0; i < count; i++) {
        printf("%s%s", i ? "," : "", names[i]);
        free(names[i]);
    }
    putchar('\n');
}

static void op_stat(const char *p, int follow) {
    struct stat st;
    if ((follow ? stat(p, &st) : lstat(p, &st)) != 0)
        return fail();
    if (S_ISDIR(st.st_mode))
        printf("dir\n");
    else if (S_ISREG(st.st_mode))
        printf("file %lld\n", (long long)st.st_size);
    else if (S_ISLNK(st.st_mode))
        printf("symlink %lld\n", (long long)st.st_size);
    else if (S_ISCHR(st.st_mode))
        printf("chardev\n");
    else
        printf("other\n");
}

static void op_readlink(const char *p) {
    ssize_t n = readlink(p, buf, sizeof buf - 1);
    if (n < 0)
        return fail();
    buf[n] = '\0';
    printf("%s\n", buf);
}

int main(int argc, char **argv) {
    int i = 1;
    while (i < argc) {
        const char *op = argv[i++];
        int nargs;
        if (strcmp(op, "write") == 0 || strcmp(op, "append") == 0 ||
            strcmp(op, "rename") == 0 || strcmp(op, "link") == 0 ||
            strcmp(op, "symlink") == 0 || strcmp(op, "hex") == 0 ||
            strcmp(op, "truncate") == 0)
            nargs = 2;
        else if (strcmp(op, "read") == 0 || strcmp(op, "create") == 0 ||
                 strcmp(op, "mkdir") == 0 || strcmp(op, "rmdir") == 0 ||
                 strcmp(op, "unlink") == 0 || strcmp(op, "readlink") == 0 ||
                 strcmp(op, "ls") == 0 || strcmp(op, "stat") == 0 ||
                 strcmp(op, "lstat") == 0 || strcmp(op, "utime") == 0)
            nargs = 1;
        else {
            fprintf(stderr, "path_ops: unknown operation `%s`\n", op);
            return 2;
        }
        if (i + nargs > argc) {
            fprintf(stderr, "path_ops: `%s` needs %d arguments\n", op, nargs);
            return 2;
        }
        const char *a = argv[i], *b = nargs > 1 ? argv[i + 1] : NULL;
        i += nargs;
        printf("%s ", op);
        print_escaped((const unsigned char *)a, strlen(a));
        if (b != NULL) {
            putchar(' ');
            print_escaped((const unsigned char *)b, strlen(b));
        }
        printf(": ");
        fflush(stdout);
        errno = 0;
        if (strcmp(op, "read") == 0)
            op_read(a);
        else if (strcmp(op, "hex") == 0)
            op_hex(a, (size_t)strtoul(b, NULL, 10));
        else if (strcmp(op, "write") == 0)
            op_write(a, O_WRONLY | O_CREAT | O_TRUNC, b);
        else if (strcmp(op, "append") == 0)
            op_write(a, O_WRONLY | O_APPEND, b);
        else if (strcmp(op, "create") == 0)
            op_write(a, O_WRONLY | O_CREAT | O_EXCL, NULL);
        else if (strcmp(op, "mkdir") == 0)
            done(mkdir(a, 0755));
        else if (strcmp(op, "rmdir") == 0)
            done(rmdir(a));
        else if (strcmp(op, "unlink") == 0)
            done(unlink(a));
        else if (strcmp(op, "rename") == 0)
            done(rename(a, b));
        else if (strcmp(op, "link") == 0)
            done(link(a, b));
        else if (strcmp(op, "symlink") == 0)
            done(symlink(a, b));
        else if (strcmp(op, "readlink") == 0)
            op_readlink(a);
        else if (strcmp(op, "ls") == 0)
            op_ls(a);
        else if (strcmp(op, "stat") == 0)
            op_stat(a, 1);
        else if (strcmp(op, "lstat") == 0)
            op_stat(a, 0);
        else if (strcmp(op, "truncate") == 0)
            done(truncate(a, (off_t)strtoll(b, NULL, 10)));
        else if (strcmp(op, "utime") == 0) {
            struct timespec t[2] = {{.tv_sec = 1000000000, .tv_nsec = 0},
                                    {.tv_sec = 1000000000, .tv_nsec = 0}};
            done(utimensat(AT_FDCWD, a, t, 0));
        }
        fflush(stdout);
    }
    return 0;
}
