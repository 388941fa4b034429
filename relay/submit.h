/* submit: local submission's pure part (`krelay sendmail`, the Sendmail
 * command line): a message read from a program becomes what goes into
 * DATA, as Sendmail makes it.  Pure code (tests/unit/test_submit.c).
 *
 * - LF or CRLF lines in, CRLF lines out; without -i a line "." ends input;
 *   a leading mbox "From " line is dropped.
 * - The header block is the leading "Name: value" lines (and their
 *   continuation lines); a message that starts otherwise has none.
 * - With -t, To:, Cc: and Bcc: name the recipients (RFC 5322 address lists:
 *   display names, quoted strings, comments, groups); Bcc: is never sent.
 * - From:, Date: and Message-ID: are added when missing (From: with -F's
 *   full name), and X-Authentication-Warning: when a user who is not trusted
 *   set the sender with -f.
 * - A bare local part ("root") is qualified with the host name. */
#ifndef KRELAY_SUBMIT_H
#define KRELAY_SUBMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SUBMIT_RCPT_MAX 1000

/* Appends the addresses of an address-list header value to rcpts (each one
 * malloc'ed, bare local parts qualified with host).  Returns 0, or -1 with
 * err ("unbalanced '<'", too many) and nothing appended. */
int submit_addr_list(const char *value, const char *host, char **rcpts, size_t max, size_t *nrcpt,
                     char *err, size_t errlen);

/* Qualifies and checks one address (a command-line recipient or -f):
 * malloc'ed "local@domain", or NULL with err. */
char *submit_addr(const char *addr, const char *host, char *err, size_t errlen);

struct submit_opts {
	bool extract;          /* -t */
	bool dot_ends;         /* without -i / -oi */
	const char *sender;    /* the envelope sender ("" for <>) */
	const char *full_name; /* -F, or NULL */
	const char *hostname;
	const char *auth_warning; /* X-Authentication-Warning's value, or NULL */
	time_t now;
	unsigned long unique; /* for the Message-ID */
};

struct submit_msg {
	char *data; /* CRLF lines, not dot-stuffed, ends with CRLF */
	size_t len;
	char *rcpts[SUBMIT_RCPT_MAX]; /* with -t */
	size_t nrcpt;
	bool eight_bit;
};

/* Makes m from the input; 0, or -1 with err. */
int submit_prepare(const char *in, size_t inlen, const struct submit_opts *o, struct submit_msg *m,
                   char *err, size_t errlen);
void submit_msg_free(struct submit_msg *m);

#endif
