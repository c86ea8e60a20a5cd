/* merge: merges the reducers' partial counts (the members behind /dev/in, each a list of
 * "<count> <word>" lines, most frequent first and ties in byte order) into one list in the
 * same order on /dev/output. The reducers partition the words, so this is a k-way merge of
 * sorted streams: it holds one line per reducer, never a whole list. A stream out of order
 * is an error. Prints "<words> words, <distinct> distinct" on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topology.h"

struct head {
    FILE *in;
    char *line; /* the current line, without its newline; NULL at the end of the stream */
    size_t cap;
    unsigned long long count;
    char *word;
};

/* Whether line a ("count word") comes before line b in the list's order. */
static int before(const struct head *a, const struct head *b) {
    if (a->count != b->count) return a->count > b->count;
    return strcmp(a->word, b->word) < 0;
}

static void advance(struct head *h, const char *name) {
    ssize_t n = getline(&h->line, &h->cap, h->in);
    if (n <= 0) {
        if (ferror(h->in)) {
            perror(name);
            exit(2);
        }
        free(h->line);
        h->line = NULL;
        return;
    }
    char *space = strchr(h->line, ' ');
    if (!space || h->line[n - 1] != '\n') {
        fprintf(stderr, "merge: bad line from %s: %s\n", name, h->line);
        exit(2);
    }
    h->line[n - 1] = 0;
    *space = 0;
    h->count = strtoull(h->line, NULL, 10);
    h->word = space + 1;
}

int main(void) {
    int r;
    char **reducers = peers("/dev/in", NULL, &r);
    FILE *out = fopen("/dev/output", "w");
    if (!out) {
        perror("/dev/output");
        return 2;
    }
    struct head *heads = calloc((size_t)r + 1, sizeof *heads);
    if (!heads) return 2;
    for (int i = 0; i < r; i++) {
        heads[i].in = open_pipe("/dev/in", reducers[i], "r");
        advance(&heads[i], reducers[i]);
    }
    unsigned long long words = 0, distinct = 0;
    struct head last = {0};
    char *last_word = NULL;
    for (;;) {
        int best = -1;
        for (int i = 0; i < r; i++)
            if (heads[i].line && (best < 0 || before(&heads[i], &heads[best]))) best = i;
        if (best < 0) break;
        struct head *h = &heads[best];
        if (last_word && !before(&last, h)) {
            fprintf(stderr, "merge: %s is out of order at \"%llu %s\"\n", reducers[best],
                    h->count, h->word);
            return 2;
        }
        fprintf(out, "%llu %s\n", h->count, h->word);
        words += h->count;
        distinct++;
        free(last_word);
        last_word = strdup(h->word);
        last.count = h->count;
        last.word = last_word;
        advance(h, reducers[best]);
    }
    if (fclose(out) != 0) {
        perror("writing /dev/output");
        return 2;
    }
    printf("%llu words, %llu distinct, from %d reducers\n", words, distinct, r);
    return 0;
}
