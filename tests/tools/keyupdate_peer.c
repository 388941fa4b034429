// SPDX-License-Identifier: MIT
/*
 * keyupdate_peer: a minimal SMTP server for krelay's tests that sends a TLS 1.3
 * KeyUpdate (with update_requested) in the middle of a session.
 *
 * usage: keyupdate_peer PORT CERT KEY OUTDIR [--max-conns N] [--timeout S]
 *                       [--when mail|data|none]
 *
 * Blocking, single-threaded, one connection at a time, on 127.0.0.1:PORT.
 * Offers STARTTLS (TLS 1.3 only), PIPELINING and 8BITMIME, not CHUNKING.
 * --when mail (the default): right after reading MAIL over TLS, a KeyUpdate is
 * sent before the 250 reply; --when data: right after the 354 reply.  Each
 * message is written, un-stuffed, to OUTDIR/<n>.eml.  One line per event on
 * stdout ("listening", "connection N", "tls established", "keyupdate sent",
 * "message N bytes", "connection closed").  Exits after N connections or S
 * seconds.  Errors close the connection; the next one is served.
 */
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

enum when { WHEN_NONE, WHEN_MAIL, WHEN_DATA };

struct conn {
	int fd;
	SSL *ssl;
	char *buf;
	size_t len, cap;
};

static unsigned long msg_count;

static void event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void event(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void on_alarm(int sig)
{
	(void)sig;
	_exit(0);
}

static int conn_write(struct conn *c, const void *data, size_t n)
{
	const char *p = data;

	while (n > 0) {
		ssize_t w;

		if (c->ssl != NULL) {
			int r = SSL_write(c->ssl, p, (int)n);

			if (r <= 0)
				return -1;
			w = r;
		} else {
			w = send(c->fd, p, n, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int reply(struct conn *c, const char *text)
{
	return conn_write(c, text, strlen(text));
}

/* Reads more bytes into the buffer; -1 on EOF or error. */
static int conn_fill(struct conn *c)
{
	ssize_t r;

	if (c->cap - c->len < 4096) {
		size_t ncap = c->cap * 2;
		char *nb = realloc(c->buf, ncap);

		if (nb == NULL)
			return -1;
		c->buf = nb;
		c->cap = ncap;
	}
	if (c->ssl != NULL) {
		int n = SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len));

		if (n <= 0)
			return -1;
		r = n;
	} else {
		do {
			r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		} while (r < 0 && errno == EINTR);
		if (r <= 0)
			return -1;
	}
	c->len += (size_t)r;
	return 0;
}

/*
 * Copies the next line (with its LF) into *out (grown as needed); returns its
 * length, or -1 on EOF or error.
 */
static long conn_line(struct conn *c, char **out, size_t *outcap)
{
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);

		if (nl != NULL) {
			size_t n = (size_t)(nl - c->buf) + 1;

			if (n + 1 > *outcap) {
				char *nb = realloc(*out, n + 1);

				if (nb == NULL)
					return -1;
				*out = nb;
				*outcap = n + 1;
			}
			memcpy(*out, c->buf, n);
			(*out)[n] = '\0';
			memmove(c->buf, c->buf + n, c->len - n);
			c->len -= n;
			return (long)n;
		}
		if (conn_fill(c) < 0)
			return -1;
	}
}

static int send_keyupdate(struct conn *c)
{
	if (c->ssl == NULL)
		return 0;
	if (SSL_key_update(c->ssl, SSL_KEY_UPDATE_REQUESTED) != 1)
		return -1;
	if (SSL_do_handshake(c->ssl) != 1)
		return -1;
	event("keyupdate sent");
	return 0;
}

static bool verb_is(const char *line, const char *verb)
{
	size_t n = strlen(verb);

	return strncasecmp(line, verb, n) == 0 &&
	       (line[n] == ' ' || line[n] == '\r' || line[n] == '\n' || line[n] == '\0');
}

/* Reads the body up to CRLF.CRLF, un-stuffs it, and stores it in OUTDIR. */
static int read_body(struct conn *c, const char *outdir, char **line, size_t *linecap)
{
	char *body = NULL;
	size_t blen = 0, bcap = 0;
	int ret = -1;

	for (;;) {
		long n = conn_line(c, line, linecap);
		const char *p = *line;

		if (n < 0)
			goto out;
		if (strcmp(p, ".\r\n") == 0)
			break;
		if (p[0] == '.') {
			p++;
			n--;
		}
		if (blen + (size_t)n > bcap) {
			size_t ncap = bcap ? bcap : 65536;
			char *nb;

			while (ncap < blen + (size_t)n)
				ncap *= 2;
			nb = realloc(body, ncap);
			if (nb == NULL)
				goto out;
			body = nb;
			bcap = ncap;
		}
		memcpy(body + blen, p, (size_t)n);
		blen += (size_t)n;
	}

	msg_count++;
	{
		char tmp[4096], path[4096];
		FILE *f;

		snprintf(tmp, sizeof(tmp), "%s/.%lu.tmp", outdir, msg_count);
		snprintf(path, sizeof(path), "%s/%lu.eml", outdir, msg_count);
		f = fopen(tmp, "wb");
		if (f == NULL)
			goto out;
		if ((blen > 0 && fwrite(body, 1, blen, f) != blen) | (fclose(f) != 0))
			goto out;
		if (rename(tmp, path) < 0)
			goto out;
	}
	event("message %lu bytes", (unsigned long)blen);
	ret = 0;
out:
	free(body);
	return ret;
}

static void serve(int fd, SSL_CTX *ctx, const char *outdir, enum when when)
{
	struct conn c = {.fd = fd, .ssl = NULL, .len = 0, .cap = 65536};
	char *line = NULL;
	size_t linecap = 0;

	c.buf = malloc(c.cap);
	if (c.buf == NULL)
		goto done;
	if (reply(&c, "220 keyupdate.test ESMTP keyupdate_peer\r\n") < 0)
		goto done;
	for (;;) {
		long n = conn_line(&c, &line, &linecap);

		if (n < 0)
			goto done;
		if (verb_is(line, "EHLO")) {
			const char *caps =
			    c.ssl ? "250-keyupdate.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
			          : "250-keyupdate.test\r\n250-PIPELINING\r\n"
			            "250-STARTTLS\r\n250 8BITMIME\r\n";
			if (reply(&c, caps) < 0)
				goto done;
		} else if (verb_is(line, "HELO")) {
			if (reply(&c, "250 keyupdate.test\r\n") < 0)
				goto done;
		} else if (verb_is(line, "STARTTLS") && c.ssl == NULL) {
			if (reply(&c, "220 2.0.0 go ahead\r\n") < 0)
				goto done;
			c.len = 0; /* anything pipelined after STARTTLS is discarded */
			c.ssl = SSL_new(ctx);
			if (c.ssl == NULL || SSL_set_fd(c.ssl, fd) != 1 || SSL_accept(c.ssl) != 1) {
				ERR_print_errors_fp(stderr);
				goto done;
			}
			event("tls established %s", SSL_get_version(c.ssl));
		} else if (verb_is(line, "MAIL")) {
			if (when == WHEN_MAIL && send_keyupdate(&c) < 0)
				goto done;
			if (reply(&c, "250 2.1.0 ok\r\n") < 0)
				goto done;
		} else if (verb_is(line, "RCPT")) {
			if (reply(&c, "250 2.1.5 ok\r\n") < 0)
				goto done;
		} else if (verb_is(line, "DATA")) {
			if (reply(&c, "354 end with <CRLF>.<CRLF>\r\n") < 0)
				goto done;
			if (when == WHEN_DATA && send_keyupdate(&c) < 0)
				goto done;
			if (read_body(&c, outdir, &line, &linecap) < 0)
				goto done;
			if (reply(&c, "250 2.0.0 stored\r\n") < 0)
				goto done;
		} else if (verb_is(line, "RSET") || verb_is(line, "NOOP")) {
			if (reply(&c, "250 2.0.0 ok\r\n") < 0)
				goto done;
		} else if (verb_is(line, "QUIT")) {
			reply(&c, "221 2.0.0 bye\r\n");
			goto done;
		} else {
			if (reply(&c, "502 5.5.2 not implemented\r\n") < 0)
				goto done;
		}
	}
done:
	if (c.ssl != NULL) {
		SSL_shutdown(c.ssl);
		SSL_free(c.ssl);
	}
	ERR_clear_error();
	free(line);
	free(c.buf);
	close(fd);
	event("connection closed");
}

static void usage(void)
{
	fprintf(stderr, "usage: keyupdate_peer PORT CERT KEY OUTDIR [--max-conns N] [--timeout S] "
	                "[--when mail|data|none]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	long max_conns = 100, timeout = 300;
	enum when when = WHEN_MAIL;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	SSL_CTX *ctx;
	int one = 1, lfd;

	if (argc < 5)
		usage();
	for (int i = 5; i < argc; i++) {
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "--max-conns") == 0) {
			max_conns = strtol(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "--timeout") == 0) {
			timeout = strtol(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "--when") == 0) {
			i++;
			if (strcmp(argv[i], "mail") == 0)
				when = WHEN_MAIL;
			else if (strcmp(argv[i], "data") == 0)
				when = WHEN_DATA;
			else if (strcmp(argv[i], "none") == 0)
				when = WHEN_NONE;
			else
				usage();
		} else {
			usage();
		}
	}
	sa.sin_port = htons((unsigned short)atoi(argv[1]));

	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	if (timeout > 0)
		alarm((unsigned)timeout);

	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1) {
		ERR_print_errors_fp(stderr);
		return 1;
	}

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 16) < 0) {
		perror("keyupdate_peer: listen");
		return 1;
	}
	event("listening on 127.0.0.1:%s", argv[1]);

	for (long n = 1; n <= max_conns; n++) {
		struct timeval tv = {.tv_sec = 30};
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0) {
			if (errno == EINTR) {
				n--;
				continue;
			}
			perror("keyupdate_peer: accept");
			break;
		}
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		event("connection %ld", n);
		serve(fd, ctx, argv[4], when);
	}
	close(lfd);
	SSL_CTX_free(ctx);
	return 0;
}
