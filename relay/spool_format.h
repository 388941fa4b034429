/* spool_format: the on-disk form of one queued message.  Pure code.
 *
 * A message is one file, QueueDirectory/queue/ID:
 *   [body: the message in final wire form: Received header + content, CRLF
 *    line ends, dots un-stuffed; spliced to the next hop unchanged]
 *   [envelope: text lines "key value", values %XX-escaped]
 *   [trailer: "\nKRELAY-ENV <16 hex: envelope offset> <8 hex: envelope length>\n"]
 * The body starts at offset 0 and its length is the envelope's offset.  The
 * file is written under tmp/, fdatasync'd, then renamed into queue/, and the
 * directory fsync'd, before "250 queued": a name in queue/ is a whole message. */
#ifndef KRELAY_SPOOL_FORMAT_H
#define KRELAY_SPOOL_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_ID_LEN      16
#define SPOOL_TRAILER_LEN 38
#define SPOOL_ENV_MAX     (16u << 20)

/* P: to be delivered; D: delivered; F: failed for good, bounce still to be
 * queued; B: failed and the sender notified (or nobody to notify). */
enum spool_rcpt_state {
	SPOOL_RCPT_PENDING = 'P',
	SPOOL_RCPT_DELIVERED = 'D',
	SPOOL_RCPT_FAILED = 'F',
	SPOOL_RCPT_BOUNCED = 'B',
};

struct spool_rcpt {
	char *addr;
	char state; /* enum spool_rcpt_state */
};

struct spool_env {
	char id[SPOOL_ID_LEN + 1];
	int64_t arrival; /* unix seconds */
	uint64_t body_size;
	bool dot_lines;  /* a body line starts with '.': DATA needs stuffing */
	bool final_crlf; /* the body ends with CRLF (always, unless BDAT left it open) */
	bool eight_bit;
	bool smtputf8;
	/* RFC 8689: relayed only over authenticated TLS to a next hop that
	 * offers REQUIRETLS, else returned */
	bool requiretls;
	int body_type; /* 0 unspecified, 7 (7BIT), 8 (8BITMIME) */
	char *sender;  /* "" for the null sender */
	struct spool_rcpt *rcpts;
	size_t rcpt_count;
	char *client;      /* "127.0.0.1" */
	char *helo;        /* as the client said it */
	char *tls;         /* "TLSv1.3 TLS_AES_256_GCM_SHA384 (256/256 bits)", "" if none */
	char *client_cert; /* "none", "verified SHA256", "unverified SHA256" */
	/* delivery attempts so far, the next one (unix seconds), the last error */
	unsigned attempts;
	int64_t next_attempt;
	char *last_error;
};

/* Writes the envelope text; returns its length (like snprintf: the needed
 * length even when cap is too small). */
size_t spool_env_format(const struct spool_env *e, char *buf, size_t cap);

/* Parses envelope text into e (allocating strings).  Returns 0, or -1 with
 * err set. */
int spool_env_parse(const char *buf, size_t len, struct spool_env *e, char *err, size_t errlen);
void spool_env_free(struct spool_env *e);

void spool_trailer_format(char out[SPOOL_TRAILER_LEN], uint64_t env_off, uint32_t env_len);
int spool_trailer_parse(const char *in, uint64_t *env_off, uint32_t *env_len);

/* Queue IDs: 16 upper-case hex digits, time-ordered; bits 24-31 hold the
 * index of the worker that made it, which owns the message. */
bool spool_id_valid(const char *id);
unsigned spool_id_owner(const char *id, unsigned workers);

#endif
