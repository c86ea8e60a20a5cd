/* record.h: the records to sort, gensort-style, each made from its index alone, so that any
 * member can make any record: the partitioners make their split, and the sampler makes the
 * keys of every stride-th record without asking anyone.
 *
 * A record is 100 bytes:
 *
 *   bytes  0..10   the key: 10 random bytes, from splitmix64 of the seed and the index
 *   bytes 10..12   two spaces
 *   bytes 12..44   the index, 32 upper-case hex digits
 *   bytes 44..46   two spaces
 *   bytes 46..98   52 filler letters
 *   bytes 98..100  "\r\n"
 *
 * The integration test makes the same records in Rust; keep the two in step. */
#ifndef RECORD_H
#define RECORD_H

#include <stdint.h>
#include <string.h>

#define RECORD_SIZE 100
#define KEY_SIZE 10

/* The seed when the sampler is not given one. */
#define DEFAULT_SEED 0x5eed5eed5eed5eedull

/* splitmix64's output function of x (Steele, Lea and Flood). */
static inline uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The key of record `i`, and the second random word the payload uses. */
static inline uint64_t record_key(uint64_t seed, uint64_t i, unsigned char key[KEY_SIZE]) {
    uint64_t a = mix64(seed + 2 * i), b = mix64(seed + 2 * i + 1);
    for (int k = 0; k < 8; k++) key[k] = (unsigned char)(a >> (56 - 8 * k));
    key[8] = (unsigned char)(b >> 56);
    key[9] = (unsigned char)(b >> 48);
    return b;
}

/* Record `i`, whole. */
static inline void record_make(uint64_t seed, uint64_t i, unsigned char r[RECORD_SIZE]) {
    static const char hex[] = "0123456789ABCDEF";
    /* The filler is 52 letters of the alphabet, starting at a letter chosen by the key. */
    static const char letters[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    uint64_t b = record_key(seed, i, r);
    memcpy(r + 10, "  0000000000000000", 18);
    for (int k = 0; k < 16; k++) r[28 + k] = (unsigned char)hex[(i >> (60 - 4 * k)) & 15];
    r[44] = r[45] = ' ';
    memcpy(r + 46, letters + b % 26, 52);
    r[98] = '\r';
    r[99] = '\n';
}

/* A key as 20 hex digits, for the messages between members; and back (0 if malformed). */
static inline void key_to_hex(const unsigned char key[KEY_SIZE], char out[2 * KEY_SIZE + 1]) {
    static const char hex[] = "0123456789abcdef";
    for (int k = 0; k < KEY_SIZE; k++) {
        out[2 * k] = hex[key[k] >> 4];
        out[2 * k + 1] = hex[key[k] & 15];
    }
    out[2 * KEY_SIZE] = 0;
}

static inline int key_from_hex(const char *s, unsigned char key[KEY_SIZE]) {
    for (int k = 0; k < 2 * KEY_SIZE; k++) {
        char c = s[k];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return 0;
        if (k % 2 == 0)
            key[k / 2] = (unsigned char)(v << 4);
        else
            key[k / 2] |= (unsigned char)v;
    }
    return 1;
}

/* Which of `r` sorters owns `key`: the number of splitters (sorted, r - 1 of them) that are
 * not above it. Sorter j (from 0) owns [splitter j-1, splitter j). */
static inline int owner(const unsigned char *splitters, int r, const unsigned char *key) {
    int lo = 0, hi = r - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (memcmp(splitters + mid * KEY_SIZE, key, KEY_SIZE) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

#endif
