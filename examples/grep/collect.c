/* collect: gathers the searchers' matches (the members behind /dev/in, read one after
 * another in member order), sorts them by email id, and writes them to /dev/output as
 * "<id>\t<subject>" lines, then a last line "<matches> of <emails> emails match
 * \"<pattern>\"". Every searcher ends its stream with "#\t<emails scanned>\t<pattern>"; a
 * stream without that line is an error. Prints the last line on stdout too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topology.h"

struct match {
    unsigned long id;
    char *line; /* "<id>\t<subject>\n" as received */
};

static int by_id(const void *a, const void *b) {
    const struct match *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

int main(void) {
    int s;
    char **searchers = peers("/dev/in", NULL, &s);
    FILE *out = fopen("/dev/output", "w");
    if (!out) {
        perror("/dev/output");
        return 2;
    }
    struct match *list = NULL;
    size_t n = 0, cap = 0;
    unsigned long emails = 0;
    char *pattern = NULL;
    char *line = NULL;
    size_t line_cap = 0;
    for (int i = 0; i < s; i++) {
        FILE *in = open_pipe("/dev/in", searchers[i], "r");
        int trailer = 0;
        ssize_t len;
        while ((len = getline(&line, &line_cap, in)) > 0) {
            if (line[len - 1] != '\n' || trailer) {
                fprintf(stderr, "collect: unexpected line from %s: %s\n", searchers[i], line);
                return 2;
            }
            if (line[0] == '#') {
                char *p = strchr(line + 2, '\t');
                if (!p) {
                    fprintf(stderr, "collect: bad last line from %s: %s\n", searchers[i], line);
                    return 2;
                }
                emails += strtoul(line + 2, NULL, 10);
                line[len - 1] = 0;
                if (pattern && strcmp(pattern, p + 1) != 0) {
                    fprintf(stderr, "collect: %s searched for \"%s\", others for \"%s\"\n",
                            searchers[i], p + 1, pattern);
                    return 2;
                }
                if (!pattern) pattern = strdup(p + 1);
                trailer = 1;
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                list = realloc(list, cap * sizeof *list);
                if (!list) return 2;
            }
            list[n].id = strtoul(line, NULL, 10);
            list[n].line = strdup(line);
            if (!list[n].line) return 2;
            n++;
        }
        if (ferror(in)) {
            perror(searchers[i]);
            return 2;
        }
        if (!trailer) {
            fprintf(stderr, "collect: %s ended without its last line\n", searchers[i]);
            return 2;
        }
        fclose(in);
    }
    qsort(list, n, sizeof *list, by_id);
    for (size_t i = 0; i < n; i++) fputs(list[i].line, out);
    char summary[600];
    snprintf(summary, sizeof summary, "%zu of %lu emails match \"%s\"\n", n, emails,
             pattern ? pattern : "");
    fputs(summary, out);
    if (fclose(out) != 0) {
        perror("writing /dev/output");
        return 2;
    }
    fputs(summary, stdout);
    return 0;
}
