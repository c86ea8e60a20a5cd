/* reducer: sums the "<word> <count>" lines of every mapper (the members behind /dev/in, read
 * one after the other in member order) and sends its partial result, "<count> <word>" lines
 * most frequent first and ties in byte order, to the one member behind /dev/out (the merger).
 * The mappers partition the words, so no other reducer sees the words this one does.
 * Prints "<mappers> mappers, <distinct> distinct words" on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topology.h"
#include "wordtable.h"

int main(void) {
    int m, d;
    char **mappers = peers("/dev/in", NULL, &m);
    char **down = peers("/dev/out", NULL, &d);
    if (d != 1) {
        fprintf(stderr, "reducer: %d members behind /dev/out; connect this group to one merger\n",
                d);
        return 2;
    }
    struct table counts = {0};
    char *line = NULL;
    size_t cap = 0;
    for (int i = 0; i < m; i++) {
        FILE *in = open_pipe("/dev/in", mappers[i], "r");
        ssize_t n;
        while ((n = getline(&line, &cap, in)) > 0) {
            char *space = strrchr(line, ' ');
            if (!space || line[n - 1] != '\n') {
                fprintf(stderr, "reducer: bad line from %s: %s\n", mappers[i], line);
                return 2;
            }
            *space = 0;
            table_add(&counts, line, strtoull(space + 1, NULL, 10));
        }
        /* A mapper that failed makes the read fail (EIO) rather than end early. */
        if (ferror(in)) {
            perror(mappers[i]);
            return 2;
        }
        fclose(in);
    }
    size_t n;
    struct entry *list = table_sorted(&counts, &n);
    FILE *out = open_pipe("/dev/out", down[0], "w");
    for (size_t i = 0; i < n; i++) fprintf(out, "%llu %s\n", list[i].count, list[i].word);
    if (fclose(out) != 0) {
        fprintf(stderr, "reducer: writing to %s failed\n", down[0]);
        return 2;
    }
    printf("%d mappers, %zu distinct words\n", m, n);
    return 0;
}
