/* sm_qf: reads a Sendmail 8.12+ queue control file (qf, version 8) into
 * what krelay needs to relay the message.  Pure code.
 *
 * The format (see ../shared/sendmail-facts.md §3): one record per line,
 * the first byte its type; a line starting with SP or TAB continues the
 * record before it; "V8" first, "." last, nothing after it.  A letter this
 * reader does not know, a quarantined file (q), a local recipient (a
 * program, a file, a name without a domain) or a macro reference it cannot
 * expand makes the whole file unreadable (err says why): it is left for
 * Sendmail, never half taken.
 *
 * Headers are rendered as Sendmail's relay mailer (F=mDFMuXa) would write
 * them: "?flags?" conditions are evaluated against those mailer flags, a
 * "?$x?" / "?${name}?" condition against the file's own macros, \201x
 * macro references are expanded ($g the sender, $j the host name, the
 * rest from the file's $ records; unset ones are empty, as in Sendmail),
 * \377 quotes the byte after it, and Bcc: is dropped when the F record
 * has b.  Every Sendmail line end becomes CRLF. */
#ifndef KRELAY_SM_QF_H
#define KRELAY_SM_QF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The relay/esmtp mailers' flags, which header conditions are tested on. */
#define SMQF_MAILER_FLAGS "mDFMuXa"

struct smqf_rcpt {
	char *addr;     /* without angle brackets */
	char flags[16]; /* the R record's flags: P, N, S, F, D, B, A */
	char *orcpt;    /* DSN ORCPT (Q record before it), or NULL */
};

struct smqf_macro {
	char *name; /* "_", "r", "daemon_flags" */
	char *value;
};

struct smqf {
	int64_t created;   /* T */
	int64_t last_try;  /* K (0: never) */
	unsigned attempts; /* N */
	int body_type;     /* B: 0 none, 7 (7BIT), 8 (8BITMIME), 9 (BINARYMIME) */
	bool eight_bit;    /* F 8 */
	bool delete_bcc;   /* F b */
	bool smtputf8;     /* F e */
	char ret;          /* DSN RET: 'F' (F d), 'H' (F n), 0 none */
	char *sender;      /* "" for the null sender */
	char *envid;       /* Z, or NULL */
	char *df_dir;      /* d: the df lives in that queue directory, or NULL */
	struct smqf_rcpt *rcpts;
	size_t rcpt_count;
	struct smqf_macro *macros;
	size_t macro_count;
	char *headers; /* rendered, CRLF line ends, ending with the empty line */
	size_t headers_len;
	unsigned header_count, headers_dropped;
};

/* Parses the qf text buf[0..len) for a relay whose name is hostname ($j).
 * 0, or -1 with err set (q untouched then: nothing to free). */
int smqf_parse(const char *buf, size_t len, const char *hostname, struct smqf *q, char *err,
               size_t errlen);
void smqf_free(struct smqf *q);

/* A queue file name: "qf" + an ID of 8-20 of [0-9A-Za-z]; the ID's start,
 * or NULL. */
const char *smqf_name_id(const char *name, const char *prefix);

/* The value of macro name ("_", "{daemon_flags}" or "daemon_flags"), or NULL. */
const char *smqf_macro(const struct smqf *q, const char *name);

#endif
