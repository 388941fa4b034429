/* dsn: see dsn.h. */
#include "dsn.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "safe.h"

/* The longest outside text quoted (an address, a reply): longer is cut. */
#define DSN_TEXT_MAX 1024

struct out {
	char *p;
	size_t len, cap;
};

static void emit(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(o->len < o->cap ? o->p + o->len : NULL, o->len < o->cap ? o->cap - o->len : 0,
	              fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

static void emit_raw(struct out *o, const char *s, size_t n)
{
	if (o->len < o->cap)
		memcpy(o->p + o->len, s, o->len + n <= o->cap ? n : o->cap - o->len);
	o->len += n;
}

static void rfc5322_date(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

size_t dsn_header_len(const char *msg, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (msg[i] == '\n' && msg[i + 1] == '\n')
			return i + 2;
		if (i + 3 < len && memcmp(msg + i, "\r\n\r\n", 4) == 0)
			return i + 4;
	}
	return len;
}

/* Whether s (n bytes) holds boundary anywhere. */
static bool holds(const char *s, size_t n, const char *boundary)
{
	return s != NULL && memmem(s, n, boundary, strlen(boundary)) != NULL;
}

/* Whether the text s, quoted in the bounce as safe_body_text makes it,
 * holds boundary. */
static bool quoted_holds(const char *s, const char *boundary)
{
	char esc[SAFE_LEN(DSN_TEXT_MAX)];

	if (s == NULL)
		return false;
	safe_body_text(esc, sizeof(esc), s);
	return holds(esc, strlen(esc), boundary);
}

/* A boundary that occurs nowhere in what the bounce quotes (the original
 * headers, the sender, each recipient, reply and remote MTA):
 * in->boundary, or it with "=N" added. */
static void pick_boundary(const struct dsn_info *in, char *b, size_t len)
{
	snprintf(b, len, "%s", in->boundary);
	for (unsigned k = 1;; k++) {
		bool found = holds(in->headers, in->headers_len, b) || quoted_holds(in->sender, b);
		for (size_t i = 0; i < in->nrcpt && !found; i++)
			found = quoted_holds(in->rcpts[i].addr, b) ||
			        quoted_holds(in->rcpts[i].diagnostic, b) ||
			        quoted_holds(in->rcpts[i].remote_mta, b);
		if (!found)
			return;
		snprintf(b, len, "%s=%u", in->boundary, k);
	}
}

size_t dsn_format(const struct dsn_info *in, char *buf, size_t cap)
{
	struct out o = {buf, 0, cap};
	char date[64], arrival[64], boundary[160], esc[SAFE_LEN(DSN_TEXT_MAX)];
	char esc2[SAFE_LEN(DSN_TEXT_MAX)];

	rfc5322_date(in->now, date, sizeof(date));
	rfc5322_date(in->arrival, arrival, sizeof(arrival));
	emit(&o, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", in->reporting_mta);
	pick_boundary(in, boundary, sizeof(boundary));
	emit(&o, "To: <%s>\r\n", safe_body_text(esc, sizeof(esc), in->sender));
	emit(&o, "Subject: Undelivered Mail Returned to Sender\r\n");
	emit(&o, "Date: %s\r\n", date);
	emit(&o, "Message-Id: <%s.bounce@%s>\r\n", in->queue_id, in->reporting_mta);
	emit(&o, "Auto-Submitted: auto-replied\r\n");
	emit(&o, "MIME-Version: 1.0\r\n");
	emit(&o,
	     "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	     "\tboundary=\"%s\"\r\n\r\n",
	     boundary);
	emit(&o, "This is a MIME-encapsulated message.\r\n\r\n");

	/* 1: for people */
	emit(&o, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", boundary);
	emit(&o, "This is the mail system at host %s.\r\n\r\n", in->reporting_mta);
	emit(&o, "Your message could not be delivered to one or more recipients.\r\n"
	         "It is attached below.\r\n\r\n");
	for (size_t i = 0; i < in->nrcpt; i++)
		emit(&o, "<%s>: %s\r\n", safe_body_text(esc, sizeof(esc), in->rcpts[i].addr),
		     safe_body_text(esc2, sizeof(esc2), in->rcpts[i].diagnostic));
	emit(&o, "\r\n");

	/* 2: for programs (RFC 3464) */
	emit(&o, "--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary);
	emit(&o, "Reporting-MTA: dns; %s\r\n", in->reporting_mta);
	emit(&o, "X-Krelay-Queue-ID: %s\r\n", in->queue_id);
	emit(&o, "Arrival-Date: %s\r\n", arrival);
	for (size_t i = 0; i < in->nrcpt; i++) {
		const struct dsn_rcpt *r = &in->rcpts[i];
		emit(&o, "\r\nFinal-Recipient: rfc822; %s\r\n",
		     safe_body_text(esc, sizeof(esc), r->addr));
		emit(&o, "Action: failed\r\n");
		emit(&o, "Status: %s\r\n", r->status);
		if (r->remote_mta != NULL && r->remote_mta[0] != '\0')
			emit(&o, "Remote-MTA: dns; %s\r\n",
			     safe_body_text(esc, sizeof(esc), r->remote_mta));
		emit(&o, "Diagnostic-Code: smtp; %s\r\n",
		     safe_body_text(esc, sizeof(esc), r->diagnostic));
	}
	emit(&o, "\r\n");

	/* 3: the original headers */
	emit(&o, "--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary);
	emit_raw(&o, in->headers, in->headers_len);
	if (in->headers_len < 2 || memcmp(in->headers + in->headers_len - 2, "\r\n", 2) != 0)
		emit(&o, "\r\n");
	emit(&o, "\r\n--%s--\r\n", boundary);
	if (o.len < cap)
		buf[o.len] = '\0';
	return o.len;
}
