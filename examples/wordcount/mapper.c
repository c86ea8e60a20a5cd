/* mapper: counts the words of /dev/input and sends each word's count to one reducer.
 *
 * A word is a run of ASCII letters and digits, folded to lower case; every other byte
 * separates words. The reducers are the members behind /dev/out (as many as the job
 * connects); word w goes to reducer number fnv1a(w) % R in member order, so that every
 * mapper sends w to the same reducer. The mapper counts its whole file before it sends
 * anything (a combiner, in map-reduce terms): one "<word> <count>" line per distinct word.
 * Prints "<words> words, <distinct> distinct" on stdout. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "topology.h"
#include "wordtable.h"

int main(void) {
    FILE *in = fopen("/dev/input", "r");
    if (!in) {
        perror("/dev/input");
        return 2;
    }
    struct table counts = {0};
    size_t cap = 64, len = 0;
    char *word = checked(malloc(cap));
    unsigned long long words = 0;
    int c;
    do {
        c = getc(in);
        if (c != EOF && c < 128 && isalnum(c)) {
            if (len + 1 == cap) word = checked(realloc(word, cap *= 2));
            word[len++] = (char)tolower(c);
        } else if (len > 0) {
            word[len] = 0;
            table_add(&counts, word, 1);
            words++;
            len = 0;
        }
    } while (c != EOF);
    if (ferror(in)) {
        perror("reading /dev/input");
        return 2;
    }

    int r;
    char **reducers = peers("/dev/out", NULL, &r);
    if (r == 0) {
        fprintf(stderr, "mapper: no reducers (/dev/out is empty); connect this group to one\n");
        return 2;
    }
    FILE **out = checked(calloc((size_t)r, sizeof *out));
    for (int j = 0; j < r; j++) out[j] = open_pipe("/dev/out", reducers[j], "w");
    for (size_t i = 0; i < counts.cap; i++) {
        struct entry *e = &counts.slots[i];
        if (e->word) fprintf(out[fnv1a(e->word) % (uint32_t)r], "%s %llu\n", e->word, e->count);
    }
    for (int j = 0; j < r; j++) {
        if (fclose(out[j]) != 0) {
            fprintf(stderr, "mapper: writing to %s failed\n", reducers[j]);
            return 2;
        }
    }
    printf("%llu words, %zu distinct\n", words, counts.used);
    return 0;
}
