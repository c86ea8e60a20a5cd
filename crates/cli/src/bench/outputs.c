/* zvm bench outputs guest: writes N output channels /dev/out1.. of SIZE bytes each, for the
 * cost of committing them together.
 *   outputs N SIZE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1;
    long size = argc > 2 ? atol(argv[2]) : 0;
    char *data = malloc(size + 1);
    if (!data)
        return 1;
    memset(data, 'z', size);
    for (int i = 1; i <= n; i++) {
        char path[32];
        snprintf(path, sizeof path, "/dev/out%d", i);
        FILE *f = fopen(path, "w");
        if (!f || fwrite(data, 1, size, f) != (size_t)size || fclose(f) != 0)
            return 2;
    }
    return 0;
}
