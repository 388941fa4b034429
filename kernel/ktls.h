/* ktls: per-connection kernel TLS state.  OpenSSL (socket BIO, with
 * SSL_OP_ENABLE_KTLS) installs the keys itself when the handshake's keys
 * change; this module reads back what happened, explains why offload is off,
 * and watches for the TLS 1.3 KeyUpdate hazard (DESIGN.md). */
#ifndef KRELAY_KTLS_H
#define KRELAY_KTLS_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "probe.h"

struct ktls_state {
	bool tx;
	bool rx;
	const char *tx_why; /* why off ("" when on) */
	const char *rx_why;
};

/* Call after the handshake completed. */
void ktls_query(SSL *ssl, const struct caps *caps, struct ktls_state *st);

/* From now on *flag becomes true when the peer sends a KeyUpdate: with kTLS
 * TX on, OpenSSL 3.0 would change only its own key and the stream would
 * break, so the caller must close the connection cleanly. */
void ktls_watch_keyupdate(SSL *ssl, bool *flag);

/* Short "TLSv1.3 TLS_AES_256_GCM_SHA384 (256/256 bits)" description. */
void ktls_describe(SSL *ssl, char *buf, size_t len);

#endif
