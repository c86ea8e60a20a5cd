/* gen: writes N synthetic emails (argv[1], default 100000), made deterministically from a
 * seeded xorshift64 generator (seed argv[2], default 88172645463325252), and deals them
 * round-robin to the members behind /dev/out, in member order: email k goes to searcher
 * (k - 1) % M. Each email is mbox-style: a separator line "From <k>", headers, a blank
 * line, a body of a few sentences from a word list, and a blank line:
 *
 *   From 42
 *   From: Ada Lovelace <ada.lovelace@example.org>
 *   To: Alan Turing <alan.turing@example.net>
 *   Subject: Quarterly invoice for the mill
 *   Date: 07 Mar 2024 09:14:00 +0000
 *
 *   Please send the report before the meeting on friday.
 *   ...
 *
 * The body words never include "from", so no body line looks like a separator. Every
 * choice comes from pick(), in the order of the code below; the integration test makes the
 * same emails in Rust and must be kept in step with this file. Prints "<N> emails to <M>
 * searchers" on stdout. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topology.h"

#define N(a) (sizeof a / sizeof a[0])

static const char *FIRST[] = {"ada", "alan", "grace", "edsger", "barbara", "donald", "frances",
                              "ken", "margaret", "niklaus", "radia", "tony", "leslie", "john"};
static const char *LAST[] = {"lovelace", "turing", "hopper", "dijkstra", "liskov", "knuth",
                             "allen", "thompson", "hamilton", "wirth", "perlman", "hoare",
                             "lamport", "backus"};
static const char *DOMAINS[] = {"example.org", "example.net", "example.com", "mail.test"};
static const char *SUBJECT[] = {
    "quarterly", "report",  "meeting", "lunch",   "budget",  "invoice", "draft",   "review",
    "minutes",   "plan",    "update",  "the",     "for",     "about",   "new",     "old",
    "mill",      "bakery",  "river",   "lighthouse", "schedule", "urgent", "friday", "monday",
    "agenda",    "notes",   "travel",  "expenses", "project", "release", "question", "answer",
    "reminder",  "party",   "holiday", "order",   "delivery", "payment", "status",  "team",
    "weekly",    "monthly", "summary", "proposal", "contract", "feedback", "call", "follow-up"};
static const char *BODY[] = {
    "please", "send",    "the",      "report",  "before",  "meeting", "on",     "friday",
    "we",     "will",    "need",     "a",       "new",     "plan",    "for",    "next",
    "week",   "thanks",  "and",      "regards", "budget",  "is",      "late",   "again",
    "can",    "you",     "check",    "numbers", "in",      "table",   "i",      "think",
    "it",     "looks",   "good",     "to",      "me",      "let",     "us",     "know",
    "if",     "there",   "are",      "any",     "changes", "bread",   "river",  "lamp",
    "order",  "arrived", "yesterday", "payment", "due",    "end",     "of",     "month",
    "call",   "tomorrow", "morning", "notes",   "attached", "draft",  "ready",  "review"};

static uint64_t state;

/* xorshift64 (Marsaglia, shifts 13, 7, 17). */
static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static uint32_t pick(uint32_t n) { return (uint32_t)(next() % n); }

/* The email being written: built here, then written with one call (printf-style calls per
 * word would cost several times the fuel of the whole search). */
static char email[4096];
static size_t len;

static void put(const char *s) {
    size_t n = strlen(s);
    memcpy(email + len, s, n);
    len += n;
}

/* `s` with its first letter capitalised (every word in the lists starts with a letter). */
static void put_capital(const char *s) {
    email[len++] = (char)(s[0] - 'a' + 'A');
    put(s + 1);
}

static void put_number(unsigned long n, int width) {
    char digits[24];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (k < width) digits[k++] = '0';
    while (k) email[len++] = digits[--k];
}

/* "Ada Lovelace <ada.lovelace@example.org>" */
static void person(void) {
    const char *first = FIRST[pick(N(FIRST))], *last = LAST[pick(N(LAST))];
    const char *domain = DOMAINS[pick(N(DOMAINS))];
    put_capital(first);
    put(" ");
    put_capital(last);
    put(" <");
    put(first);
    put(".");
    put(last);
    put("@");
    put(domain);
    put(">\n");
}

/* `n` words from `list`, space-separated, the first one capitalised. */
static void words(const char **list, uint32_t size, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        const char *w = list[pick(size)];
        if (i == 0) {
            put_capital(w);
        } else {
            put(" ");
            put(w);
        }
    }
}

int main(int argc, char **argv) {
    unsigned long emails = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    state = argc > 2 ? strtoull(argv[2], NULL, 10) : 88172645463325252ull;
    if (state == 0) {
        fprintf(stderr, "gen: the seed must not be 0 (xorshift stays at 0)\n");
        return 2;
    }
    int m;
    char **searchers = peers("/dev/out", NULL, &m);
    if (m == 0) {
        fprintf(stderr, "gen: no searchers (/dev/out is empty); connect this group to some\n");
        return 2;
    }
    FILE **out = malloc((size_t)m * sizeof *out);
    if (!out) return 2;
    for (int j = 0; j < m; j++) {
        out[j] = open_pipe("/dev/out", searchers[j], "w");
        setvbuf(out[j], NULL, _IOFBF, 64 << 10);
    }
    static const char *MONTHS[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (unsigned long k = 1; k <= emails; k++) {
        len = 0;
        put("From ");
        put_number(k, 0);
        put("\nFrom: ");
        person();
        put("To: ");
        person();
        put("Subject: ");
        words(SUBJECT, N(SUBJECT), 3 + pick(4));
        uint32_t day = 1 + pick(28), month = pick(12), h = pick(24), min = pick(60), s = pick(60);
        put("\nDate: ");
        put_number(day, 2);
        put(" ");
        put(MONTHS[month]);
        put(" 2024 ");
        put_number(h, 2);
        put(":");
        put_number(min, 2);
        put(":");
        put_number(s, 2);
        put(" +0000\n\n");
        uint32_t lines = 2 + pick(4);
        for (uint32_t l = 0; l < lines; l++) {
            words(BODY, N(BODY), 6 + pick(7));
            put(".\n");
        }
        if (pick(50) == 0) put("The INVOICE is attached.\n");
        put("\n");
        fwrite(email, 1, len, out[(k - 1) % (unsigned long)m]);
    }
    for (int j = 0; j < m; j++) {
        if (fclose(out[j]) != 0) {
            fprintf(stderr, "gen: writing to %s failed\n", searchers[j]);
            return 2;
        }
    }
    printf("%lu emails to %d searchers\n", emails, m);
    return 0;
}
