/* smtp_server: see smtp_server.h.
 *
 * Flow: accept -> [implicit TLS handshake] -> greeting -> commands.  Input is
 * parsed from the xprt's buffer; replies accumulate in its output buffer and
 * are flushed when the session needs more input (RFC 2920 reply grouping).
 * DATA/BDAT content is scanned in place and appended to the spool; the reply
 * to the end of data is sent only when the spool says the message is durable. */
#include "smtp_server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client_count.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "runtime.h"
#include "safe.h"
#include "smtp_data.h"
#include "smtp_parse.h"
#include "spool.h"
#include "state.h"
#include "tls_ctx.h"
#include "xprt.h"

#define IN_BUF_SIZE  (64u << 10)
#define OUT_MAX      (16u << 10)
#define OUT_HIGH     (4u << 10) /* stop parsing pipelined commands past this */
#define ERROR_LIMIT  20         /* like Postfix's smtpd_hard_error_limit */
#define RECEIVED_MAX 4096       /* room for every outside value escaped */

enum state {
	S_HANDSHAKE, /* TLS handshake (implicit TLS, or after STARTTLS) */
	S_GREETING,  /* 220 being sent */
	S_CMD,       /* reading commands */
	S_STARTTLS,  /* "220 Ready to start TLS" being sent */
	S_OPENING,   /* spool file being created for DATA/BDAT */
	S_DATA,      /* DATA content */
	S_BDAT,      /* BDAT chunk bytes */
	S_COMMIT,    /* waiting until the message is durable */
	S_ABORT,     /* waiting until a rejected message is removed */
	S_QUIT,      /* last reply being sent, then close */
	S_CLOSING,   /* xprt closing */
};

static const char *const state_names[] = {
    "handshake", "greeting", "cmd",   "starttls", "opening", "data",
    "bdat",      "commit",   "abort", "quit",     "closing",
};

struct smtp_session {
	uint64_t id;
	struct smtp_server *sv;
	struct runtime *rt;
	struct xprt x;
	enum state state;
	struct smtp_session *prev, *next;

	char client[INET6_ADDRSTRLEN];
	unsigned port;
	struct sockaddr_storage peer;
	struct client_key key;
	bool counted; /* in sv->srv->clients under key */
	char listener[80];
	bool smtps, tls, esmtp, greeted, shutdown;
	char helo[256];
	struct tls_peer cert;
	char tls_desc[128];
	struct smtp_lines lines;
	unsigned errors, commands, messages;
	const char *close_reason;

	/* transaction */
	char qid[SPOOL_ID_LEN + 1];
	char *sender; /* NULL: no MAIL yet */
	bool smtputf8;
	bool requiretls; /* MAIL ... REQUIRETLS */
	int body_type;
	struct spool_rcpt *rcpts;
	size_t nrcpt, rcpt_cap;
	struct spool_tx tx;
	bool tx_open; /* spool file exists */
	bool bdat;    /* transaction uses BDAT */
	bool bdat_last;
	uint64_t bdat_left;    /* chunk bytes still to read */
	struct smtp_data data; /* content scanner */
	const char *reject;    /* reply that replaces "250 queued" */
	char reject_buf[128];
	struct timespec data_start;
	time_t arrival;
	char certdesc[96];
	bool interactive;      /* DeliveryMode=interactive for this message */
	struct qmsg *relaying; /* the queue relays it before the reply */
};

static void session_event(void *owner, enum xprt_event ev, int err);
static void spool_event(void *owner, enum spool_event ev, int err);
static void process(struct smtp_session *s);

/* The transitions a session may make: one bit per state it may enter. */
static const unsigned transitions[] = {
    [S_HANDSHAKE] = TO(S_HANDSHAKE) | TO(S_GREETING) | TO(S_CMD) | TO(S_QUIT) | TO(S_CLOSING),
    [S_GREETING] = TO(S_CMD) | TO(S_QUIT) | TO(S_CLOSING),
    [S_CMD] = TO(S_CMD) | TO(S_STARTTLS) | TO(S_OPENING) | TO(S_BDAT) | TO(S_ABORT) | TO(S_QUIT) |
              TO(S_CLOSING),
    [S_STARTTLS] = TO(S_HANDSHAKE) | TO(S_QUIT) | TO(S_CLOSING),
    [S_OPENING] = TO(S_DATA) | TO(S_BDAT) | TO(S_ABORT) | TO(S_QUIT) | TO(S_CLOSING),
    [S_DATA] = TO(S_CMD) | TO(S_COMMIT) | TO(S_ABORT) | TO(S_QUIT) | TO(S_CLOSING),
    [S_BDAT] = TO(S_CMD) | TO(S_COMMIT) | TO(S_ABORT) | TO(S_QUIT) | TO(S_CLOSING),
    [S_COMMIT] = TO(S_CMD) | TO(S_QUIT) | TO(S_CLOSING),
    [S_ABORT] = TO(S_CMD) | TO(S_QUIT) | TO(S_CLOSING),
    [S_QUIT] = TO(S_QUIT) | TO(S_CLOSING),
    [S_CLOSING] = 0,
};

static const struct state_table session_states = {"session", state_names, transitions,
                                                  sizeof(transitions) / sizeof(transitions[0])};

/* Every change of state goes through here and is checked: a transition
 * not in the table is a bug (re-entrancy made one, once), logged and
 * stopped at once rather than left to corrupt the session. */
static void enter_state(struct smtp_session *s, enum state st)
{
	s->state = state_enter(&session_states, s->state, st, "%016llx", (unsigned long long)s->id);
}

static const struct config *cfg(struct smtp_session *s)
{
	return &s->rt->cfg;
}

static void session_close(struct smtp_session *s, const char *reason);
static void reply(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reply(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = xprt_vline(&s->x, fmt, ap);
	va_end(ap);
	if (ret < 0)
		session_close(s, "output buffer full"); /* pipelining without reading replies */
}

static void tx_reset(struct smtp_session *s)
{
	for (size_t i = 0; i < s->nrcpt; i++)
		free(s->rcpts[i].addr);
	free(s->sender);
	s->sender = NULL;
	s->nrcpt = 0;
	s->qid[0] = '\0';
	s->smtputf8 = false;
	s->requiretls = false;
	s->body_type = 0;
	s->bdat = s->bdat_last = false;
	s->bdat_left = 0;
	s->reject = NULL;
	s->tx_open = false;
	s->interactive = false;
}

/* The spool or the queue still holds s (it is freed once they let go). */
static bool spool_busy(const struct smtp_session *s)
{
	return spool_tx_busy(&s->tx) || spool_tx_staged(&s->tx) || s->relaying != NULL;
}

/* A message being relayed before its reply, whose client will not wait
 * for it any more: it is made durable, as if it had been queued. */
static void interactive_to_spool(struct smtp_session *s)
{
	if (s->relaying == NULL || !spool_tx_staged(&s->tx))
		return;
	queue_interactive_commit(s->relaying);
	spool_tx_commit_staged(&s->tx);
}

/* Ends the session: the close completes through XPRT_CLOSED. */
static void session_close(struct smtp_session *s, const char *reason)
{
	if (s->state == S_CLOSING)
		return;
	if (s->close_reason == NULL)
		s->close_reason = reason;
	enter_state(s, S_CLOSING);
	interactive_to_spool(s);
	if (s->tx_open || spool_tx_busy(&s->tx))
		spool_tx_abort(&s->tx); /* the session is freed once the spool is done */
	xprt_close(&s->x);
}

static void quit(struct smtp_session *s, const char *reason)
{
	s->close_reason = reason;
	enter_state(s, S_QUIT);
	xprt_flush(&s->x);
}

static void session_free(struct smtp_session *s)
{
	struct smtp_server *sv = s->sv;

	log_event(s->id, "smtp disconnect client=%s commands=%u messages=%u reason=\"%s\"",
	          s->client, s->commands, s->messages, s->close_reason ? s->close_reason : "?");
	tx_reset(s);
	free(s->rcpts);
	if (s->prev)
		s->prev->next = s->next;
	else
		sv->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	sv->nsessions--;
	metrics_gauge_set(sv->mw, MG_SESSIONS_IN, sv->nsessions);
	atomic_fetch_sub(&sv->srv->connections, 1);
	if (s->counted)
		client_count_del(sv->srv->clients, &s->key);
	runtime_put(s->rt);
	free(s);
}

/* Every refused command counts (Postfix's smtpd_hard_error_limit): after
 * ERROR_LIMIT the session ends, so that nobody probes relaying, addresses
 * or the command sequence without limit.  Not counted: "452 too many
 * recipients" (a client is to send the rest in a later transaction) and
 * our own failures (451). */
static void error_count(struct smtp_session *s)
{
	if (++s->errors >= ERROR_LIMIT) {
		reply(s, "421 4.7.0 %s Error: too many errors", cfg(s)->hostname);
		quit(s, "too many errors");
	}
}

static void refuse(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void refuse(struct smtp_session *s, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	reply(s, "%s", text);
	error_count(s);
}

static void greet(struct smtp_session *s)
{
	reply(s, "220 %s ESMTP krelay", cfg(s)->hostname);
	enter_state(s, S_GREETING);
	xprt_flush(&s->x);
}

static void start_tls(struct smtp_session *s)
{
	SSL *ssl = SSL_new(s->rt->server_ctx);

	if (ssl == NULL) {
		log_event(s->id, "smtp tls error=\"SSL_new failed\"");
		session_close(s, "TLS set-up failed");
		return;
	}
	enter_state(s, S_HANDSHAKE);
	xprt_set_timeout(&s->x, cfg(s)->command_timeout_s);
	xprt_start_tls(&s->x, ssl, true);
}

/* Counts s against its client address; true when that address now holds
 * more sessions than MaxConnectionsPerClient allows.  RelayClients are
 * neither limited nor counted (Postfix exempts $mynetworks alike): they are
 * the relay's own submitters, which may need many connections. */
static bool client_over_limit(struct smtp_session *s)
{
	unsigned limit = config_client_limit(cfg(s)), n = 0;

	if (limit == 0 || config_relay_client(cfg(s), (const struct sockaddr *)&s->peer))
		return false;
	if (client_key_of(&s->peer, &s->key))
		n = client_count_add(s->sv->srv->clients, &s->key);
	s->counted = n > 0;
	return limit > 0 && n > limit;
}

void smtp_session_start(struct smtp_server *sv, int fd, bool smtps, const char *listener)
{
	struct smtp_session *s = calloc(1, sizeof(*s));
	socklen_t len = sizeof(s->peer);
	unsigned n = atomic_fetch_add(&sv->srv->connections, 1) + 1;

	if (s == NULL || xprt_init(&s->x, sv->ring, fd, &sv->srv->caps, IN_BUF_SIZE, OUT_MAX,
	                           session_event, s) < 0) {
		atomic_fetch_sub(&sv->srv->connections, 1);
		free(s);
		close(fd);
		log_warnx("out of memory: connection dropped");
		return;
	}
	s->id = atomic_fetch_add(&sv->srv->session_seq, 1) + 1;
	s->id |= (uint64_t)getpid() << 40;
	s->sv = sv;
	s->rt = runtime_get(sv->srv);
	s->smtps = smtps;
	snprintf(s->listener, sizeof(s->listener), "%s", listener);
	s->next = sv->sessions;
	if (sv->sessions)
		sv->sessions->prev = s;
	sv->sessions = s;
	sv->nsessions++;
	metrics_count(sv->mw, MC_CONN_IN, 1);
	metrics_gauge_set(sv->mw, MG_SESSIONS_IN, sv->nsessions);
	getpeername(fd, (struct sockaddr *)&s->peer, &len);
	if (s->peer.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&s->peer;
		inet_ntop(AF_INET6, &a->sin6_addr, s->client, sizeof(s->client));
		s->port = ntohs(a->sin6_port);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&s->peer;
		inet_ntop(AF_INET, &a->sin_addr, s->client, sizeof(s->client));
		s->port = ntohs(a->sin_port);
	}
	xprt_use_deadline(&s->x, cfg(s)->min_data_rate);
	xprt_set_timeout(&s->x, cfg(s)->command_timeout_s);
	log_event(s->id, "smtp connect client=%s port=%u listener=%s smtps=%d", s->client, s->port,
	          listener, smtps);
	if (n > cfg(s)->max_connections) {
		reply(s, "421 4.7.0 %s Error: too many connections", cfg(s)->hostname);
		quit(s, "too many connections");
	} else if (client_over_limit(s)) {
		char addr[INET6_ADDRSTRLEN];
		client_key_text(&s->key, addr, sizeof(addr));
		reply(s, "421 4.7.0 %s Error: too many connections from %s", cfg(s)->hostname,
		      addr);
		quit(s, "too many connections from client");
	} else if (smtps) {
		start_tls(s);
	} else {
		greet(s);
	}
}

static void session_shutdown(struct smtp_session *s)
{
	s->shutdown = true;
	switch (s->state) {
	case S_CMD:
		if (s->tx_open) {
			spool_tx_abort(&s->tx);
			enter_state(s, S_ABORT);
			return;
		}
		reply(s, "421 4.3.2 %s Service shutting down", cfg(s)->hostname);
		quit(s, "shutdown");
		break;
	case S_DATA:
	case S_BDAT:
	case S_OPENING:
		/* Not acknowledged: drop it, the client keeps its copy; the 421
		 * follows once the file is gone. */
		s->reject = NULL;
		spool_tx_abort(&s->tx);
		enter_state(s, S_ABORT);
		break;
	case S_HANDSHAKE:
	case S_GREETING:
		session_close(s, "shutdown");
		break;
	default:
		break; /* commit, abort, quit: finish what is under way */
	}
}

void smtp_server_shutdown(struct smtp_server *sv)
{
	for (struct smtp_session *s = sv->sessions, *next; s != NULL; s = next) {
		next = s->next;
		session_shutdown(s);
	}
}

/* ---- commands ---------------------------------------------------------- */

static void cmd_helo(struct smtp_session *s, const struct smtp_cmd *c)
{
	const struct config *cf = cfg(s);

	tx_reset(s);
	snprintf(s->helo, sizeof(s->helo), "%.*s", (int)c->arg_len, c->arg);
	s->greeted = true;
	s->esmtp = c->verb == SMTP_EHLO;
	if (!s->esmtp) {
		reply(s, "250 %s", cf->hostname);
		return;
	}
	reply(s, "250-%s", cf->hostname);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %llu", (unsigned long long)cf->max_message_size);
	reply(s, "250-8BITMIME");
	reply(s, "250-ENHANCEDSTATUSCODES");
	reply(s, "250-CHUNKING");
	if (!s->tls && s->rt->server_ctx != NULL)
		reply(s, "250-STARTTLS");
	if (s->tls)
		reply(s, "250-REQUIRETLS"); /* RFC 8689: offered within TLS only */
	reply(s, "250 SMTPUTF8");
}

static void cmd_mail(struct smtp_session *s, const struct smtp_cmd *c)
{
	char esc[SAFE_LEN(SMTP_PATH_MAX + 1)];

	if (s->sender != NULL) {
		refuse(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (c->has_size && c->size > cfg(s)->max_message_size) {
		refuse(s, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	if (c->requiretls && !s->tls) {
		/* RFC 8689 section 4.1: only within a TLS session */
		refuse(s, "530 5.7.10 Error: REQUIRETLS needs a TLS session (STARTTLS first)");
		return;
	}
	s->sender = strdup(c->addr);
	if (s->sender == NULL) {
		reply(s, "451 4.3.0 Error: out of memory");
		return;
	}
	s->smtputf8 = c->smtputf8;
	s->requiretls = c->requiretls;
	s->body_type = c->body == SMTP_BODY_8BITMIME ? 8 : c->body == SMTP_BODY_7BIT ? 7 : 0;
	spool_new_id(s->sv->spool, s->qid);
	log_event(s->id, "smtp from id=%s from=<%s> size=%llu%s", s->qid,
	          safe_log(esc, sizeof(esc), c->addr), (unsigned long long)c->size,
	          c->requiretls ? " requiretls=yes" : "");
	reply(s, "250 2.1.0 Ok");
}

/* No open relay, ever: a recipient outside RelayDomains needs a trusted
 * client address or a verified, listed client certificate. */
static bool may_relay(struct smtp_session *s, const char *domain)
{
	const struct config *cf = cfg(s);

	if (domain != NULL && config_relay_domain(cf, domain))
		return true;
	if (config_relay_client(cf, (const struct sockaddr *)&s->peer))
		return true;
	return s->cert.verified &&
	       config_relay_cert(cf, s->cert.sha256, s->cert.issuer_dn, s->cert.subject_dn);
}

static void cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *c)
{
	char esc[SAFE_LEN(SMTP_PATH_MAX + 1)];
	const char *why = NULL;

	if (s->sender == NULL) {
		refuse(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->bdat) {
		refuse(s, "503 5.5.1 Error: RCPT after BDAT");
		return;
	}
	if (s->nrcpt >= cfg(s)->max_recipients) {
		reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	if (c->smtputf8 && !s->smtputf8) {
		why = "553 5.6.7 Error: non-ASCII address requires SMTPUTF8 on MAIL FROM";
	} else if (c->domain == NULL) {
		why = "550 5.1.1 Error: krelay delivers no mail locally; use an address with a "
		      "domain";
	} else if (!may_relay(s, c->domain)) {
		why = "550 5.7.1 Error: relay access denied";
	}
	if (why != NULL) {
		log_event(s->id, "smtp to id=%s to=<%s> status=rejected reply=\"%s\"", s->qid,
		          safe_log(esc, sizeof(esc), c->addr), why);
		refuse(s, "%s", why);
		return;
	}
	if (s->nrcpt == s->rcpt_cap) {
		size_t cap = s->rcpt_cap ? s->rcpt_cap * 2 : 8;
		struct spool_rcpt *r = realloc(s->rcpts, cap * sizeof(*r));
		if (r == NULL) {
			reply(s, "451 4.3.0 Error: out of memory");
			return;
		}
		s->rcpts = r;
		s->rcpt_cap = cap;
	}
	s->rcpts[s->nrcpt].addr = strdup(c->addr);
	s->rcpts[s->nrcpt].state = SPOOL_RCPT_PENDING;
	if (s->rcpts[s->nrcpt].addr == NULL) {
		reply(s, "451 4.3.0 Error: out of memory");
		return;
	}
	s->nrcpt++;
	log_event(s->id, "smtp to id=%s to=<%s> status=accepted", s->qid,
	          safe_log(esc, sizeof(esc), c->addr));
	reply(s, "250 2.1.5 Ok");
}

/* krelay's own header may hold values from outside (HELO, the client
 * certificate's subject, the recipient): each goes through safe_comment(),
 * so that none can end the header or add a line (least of all a "."). */
static void received_header(struct smtp_session *s, char *buf, size_t len)
{
	char date[64], certline[SAFE_LEN(sizeof(s->cert.subject)) + 64] = "";
	char from[SAFE_LEN(sizeof(s->helo)) + 32], esc[SAFE_LEN(SMTP_PATH_MAX + 1)];
	time_t now = time(NULL);
	struct tm tm;
	size_t n;

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	if (s->tls && s->cert.cert)
		snprintf(certline, sizeof(certline), "\t(Client CN \"%s\", %s)\r\n",
		         safe_comment(esc, sizeof(esc), s->cert.subject, s->smtputf8),
		         s->cert.verified ? "verified OK" : "not verified");
	else if (s->tls)
		snprintf(certline, sizeof(certline),
		         "\t(Client did not present a certificate)\r\n");
	/* RFC 5321 From-domain: a HELO that is no domain or address literal
	 * is shown as what it is, in the comment, never as the name */
	if (safe_helo_valid(s->helo))
		snprintf(from, sizeof(from), "%s (unknown [%s])", s->helo, s->client);
	else
		snprintf(from, sizeof(from), "unknown (unknown [%s] HELO \"%s\")", s->client,
		         safe_comment(esc, sizeof(esc), s->helo, s->smtputf8));
	n = (size_t)snprintf(buf, len, "Received: from %s\r\n", from);
	if (s->tls && n < len)
		n +=
		    (size_t)snprintf(buf + n, len - n, "\t(using %s)\r\n%s", s->tls_desc, certline);
	if (n < len)
		n += (size_t)snprintf(buf + n, len - n, "\tby %s (krelay) with %s id %s",
		                      cfg(s)->hostname,
		                      !s->esmtp ? "SMTP"
		                      : s->tls  ? (s->smtputf8 ? "UTF8SMTPS" : "ESMTPS")
		                                : (s->smtputf8 ? "UTF8SMTP" : "ESMTP"),
		                      s->qid);
	if (s->nrcpt == 1 && n < len)
		n +=
		    (size_t)snprintf(buf + n, len - n, "\r\n\tfor <%s>",
		                     safe_comment(esc, sizeof(esc), s->rcpts[0].addr, s->smtputf8));
	if (n < len)
		n += (size_t)snprintf(buf + n, len - n, "; %s\r\n", date);
	assert(n < len); /* RECEIVED_MAX holds the longest, never cut short */
	/* one header: every line break is followed by a fold (or ends it), so
	 * no line of it can be "." or pose as a header or command of its own */
	for (size_t i = 0; i < n && i < len; i++)
		assert(buf[i] != '\n' ||
		       (i > 0 && buf[i - 1] == '\r' && (i + 1 >= n || buf[i + 1] == '\t')));
	for (size_t i = 0; i < n && i < len; i++)
		assert(buf[i] != '\r' || (i + 1 < len && buf[i + 1] == '\n'));
}

/* DATA or the first BDAT: create the spool file, then carry on. */
static void open_message(struct smtp_session *s, bool bdat)
{
	s->bdat = bdat;
	smtp_data_init(&s->data, !bdat);
	clock_gettime(CLOCK_MONOTONIC, &s->data_start);
	enter_state(s, S_OPENING);
	xprt_set_timeout(&s->x, cfg(s)->data_timeout_s);
	spool_tx_begin(&s->tx, s->sv->spool, s->qid, spool_event, s);
}

static void cmd_data(struct smtp_session *s, const struct smtp_cmd *c)
{
	if (s->sender == NULL) {
		refuse(s, "503 5.5.1 Error: need MAIL command");
	} else if (s->bdat) {
		refuse(s, "503 5.5.1 Error: DATA after BDAT");
	} else if (s->nrcpt == 0) {
		refuse(s, "554 5.5.1 Error: no valid recipients");
	} else {
		open_message(s, false);
	}
}

static void cmd_bdat(struct smtp_session *s, const struct smtp_cmd *c)
{
	s->bdat_left = c->chunk_size;
	s->bdat_last = c->last;
	if (!s->greeted || s->sender == NULL || s->nrcpt == 0) {
		/* RFC 3030: the chunk must still be read, then refused (its
		 * bytes are never taken for commands). */
		s->reject = !s->greeted         ? "503 5.5.1 Error: send HELO/EHLO first"
		            : s->sender == NULL ? "503 5.5.1 Error: need MAIL command"
		                                : "554 5.5.1 Error: no valid recipients";
		s->bdat = true;
		smtp_data_init(&s->data, false);
		enter_state(s, S_BDAT);
		return;
	}
	if (!s->tx_open) {
		open_message(s, true);
		return;
	}
	enter_state(s, S_BDAT);
}

static void cmd_rset(struct smtp_session *s, const struct smtp_cmd *c)
{
	if (s->tx_open) {
		s->reject = "250 2.0.0 Ok";
		spool_tx_abort(&s->tx);
		enter_state(s, S_ABORT);
		return;
	}
	tx_reset(s);
	reply(s, "250 2.0.0 Ok");
}

static void cmd_starttls(struct smtp_session *s, const struct smtp_cmd *c)
{
	if (s->tls) {
		refuse(s, "554 5.5.1 Error: TLS already active");
	} else if (s->rt->server_ctx == NULL) {
		refuse(s, "502 5.5.1 Error: command not implemented");
	} else if (s->tx_open || s->sender != NULL) {
		refuse(s, "503 5.5.1 Error: STARTTLS inside a mail transaction");
	} else {
		reply(s, "220 2.0.0 Ready to start TLS");
		enter_state(s, S_STARTTLS);
	}
}

static void cmd_quit(struct smtp_session *s, const struct smtp_cmd *c)
{
	reply(s, "221 2.0.0 Bye");
	quit(s, "quit");
}

static void cmd_simple(struct smtp_session *s, const struct smtp_cmd *c)
{
	switch (c->verb) {
	case SMTP_NOOP:
		reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_VRFY:
		reply(s,
		      "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
		break;
	case SMTP_HELP:
		reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY "
		         "HELP STARTTLS");
		break;
	case SMTP_AUTH:
		refuse(s, "503 5.5.1 Error: authentication not enabled");
		break;
	default:
		refuse(s, "502 5.5.1 Error: command not implemented");
		break;
	}
}

#define NEED_HELO 0x1 /* refused before HELO/EHLO */

static const struct {
	void (*fn)(struct smtp_session *, const struct smtp_cmd *);
	unsigned flags;
} commands[SMTP_VERB_COUNT] = {
    [SMTP_HELO] = {cmd_helo, 0},
    [SMTP_EHLO] = {cmd_helo, 0},
    [SMTP_MAIL] = {cmd_mail, NEED_HELO},
    [SMTP_RCPT] = {cmd_rcpt, NEED_HELO},
    [SMTP_DATA] = {cmd_data, NEED_HELO},
    [SMTP_BDAT] = {cmd_bdat, 0}, /* refuses after reading the chunk */
    [SMTP_RSET] = {cmd_rset, 0},
    [SMTP_NOOP] = {cmd_simple, 0},
    [SMTP_QUIT] = {cmd_quit, 0},
    [SMTP_VRFY] = {cmd_simple, 0},
    [SMTP_EXPN] = {cmd_simple, 0},
    [SMTP_HELP] = {cmd_simple, 0},
    [SMTP_STARTTLS] = {cmd_starttls, NEED_HELO},
    [SMTP_AUTH] = {cmd_simple, NEED_HELO},
};

static void command(struct smtp_session *s, const char *line, size_t len)
{
	struct smtp_cmd c;
	const char *err = smtp_parse_command(line, len, &c);

	s->commands++;
	if (err != NULL) {
		refuse(s, "%s", err);
		return;
	}
	if (commands[c.verb].fn == NULL) {
		refuse(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if ((commands[c.verb].flags & NEED_HELO) && !s->greeted) {
		refuse(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	commands[c.verb].fn(s, &c);
}

/* ---- content ----------------------------------------------------------- */

static void end_of_data(struct smtp_session *s);

/* Scans what the buffer holds; returns false when it must wait.  The
 * content goes straight from the input buffer into the spool's (the scan
 * writes it there: no second pass to copy it); only after a spool error is
 * it scanned in place and handed to spool_tx_append, which drops it. */
static bool content_step(struct smtp_session *s)
{
	struct xprt *x = &s->x;
	size_t off = 0;

	while (off < x->in_len) {
		size_t n = x->in_len - off, out = 0, used, room;
		bool store = s->tx_open && s->reject == NULL;
		char *dst = x->in + off;

		if (s->state == S_BDAT && n > s->bdat_left)
			n = (size_t)s->bdat_left;
		if (n == 0)
			break;
		if (store && s->tx.error == 0) {
			dst = spool_tx_space(&s->tx, &room);
			if (dst == NULL) {
				xprt_consume(x, off);
				return false; /* SPOOL_WRITABLE resumes us */
			}
			n = n < room ? n : room;
		} else {
			n = n < SPOOL_BUF_SIZE ? n : SPOOL_BUF_SIZE;
		}
		used = smtp_data_scan(&s->data, x->in + off, n, dst, &out);
		if (s->data.size > cfg(s)->max_message_size && s->reject == NULL)
			s->reject = "552 5.3.4 Message size exceeds fixed limit";
		if (store && s->reject == NULL && out > 0) {
			if (dst == x->in + off)
				spool_tx_append(&s->tx, dst, out);
			else
				spool_tx_added(&s->tx, out);
		}
		off += used;
		if (s->state == S_BDAT)
			s->bdat_left -= used;
		if (s->data.done)
			break;
	}
	xprt_consume(x, off);
	if (s->state == S_DATA && s->data.done) {
		end_of_data(s);
		return true;
	}
	if (s->state == S_BDAT && s->bdat_left == 0) {
		if (s->bdat_last || !s->tx_open) {
			end_of_data(s);
		} else {
			reply(s, "250 2.0.0 Ok: %llu octets", (unsigned long long)s->data.size);
			xprt_set_timeout(&s->x, cfg(s)->command_timeout_s);
			enter_state(s, S_CMD);
		}
		return true;
	}
	return false; /* needs input */
}

static const char *content_verdict(struct smtp_session *s)
{
	if (s->reject != NULL)
		return s->reject;
	if (s->data.bare_lf || s->data.bare_cr)
		return "550 5.5.2 Error: bare <CR> or <LF> in message content (only <CRLF> ends "
		       "a line)";
	if (s->data.long_line)
		return "550 5.6.0 Error: message has a line longer than 998 octets";
	return NULL;
}

/* The envelope of the message being received; strings point into s. */
static void fill_env(struct smtp_session *s, struct spool_env *env)
{
	memset(env, 0, sizeof(*env));
	memcpy(env->id, s->qid, sizeof(env->id));
	env->arrival = s->arrival;
	env->body_size = s->tx.body_size;
	env->dot_lines = s->data.dot_lines;
	env->final_crlf = !s->bdat || s->data.line_len == 0;
	env->eight_bit = s->data.eight_bit;
	env->smtputf8 = s->smtputf8;
	env->requiretls = s->requiretls;
	env->body_type = s->body_type;
	env->sender = s->sender;
	env->rcpts = s->rcpts;
	env->rcpt_count = s->nrcpt;
	env->client = s->client;
	env->helo = s->helo;
	env->tls = s->tls ? s->tls_desc : "";
	snprintf(s->certdesc, sizeof(s->certdesc), "%s%s%s",
	         !s->cert.cert      ? "none"
	         : s->cert.verified ? "verified"
	                            : "unverified",
	         s->cert.cert ? " " : "", s->cert.fingerprint);
	env->client_cert = s->certdesc;
}

static void end_of_data(struct smtp_session *s)
{
	const char *no = content_verdict(s);
	struct spool_env env;

	xprt_set_timeout(&s->x, cfg(s)->command_timeout_s);
	if (no != NULL) {
		log_event(s->id, "smtp reject id=%s size=%llu reply=\"%s\"", s->qid,
		          (unsigned long long)s->data.size, no);
		s->reject = no;
		if (s->tx_open) {
			spool_tx_abort(&s->tx);
			enter_state(s, S_ABORT);
		} else {
			reply(s, "%s", no);
			tx_reset(s);
			enter_state(s, S_CMD);
		}
		return;
	}
	s->arrival = time(NULL);
	fill_env(s, &env);
	enter_state(s, S_COMMIT);
	/* DeliveryMode=interactive: written, relayed, and made durable only
	 * if the relaying does not fully succeed (SPOOL_STAGED) */
	s->interactive =
	    cfg(s)->interactive && s->sv->queue != NULL && !cfg(s)->queue_only && !s->shutdown;
	if (s->interactive) {
		spool_tx_stage(&s->tx, &env);
	} else {
		/* a small message may go into a segment: the queue takes it */
		s->tx.segment_ok = s->sv->queue != NULL && !cfg(s)->queue_only;
		spool_tx_commit(&s->tx, &env);
	}
}

static void log_accepted(struct smtp_session *s, const char *what)
{
	char esc[SAFE_LEN(SMTP_PATH_MAX + 1)];
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	s->messages++;
	metrics_count(s->sv->mw, MC_RECEIVED_MESSAGES, 1);
	metrics_count(s->sv->mw, MC_RECEIVED_BYTES, s->tx.body_size);
	log_event(s->id, "smtp %s id=%s from=<%s> size=%llu nrcpt=%zu delay_ms=%.1f%s", what,
	          s->qid, safe_log(esc, sizeof(esc), s->sender),
	          (unsigned long long)s->tx.body_size, s->nrcpt,
	          (double)(now.tv_sec - s->data_start.tv_sec) * 1e3 +
	              (double)(now.tv_nsec - s->data_start.tv_nsec) / 1e6,
	          s->interactive ? " mode=interactive" : "");
}

/* The message is durable: log it and hand it (and its open file) to the queue. */
static void queued(struct smtp_session *s)
{
	struct spool_loc loc;

	spool_tx_take(&s->tx, &loc);
	log_accepted(s, "queued");
	if (s->relaying != NULL) {
		/* the queue has it already (and its own fd) */
		struct qmsg *m = s->relaying;
		s->relaying = NULL;
		spool_loc_close(&loc);
		queue_interactive_durable(m, 0);
	} else if (s->sv->queue != NULL && (!cfg(s)->queue_only || loc.seg != NULL)) {
		struct spool_env env;
		fill_env(s, &env);
		queue_add(s->sv->queue, &env, &loc); /* relaying starts now */
	} else {
		spool_loc_close(&loc);
		if (s->sv->queue != NULL)
			queue_park(s->sv->queue, s->qid); /* DeliveryMode=queueonly */
	}
}

/* After a message's reply: the next command, unless krelay is stopping. */
static void resume(struct smtp_session *s)
{
	if (s->shutdown && s->state == S_CMD) {
		reply(s, "421 4.3.2 %s Service shutting down", cfg(s)->hostname);
		quit(s, "shutdown");
		return;
	}
	process(s);
}

/* A commit failed: a message being relayed before its reply is only
 * logged by the queue from now on. */
static void interactive_lost(struct smtp_session *s, int err)
{
	struct qmsg *m = s->relaying;

	s->relaying = NULL;
	if (m != NULL)
		queue_interactive_durable(m, err);
}

/* DeliveryMode=interactive: what the queue made of the message. */
static void interactive_event(void *owner, enum queue_interactive_event ev)
{
	struct smtp_session *s = owner;
	bool ending;

	if (ev == QUEUE_INTERACTIVE_COMMIT) {
		spool_tx_commit_staged(&s->tx); /* SPOOL_COMMITTED follows */
		return;
	}
	/* relayed: the next hop took every recipient; nothing is stored */
	s->relaying = NULL;
	log_accepted(s, "relayed");
	if (s->state != S_QUIT && s->state != S_CLOSING)
		reply(s, "250 2.0.0 Ok: relayed as %s", s->qid); /* (may close the session) */
	ending = s->state == S_QUIT || s->state == S_CLOSING;
	if (!spool_tx_release_staged(&s->tx))
		return; /* SPOOL_ABORTED follows */
	s->tx_open = false;
	if (ending) {
		if (s->x.closed && !spool_busy(s))
			session_free(s);
		return;
	}
	tx_reset(s);
	enter_state(s, S_CMD);
	resume(s);
}

static void spool_event(void *owner, enum spool_event ev, int err)
{
	struct smtp_session *s = owner;

	if (s->state == S_QUIT || s->state == S_CLOSING) {
		/* The session is ending: let the spool settle, then free.  A
		 * message that became durable meanwhile is relayed all the same;
		 * one written but not yet durable is made durable. */
		if (ev == SPOOL_OPENED && err == 0)
			spool_tx_abort(&s->tx);
		if (ev == SPOOL_STAGED) {
			spool_tx_commit_staged(&s->tx);
			return;
		}
		if (ev == SPOOL_COMMITTED && err == 0)
			queued(s);
		else if (ev == SPOOL_COMMITTED)
			interactive_lost(s, err);
		if (ev == SPOOL_COMMITTED || ev == SPOOL_ABORTED)
			s->tx_open = false;
		if (s->x.closed && !spool_busy(s))
			session_free(s);
		return;
	}
	switch (ev) {
	case SPOOL_OPENED:
		if (err < 0) {
			log_event(s->id, "smtp spool error id=%s error=\"%s\"", s->qid,
			          strerror(-err));
			/* Keep reading the content, then refuse it. */
			s->reject = err == -ENOSPC || err == -EDQUOT
			                ? "452 4.3.1 Insufficient system storage"
			                : "451 4.3.0 Error: queue file write error";
		} else {
			s->tx_open = true;
			char hdr[RECEIVED_MAX];
			received_header(s, hdr, sizeof(hdr));
			spool_tx_append(&s->tx, hdr, strlen(hdr));
		}
		if (!s->bdat)
			reply(s, "354 End data with <CR><LF>.<CR><LF>");
		enter_state(s, s->bdat ? S_BDAT : S_DATA);
		break;
	case SPOOL_WRITABLE:
		break;
	case SPOOL_STAGED: {
		struct spool_env env;
		fill_env(s, &env);
		s->relaying = queue_add_interactive(s->sv->queue, &env, s->tx.fd, s->tx.file_size,
		                                    interactive_event, s);
		/* the reply waits for the queue (or, when the message does not
		 * qualify, for the commit) */
		if (s->relaying == NULL)
			spool_tx_commit_staged(&s->tx);
		return;
	}
	case SPOOL_COMMITTED:
		s->tx_open = false;
		if (err == 0) {
			queued(s);
			reply(s, "250 2.0.0 Ok: queued as %s", s->qid);
		} else {
			interactive_lost(s, err);
			log_event(s->id, "smtp spool error id=%s error=\"%s\"", s->qid,
			          strerror(-err));
			if (err == -ENOSPC || err == -EFBIG || err == -EDQUOT)
				reply(s, "452 4.3.1 Insufficient system storage");
			else
				reply(s, "451 4.3.0 Error: queue file write error");
		}
		tx_reset(s);
		enter_state(s, S_CMD);
		break;
	case SPOOL_ABORTED:
		s->tx_open = false;
		if (s->reject != NULL)
			reply(s, "%s", s->reject);
		tx_reset(s);
		enter_state(s, S_CMD);
		break;
	}
	resume(s);
}

/* ---- the loop ---------------------------------------------------------- */

static void process(struct smtp_session *s)
{
	struct xprt *x = &s->x;

	if (x->reading) {
		/* Everything buffered was handled; input is on its way and
		 * the buffer belongs to the read in flight. */
		xprt_flush(x);
		return;
	}
	for (;;) {
		switch (s->state) {
		case S_CMD: {
			size_t used = 0, len = 0;
			enum smtp_line_result r;

			if (xprt_pending(x) > OUT_HIGH) {
				xprt_flush(x); /* WRITTEN brings us back */
				return;
			}
			r = smtp_line_next(&s->lines, x->in, x->in_len, &used, &len);
			if (r == SMTP_LINE_MORE) {
				xprt_consume(x, used);
				xprt_flush(x);
				xprt_read(x);
				return;
			}
			/* RFC 5321 4.5.3.2: a deadline for each command, and
			 * for waiting for the next, not an idle timer */
			xprt_set_timeout(x, cfg(s)->command_timeout_s);
			if (r == SMTP_LINE_OK)
				command(s, x->in, len);
			else if (r == SMTP_LINE_TOO_LONG)
				reply(s, "500 5.5.2 Error: line too long"), error_count(s);
			else
				reply(s, "500 5.5.2 Error: bare <LF> received"), error_count(s);
			if (s->state == S_CLOSING)
				return;
			xprt_consume(x, used);
			if (s->state == S_STARTTLS) {
				/* RFC 3207 4.2 / CVE-2011-0411: nothing pipelined
				 * behind STARTTLS may run after the handshake. */
				if (x->in_len > 0)
					log_event(s->id,
					          "smtp starttls discarded=%zu reason=\"input "
					          "pipelined after STARTTLS\"",
					          x->in_len);
				xprt_discard_input(x);
				xprt_flush(x);
				return;
			}
			break;
		}
		case S_DATA:
		case S_BDAT:
			if (content_step(s))
				break;
			if (s->tx_open && s->reject == NULL && x->in_len > 0)
				return; /* waiting for the spool */
			xprt_flush(x);
			xprt_read(x);
			return;
		default:
			xprt_flush(x);
			return;
		}
	}
}

static void tls_done(struct smtp_session *s)
{
	struct ktls_state *k = &s->x.ktls;
	char why[256] = "", cert[SAFE_LEN(sizeof(s->cert.subject)) + 2 * SAFE_LEN(256) + 160];
	char esc[SAFE_LEN(sizeof(s->cert.subject))];

	s->tls = true;
	ktls_describe(s->x.ssl, s->tls_desc, sizeof(s->tls_desc));
	tls_peer_info(s->x.ssl, &s->cert);
	metrics_tls(s->sv->mw, true, SSL_get_version(s->x.ssl), k->tx, k->rx);
	if (!k->tx || !k->rx)
		snprintf(why, sizeof(why), "%s%s%s%s%s%s", k->tx ? "" : " ktls_tx_why=\"",
		         k->tx_why, k->tx ? "" : "\"", k->rx ? "" : " ktls_rx_why=\"", k->rx_why,
		         k->rx ? "" : "\"");
	if (!s->cert.cert)
		snprintf(cert, sizeof(cert), "none");
	else if (s->cert.verified) {
		char iss[SAFE_LEN(256)], sub[SAFE_LEN(256)];
		/* the names as RelayClientIssuer/RelayClientSubject take them */
		snprintf(cert, sizeof(cert),
		         "verified fingerprint=%s subject=\"%s\" cert_issuer=%s cert_subject=%s",
		         s->cert.fingerprint, safe_log_text(esc, sizeof(esc), s->cert.subject),
		         safe_log(iss, sizeof(iss), s->cert.issuer_dn),
		         safe_log(sub, sizeof(sub), s->cert.subject_dn));
	} else
		snprintf(cert, sizeof(cert), "unverified fingerprint=%s verify_error=\"%s\"",
		         s->cert.fingerprint, s->cert.verify_error);
	log_event(s->id, "smtp tls version=%s cipher=%s ktls_tx=%s ktls_rx=%s%s client_cert=%s",
	          SSL_get_version(s->x.ssl), SSL_get_cipher_name(s->x.ssl), k->tx ? "on" : "off",
	          k->rx ? "on" : "off", why, cert);
	/* RFC 3207 4.2: forget everything learnt before the handshake. */
	s->greeted = s->esmtp = false;
	s->helo[0] = '\0';
	tx_reset(s);
	if (s->smtps) {
		greet(s);
	} else {
		enter_state(s, S_CMD);
		process(s);
	}
}

static void session_event(void *owner, enum xprt_event ev, int err)
{
	struct smtp_session *s = owner;

	switch (ev) {
	case XPRT_READ:
		if (s->state != S_CLOSING)
			process(s);
		break;
	case XPRT_WRITTEN:
		if (s->state == S_GREETING) {
			enter_state(s, S_CMD);
			process(s);
		} else if (s->state == S_STARTTLS) {
			start_tls(s);
		} else if (s->state == S_QUIT) {
			session_close(s, s->close_reason);
		} else if (s->state != S_CLOSING) {
			process(s);
		}
		break;
	case XPRT_TLS_OK:
		tls_done(s);
		break;
	case XPRT_EOF:
		session_close(s, s->state == S_DATA || s->state == S_BDAT
		                     ? "lost connection in message content"
		                     : "lost connection");
		break;
	case XPRT_TIMEOUT:
		log_event(s->id, "smtp timeout state=%s error=\"%s\"", state_names[s->state],
		          s->x.error);
		if (s->state == S_HANDSHAKE || s->state == S_QUIT) {
			session_close(s, "timeout");
		} else {
			if (s->tx_open || spool_tx_busy(&s->tx))
				spool_tx_abort(&s->tx);
			reply(s, "421 4.4.2 %s Error: timeout exceeded", cfg(s)->hostname);
			quit(s, "timeout");
		}
		break;
	case XPRT_ERROR:
		if (s->state == S_HANDSHAKE)
			log_event(s->id, "smtp tls error=\"%s\"", s->x.error);
		session_close(s, s->x.error[0] ? s->x.error : strerror(-err));
		break;
	case XPRT_CLOSED:
		/* A spool file still in flight holds s: freed when it settles. */
		if (spool_busy(s))
			return;
		session_free(s);
		break;
	}
}
