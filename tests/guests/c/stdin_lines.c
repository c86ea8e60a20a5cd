/*
 * stdin_lines.c - read stdin line by line with stdio and print the lines
 * in reverse order.
 *
 * Uses fgets() (buffered stdin) and printf() (buffered stdout), so it tests
 * stdio buffering end to end.  Lines of any length are supported (long lines
 * are assembled from several fgets() calls).  Every output line ends with
 * "\n", including a last input line that had none.
 *
 * Example: stdin "one\ntwo\nthree" -> stdout "three\ntwo\none\n".
 * Expects: exit 0; on a read error or out of memory prints a message to
 * stderr and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char **lines;
static size_t count, cap;

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n);
    if (p == NULL) {
        fputs("stdin_lines: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

static void push(char *line) {
    if (count == cap) {
        cap = cap ? cap * 2 : 16;
        lines = xrealloc(lines, cap * sizeof *lines);
    }
    lines[count++] = line;
}

int main(void) {
    char chunk[128];
    char *cur = NULL;
    size_t cur_len = 0;

    while (fgets(chunk, sizeof chunk, stdin) != NULL) {
        size_t n = strlen(chunk);
        cur = xrealloc(cur, cur_len + n + 1);
        memcpy(cur + cur_len, chunk, n + 1);
        cur_len += n;
        if (cur_len == 0 || cur[cur_len - 1] != '\n')
            continue; /* the line goes on in the next chunk (or ends at EOF) */
        cur[cur_len - 1] = '\0';
        push(cur);
        cur = NULL;
        cur_len = 0;
    }
    if (ferror(stdin)) {
        perror("stdin_lines: read");
        return 1;
    }
    if (cur != NULL) /* last line without a trailing newline */
        push(cur);

    while (count > 0) {
        count--;
        printf("%s\n", lines[count]);
        free(lines[count]);
    }
    free(lines);
    return 0;
}
