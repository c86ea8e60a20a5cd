/* topology.h: what a job member learns about its neighbours from /dev/in and /dev/out.
 *
 * zvm gives a member one file per pipe: /dev/out/<reader> for each member it writes to and
 * /dev/in/<writer> for each member it reads from. Members are named `<group>` or
 * `<group>-<n>`; peers() lists a directory in member order (group, then n as a number, so
 * `reduce-10` comes after `reduce-9`). Every member that reads several pipes must drain them
 * in this same order: a pipe holds 1 MiB, so two readers that took the writers in different
 * orders could each wait on a writer that waits on the other reader.
 *
 * Shared by every example (built with `-I ../common`). */
#ifndef TOPOLOGY_H
#define TOPOLOGY_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Splits `name` into its group (length *glen) and member number (0 for a lone member). */
static inline unsigned long member_number(const char *name, size_t *glen) {
    const char *dash = strrchr(name, '-');
    if (dash && dash[1] && strspn(dash + 1, "0123456789") == strlen(dash + 1)) {
        *glen = (size_t)(dash - name);
        return strtoul(dash + 1, NULL, 10);
    }
    *glen = strlen(name);
    return 0;
}

static inline int member_order(const void *a, const void *b) {
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    size_t gx, gy;
    unsigned long nx = member_number(x, &gx), ny = member_number(y, &gy);
    int c = strncmp(x, y, gx < gy ? gx : gy);
    if (c) return c;
    if (gx != gy) return gx < gy ? -1 : 1;
    return nx < ny ? -1 : nx > ny;
}

/* The members behind `dir` ("/dev/in" or "/dev/out") whose group is `group` (NULL: all),
 * in member order; the count in *n. Exits with 2 when the directory cannot be read. */
static inline char **peers(const char *dir, const char *group, int *n) {
    DIR *d = opendir(dir);
    *n = 0;
    if (!d) {
        perror(dir);
        exit(2);
    }
    size_t cap = 16;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e;
    while (names && (e = readdir(d))) {
        size_t glen;
        if (e->d_name[0] == '.') continue;
        member_number(e->d_name, &glen);
        if (group && (strlen(group) != glen || strncmp(e->d_name, group, glen) != 0)) continue;
        if ((size_t)*n == cap) names = realloc(names, (cap *= 2) * sizeof *names);
        if (names) names[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (!names) {
        fprintf(stderr, "%s: out of memory\n", dir);
        exit(2);
    }
    qsort(names, (size_t)*n, sizeof *names, member_order);
    return names;
}

/* Opens /dev/in/<name> ("r") or /dev/out/<name> ("w"); exits with 2 if it cannot. */
static inline FILE *open_pipe(const char *dir, const char *name, const char *mode) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    if (!f) {
        perror(path);
        exit(2);
    }
    return f;
}

#endif
