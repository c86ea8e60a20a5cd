/* zvm bench: the native single-process word count the wordcount job is compared with. Same
 * word rules and table as examples/wordcount (wordtable.h); reads every file named on the
 * command line and prints "<count> <word>" lines, most frequent first. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "wordtable.h"

int main(int argc, char **argv) {
    struct table counts = {0};
    size_t cap = 64, len = 0;
    char *word = checked(malloc(cap));
    for (int a = 1; a < argc; a++) {
        FILE *in = fopen(argv[a], "r");
        if (!in) {
            perror(argv[a]);
            return 2;
        }
        int c;
        do {
            c = getc(in);
            if (c != EOF && c < 128 && isalnum(c)) {
                if (len + 1 == cap) word = checked(realloc(word, cap *= 2));
                word[len++] = (char)tolower(c);
            } else if (len > 0) {
                word[len] = 0;
                table_add(&counts, word, 1);
                len = 0;
            }
        } while (c != EOF);
        fclose(in);
    }
    size_t n;
    struct entry *list = table_sorted(&counts, &n);
    for (size_t i = 0; i < n; i++) printf("%llu %s\n", list[i].count, list[i].word);
    return 0;
}
