/* metrics_http: the pure parts of the metrics endpoint (metrics_srv.c
 * serves it on the ring): the parse of an HTTP request's head, and the
 * escaping of the Prometheus text format (0.0.4).  No I/O, no clock:
 * tests/unit/test_metrics_http.c. */
#ifndef KRELAY_METRICS_HTTP_H
#define KRELAY_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "strbuf.h"

#define METRICS_HTTP_MAX  8192 /* a request's head (request line and headers), at most */
#define METRICS_LABEL_MAX 128  /* bytes of a label value kept, before escaping */
#define METRICS_PATH      "/metrics"

/* Looks at the first len bytes a client sent.  Returns 0 while the head
 * (up to its empty line) is incomplete and may still be valid, else the
 * status to answer:
 *   200  GET or HEAD of /metrics (a query string is ignored); *head set
 *        for HEAD
 *   400  not an HTTP/1.x request head, or none within METRICS_HTTP_MAX
 *        bytes (told as soon as a byte shows it, not at the end)
 *   404  a well-formed request for another path
 *   405  another method for /metrics
 * Lines end with CRLF or a bare LF.  What follows the head (a body) is
 * not looked at: the connection is closed after the reply. */
int metrics_http_parse(const char *buf, size_t len, bool *head);

/* The reason phrase of a status metrics_http_parse returns. */
const char *metrics_http_reason(int status);

/* Appends value as a label value (without its quotes): at most
 * METRICS_LABEL_MAX bytes of it, cut before a character that would not
 * fit; backslash, double quote and newline escaped (\\, \", \n); a byte
 * that is not part of well-formed UTF-8, or another control character,
 * becomes '?'.  Safe for anything from outside (a recipient domain). */
void metrics_label_value(struct strbuf *out, const char *value);

/* Appends text as a # HELP line's text: backslash and newline escaped. */
void metrics_help_text(struct strbuf *out, const char *text);

#endif
