/* tls_ctx: see tls_ctx.h. */
#include "tls_ctx.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MKCERTS_HINT                                                                               \
	"make a new key and certificate with scripts/mkcerts.sh (ECDSA P-256 or RSA 3072)"

static void ssl_err(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "unknown OpenSSL error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
}

static int file_contains(const char *path, const char *needle)
{
	char buf[8192];
	FILE *f = fopen(path, "r");
	size_t n;

	if (f == NULL)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}

static int readable(const struct config *c, enum config_opt opt, const char *path, bool dir,
                    char *err, size_t errlen)
{
	char where[512];
	struct stat st;

	config_where(c, opt, where, sizeof(where));
	if (stat(path, &st) < 0 || access(path, R_OK) < 0) {
		snprintf(err, errlen, "%s: %s %s: %s", where, config_opt_name(opt), path,
		         strerror(errno));
		return -1;
	}
	if (dir != !!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: %s %s: is %sa directory", where, config_opt_name(opt),
		         path, dir ? "not " : "");
		return -1;
	}
	return 0;
}

static X509 *load_cert(const struct config *c, enum config_opt opt, const char *path, char *err,
                       size_t errlen)
{
	char where[512], why[160];
	X509 *x = NULL;
	FILE *f;

	if (readable(c, opt, path, false, err, errlen) < 0)
		return NULL;
	config_where(c, opt, where, sizeof(where));
	f = fopen(path, "r");
	if (f != NULL) {
		x = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	if (x == NULL) {
		ssl_err(why, sizeof(why));
		snprintf(err, errlen, "%s: %s %s: no PEM certificate in it (%s)", where,
		         config_opt_name(opt), path, why);
		return NULL;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
		snprintf(err, errlen, "%s: %s %s: certificate has expired; %s", where,
		         config_opt_name(opt), path, MKCERTS_HINT);
		X509_free(x);
		return NULL;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
		snprintf(err, errlen, "%s: %s %s: certificate is not valid yet (check the clock)",
		         where, config_opt_name(opt), path);
		X509_free(x);
		return NULL;
	}
	return x;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

static EVP_PKEY *load_key(const struct config *c, enum config_opt opt, const char *path, char *err,
                          size_t errlen)
{
	char where[512], why[160];
	EVP_PKEY *k = NULL;
	FILE *f;

	if (readable(c, opt, path, false, err, errlen) < 0)
		return NULL;
	config_where(c, opt, where, sizeof(where));
	f = fopen(path, "r");
	if (f != NULL) {
		k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
		fclose(f);
	}
	if (k != NULL)
		return k;
	ssl_err(why, sizeof(why));
	if (file_contains(path, "ENCRYPTED"))
		snprintf(err, errlen,
		         "%s: %s %s: key is protected by a pass phrase; make a clear copy "
		         "(openssl pkey -in %s -out %s.open) and name that",
		         where, config_opt_name(opt), path, path, path);
	else if (file_contains(path, "CERTIFICATE"))
		snprintf(err, errlen, "%s: %s %s: holds a certificate, not a private key", where,
		         config_opt_name(opt), path);
	else
		snprintf(err, errlen, "%s: %s %s: no PEM private key in it (%s)", where,
		         config_opt_name(opt), path, why);
	return NULL;
}

/* OpenSSL's default security level 2 needs 112 bits: RSA >= 2048, EC >= 224. */
static int key_strong(const struct config *c, enum config_opt opt, const char *path, EVP_PKEY *k,
                      char *err, size_t errlen)
{
	char where[512];

	if (EVP_PKEY_get_security_bits(k) >= 112)
		return 0;
	config_where(c, opt, where, sizeof(where));
	snprintf(err, errlen,
	         "%s: %s %s: %s key of %d bits is too weak: OpenSSL's default security level "
	         "refuses keys under 2048 bits (RSA), and Sendmail in that case silently stops "
	         "offering STARTTLS; krelay never falls back to plaintext because of its own "
	         "certificate: %s",
	         where, config_opt_name(opt), path, EVP_PKEY_get0_type_name(k),
	         EVP_PKEY_get_bits(k), MKCERTS_HINT);
	return -1;
}

/* Loads and checks a certificate/key pair.  Returns 0 with both set. */
static int load_pair(const struct config *c, enum config_opt copt, const char *cpath,
                     enum config_opt kopt, const char *kpath, X509 **xo, EVP_PKEY **ko, char *err,
                     size_t errlen)
{
	char where[512];
	X509 *x = load_cert(c, copt, cpath, err, errlen);
	EVP_PKEY *k = x ? load_key(c, kopt, kpath, err, errlen) : NULL;

	if (k == NULL || key_strong(c, kopt, kpath, k, err, errlen) < 0)
		goto fail;
	if (key_strong(c, copt, cpath, X509_get0_pubkey(x), err, errlen) < 0)
		goto fail;
	if (X509_check_private_key(x, k) != 1) {
		ERR_clear_error();
		config_where(c, kopt, where, sizeof(where));
		snprintf(err, errlen, "%s: %s %s does not match %s %s", where,
		         config_opt_name(kopt), kpath, config_opt_name(copt), cpath);
		goto fail;
	}
	*xo = x;
	*ko = k;
	return 0;
fail:
	EVP_PKEY_free(k);
	X509_free(x);
	return -1;
}

static int check_ca(const struct config *c, char *err, size_t errlen)
{
	if (c->ca_cert_file != NULL) {
		X509 *x = load_cert(c, OPT_CA_CERT_FILE, c->ca_cert_file, err, errlen);
		if (x == NULL)
			return -1;
		X509_free(x);
	}
	if (c->ca_cert_path != NULL &&
	    readable(c, OPT_CA_CERT_PATH, c->ca_cert_path, true, err, errlen) < 0)
		return -1;
	return 0;
}

static int accept_any(int ok, X509_STORE_CTX *ctx)
{
	/* Ask for, never require, a client certificate: the verdict is read
	 * afterwards (SSL_get_verify_result) and only decides relay rights. */
	return 1;
}

/* Versions, options and modes for one side.  krelay's own options come
 * first; ServerSSLOptions / ClientSSLOptions (Sendmail's) then set or clear
 * bits on top (config.c refuses to clear the ones that must stay). */
static int protocol_setup(SSL_CTX *ctx, const struct config *c, bool server, char *err,
                          size_t errlen)
{
	const struct config_ssl_options *o =
	    server ? &c->server_ssl_options : &c->client_ssl_options;
	uint64_t ours = SSL_OP_ENABLE_KTLS | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION;
	int min, max;

	if (config_tls_versions(c, server, &min, &max, err, errlen) < 0)
		return -1;
	if (server)
		ours |= SSL_OP_CIPHER_SERVER_PREFERENCE;
	SSL_CTX_set_min_proto_version(ctx, min);
	SSL_CTX_set_max_proto_version(ctx, max);
	SSL_CTX_set_options(ctx, ours | o->set);
	SSL_CTX_clear_options(ctx, o->clear);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return 0;
}

static int server_ctx_setup(SSL_CTX *ctx, const struct config *c, char *err, size_t errlen)
{
	char why[160];

	if (protocol_setup(ctx, c, true, err, errlen) < 0)
		return -1;
	if (SSL_CTX_set_cipher_list(ctx, c->cipher_list ? c->cipher_list
	                                                : CONFIG_DEFAULT_CIPHER_LIST) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, c->cipher_suites ? c->cipher_suites
	                                                   : CONFIG_DEFAULT_CIPHER_SUITES) != 1)
		goto ssl;
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"krelay", 6);
	if (SSL_CTX_use_certificate_chain_file(ctx, c->server_cert_file) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, c->server_key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		goto ssl;
	if (c->ca_cert_file != NULL || c->ca_cert_path != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, c->ca_cert_file, c->ca_cert_path) != 1)
			goto ssl;
		if (c->ca_cert_file != NULL)
			SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(c->ca_cert_file));
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any);
	}
	return 0;
ssl:
	ssl_err(why, sizeof(why));
	snprintf(err, errlen, "%s: TLS set-up failed: %s", c->path ? c->path : "config", why);
	return -1;
}

SSL_CTX *tls_server_ctx(const struct config *c, char *err, size_t errlen)
{
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	SSL_CTX *ctx;

	err[0] = '\0';
	if (c->server_cert_file == NULL && c->server_key_file == NULL)
		return NULL;
	if (c->server_cert_file == NULL || c->server_key_file == NULL) {
		char where[512];
		enum config_opt set =
		    c->server_cert_file ? OPT_SERVER_CERT_FILE : OPT_SERVER_KEY_FILE;
		config_where(c, set, where, sizeof(where));
		snprintf(err, errlen, "%s: %s needs %s too", where, config_opt_name(set),
		         set == OPT_SERVER_CERT_FILE ? "ServerKeyFile" : "ServerCertFile");
		return NULL;
	}
	if (load_pair(c, OPT_SERVER_CERT_FILE, c->server_cert_file, OPT_SERVER_KEY_FILE,
	              c->server_key_file, &x, &k, err, errlen) < 0)
		return NULL;
	X509_free(x);
	EVP_PKEY_free(k);
	if (check_ca(c, err, errlen) < 0)
		return NULL;
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL || server_ctx_setup(ctx, c, err, errlen) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

SSL_CTX *tls_client_ctx(const struct config *c, char *err, size_t errlen)
{
	return tls_client_ctx_ca(c, c->ca_cert_file, c->ca_cert_path, err, errlen);
}

SSL_CTX *tls_client_ctx_ca(const struct config *c, const char *ca_file, const char *ca_path,
                           char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char why[160];

	err[0] = '\0';
	if (ctx == NULL)
		goto ssl;
	if (protocol_setup(ctx, c, false, err, errlen) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* Sessions are kept per destination by the queue, not in OpenSSL's cache. */
	SSL_CTX_set_session_cache_mode(ctx,
	                               SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	if (SSL_CTX_set_cipher_list(ctx, c->cipher_list ? c->cipher_list
	                                                : CONFIG_DEFAULT_CIPHER_LIST) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, c->cipher_suites ? c->cipher_suites
	                                                   : CONFIG_DEFAULT_CIPHER_SUITES) != 1)
		goto ssl;
	if ((ca_file != NULL || ca_path != NULL) &&
	    SSL_CTX_load_verify_locations(ctx, ca_file, ca_path) != 1)
		goto ssl;
	if (c->client_cert_file != NULL && c->client_key_file != NULL &&
	    (SSL_CTX_use_certificate_chain_file(ctx, c->client_cert_file) != 1 ||
	     SSL_CTX_use_PrivateKey_file(ctx, c->client_key_file, SSL_FILETYPE_PEM) != 1 ||
	     SSL_CTX_check_private_key(ctx) != 1))
		goto ssl;
	/* TLSPolicy dane: each connection adds its host's TLSA records */
	if (SSL_CTX_dane_enable(ctx) <= 0)
		goto ssl;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
ssl:
	ssl_err(why, sizeof(why));
	snprintf(err, errlen, "%s: client TLS set-up failed: %s", c->path ? c->path : "config",
	         why);
	SSL_CTX_free(ctx);
	return NULL;
}

static void print_cert(FILE *out, const char *what, X509 *x)
{
	char subj[256];
	const ASN1_TIME *na = X509_get0_notAfter(x);
	BIO *b = BIO_new(BIO_s_mem());
	char date[64] = "?";
	int n;

	X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
	if (b != NULL && ASN1_TIME_print(b, na) == 1) {
		n = BIO_read(b, date, sizeof(date) - 1);
		date[n > 0 ? n : 0] = '\0';
	}
	BIO_free(b);
	fprintf(out, "ok     %s: %s, %s %d bits, valid until %s\n", what, subj,
	        EVP_PKEY_get0_type_name(X509_get0_pubkey(x)),
	        EVP_PKEY_get_bits(X509_get0_pubkey(x)), date);
}

static int check_pair(const struct config *c, FILE *out, enum config_opt copt, const char *cpath,
                      enum config_opt kopt, const char *kpath, const char *what)
{
	char err[1024];
	X509 *x;
	EVP_PKEY *k;

	if (load_pair(c, copt, cpath, kopt, kpath, &x, &k, err, sizeof(err)) < 0) {
		fprintf(out, "error  %s\n", err);
		return 1;
	}
	print_cert(out, what, x);
	X509_free(x);
	EVP_PKEY_free(k);
	return 0;
}

/* A CipherList set by hand is given to OpenSSL as it is (Sendmail's
 * configurations carry strings like "HIGH"): say which TLS 1.2 suites it
 * allows that are not AEAD or not forward secret (CBC, RSA key exchange). */
static void check_cipher_list(const struct config *c, FILE *out)
{
	SSL_CTX *ctx;
	STACK_OF(SSL_CIPHER) * sk;
	char where[512], names[512] = "";
	int weak = 0;

	if (c->cipher_list == NULL || (ctx = SSL_CTX_new(TLS_method())) == NULL)
		return;
	if (SSL_CTX_set_cipher_list(ctx, c->cipher_list) == 1 &&
	    (sk = SSL_CTX_get_ciphers(ctx)) != NULL) {
		for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
			const SSL_CIPHER *ci = sk_SSL_CIPHER_value(sk, i);
			int kx = SSL_CIPHER_get_kx_nid(ci);
			if (kx == NID_kx_any)
				continue; /* TLS 1.3 (CipherSuites): AEAD, forward secret */
			if (SSL_CIPHER_is_aead(ci) && (kx == NID_kx_ecdhe || kx == NID_kx_dhe))
				continue;
			if (weak++ < 4)
				snprintf(names + strlen(names), sizeof(names) - strlen(names),
				         "%s%s", weak > 1 ? " " : "", SSL_CIPHER_get_name(ci));
		}
	}
	SSL_CTX_free(ctx);
	if (weak == 0)
		return;
	config_where(c, OPT_CIPHER_LIST, where, sizeof(where));
	fprintf(out,
	        "warn   %s: CipherList allows %d TLS 1.2 suite(s) that are not AEAD with forward "
	        "secrecy (%s%s); the default allows none\n",
	        where, weak, names, weak > 4 ? " ..." : "");
}

int tls_check(const struct config *c, FILE *out)
{
	char err[1024];
	int errors = 0;

	check_cipher_list(c, out);

	if (c->server_cert_file != NULL || c->server_key_file != NULL) {
		SSL_CTX *ctx = tls_server_ctx(c, err, sizeof(err));
		if (ctx == NULL) {
			fprintf(out, "error  %s\n", err);
			errors++;
		} else {
			errors += check_pair(c, out, OPT_SERVER_CERT_FILE, c->server_cert_file,
			                     OPT_SERVER_KEY_FILE, c->server_key_file,
			                     "server certificate");
			SSL_CTX_free(ctx);
		}
	} else {
		fprintf(out, "note   no ServerCertFile: STARTTLS is not offered and smtps "
		             "listeners are refused\n");
	}
	if (c->client_cert_file != NULL) {
		if (c->client_key_file == NULL) {
			fprintf(out, "error  ClientCertFile needs ClientKeyFile\n");
			errors++;
		} else {
			errors += check_pair(c, out, OPT_CLIENT_CERT_FILE, c->client_cert_file,
			                     OPT_CLIENT_KEY_FILE, c->client_key_file,
			                     "client certificate");
		}
	} else if (c->client_key_file != NULL) {
		char where[512];
		config_where(c, OPT_CLIENT_KEY_FILE, where, sizeof(where));
		fprintf(out,
		        "warn   %s: ClientKeyFile without ClientCertFile: no client certificate "
		        "will be presented (as with Sendmail)%s\n",
		        where,
		        file_contains(c->client_key_file, "CERTIFICATE") &&
		                !file_contains(c->client_key_file, "PRIVATE KEY")
		            ? "; note that this file holds a certificate, not a key"
		            : "");
	}
	if (c->ca_cert_file != NULL || c->ca_cert_path != NULL) {
		if (check_ca(c, err, sizeof(err)) < 0) {
			fprintf(out, "error  %s\n", err);
			errors++;
		} else {
			fprintf(out, "ok     CA: %s%s%s\n", c->ca_cert_file ? c->ca_cert_file : "",
			        c->ca_cert_file && c->ca_cert_path ? " and " : "",
			        c->ca_cert_path ? c->ca_cert_path : "");
		}
	}
	return errors;
}

void tls_peer_info(SSL *ssl, struct tls_peer *p)
{
	X509 *x = SSL_get0_peer_certificate(ssl);
	unsigned int n = 0;
	long v;

	memset(p, 0, sizeof(*p));
	if (x == NULL)
		return;
	p->cert = true;
	v = SSL_get_verify_result(ssl);
	p->verified = v == X509_V_OK;
	if (!p->verified)
		snprintf(p->verify_error, sizeof(p->verify_error), "%s",
		         X509_verify_cert_error_string(v));
	if (X509_digest(x, EVP_sha256(), p->sha256, &n) == 1)
		for (unsigned i = 0; i < 32; i++)
			snprintf(p->fingerprint + 2 * i, 3, "%02x", p->sha256[i]);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, p->subject,
	                          sizeof(p->subject));
	char line[1024];
	if (X509_NAME_oneline(X509_get_issuer_name(x), line, sizeof(line)) != NULL)
		tls_name_xtext(line, p->issuer_dn, sizeof(p->issuer_dn));
	if (X509_NAME_oneline(X509_get_subject_name(x), line, sizeof(line)) != NULL)
		tls_name_xtext(line, p->subject_dn, sizeof(p->subject_dn));
}

void tls_name_xtext(const char *in, char *out, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)in; *p && n + 4 < len; p++) {
		if (*p <= ' ' || *p >= 0x7f || strchr("+\\<>()\"", *p) != NULL) {
			out[n++] = '+';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 15];
		} else {
			out[n++] = (char)*p;
		}
	}
	out[n] = '\0';
}
