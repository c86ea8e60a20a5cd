/* search: reads the emails that arrive on its one pipe (the member behind /dev/in), finds
 * those that contain argv[1] (a fixed string, compared without regard to ASCII case) in
 * their headers or body, and sends "<id>\t<subject>" for each to its one downstream member
 * (the collector), then a last line "#\t<emails scanned>\t<pattern>".
 *
 * The matches are held back until the input ends, so this member never waits on its
 * output while its input is still coming: the collector drains its searchers one after
 * another, and a searcher stuck on a full pipe to the collector would stop reading the
 * generator, which would stop feeding the searcher the collector is reading (a deadlock).
 * Prints "<matches> of <emails> emails match" on stdout. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topology.h"

static char *pattern;
static size_t pattern_len;

/* The current email: its lines after the separator, lower-cased for the search, and its
 * subject as written. */
static char *text, *subject;
static size_t text_len, text_cap;
static unsigned long id;

static char *matches;
static size_t matches_len, matches_cap;
static unsigned long emails, found;

static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        while (*len + n + 1 > *cap) *cap = *cap ? *cap * 2 : 4096;
        *buf = realloc(*buf, *cap);
        if (!*buf) {
            fprintf(stderr, "search: out of memory\n");
            exit(2);
        }
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
}

/* Ends the current email: searches it, records it if it matches. */
static void finish(void) {
    if (id == 0) return;
    emails++;
    if (text_len >= pattern_len && text && strstr(text, pattern)) {
        char head[32];
        int n = snprintf(head, sizeof head, "%lu\t", id);
        append(&matches, &matches_len, &matches_cap, head, (size_t)n);
        const char *s = subject ? subject : "";
        append(&matches, &matches_len, &matches_cap, s, strlen(s));
        append(&matches, &matches_len, &matches_cap, "\n", 1);
        found++;
    }
    free(subject);
    subject = NULL;
    text_len = 0;
    if (text) text[0] = 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !argv[1][0]) {
        fprintf(stderr, "usage: search PATTERN (give it in the group's `args`)\n");
        return 2;
    }
    pattern = strdup(argv[1]);
    pattern_len = strlen(pattern);
    for (char *p = pattern; *p; p++) *p = (char)tolower((unsigned char)*p);
    int n_in, n_out;
    char **in_names = peers("/dev/in", NULL, &n_in);
    char **out_names = peers("/dev/out", NULL, &n_out);
    if (n_in != 1 || n_out != 1) {
        fprintf(stderr,
                "search: needs one member behind /dev/in and one behind /dev/out, "
                "found %d and %d\n",
                n_in, n_out);
        return 2;
    }
    FILE *in = open_pipe("/dev/in", in_names[0], "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) > 0) {
        if (strncmp(line, "From ", 5) == 0 && line[5] >= '0' && line[5] <= '9') {
            finish();
            id = strtoul(line + 5, NULL, 10);
            continue;
        }
        if (!subject && strncmp(line, "Subject: ", 9) == 0) {
            subject = strndup(line + 9, (size_t)n - 9 - (line[n - 1] == '\n'));
        }
        for (ssize_t i = 0; i < n; i++) line[i] = (char)tolower((unsigned char)line[i]);
        append(&text, &text_len, &text_cap, line, (size_t)n);
    }
    if (ferror(in)) {
        perror(in_names[0]);
        return 2;
    }
    finish();

    FILE *out = open_pipe("/dev/out", out_names[0], "w");
    fwrite(matches, 1, matches_len, out);
    fprintf(out, "#\t%lu\t%s\n", emails, argv[1]);
    if (fclose(out) != 0) {
        fprintf(stderr, "search: writing to %s failed\n", out_names[0]);
        return 2;
    }
    printf("%lu of %lu emails match\n", found, emails);
    return 0;
}
