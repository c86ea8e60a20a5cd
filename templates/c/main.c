/* {{name}}: a zvm guest in C, built for wasm32-wasi by build.sh.
 *
 * Prints its arguments, if any, on one line; then copies the channel /dev/input to standard
 * output with every letter upper-cased. manifest.toml binds /dev/input to input.txt; from the
 * command line, `zvm run {{name}}.wasm --input input=FILE` binds it to another file. */
#include <ctype.h>
#include <stdio.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        printf("%s%s", argv[i], i + 1 < argc ? " " : "\n");
    FILE *in = fopen("/dev/input", "r");
    if (!in) {
        perror("{{name}}: /dev/input");
        return 1;
    }
    int c;
    while ((c = getc(in)) != EOF)
        putchar(toupper(c));
    if (ferror(in)) {
        perror("{{name}}: /dev/input");
        return 1;
    }
    return 0;
}
