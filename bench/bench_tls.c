/* bench_tls: see bench_tls.h. */
#include "bench_tls.h"

#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

static SSL_CTX *fail(SSL_CTX *ctx, const char *what, const char *file, char *err, size_t errlen)
{
	unsigned long e = ERR_get_error();
	char why[160] = "unknown error";

	if (e != 0)
		ERR_error_string_n(e, why, sizeof(why));
	ERR_clear_error();
	snprintf(err, errlen, "%s %s: %s", what, file, why);
	SSL_CTX_free(ctx);
	return NULL;
}

static SSL_CTX *new_ctx(const SSL_METHOD *method)
{
	SSL_CTX *ctx = SSL_CTX_new(method);

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx,
	                    SSL_OP_ENABLE_KTLS | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	/* xprt retries an SSL_write with more bytes appended behind the first. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
}

static SSL_CTX *load_pair(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen)
{
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return fail(ctx, "certificate", cert, err, errlen);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		return fail(ctx, "key", key, err, errlen);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return fail(ctx, "key", key, err, errlen);
	return ctx;
}

SSL_CTX *bench_tls_client(const char *ca, const char *cert, const char *key, char *err,
                          size_t errlen)
{
	SSL_CTX *ctx = new_ctx(TLS_client_method());

	if (ctx == NULL)
		return fail(ctx, "TLS", "client context", err, errlen);
	if (ca != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
			return fail(ctx, "CA file", ca, err, errlen);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	if (cert != NULL)
		return load_pair(ctx, cert, key, err, errlen);
	return ctx;
}

static int accept_any(int ok, X509_STORE_CTX *store)
{
	/* Ask for a client certificate but finish the handshake either way: the
	 * sink answers MAIL with 530 when it did not verify (a clearer error for
	 * the client than an alert). */
	return 1;
}

SSL_CTX *bench_tls_server(const char *cert, const char *key, const char *ca, bool read_ahead,
                          char *err, size_t errlen)
{
	SSL_CTX *ctx = new_ctx(TLS_server_method());

	if (ctx == NULL)
		return fail(ctx, "TLS", "server context", err, errlen);
	if (read_ahead) {
		/* Several records per recv: fewer system calls, and xprt then finds
		 * the data pending in OpenSSL instead of polling the socket. */
		SSL_CTX_set_read_ahead(ctx, 1);
		SSL_CTX_set_default_read_buffer_len(ctx, 64u << 10);
	}
	if (load_pair(ctx, cert, key, err, errlen) == NULL)
		return NULL;
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"krelay-bench", 12);
	if (ca != NULL) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);

		if (names == NULL || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			return fail(ctx, "CA file", ca, err, errlen);
		}
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any);
	}
	return ctx;
}

int bench_tls_version(const char *cmd, const char *text)
{
	if (strcmp(text, "1.2") == 0)
		return TLS1_2_VERSION;
	if (strcmp(text, "1.3") != 0)
		bench_usage_error(cmd, "--tls-max: \"%s\" is not 1.2 or 1.3", text);
	return TLS1_3_VERSION;
}

bool bench_tls_peer_verified(SSL *ssl)
{
	X509 *peer = SSL_get1_peer_certificate(ssl);
	bool ok = peer != NULL && SSL_get_verify_result(ssl) == X509_V_OK;

	X509_free(peer);
	return ok;
}
