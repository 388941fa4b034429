/* sendmail_cli: see sendmail_cli.h. */
#include "sendmail_cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "queue_cli.h"
#include "runas.h"
#include "submit.h"

#define REPLY_MAX 4096

struct smtp {
	int fd;
	bool verbose;
	char buf[8192];
	size_t len;
	char text[REPLY_MAX]; /* the last reply, lines joined by " / " */
};

static const char *me = "sendmail";

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", me);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int usage(void)
{
	fprintf(stderr,
	        "usage: %s [-t] [-i] [-f sender] [-F fullname] [-oi] [-bm] [-v] [-C file] "
	        "[recipient...]\n"
	        "       %s -bs | -bp | -q   (SMTP on stdin/stdout, list the queue, queue run)\n",
	        me, me);
	return EX_USAGE;
}

/* The relay's first plain listener, as a client reaches it. */
static int relay_addr(const struct config *c, struct sockaddr_storage *ss, socklen_t *len,
                      char *text, size_t tlen)
{
	for (size_t i = 0; i < c->listen_count; i++) {
		if (c->listen[i].smtps)
			continue;
		*ss = c->listen[i].addr;
		*len = c->listen[i].addrlen;
		if (ss->ss_family == AF_INET) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
			if (s4->sin_addr.s_addr == htonl(INADDR_ANY))
				s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		} else {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
			if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
				s6->sin6_addr = in6addr_loopback;
		}
		snprintf(text, tlen, "%s", c->listen[i].text);
		return 0;
	}
	return -1;
}

static int smtp_connect(struct smtp *s, const struct config *c, char *where, size_t wlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	struct timeval tv = {.tv_sec = c->command_timeout_s ? c->command_timeout_s : 300};

	if (relay_addr(c, &ss, &len, where, wlen) < 0) {
		say("the configuration has no Listen without smtps to hand mail to");
		return EX_CONFIG;
	}
	s->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		say("socket: %s", strerror(errno));
		return EX_OSERR;
	}
	setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(s->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(s->fd, (struct sockaddr *)&ss, len) < 0) {
		say("cannot reach krelay at %s: %s (is it running?); the message was not taken",
		    where, strerror(errno));
		return EX_TEMPFAIL;
	}
	return 0;
}

/* Reads one reply; its code, or -1 (connection lost or timed out). */
static int smtp_reply(struct smtp *s)
{
	size_t tl = 0;

	s->text[0] = '\0';
	for (;;) {
		char *nl = memchr(s->buf, '\n', s->len);
		if (nl == NULL) {
			if (s->len == sizeof(s->buf)) {
				snprintf(s->text, sizeof(s->text), "reply line too long");
				return -1;
			}
			ssize_t n = recv(s->fd, s->buf + s->len, sizeof(s->buf) - s->len, 0);
			if (n <= 0) {
				snprintf(s->text, sizeof(s->text), "%s",
				         n == 0 ? "connection closed" : strerror(errno));
				return -1;
			}
			s->len += (size_t)n;
			continue;
		}
		size_t ll = (size_t)(nl - s->buf);
		size_t cut = ll > 0 && s->buf[ll - 1] == '\r' ? ll - 1 : ll;
		bool last = cut < 4 || s->buf[3] != '-';
		int code = cut >= 3 ? atoi(s->buf) : -1;
		if (s->verbose)
			printf("<<< %.*s\n", (int)cut, s->buf);
		if (tl + cut + 4 < sizeof(s->text))
			tl += (size_t)snprintf(s->text + tl, sizeof(s->text) - tl, "%s%.*s",
			                       tl ? " / " : "", (int)cut, s->buf);
		memmove(s->buf, nl + 1, s->len - ll - 1);
		s->len -= ll + 1;
		if (last)
			return code >= 200 && code < 600 ? code : -1;
	}
}

static int send_all(struct smtp *s, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(s->fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int smtp_cmd(struct smtp *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int smtp_cmd(struct smtp *s, const char *fmt, ...)
{
	char line[1100];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		return -1;
	if (s->verbose)
		printf(">>> %s\n", line);
	memcpy(line + n, "\r\n", 2);
	if (send_all(s, line, (size_t)n + 2) < 0) {
		snprintf(s->text, sizeof(s->text), "%s", strerror(errno));
		return -1;
	}
	return smtp_reply(s);
}

/* The message's CRLF lines, dot-stuffed, then ".". */
static int send_data(struct smtp *s, const char *p, size_t n)
{
	const char *end = p + n;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
		if (*p == '.' && send_all(s, ".", 1) < 0)
			return -1;
		if (send_all(s, p, len) < 0)
			return -1;
		p += len;
	}
	return send_all(s, ".\r\n", 3);
}

static int exit_for(int code)
{
	return code >= 400 && code < 500 ? EX_TEMPFAIL : code < 0 ? EX_TEMPFAIL : EX_DATAERR;
}

/* Reads all of stdin (up to max octets). */
static char *read_stdin(size_t max, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *p = malloc(cap);

	while (p != NULL) {
		if (n == cap) {
			char *q = cap > max ? NULL : realloc(p, cap * 2);
			if (q == NULL) {
				free(p);
				return NULL;
			}
			p = q;
			cap *= 2;
		}
		ssize_t k = read(STDIN_FILENO, p + n, cap - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			free(p);
			return NULL;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	*len = n;
	return p;
}

/* -bs: an SMTP session on stdin/stdout, carried to the relay (a lone LF
 * from the program becomes CRLF). */
static int smtp_stdio(const struct config *c)
{
	struct smtp s = {.fd = -1};
	char where[128], in[8192], out[16384];
	bool in_open = true, cr = false;
	int ret = smtp_connect(&s, c, where, sizeof(where));

	if (ret != 0)
		return ret;
	for (;;) {
		struct pollfd pf[2] = {{.fd = s.fd, .events = POLLIN},
		                       {.fd = STDIN_FILENO, .events = in_open ? POLLIN : 0}};
		if (poll(pf, 2, (int)(c->command_timeout_s ? c->command_timeout_s : 300) * 1000) <=
		    0)
			break;
		if (pf[0].revents) {
			ssize_t n = recv(s.fd, out, sizeof(out), 0);
			if (n <= 0)
				break;
			if (fwrite(out, 1, (size_t)n, stdout) != (size_t)n || fflush(stdout) != 0)
				break;
		}
		if (in_open && pf[1].revents) {
			ssize_t n = read(STDIN_FILENO, in, sizeof(in) / 2);
			char conv[sizeof(in)];
			size_t k = 0;
			if (n <= 0) {
				in_open = false;
				shutdown(s.fd, SHUT_WR);
				continue;
			}
			for (ssize_t i = 0; i < n; i++) {
				if (in[i] == '\n' && !cr)
					conv[k++] = '\r';
				conv[k++] = in[i];
				cr = in[i] == '\r';
			}
			if (send_all(&s, conv, k) < 0)
				break;
		}
	}
	close(s.fd);
	return EX_OK;
}

struct args {
	bool extract, dot_ends, verbose;
	const char *sender, *full_name, *conf;
	enum { MODE_SEND, MODE_SMTP, MODE_LIST, MODE_FLUSH, MODE_ALIASES } mode;
	int first_rcpt;
};

/* Sendmail's options (getopt-like: "-fADDR" or "-f ADDR"); those that
 * make no sense here are taken and ignored, as Sendmail itself ignores
 * many; the unknown ones are a usage error. */
static int parse_args(int argc, char **argv, struct args *a)
{
	int i;

	for (i = 0; i < argc; i++) {
		const char *o = argv[i];
		if (o[0] != '-' || o[1] == '\0')
			break;
		if (strcmp(o, "--") == 0) {
			i++;
			break;
		}
		char f = o[1];
		const char *val = o[2] ? o + 2 : NULL;
		/* flags without a value may come together, as getopt takes them: -ti */
		if (strspn(o + 1, "tiv") == strlen(o + 1)) {
			a->extract |= strchr(o + 1, 't') != NULL;
			a->dot_ends &= strchr(o + 1, 'i') == NULL;
			a->verbose |= strchr(o + 1, 'v') != NULL;
			continue;
		}
		if (strchr("fFrCoONRVBLhpX", f) != NULL && val == NULL) {
			if (i + 1 >= argc) {
				say("option -%c needs a value", f);
				return -1;
			}
			val = argv[++i];
		}
		switch (f) {
		case 't':
			a->extract = true;
			break;
		case 'i':
			a->dot_ends = false;
			break;
		case 'v':
			a->verbose = true;
			break;
		case 'f':
		case 'r':
			a->sender = val;
			break;
		case 'F':
			a->full_name = val;
			break;
		case 'C':
			a->conf = val;
			break;
		case 'o':
			if (strcmp(val, "i") == 0)
				a->dot_ends = false;
			/* -odq, -oem, -oee, -om...: delivery and error modes are the relay's */
			break;
		case 'b':
			if (strcmp(o, "-bm") == 0)
				a->mode = MODE_SEND;
			else if (strcmp(o, "-bs") == 0)
				a->mode = MODE_SMTP;
			else if (strcmp(o, "-bp") == 0)
				a->mode = MODE_LIST;
			else if (strcmp(o, "-bi") == 0)
				a->mode = MODE_ALIASES;
			else {
				say("%s is not supported: krelay runs as its own daemon (krelay -C "
				    "FILE) "
				    "and has no address tests",
				    o);
				return -1;
			}
			break;
		case 'q':
			if (o[2] != '\0') {
				say("%s: krelay runs its queue itself; -q alone asks for a queue "
				    "run now",
				    o);
				return -1;
			}
			a->mode = MODE_FLUSH;
			break;
		case 'O': /* -O option=value */
		case 'N': /* DSN NOTIFY */
		case 'R': /* DSN RET */
		case 'V': /* DSN ENVID */
		case 'B': /* body type: the relay decides from the bytes */
		case 'L':
		case 'h':
		case 'p':
		case 'X':
		case 'm':
		case 'n':
		case 'U':
		case 'G':
		case 'e':
			break;
		default:
			say("unknown option %s", o);
			return -1;
		}
	}
	a->first_rcpt = i;
	return 0;
}

/* Who runs the command, and whether they may name another sender: root,
 * the relay's own user, or naming themselves (Sendmail's trusted users). */
static void caller(const struct config *c, char *user, size_t ulen, bool *trusted)
{
	struct passwd *pw = getpwuid(getuid());
	struct runas ra;
	char err[256];

	snprintf(user, ulen, "%s", pw ? pw->pw_name : "unknown");
	*trusted = getuid() == 0 || (runas_resolve(c->run_as_user, 0, &ra, err, sizeof(err)) == 0 &&
	                             ra.uid == getuid());
}

static int submit(const struct config *c, const struct args *a, int nrcpt, char **rcptv)
{
	char user[64], err[512], where[128], self[320], warn[600];
	bool trusted;
	struct submit_msg m;
	struct smtp s = {.fd = -1, .verbose = a->verbose};
	char *sender, *rcpts[SUBMIT_RCPT_MAX];
	size_t n = 0, inlen;
	int ret = EX_OK, code, accepted = 0, refused_perm = 0, refused_temp = 0;

	caller(c, user, sizeof(user), &trusted);
	snprintf(self, sizeof(self), "%s@%s", user, c->hostname);
	if (a->sender != NULL && (a->sender[0] == '\0' || strcmp(a->sender, "<>") == 0))
		sender = strdup(""); /* the null sender: mail that must not bounce */
	else
		sender = submit_addr(a->sender ? a->sender : self, c->hostname, err, sizeof(err));
	if (sender == NULL) {
		say("-f %s: %s", a->sender, err);
		return EX_USAGE;
	}
	for (int i = 0; i < nrcpt; i++) {
		if (a->extract)
			break; /* Sendmail: with -t, the arguments are no recipients */
		if (n >= SUBMIT_RCPT_MAX ||
		    (rcpts[n] = submit_addr(rcptv[i], c->hostname, err, sizeof(err))) == NULL) {
			say("%s: %s", rcptv[i], n >= SUBMIT_RCPT_MAX ? "too many recipients" : err);
			ret = EX_USAGE;
			goto out;
		}
		n++;
	}
	char *in =
	    read_stdin(c->max_message_size ? c->max_message_size + 65536 : (size_t)1 << 30, &inlen);
	if (in == NULL) {
		say("reading the message: %s",
		    errno ? strerror(errno) : "larger than MaxMessageSize");
		ret = errno ? EX_IOERR : EX_DATAERR;
		goto out;
	}
	struct submit_opts o = {.extract = a->extract,
	                        .dot_ends = a->dot_ends,
	                        .sender = sender,
	                        .full_name = a->full_name,
	                        .hostname = c->hostname,
	                        .now = time(NULL),
	                        .unique = (unsigned long)getpid()};
	if (a->sender != NULL && !trusted && strcmp(sender, self) != 0) {
		snprintf(warn, sizeof(warn), "%s: %s set sender to %s using -f", c->hostname, user,
		         sender[0] ? sender : "<>");
		o.auth_warning = warn;
	}
	if (submit_prepare(in, inlen, &o, &m, err, sizeof(err)) < 0) {
		free(in);
		say("%s", err);
		ret = EX_DATAERR;
		goto out;
	}
	free(in);
	for (size_t i = 0; i < m.nrcpt && n < SUBMIT_RCPT_MAX; i++) {
		rcpts[n++] = m.rcpts[i];
		m.rcpts[i] = NULL;
	}
	if (n == 0) {
		say("no recipients: name them%s",
		    a->extract ? " in To:, Cc: or Bcc:" : " (or use -t)");
		ret = EX_USAGE;
		goto done;
	}
	if ((ret = smtp_connect(&s, c, where, sizeof(where))) != 0)
		goto done;
	if ((code = smtp_reply(&s)) != 220) {
		say("krelay at %s did not greet: %s", where, s.text);
		ret = exit_for(code);
		goto done;
	}
	if ((code = smtp_cmd(&s, "EHLO %s", c->hostname)) != 250) {
		say("EHLO: %s", s.text);
		ret = exit_for(code);
		goto done;
	}
	if ((code = smtp_cmd(&s, "MAIL FROM:<%s>%s", sender,
	                     m.eight_bit ? " BODY=8BITMIME" : "")) != 250) {
		say("sender <%s>: %s", sender, s.text);
		ret = exit_for(code);
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		code = smtp_cmd(&s, "RCPT TO:<%s>", rcpts[i]);
		if (code >= 200 && code < 300) {
			accepted++;
		} else {
			say("<%s>: %s", rcpts[i], s.text);
			if (code < 0) {
				ret = EX_TEMPFAIL;
				goto done;
			}
			if (code >= 500)
				refused_perm++;
			else
				refused_temp++;
		}
	}
	if (accepted == 0) {
		ret = refused_temp ? EX_TEMPFAIL : EX_NOUSER;
		goto done;
	}
	if ((code = smtp_cmd(&s, "DATA")) != 354) {
		say("DATA: %s", s.text);
		ret = exit_for(code);
		goto done;
	}
	if (send_data(&s, m.data, m.len) < 0 || (code = smtp_reply(&s)) < 0) {
		say("the message was not taken (connection lost: %s)",
		    s.text[0] ? s.text : strerror(errno));
		ret = EX_TEMPFAIL;
		goto done;
	}
	if (code != 250) {
		say("the message was refused: %s", s.text);
		ret = exit_for(code);
		goto done;
	}
	if (a->verbose)
		printf("queued: %s\n", s.text);
	smtp_cmd(&s, "QUIT");
	ret = refused_perm ? EX_NOUSER : refused_temp ? EX_TEMPFAIL : EX_OK;
done:
	submit_msg_free(&m);
out:
	for (size_t i = 0; i < n; i++)
		free(rcpts[i]);
	free(sender);
	if (s.fd >= 0)
		close(s.fd);
	return ret;
}

int sendmail_cli(const char *name, int argc, char **argv)
{
	struct args a = {.dot_ends = true, .mode = MODE_SEND};
	struct config c;
	char err[CONFIG_ERR_MAX];
	const char *base = strrchr(name, '/');
	int ret;

	base = base ? base + 1 : name;
	me = strcmp(base, "krelay") == 0 ? "krelay sendmail" : base;
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(base, "mailq") == 0)
		a.mode = MODE_LIST;
	else if (strcmp(base, "newaliases") == 0)
		a.mode = MODE_ALIASES;
	if (parse_args(argc, argv, &a) < 0)
		return usage();
	if (a.conf == NULL && access(SENDMAIL_DEFAULT_CONF, R_OK) == 0)
		a.conf = SENDMAIL_DEFAULT_CONF;
	config_defaults(&c);
	if ((a.conf != NULL && config_load(&c, a.conf, err, sizeof(err)) < 0) ||
	    config_fill_hostname(&c) < 0) {
		say("%s", err);
		config_free(&c);
		return EX_CONFIG;
	}
	switch (a.mode) {
	case MODE_LIST:
		ret = runas_become_owner(c.queue_directory, err, sizeof(err)) < 0
		          ? (say("%s", err), EX_NOPERM)
		          : queue_cli_mailq(&c);
		break;
	case MODE_FLUSH:
		ret = queue_cli_flush(&c) == 0 ? EX_OK : EX_UNAVAILABLE;
		break;
	case MODE_ALIASES:
		printf("%s: krelay keeps no aliases database: nothing to rebuild\n", me);
		ret = EX_OK;
		break;
	case MODE_SMTP:
		ret = smtp_stdio(&c);
		break;
	default:
		ret = submit(&c, &a, argc - a.first_rcpt, argv + a.first_rcpt);
	}
	config_free(&c);
	return ret;
}
