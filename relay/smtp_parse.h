/* smtp_parse: the SMTP command parser.  Pure code, no I/O: splits input into
 * lines (resumable across reads) and parses one command line into a struct. */
#ifndef KRELAY_SMTP_PARSE_H
#define KRELAY_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_LINE_MAX 1000 /* RFC 5321 4.5.3.1.4/5: command line incl. CRLF */
#define SMTP_PATH_MAX 256  /* RFC 5321 4.5.3.1.3: path incl. angle brackets */

enum smtp_verb {
	SMTP_UNKNOWN,
	SMTP_HELO,
	SMTP_EHLO,
	SMTP_MAIL,
	SMTP_RCPT,
	SMTP_DATA,
	SMTP_BDAT,
	SMTP_RSET,
	SMTP_NOOP,
	SMTP_QUIT,
	SMTP_VRFY,
	SMTP_EXPN,
	SMTP_HELP,
	SMTP_STARTTLS,
	SMTP_AUTH,
	SMTP_VERB_COUNT
};

enum smtp_body { SMTP_BODY_NONE, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };

struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg; /* text after the verb and one space; "" when none */
	size_t arg_len;
	/* MAIL / RCPT */
	char addr[SMTP_PATH_MAX + 1]; /* mailbox without brackets; "" for <> */
	const char *domain;           /* points into addr after '@', or NULL */
	bool has_size;
	uint64_t size;
	enum smtp_body body;
	bool smtputf8;
	bool requiretls; /* MAIL ... REQUIRETLS (RFC 8689) */
	/* BDAT */
	uint64_t chunk_size;
	bool last;
};

/* Line splitting.  A line ends with CRLF.  The state survives across reads so
 * an over-long line is discarded up to its end without buffering it. */
enum smtp_line_result {
	SMTP_LINE_MORE,     /* no complete line yet; consumed bytes may be > 0 */
	SMTP_LINE_OK,       /* *line_len bytes at buf (without CRLF) form a line */
	SMTP_LINE_TOO_LONG, /* a line over SMTP_LINE_MAX ended; reply 500 5.5.2 */
	SMTP_LINE_BARE_LF,  /* a line ended by LF without CR; reply 500 5.5.2 */
};

struct smtp_lines {
	bool discarding; /* inside an over-long line */
};

/* Looks for the next line in buf[0..len).  *consumed is how many bytes the
 * caller must drop from the front of its buffer (line and terminator, or
 * discarded bytes of an over-long line).  With SMTP_LINE_MORE and nothing
 * consumed the caller reads more; the caller never needs to hold more than
 * SMTP_LINE_MAX bytes. */
enum smtp_line_result smtp_line_next(struct smtp_lines *st, const char *buf, size_t len,
                                     size_t *consumed, size_t *line_len);

/* Parses one command line (no CRLF).  Returns 0 on success, or an SMTP reply
 * ("501 5.5.4 Syntax: MAIL FROM:<address>") describing the error; the verb
 * is set whenever it was recognised, so the caller can count errors. */
const char *smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd);

const char *smtp_verb_name(enum smtp_verb v);

#endif
