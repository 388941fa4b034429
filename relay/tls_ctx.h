/* tls_ctx: OpenSSL contexts built from the configuration, and the checks
 * that keep krelay from ever falling back to plaintext because of its own
 * certificate (a missing, weak, expired or mismatched key is an error). */
#ifndef KRELAY_TLS_CTX_H
#define KRELAY_TLS_CTX_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

/* Builds the server context, or NULL when no ServerCertFile is configured
 * (then *err is ""), or NULL with *err = "where: why" on any error. */
SSL_CTX *tls_server_ctx(const struct config *c, char *err, size_t errlen);

/* Builds the client context used for relaying: TLS 1.2+ AEAD, kTLS enabled,
 * the CA options for verification, ClientCertFile/ClientKeyFile presented
 * when asked (mutual authentication).  Verification is switched on per
 * connection by the TLS policy.  NULL with err on error. */
SSL_CTX *tls_client_ctx(const struct config *c, char *err, size_t errlen);
/* The same with other CAs to verify next hops by (MTASTSCAFile). */
SSL_CTX *tls_client_ctx_ca(const struct config *c, const char *ca_file, const char *ca_path,
                           char *err, size_t errlen);

/* Checks every certificate, key and CA option; prints one line per finding
 * to out.  Returns the number of errors. */
int tls_check(const struct config *c, FILE *out);

struct tls_peer {
	bool cert;     /* the client presented one */
	bool verified; /* and it verified against CACertFile/CACertPath */
	uint8_t sha256[32];
	char fingerprint[65]; /* lower-case hex */
	char subject[128];
	/* issuer's and subject's names as Sendmail's access map writes them
	 * (X509_NAME_oneline, then +HH): RelayClientIssuer/RelayClientSubject */
	char issuer_dn[256], subject_dn[256];
	char verify_error[96];
};
/* X509_NAME_oneline's text with space, '+', '\\', '<', '>', '(', ')', '"'
 * and bytes outside 0x21..0x7e as +HH, as Sendmail's ${cert_subject}. */
void tls_name_xtext(const char *oneline, char *out, size_t len);
void tls_peer_info(SSL *ssl, struct tls_peer *p);

#endif
