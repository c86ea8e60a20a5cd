/* wordfreq: counts how often each word occurs in /dev/input and writes the counts, most
 * frequent first (ties in byte order), to /dev/output as "<count> <word>" lines; prints a
 * one-line summary on stdout. A word is a run of ASCII letters, folded to lower case.
 *
 * Build: clang --target=wasm32-wasi -O2 -o wordfreq.wasm wordfreq.c
 * Run:   zvm run manifest.toml --report text
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char *word;
    unsigned long count;
};

static struct entry *table;
static size_t cap = 1024, used;

/* 32-bit FNV-1a. */
static uint32_t hash(const char *s) {
    uint32_t h = 2166136261u;
    while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static void grow(void);

static void add(const char *w) {
    if (used * 2 >= cap) grow();
    size_t i = hash(w) & (cap - 1);
    while (table[i].word && strcmp(table[i].word, w) != 0) i = (i + 1) & (cap - 1);
    if (!table[i].word) {
        table[i].word = strdup(w);
        if (!table[i].word) { perror("wordfreq: out of memory"); exit(2); }
        used++;
    }
    table[i].count++;
}

static void grow(void) {
    struct entry *old = table;
    size_t old_cap = cap;
    cap *= 2;
    table = calloc(cap, sizeof *table);
    if (!table) { perror("wordfreq: out of memory"); exit(2); }
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].word) continue;
        size_t j = hash(old[i].word) & (cap - 1);
        while (table[j].word) j = (j + 1) & (cap - 1);
        table[j] = old[i];
    }
    free(old);
}

static int by_count(const void *a, const void *b) {
    const struct entry *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return strcmp(x->word, y->word);
}

int main(void) {
    FILE *in = fopen("/dev/input", "r");
    FILE *out = fopen("/dev/output", "w");
    if (!in || !out) { perror("wordfreq: open /dev/input or /dev/output"); return 2; }
    table = calloc(cap, sizeof *table);
    if (!table) return 2;
    char word[256];
    size_t len = 0;
    unsigned long words = 0;
    int c;
    do {
        c = fgetc(in);
        if (c != EOF && isalpha(c)) {
            if (len < sizeof word - 1) word[len++] = (char)tolower(c);
        } else if (len > 0) {
            word[len] = 0;
            add(word);
            words++;
            len = 0;
        }
    } while (c != EOF);
    struct entry *list = malloc((used ? used : 1) * sizeof *list);
    if (!list) return 2;
    size_t n = 0;
    for (size_t i = 0; i < cap; i++) if (table[i].word) list[n++] = table[i];
    qsort(list, n, sizeof *list, by_count);
    for (size_t i = 0; i < n; i++) fprintf(out, "%lu %s\n", list[i].count, list[i].word);
    if (fclose(out) != 0) { perror("wordfreq: writing /dev/output"); return 2; }
    printf("%lu words, %zu distinct\n", words, n);
    return 0;
}
