/* The hello program of scripts/load: one source, built natively (cc -O2) for the CGI
 * baseline and for wasm32-wasi (clang -O2) for zvm serve, so that the comparison differs only
 * in how the program is started (fork+exec against a fresh VM).
 *
 * It speaks CGI: a header block, a blank line, then the body. The name greeted is the
 * QUERY_STRING when the server passes one (a CGI endpoint does), else "world". */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    const char *name = getenv("QUERY_STRING");
    if (name == NULL || name[0] == '\0') {
        name = "world";
    }
    printf("Content-Type: text/plain\r\n\r\nhello, %s\n", name);
    return 0;
}
