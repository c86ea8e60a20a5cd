/* A member of a test job: does what its arguments say, in order.
 *
 *   w:CHANNEL:BYTES   write BYTES bytes (a pattern) to /dev/CHANNEL, then close it
 *   r:CHANNEL         read /dev/CHANNEL to its end; print "CHANNEL BYTES SUM" on stdout
 *   c:FROM:TO         copy /dev/FROM to /dev/TO to the end of FROM
 *   ls                print the names under /dev/in and /dev/out, sorted, one per line
 *   x:CODE            exit with CODE at once
 *
 * A read error (for instance: the writer failed) prints "CHANNEL error ERRNO" on stderr and
 * exits with 3; a write error exits with 4. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char buf[65536];

static int open_dev(const char *name, int flags) {
    char path[300];
    snprintf(path, sizeof path, "/dev/%s", name);
    int fd = open(path, flags);
    if (fd < 0) {
        fprintf(stderr, "%s: open: %s\n", name, strerror(errno));
        exit(2);
    }
    return fd;
}

static void write_all(int fd, const char *name, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            fprintf(stderr, "%s error %d\n", name, errno);
            exit(4);
        }
        p += w;
        n -= (size_t)w;
    }
}

static void list(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        printf("%s: none\n", dir);
        return;
    }
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        if (e->d_name[0] != '.')
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    for (int i = 0; i < n; i++)
        printf("%s/%s\n", dir + 5, names[i]);
}

int main(int argc, char **argv) {
    for (int a = 1; a < argc; a++) {
        char *op = argv[a];
        if (strcmp(op, "ls") == 0) {
            list("/dev/in");
            list("/dev/out");
        } else if (op[0] == 'x' && op[1] == ':') {
            fflush(stdout);
            return atoi(op + 2);
        } else if (op[0] == 'w' && op[1] == ':') {
            char *name = op + 2;
            char *colon = strrchr(name, ':');
            *colon = 0;
            long long left = atoll(colon + 1);
            int fd = open_dev(name, O_WRONLY);
            long long at = 0;
            while (left > 0) {
                size_t n = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
                for (size_t i = 0; i < n; i++)
                    buf[i] = (char)((at + (long long)i) * 7 % 251);
                write_all(fd, name, buf, n);
                at += (long long)n;
                left -= (long long)n;
            }
            close(fd);
        } else if (op[0] == 'r' && op[1] == ':') {
            char *name = op + 2;
            int fd = open_dev(name, O_RDONLY);
            unsigned long long total = 0, sum = 0;
            for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n < 0) {
                    fprintf(stderr, "%s error %d\n", name, errno);
                    return 3;
                }
                if (n == 0)
                    break;
                for (ssize_t i = 0; i < n; i++)
                    sum = sum * 31 + (unsigned char)buf[i];
                total += (unsigned long long)n;
            }
            close(fd);
            printf("%s %llu %llu\n", name, total, sum);
        } else if (op[0] == 'c' && op[1] == ':') {
            char *from = op + 2;
            char *to = strchr(from, ':');
            *to++ = 0;
            int in = open_dev(from, O_RDONLY), out = open_dev(to, O_WRONLY);
            for (;;) {
                ssize_t n = read(in, buf, sizeof buf);
                if (n < 0) {
                    fprintf(stderr, "%s error %d\n", from, errno);
                    return 3;
                }
                if (n == 0)
                    break;
                write_all(out, to, buf, (size_t)n);
            }
            close(in);
            close(out);
        } else {
            fprintf(stderr, "unknown operation %s\n", op);
            return 2;
        }
    }
    return 0;
}
