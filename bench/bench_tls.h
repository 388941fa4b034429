/* bench_tls: OpenSSL contexts for krelay-bench: TLS 1.2 or newer, kTLS
 * enabled (the xprt layer reads back whether the kernel took over). */
#ifndef KRELAY_BENCH_TLS_H
#define KRELAY_BENCH_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* Client: verifies the server's chain against ca when given (no name
 * check: targets are addresses), presents cert/key when given. */
SSL_CTX *bench_tls_client(const char *ca, const char *cert, const char *key, char *err,
                          size_t errlen);
/* Server: cert/key; with ca, asks for a client certificate (the verdict is
 * read back with bench_tls_peer_verified).  read_ahead makes userspace TLS
 * cheaper but keeps OpenSSL 3.0 from handing receive to the kernel (it must
 * find whole records in its buffer when the keys change): only where kTLS
 * cannot be had anyway. */
SSL_CTX *bench_tls_server(const char *cert, const char *key, const char *ca, bool read_ahead,
                          char *err, size_t errlen);
/* --tls-max "1.2" or "1.3" as an OpenSSL protocol version; anything else
 * is a usage error of subcommand cmd. */
int bench_tls_version(const char *cmd, const char *text);
/* The peer presented a certificate that verified. */
bool bench_tls_peer_verified(SSL *ssl);

#endif
