/*
 * image_read.c - read a read-only tar image mounted in the guest tree.
 *
 *   image_read.wasm MNT          (e.g. MNT = /img)
 *
 * The image must contain:
 *     hello.txt            a regular file
 *     dir/                 a directory (containing at least nested.txt)
 *     dir/nested.txt       a regular file
 *     link -> hello.txt    a symlink
 *
 * Prints on stdout:
 *     == hello.txt
 *     <content of hello.txt>
 *     == dir
 *     <names in MNT/dir, sorted by strcmp, one per line, without . and ..>
 *     == dir/nested.txt
 *     <content of dir/nested.txt>
 *     == link
 *     readlink=<target of link>
 *     <content read through link; checked equal to hello.txt>
 *     write-existing=<errno name>    open(hello.txt, O_WRONLY)
 *     create=<errno name>            open(new file, O_WRONLY|O_CREAT)
 *     mkdir=<errno name>             mkdir(MNT/newdir)
 *     unlink=<errno name>            unlink(MNT/hello.txt)
 *     ok
 * A file's content is printed as is, followed by "\n" if it does not already
 * end with one.  Each modification must fail with EROFS, EACCES, EPERM or
 * ENOTCAPABLE (EROFS expected); the errno seen is printed.  A self-check
 * failure prints "FAIL ..." to stderr and exits 1.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char buf[64 * 1024];
static char path[4096];
static const char *mnt;

static const char *at(const char *rel) {
    snprintf(path, sizeof path, "%s/%s", mnt, rel);
    return path;
}

static size_t read_file(const char *p) {
    int fd = open(p, O_RDONLY);
    CHECK(fd >= 0);
    size_t len = 0;
    for (;;) {
        CHECK(len < sizeof buf);
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        CHECK(n >= 0);
        if (n == 0)
            break;
        len += (size_t)n;
    }
    CHECK(close(fd) == 0);
    return len;
}

static void print_content(size_t len) {
    fwrite(buf, 1, len, stdout);
    if (len == 0 || buf[len - 1] != '\n')
        putchar('\n');
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int read_only_errno(int e) {
    return e == EROFS || e == EACCES || e == EPERM
#ifdef ENOTCAPABLE
           || e == ENOTCAPABLE
#endif
        ;
}

static void report(const char *what, int rc) {
    int e = errno;
    CHECK(rc == -1);
    errno = e;
    CHECK(read_only_errno(e));
    printf("%s=%s\n", what, errno_name(e));
}

int main(int argc, char **argv) {
    struct stat st;
    if (argc < 2) {
        fprintf(stderr, "usage: image_read MNT\n");
        return 2;
    }
    mnt = argv[1];

    printf("== hello.txt\n");
    size_t hello_len = read_file(at("hello.txt"));
    static char hello[sizeof buf];
    memcpy(hello, buf, hello_len);
    print_content(hello_len);
    CHECK(stat(at("hello.txt"), &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK(st.st_size == (off_t)hello_len);

    printf("== dir\n");
    CHECK(stat(at("dir"), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    DIR *d = opendir(at("dir"));
    CHECK(d != NULL);
    char *names[256];
    size_t count = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        CHECK(count < sizeof names / sizeof names[0]);
        names[count] = strdup(de->d_name);
        CHECK(names[count] != NULL);
        count++;
    }
    CHECK(errno == 0);
    CHECK(closedir(d) == 0);
    qsort(names, count, sizeof names[0], cmp_names);
    for (size_t i = 0; i < count; i++)
        printf("%s\n", names[i]);

    printf("== dir/nested.txt\n");
    print_content(read_file(at("dir/nested.txt")));

    printf("== link\n");
    CHECK(lstat(at("link"), &st) == 0);
    CHECK(S_ISLNK(st.st_mode));
    char target[4096];
    ssize_t tl = readlink(at("link"), target, sizeof target - 1);
    CHECK(tl > 0);
    target[tl] = '\0';
    printf("readlink=%s\n", target);
    size_t link_len = read_file(at("link"));
    CHECK(link_len == hello_len);
    CHECK(memcmp(buf, hello, hello_len) == 0);
    print_content(link_len);

    report("write-existing", open(at("hello.txt"), O_WRONLY));
    report("create", open(at("new-file.txt"), O_WRONLY | O_CREAT, 0644));
    report("mkdir", mkdir(at("newdir"), 0755));
    report("unlink", unlink(at("hello.txt")));
    /* The failed operations must not have changed anything. */
    CHECK(read_file(at("hello.txt")) == hello_len);
    CHECK(memcmp(buf, hello, hello_len) == 0);
    CHECK_ERRNO(stat(at("new-file.txt"), &st), ENOENT);
    CHECK_ERRNO(stat(at("newdir"), &st), ENOENT);

    fflush(stdout);
    return pass();
}
