/* zvm bench compute guest: CPU-bound work, built both for wasm32-wasi (clang) and natively
 * (gcc), so that the two can be compared on the same machine.
 *   compute sha256 <MiB>   SHA-256 of <MiB> mebibytes of generated data; prints the digest
 *   compute sort <N>       sorts N generated 32-bit integers; prints a checksum
 * Data comes from a fixed xorshift generator, so both builds do exactly the same work. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng = 2463534242u;
static uint32_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

static int sha(size_t mib) {
    size_t len = mib << 20;
    uint8_t *data = malloc(len);
    if (!data) return 2;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = next();
        memcpy(data + i, &v, 4);
    }
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    for (size_t i = 0; i < len; i += 64) block(h, data + i);
    /* The length is a multiple of 64: one padding block. */
    uint8_t pad[64] = {0x80};
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) pad[63 - i] = (uint8_t)(bits >> (8 * i));
    block(h, pad);
    for (int i = 0; i < 8; i++) printf("%08x", h[i]);
    printf("\n");
    return 0;
}

/* Our own sort rather than libc's qsort: wasi-libc (musl) and glibc sort with different
 * algorithms, and the comparison is of the same code, compiled two ways. Quicksort with
 * median-of-three pivots, insertion sort for short ranges, recursion on the smaller side. */
static void insertion(uint32_t *v, size_t n) {
    for (size_t i = 1; i < n; i++) {
        uint32_t x = v[i];
        size_t j = i;
        while (j > 0 && v[j - 1] > x) { v[j] = v[j - 1]; j--; }
        v[j] = x;
    }
}

static void quicksort(uint32_t *v, size_t n) {
    while (n > 16) {
        uint32_t a = v[0], b = v[n / 2], c = v[n - 1];
        uint32_t pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        size_t i = 0, j = n - 1;
        for (;;) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i >= j) break;
            uint32_t t = v[i]; v[i] = v[j]; v[j] = t;
            i++; j--;
        }
        size_t left = j + 1;
        if (left < n - left) { quicksort(v, left); v += left; n -= left; }
        else { quicksort(v + left, n - left); n = left; }
    }
    insertion(v, n);
}

static int sort(size_t n) {
    uint32_t *v = malloc(n * sizeof *v);
    if (!v) return 2;
    for (size_t i = 0; i < n; i++) v[i] = next();
    quicksort(v, n);
    for (size_t i = 1; i < n; i++) if (v[i - 1] > v[i]) return 3;
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum = sum * 31 + v[i];
    printf("%016llx\n", (unsigned long long)sum);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: compute sha256|sort N\n"); return 2; }
    size_t n = strtoul(argv[2], 0, 10);
    if (strcmp(argv[1], "sha256") == 0) return sha(n);
    if (strcmp(argv[1], "sort") == 0) return sort(n);
    return 2;
}
