/* dsn: delivery status notifications (RFC 3464 multipart/report, RFC 6522)
 * for recipients that failed for good.  Pure code: formats the whole bounce
 * message, ready to be queued with the null sender. */
#ifndef KRELAY_DSN_H
#define KRELAY_DSN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct dsn_rcpt {
	const char *addr;
	const char *status;     /* "5.7.1" */
	const char *diagnostic; /* the remote reply, "550 5.7.1 relay access denied" */
	const char *remote_mta; /* "mx.example.org", or NULL */
};

struct dsn_info {
	const char *reporting_mta; /* our hostname */
	const char *queue_id;
	const char *sender; /* original envelope sender: the bounce's recipient */
	time_t arrival;
	time_t now;
	const struct dsn_rcpt *rcpts;
	size_t nrcpt;
	const char *headers; /* the original message's header section */
	size_t headers_len;
	const char *boundary; /* unique per bounce */
};

/* Writes the bounce (headers, CRLF line ends) into buf; returns its length,
 * or the length needed when cap is too small (like snprintf). */
size_t dsn_format(const struct dsn_info *in, char *buf, size_t cap);

/* Length of the header section at the start of a message (up to and
 * including the empty line), at most len. */
size_t dsn_header_len(const char *msg, size_t len);

#endif
