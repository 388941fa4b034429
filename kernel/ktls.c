/* ktls: see ktls.h. */
#include "ktls.h"

#include <stdio.h>
#include <string.h>

static bool cipher_offloadable(const SSL_CIPHER *c)
{
	/* What OpenSSL 3.0's ktls_check_supported_cipher() accepts on Linux. */
	int nid = SSL_CIPHER_get_cipher_nid(c);

	return nid == NID_aes_128_gcm || nid == NID_aes_256_gcm || nid == NID_chacha20_poly1305;
}

void ktls_query(SSL *ssl, const struct caps *caps, struct ktls_state *st)
{
	const char *why = "";
	bool possible = probe_ktls_possible(caps, &why);
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);

	st->tx = BIO_get_ktls_send(SSL_get_wbio(ssl)) > 0;
	st->rx = BIO_get_ktls_recv(SSL_get_rbio(ssl)) > 0;
	st->tx_why = st->rx_why = "";
	if (!(SSL_get_options(ssl) & SSL_OP_ENABLE_KTLS)) {
		possible = false;
		why = "SSL_OP_ENABLE_KTLS cleared by the configuration";
	}
	if (!st->tx) {
		if (!possible)
			st->tx_why = why;
		else if (c == NULL || !cipher_offloadable(c))
			st->tx_why = "cipher not offloadable";
		else
			st->tx_why = "OpenSSL did not offload";
	}
	if (!st->rx) {
		if (!possible)
			st->rx_why = why;
		else if (SSL_version(ssl) >= TLS1_3_VERSION)
			st->rx_why = "OpenSSL 3.0 offloads no TLS 1.3 receive";
		else if (c == NULL || !cipher_offloadable(c))
			st->rx_why = "cipher not offloadable";
		else
			st->rx_why = "OpenSSL did not offload";
	}
}

static void keyupdate_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                         SSL *ssl, void *arg)
{
	const unsigned char *p = buf;

	if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 && p[0] == SSL3_MT_KEY_UPDATE)
		*(bool *)arg = true;
}

void ktls_watch_keyupdate(SSL *ssl, bool *flag)
{
	SSL_set_msg_callback(ssl, keyupdate_cb);
	SSL_set_msg_callback_arg(ssl, flag);
}

void ktls_describe(SSL *ssl, char *buf, size_t len)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	int alg = 0, bits = c ? SSL_CIPHER_get_bits(c, &alg) : 0;

	snprintf(buf, len, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl),
	         c ? SSL_CIPHER_get_name(c) : "none", bits, alg);
}
