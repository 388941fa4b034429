/* smtp_client: one outbound SMTP connection (RFC 5321, 2920 pipelining,
 * 3030 BDAT, 3207 STARTTLS), reusable for many transactions, with an opaque
 * handle and callbacks (OpenSMTPD's smtp_client habit).  It knows nothing of
 * the queue: it gets a transaction, fills in each recipient's reply, and
 * says when it is ready for the next one. */
#ifndef KRELAY_SMTP_CLIENT_H
#define KRELAY_SMTP_CLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "probe.h"
#include "ring.h"

#define SMTP_REPLY_MAX 512

enum smtp_fail {
	SMTP_FAIL_CONNECT,       /* could not connect */
	SMTP_FAIL_IO,            /* connection lost or timed out */
	SMTP_FAIL_PROTO,         /* the peer broke the protocol */
	SMTP_FAIL_GREETING,      /* 4xx/5xx banner or EHLO/HELO refused (reply in why) */
	SMTP_FAIL_TLS,           /* handshake failed, or TLS required and not offered */
	SMTP_FAIL_TLS_KEYUPDATE, /* TLS 1.3 KeyUpdate on a kTLS connection */
};

struct smtp_client_params {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	const char *host;         /* next-hop name: SNI and certificate name (verify) */
	bool host_literal;        /* host is an IP address: match IP subjectAltName */
	const char *helo;         /* our name */
	int tls_policy;           /* enum config_tls_policy */
	SSL_CTX *tls_ctx;         /* client context (may be NULL with policy none) */
	bool smtps;               /* implicit TLS: the handshake comes first, whatever the
	                           * policy (which still says whether to verify) */
	SSL_SESSION *tls_session; /* to resume, or NULL */
	/* TLS_POLICY_DANE: the host's usable TLSA records; the peer must match
	 * one (OpenSSL's DANE verification, RFC 7672) */
	const struct dane_tlsa_set *dane;
	/* what auth= says after a verified handshake under TLS_POLICY_VERIFY:
	 * "pkix", or "mta-sts" when an MTA-STS policy asked for it */
	const char *verify_auth;
	/* check the peer as TLS_POLICY_VERIFY would (CAs of tls_ctx, host
	 * name), without failing the handshake: smtp_client_verify_result
	 * says what was found (an MTA-STS policy in mode testing) */
	bool check_only;
	int body_path; /* enum config_body_path */
	bool no_ktls;  /* keep record encryption in OpenSSL (after a KeyUpdate) */
	unsigned connect_timeout_s, timeout_s;
	const struct caps *caps;
	/* an egress source: the local address to connect from (port 0: the
	 * kernel picks the port), of addr's family; bind_len 0: none */
	struct sockaddr_storage bind_addr;
	socklen_t bind_len;
};

struct smtp_tx_rcpt {
	const char *addr;
	int code; /* 0 until answered */
	char reply[SMTP_REPLY_MAX];
};

struct smtp_tx {
	const char *sender; /* "" for <> */
	struct smtp_tx_rcpt *rcpts;
	size_t nrcpt;
	int fd; /* the spool file: body at [body_off, body_off + size) */
	uint64_t body_off;
	uint64_t size;
	bool dot_lines, final_crlf, eight_bit, smtputf8;
	/* RFC 8689: MAIL ... REQUIRETLS, when the server offers REQUIRETLS and
	 * requiretls_refused is NULL; otherwise every recipient gets 550 5.7.30
	 * with requiretls_refused (the owner's why: the path is not
	 * authenticated) or "the server does not offer REQUIRETLS" */
	bool requiretls;
	const char *requiretls_refused;
	/* set by the client */
	const char *body_path; /* "splice", "ssl_write", "copy", "stuffing", or "" */
	uint64_t body_bytes;
};

struct smtp_client;
struct dane_tlsa_set;

struct smtp_client_cb {
	void (*ready)(void *owner, struct smtp_client *c);
	/* The transaction is over: every rcpt has a code (0: not tried, the
	 * connection failed first).  The client is ready again unless failed
	 * follows. */
	void (*done)(void *owner, struct smtp_client *c, struct smtp_tx *tx);
	/* The connection is lost or broken (text: raw, from outside in part:
	 * make it safe before logging it).  A transaction under way ends with
	 * it: a rcpt keeps a 4xx/5xx its RCPT got, and a final reply to the end
	 * of data that came before the failure; every other rcpt has code 0. */
	void (*failed)(void *owner, struct smtp_client *c, enum smtp_fail why, const char *text);
	/* Nothing is in flight any more; the handle is gone after this. */
	void (*closed)(void *owner, struct smtp_client *c);
};

struct smtp_client *smtp_client_connect(struct ring *ring, const struct smtp_client_params *p,
                                        const struct smtp_client_cb *cb, void *owner);
/* Starts a transaction (only after ready or done). */
void smtp_client_send(struct smtp_client *c, struct smtp_tx *tx);
/* QUIT and close (or just close when mid-way); closed follows. */
void smtp_client_quit(struct smtp_client *c);
/* krelay is stopping: a connection that has not begun to send a body is
 * closed now (failed follows, from the ring, with its recipients not done;
 * then closed); an idle one QUITs; one sending a body or waiting for the
 * reply to its end is left to finish (closing it there would have the
 * message sent again at the next start). */
void smtp_client_stop(struct smtp_client *c);

/* Facts about the connection, for the delivery log. */
const char *smtp_client_peer(const struct smtp_client *c); /* "127.0.0.1:25" */
const char *smtp_client_tls(const struct smtp_client *c);  /* "" or "TLSv1.3 with cipher ..." */
bool smtp_client_tls_verified(const struct smtp_client *c);
/* After a TLS failure, or a handshake with check_only: OpenSSL's verify
 * result (X509_V_OK when the certificate was not the reason, or passed),
 * and whether the reason was a server that does not offer STARTTLS
 * although TLS was required. */
long smtp_client_verify_result(const struct smtp_client *c);
bool smtp_client_starttls_missing(const struct smtp_client *c);
/* Our side's address, "" when unknown ("192.0.2.1", "2001:db8::1"). */
const char *smtp_client_local(const struct smtp_client *c);
/* How the peer was authenticated: "dane-ee", "dane-ta" (the TLSA record
 * that matched), "pkix" (TLSPolicy verify: CA and name), "mta-sts" (the
 * same, asked by the domain's MTA-STS policy), or "none". */
const char *smtp_client_auth(const struct smtp_client *c);
bool smtp_client_ktls_tx(const struct smtp_client *c);
const char *smtp_client_ktls_why(const struct smtp_client *c);
bool smtp_client_resumed(const struct smtp_client *c);
/* A new reference to the TLS session for resumption, or NULL. */
SSL_SESSION *smtp_client_session(const struct smtp_client *c);

#endif
