/* strbuf: a growing, NUL-terminated text buffer for the pure modules that
 * write text (submit, sm_import).  An allocation that fails sets oom and
 * makes every later call a no-op, so callers check once at the end. */
#ifndef KRELAY_STRBUF_H
#define KRELAY_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

struct strbuf {
	char *p; /* NULL until something is written */
	size_t len, cap;
	bool oom;
};

void strbuf_put(struct strbuf *b, const char *s, size_t n);
void strbuf_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_free(struct strbuf *b);

#endif
