/*
 * hello.c - the smallest guest.
 *
 * Expects: stdout is exactly "hello, world\n", stderr is empty, exit code 0.
 */
#include <stdio.h>

int main(void) {
    printf("hello, world\n");
    return 0;
}
