/* A content-type handler for the handler tests: prints what it was given (content type and
 * object name from the environment), then /dev/input upper-cased, then how many bytes
 * stdin held (the object again). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    const char *type = getenv("CONTENT_TYPE");
    const char *object = getenv("ZVM_OBJECT");
    printf("%s %s %s\n", argc > 1 ? argv[1] : "-", type ? type : "?", object ? object : "?");
    FILE *in = fopen("/dev/input", "r");
    if (!in) {
        return 2;
    }
    int c;
    while ((c = fgetc(in)) != EOF) {
        putchar(toupper(c));
    }
    size_t total = 0;
    while (fgetc(stdin) != EOF) {
        total++;
    }
    printf("\nstdin %zu\n", total);
    return 0;
}
