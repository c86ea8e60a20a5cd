/*
 * args_env.c - print the command line and the environment.
 *
 * Expects on stdout, exactly:
 *     argc=<argc>
 *     argv[0]=<argv[0]>
 *     argv[1]=<argv[1]>
 *     ...
 *     env=<first environ entry>        (e.g. "env=KEY=value")
 *     env=<second environ entry>
 *     ...
 * Environment entries are printed in environ order (the order the runtime
 * passed them).  Exit code 0.
 */
#include <stdio.h>

extern char **environ;

int main(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    if (environ != NULL)
        for (char **e = environ; *e != NULL; e++)
            printf("env=%s\n", *e);
    return 0;
}
