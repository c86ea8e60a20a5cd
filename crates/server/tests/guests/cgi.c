/* A CGI program for the endpoint tests. By QUERY_STRING:
 *   mode=bad   output without the blank line that ends CGI headers
 *   mode=fail  exits with 3 after writing headers
 *   anything else: `Status: 201 Created`, a content type and a header of its own, then the
 *   CGI variables the tests check, one `NAME=value` per line, then stdin as it came. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void var(const char *name) {
    const char *v = getenv(name);
    printf("%s=%s\n", name, v ? v : "(unset)");
}

int main(void) {
    const char *q = getenv("QUERY_STRING");
    if (q && strstr(q, "mode=bad")) {
        printf("this is not a header\n");
        return 0;
    }
    if (q && strstr(q, "mode=fail")) {
        printf("Content-Type: text/plain\n\nhalf");
        return 3;
    }
    printf("Status: 201 Created\r\nContent-Type: text/x-cgi\r\nX-Guest: zvm\r\n\r\n");
    var("GATEWAY_INTERFACE");
    var("SERVER_PROTOCOL");
    var("REQUEST_METHOD");
    var("SCRIPT_NAME");
    var("PATH_INFO");
    var("QUERY_STRING");
    var("CONTENT_TYPE");
    var("CONTENT_LENGTH");
    var("HTTP_X_TEST");
    var("HTTP_AUTHORIZATION");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        fwrite(buf, 1, n, stdout);
    }
    return 0;
}
