/* The stand-in for the example receiver's image (examples/receiver.yaml names
 * mendhak/http-https-echo, which no registry here can give us). Like that
 * image it answers every HTTP request on $HTTP_PORT with 200 and logs it to
 * stdout, so a test reads deliveries from the container's log as a user would
 * with `kubectl logs`. One JSON line per request:
 *   {"method":"POST","path":"/hooks/orders","headers":[["name","value"],...],"body_hex":"7b22..."}
 * The body is hex so that a signature can be checked over the exact bytes.
 * HTTP/1.1 with keep-alive and Content-Length bodies (what HookIt's workers
 * send); one process per connection. Built static by scripts/kubelet-node.sh. */
#include <ctype.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEAD 65536
#define MAX_BODY (4 << 20)

static void json_str(FILE *o, const char *s, size_t n) {
  fputc('"', o);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') fprintf(o, "\\%c", c);
    else if (c < 0x20 || c >= 0x7f) fprintf(o, "\\u%04x", c);
    else fputc(c, o);
  }
  fputc('"', o);
}

/* Serves one connection until the peer closes it or sends something malformed. */
static void serve(int fd) {
  static char head[MAX_HEAD + 1];
  size_t have = 0;
  for (;;) {
    char *end;
    head[have] = 0;
    while (!(end = strstr(head, "\r\n\r\n"))) {
      if (have == MAX_HEAD) return;
      ssize_t n = read(fd, head + have, MAX_HEAD - have);
      if (n <= 0) return;
      have += (size_t)n;
      head[have] = 0;
    }
    size_t head_len = (size_t)(end - head) + 4;
    *end = 0;
    char *method = head, *sp = strchr(head, ' ');
    if (!sp) return;
    *sp = 0;
    char *path = sp + 1, *sp2 = strchr(path, ' ');
    if (!sp2) return;
    *sp2 = 0;
    char *line = strstr(sp2 + 1, "\r\n");
    long len = 0;
    char *buf;
    size_t buf_len;
    FILE *o = open_memstream(&buf, &buf_len);
    fputs("{\"method\":", o);
    json_str(o, method, strlen(method));
    fputs(",\"path\":", o);
    json_str(o, path, strlen(path));
    fputs(",\"headers\":[", o);
    int first = 1;
    while (line) {
      char *h = line + 2, *next = strstr(h, "\r\n"), *colon;
      if (next) *next = 0;
      if ((colon = strchr(h, ':'))) {
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        if ((size_t)(colon - h) == 14 && !strncasecmp(h, "content-length", 14)) len = atol(v);
        fputs(first ? "[" : ",[", o);
        first = 0;
        json_str(o, h, (size_t)(colon - h));
        fputc(',', o);
        json_str(o, v, strlen(v));
        fputc(']', o);
      }
      line = next;
    }
    if (len < 0 || len > MAX_BODY) return;
    char *body = malloc((size_t)len + 1);
    size_t got = have - head_len < (size_t)len ? have - head_len : (size_t)len;
    memcpy(body, head + head_len, got);
    size_t rest = have - head_len - got;
    memmove(head, head + head_len + got, rest);
    have = rest;
    while (got < (size_t)len) {
      ssize_t n = read(fd, body + got, (size_t)len - got);
      if (n <= 0) return;
      got += (size_t)n;
    }
    fputs("],\"body_hex\":\"", o);
    for (long i = 0; i < len; i++) fprintf(o, "%02x", (unsigned char)body[i]);
    fputs("\"}\n", o);
    fclose(o);
    free(body);
    /* One write per line, so lines of concurrent connections do not interleave. */
    if (write(1, buf, buf_len) < 0) return;
    free(buf);
    static const char ok[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
    if (write(fd, ok, sizeof ok - 1) < 0) return;
  }
}

int main(void) {
  const char *p = getenv("HTTP_PORT");
  int port = p ? atoi(p) : 8080;
  signal(SIGCHLD, SIG_IGN); /* connection processes reap themselves */
  signal(SIGPIPE, SIG_IGN);
  int s = socket(AF_INET, SOCK_STREAM, 0), yes = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64)) {
    perror("echo: listen");
    return 1;
  }
  fprintf(stderr, "echo: listening on :%d\n", port);
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) continue;
    if (fork() == 0) {
      close(s);
      serve(c);
      _exit(0);
    }
    close(c);
  }
}
