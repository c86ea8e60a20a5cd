/* wordtable.h: a table of words and their counts (open addressing, FNV-1a), shared by the
 * mapper (counting its file's words) and the reducer (summing the mappers' counts). */
#ifndef WORDTABLE_H
#define WORDTABLE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char *word;
    unsigned long long count;
};

struct table {
    struct entry *slots;
    size_t cap, used;
};

/* 32-bit FNV-1a: the table's hash, and the mapper's choice of reducer. */
static inline uint32_t fnv1a(const char *s) {
    uint32_t h = 2166136261u;
    while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static inline void *checked(void *p) {
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static inline void table_grow(struct table *t) {
    struct entry *old = t->slots;
    size_t old_cap = t->cap;
    t->cap = old_cap ? old_cap * 2 : 1024;
    t->slots = checked(calloc(t->cap, sizeof *t->slots));
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].word) continue;
        size_t j = fnv1a(old[i].word) & (t->cap - 1);
        while (t->slots[j].word) j = (j + 1) & (t->cap - 1);
        t->slots[j] = old[i];
    }
    free(old);
}

static inline void table_add(struct table *t, const char *word, unsigned long long count) {
    if (t->used * 2 >= t->cap) table_grow(t);
    size_t i = fnv1a(word) & (t->cap - 1);
    while (t->slots[i].word && strcmp(t->slots[i].word, word) != 0) i = (i + 1) & (t->cap - 1);
    if (!t->slots[i].word) {
        t->slots[i].word = checked(strdup(word));
        t->used++;
    }
    t->slots[i].count += count;
}

/* Most frequent first, ties in byte order of the word: the order of every count list. */
static inline int by_count(const void *a, const void *b) {
    const struct entry *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return strcmp(x->word, y->word);
}

/* The table's entries, in `by_count` order; the count in *n. */
static inline struct entry *table_sorted(const struct table *t, size_t *n) {
    struct entry *list = checked(malloc((t->used ? t->used : 1) * sizeof *list));
    *n = 0;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].word) list[(*n)++] = t->slots[i];
    qsort(list, *n, sizeof *list, by_count);
    return list;
}

#endif
