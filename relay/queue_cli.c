/* queue_cli: see queue_cli.h. */
#include "queue_cli.h"
#include "sm_queue.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "qshape.h"
#include "safe.h"
#include "spool.h"
#include "spool_format.h"
#include "spool_msg.h"

static void age(time_t secs, char *buf, size_t len)
{
	if (secs < 0)
		secs = 0;
	if (secs < 120)
		snprintf(buf, len, "%llds", (long long)secs);
	else if (secs < 7200)
		snprintf(buf, len, "%lldm", (long long)secs / 60);
	else if (secs < 2 * 86400)
		snprintf(buf, len, "%lldh", (long long)secs / 3600);
	else
		snprintf(buf, len, "%lldd", (long long)secs / 86400);
}

/* A recipient's state: its word for scripts (--json), and for people. */
static const char *state_name_as(char s, bool key)
{
	switch (s) {
	case SPOOL_RCPT_PENDING:
		return "pending";
	case SPOOL_RCPT_DELIVERED:
		return "delivered";
	case SPOOL_RCPT_FAILED:
		return key ? "failed" : "failed (bounce being queued)";
	case SPOOL_RCPT_BOUNCED:
		return key ? "bounced" : "failed (bounced)";
	default:
		return key ? "unknown" : "?";
	}
}

static const char *state_name(char s)
{
	return state_name_as(s, false);
}

static int open_sub(const struct config *c, const char *sub)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", c->queue_directory, sub);
	return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Sender, recipients and the last error came from outside: shown as the
 * log shows them (safe.h), so a listing always reads as what is queued. */
static void print_msg(const struct spool_env *e, bool held, time_t now)
{
	char a[32], next[32] = "-", esc[SAFE_LEN(1024)];

	age(now - e->arrival, a, sizeof(a));
	if (e->next_attempt > now) {
		strcpy(next, "in ");
		age(e->next_attempt - now, next + 3, sizeof(next) - 3);
	} else if (e->attempts > 0) {
		strcpy(next, "now");
	}
	printf("%s%s size=%llu age=%s attempts=%u next=%s from=<%s>\n", e->id, held ? " HELD" : "",
	       (unsigned long long)e->body_size, a, e->attempts, held ? "held" : next,
	       safe_log(esc, sizeof(esc), e->sender));
	for (size_t r = 0; r < e->rcpt_count; r++)
		printf("    to=<%s> %s\n", safe_log(esc, sizeof(esc), e->rcpts[r].addr),
		       state_name(e->rcpts[r].state));
	if (e->last_error != NULL && e->last_error[0] != '\0')
		printf("    last error: %s\n", safe_log_text(esc, sizeof(esc), e->last_error));
}

/* A JSON string: '"', '\\' and control bytes escaped, and every byte that
 * is not part of well-formed UTF-8 as \u00XX (so the output always parses). */
static void json_str(const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");

	putchar('"');
	while (*p) {
		size_t ok = safe_utf8_len(p);
		if (*p == '"' || *p == '\\') {
			printf("\\%c", *p++);
		} else if (*p < 0x20 || *p == 0x7f || ok == 0) {
			printf("\\u%04x", *p++);
		} else {
			fwrite(p, 1, ok, stdout);
			p += ok;
		}
	}
	putchar('"');
}

static void print_json(const struct spool_env *e, bool held, bool first)
{
	printf("%s\n  {\"id\": \"%s\", \"held\": %s, \"size\": %llu, \"arrival\": %lld, "
	       "\"attempts\": %u, \"next_attempt\": %lld, \"sender\": ",
	       first ? "" : ",", e->id, held ? "true" : "false", (unsigned long long)e->body_size,
	       (long long)e->arrival, e->attempts, (long long)e->next_attempt);
	json_str(e->sender);
	printf(", \"recipients\": [");
	for (size_t r = 0; r < e->rcpt_count; r++) {
		printf("%s{\"address\": ", r ? ", " : "");
		json_str(e->rcpts[r].addr);
		printf(", \"state\": \"%s\"}", state_name_as(e->rcpts[r].state, true));
	}
	printf("], \"last_error\": ");
	json_str(e->last_error);
	printf("}");
}

/* Sendmail's mailq layout (8.17 printqueue): ID and a mark ('X': held),
 * size, arrival time, sender; the reason it waits; the recipients still
 * to be delivered. */
static void print_mailq(const struct spool_env *e, bool held)
{
	char when[32] = "", esc[SAFE_LEN(1024)];
	time_t t = (time_t)e->arrival;
	struct tm tm;

	if (localtime_r(&t, &tm) != NULL)
		strftime(when, sizeof(when), "%a %b %e %H:%M", &tm);
	printf("%-14s%c%8llu %.16s <%s>\n", e->id, held ? 'X' : ' ',
	       (unsigned long long)e->body_size, when, safe_log(esc, sizeof(esc), e->sender));
	if (held)
		printf("%17s(held: krelay queue release %s)\n", "", e->id);
	else if (e->last_error != NULL && e->last_error[0] != '\0')
		printf("%17s(Deferred: %.60s)\n", "",
		       safe_log_text(esc, sizeof(esc), e->last_error));
	for (size_t r = 0; r < e->rcpt_count; r++)
		if (e->rcpts[r].state == SPOOL_RCPT_PENDING)
			printf("\t\t\t\t\t <%s>\n", safe_log(esc, sizeof(esc), e->rcpts[r].addr));
}

enum list_format { LIST_TEXT, LIST_JSON, LIST_MAILQ };

/* Lists sub ("queue" or "hold") in fmt; with count_only, only counts. */
static int list_sub(const struct config *c, const char *sub, bool held, enum list_format fmt,
                    int *shown)
{
	char **ids, err[256];
	size_t n;
	int dfd = open_sub(c, sub), count = 0;
	time_t now = time(NULL);

	if (dfd < 0)
		return 0;
	if (spool_list_in(c->queue_directory, sub, &ids, &n) < 0)
		n = 0;
	for (size_t i = 0; i < n; i++) {
		struct spool_env e;

		if (spool_state_load(dfd, ids[i], &e, err, sizeof(err)) == 0) {
			if (fmt == LIST_JSON)
				print_json(&e, held, (*shown)++ == 0);
			else if (fmt == LIST_MAILQ)
				print_mailq(&e, held);
			else
				print_msg(&e, held, now);
			spool_env_free(&e);
			count++;
		} else if (fmt == LIST_TEXT) {
			printf("%s (unreadable: %s)\n", ids[i], err);
		} else if (fmt == LIST_MAILQ) {
			printf("%-14s?        (unreadable: %s)\n", ids[i], err);
		}
		free(ids[i]);
	}
	free(ids);
	close(dfd);
	return count;
}

/* Messages the running relay committed into a segment (spool_seg.h) and
 * has not yet delivered nor written to queue/ID: listed as queued, as
 * they are (the next start would write them to queue/). */
struct seg_lister {
	enum list_format fmt;
	int *shown, count, queue_dfd;
	bool count_only;
	time_t now;
	const char *want; /* only this ID (found: count 1) */
};

/* The envelope of a message in a segment (its record: body, envelope,
 * trailer); -1 when it cannot be read. */
static int seg_env(const char *file, size_t len, struct spool_env *e)
{
	uint64_t off;
	uint32_t elen;
	char err[256];

	if (len < SPOOL_TRAILER_LEN ||
	    spool_trailer_parse(file + len - SPOOL_TRAILER_LEN, &off, &elen) < 0 ||
	    off + elen + SPOOL_TRAILER_LEN != len)
		return -1;
	return spool_env_parse(file + off, elen, e, err, sizeof(err));
}

static void seg_msg_cb(void *arg, const char *id, const char *file, size_t len)
{
	struct seg_lister *l = arg;
	struct spool_env e;

	if ((l->want != NULL && strcmp(l->want, id) != 0) ||
	    (l->queue_dfd >= 0 && faccessat(l->queue_dfd, id, F_OK, 0) == 0))
		return; /* (written to queue/ meanwhile: listed from there) */
	if (seg_env(file, len, &e) < 0) {
		if (!l->count_only && l->fmt == LIST_TEXT)
			printf("%s (in a segment, unreadable)\n", id);
		return;
	}
	l->count++;
	if (!l->count_only) {
		if (l->fmt == LIST_JSON)
			print_json(&e, false, (*l->shown)++ == 0);
		else if (l->fmt == LIST_MAILQ)
			print_mailq(&e, false);
		else
			print_msg(&e, false, l->now);
	}
	spool_env_free(&e);
}

static int list_segments(const struct config *c, enum list_format fmt, int *shown, bool count_only,
                         const char *want)
{
	struct seg_lister l = {fmt, shown, 0, open_sub(c, "queue"), count_only, time(NULL), want};

	spool_seg_list(c->queue_directory, seg_msg_cb, &l);
	if (l.queue_dfd >= 0)
		close(l.queue_dfd);
	return l.count;
}

static int count_sub(const struct config *c, const char *sub)
{
	char **ids;
	size_t n;

	if (spool_list_in(c->queue_directory, sub, &ids, &n) < 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	return (int)n;
}

int queue_cli_mailq(const struct config *c)
{
	int n = count_sub(c, "queue") + count_sub(c, "hold") +
	        list_segments(c, 0, NULL, true, NULL),
	    shown = 0;

	if (n == 0) {
		printf("%s is empty\n\t\tTotal requests: 0\n", c->queue_directory);
		return 0;
	}
	printf("\t\t%s (%d request%s)\n", c->queue_directory, n, n == 1 ? "" : "s");
	printf(
	    "-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------\n");
	n = list_sub(c, "queue", false, LIST_MAILQ, &shown) +
	    list_segments(c, LIST_MAILQ, &shown, false, NULL) +
	    list_sub(c, "hold", true, LIST_MAILQ, &shown);
	printf("\t\tTotal requests: %d\n", n);
	return 0;
}

/* The running relay's pid, or 0: only a pid file the relay holds locked
 * counts (one left by a relay killed with -9 names a pid that may be any
 * process's by now). */
static pid_t relay_pid(const struct config *c)
{
	char path[4096], buf[32];
	long pid = 0;
	int fd, n;

	snprintf(path, sizeof(path), "%s/krelay.pid", c->queue_directory);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (flock(fd, LOCK_SH | LOCK_NB) == 0 || errno != EWOULDBLOCK) {
		close(fd); /* not locked: no relay holds it */
		return 0;
	}
	n = (int)pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	pid = strtol(buf, NULL, 10);
	if (pid <= 1 || kill((pid_t)pid, 0) < 0)
		pid = 0;
	return (pid_t)pid;
}

int queue_cli_flush(const struct config *c);
static int poke(const struct config *c, const char *what);

int queue_cli_flush(const struct config *c)
{
	return poke(c, "deferred messages are tried");
}

static int poke(const struct config *c, const char *what)
{
	pid_t pid = relay_pid(c);

	if (pid == 0) {
		printf("krelay is not running: %s at its next start\n", what);
		return 0;
	}
	if (kill(pid, SIGUSR1) < 0) {
		fprintf(stderr, "krelay queue: signal pid %d: %s\n", (int)pid, strerror(errno));
		return 1;
	}
	printf("asked krelay (pid %d) for a queue run: %s now\n", (int)pid, what);
	return 0;
}

static int fsync_sub(const struct config *c, const char *sub)
{
	int fd = open_sub(c, sub), ret = 0;

	if (fd < 0 || fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	return ret;
}

/* Moves ID and ID.env from one subdirectory to another, the state file
 * first: a crash between the two renames leaves the state file beside
 * neither or the wrong copy of the message, and recovery puts it back with
 * the message (spool_recover); both directories are made durable before
 * the command says it is done. */
static int move(const struct config *c, const char *id, const char *from, const char *to)
{
	char a[4096], b[4096];

	snprintf(a, sizeof(a), "%s/%s", c->queue_directory, to);
	if (mkdir(a, 0700) < 0 && errno != EEXIST)
		return -errno;
	snprintf(a, sizeof(a), "%s/%s/%s", c->queue_directory, from, id);
	if (access(a, F_OK) < 0)
		return -errno;
	snprintf(a, sizeof(a), "%s/%s/%s.env", c->queue_directory, from, id);
	snprintf(b, sizeof(b), "%s/%s/%s.env", c->queue_directory, to, id);
	if (rename(a, b) < 0 && errno != ENOENT)
		return -errno;
	snprintf(a, sizeof(a), "%s/%s/%s", c->queue_directory, from, id);
	snprintf(b, sizeof(b), "%s/%s/%s", c->queue_directory, to, id);
	if (rename(a, b) < 0)
		return -errno;
	if (fsync_sub(c, to) < 0 || fsync_sub(c, from) < 0)
		return -errno;
	return 0;
}

/* Deletes ID wherever it is: the message first, made durable, then its
 * state file (a crash between leaves a state file alone, which recovery
 * removes; never the message without its state). */
static int remove_msg(const struct config *c, const char *id)
{
	static const char *const subs[] = {"queue", "hold"};
	char path[4096];
	int found = 0;

	for (size_t i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s/%s", c->queue_directory, subs[i], id);
		if (unlink(path) < 0)
			continue;
		found++;
		fsync_sub(c, subs[i]);
		snprintf(path, sizeof(path), "%s/%s/%s.env", c->queue_directory, subs[i], id);
		unlink(path);
	}
	return found;
}

/* Tells the running relay which message to take back in at its next queue
 * run: release/ID (the relay takes in no other queue/ID it does not hold,
 * see queue_flush).  At start every queue/ID is taken in and release/ is
 * emptied. */
static int mark_released(const struct config *c, const char *id)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/release", c->queue_directory);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -1;
	snprintf(path, sizeof(path), "%s/release/%s", c->queue_directory, id);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

static bool in_sub(const struct config *c, const char *sub, const char *id)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s/%s", c->queue_directory, sub, id);
	return access(path, F_OK) == 0;
}

static bool in_queue(const struct config *c, const char *id)
{
	return in_sub(c, "queue", id) || list_segments(c, LIST_TEXT, NULL, true, id) > 0;
}

/* Leaves QueueDirectory/request/VERB.ID for the running relay (hold or
 * delete of a message it may be delivering: see queue_requests)
 * and signals it until it has taken the request away: 1 when it has, 0
 * when 10 s passed first (a delivery still under way), or -errno. */
static int ask_relay(const struct config *c, pid_t pid, const char *verb, const char *id)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/request", c->queue_directory);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	snprintf(path, sizeof(path), "%s/request/%s.%s", c->queue_directory, verb, id);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return -errno;
	close(fd);
	for (int i = 0; i < 100; i++) {
		if (i % 10 == 0 && kill(pid, SIGUSR2) < 0)
			return -errno;
		if (access(path, F_OK) < 0 && errno == ENOENT)
			return 1;
		usleep(100000);
	}
	return 0;
}

/* After the list: each SendmailQueue, and what its runner would make of
 * every file there. */
static void list_sendmail_queues(const struct config *c)
{
	char err[512];

	for (size_t i = 0; i < c->sendmail_queues_count; i++) {
		struct smq_look lk;
		const char *dir = c->sendmail_queues[i];
		if (smq_look(dir, c->hostname, true, &lk, err, sizeof(err)) < 0) {
			printf("Sendmail queue %s: %s\n", dir, err);
			continue;
		}
		printf("Sendmail queue %s: %u file%s (%u to be taken, %u locked, %u left for "
		       "Sendmail: cannot be taken)\n",
		       dir, lk.files, lk.files == 1 ? "" : "s", lk.ok, lk.locked, lk.bad);
	}
}

/* `krelay queue import-sendmail DIR`: one pass now, waiting for the
 * running relay's own runner if it is at work; the running relay is told. */
static int import_sendmail(const struct config *c, const char *dir)
{
	struct smq q;
	struct smq_stats st;
	char err[1024];
	pid_t pid;
	int ret;

	if (smq_init(&q, c->queue_directory, c->hostname, err, sizeof(err)) < 0) {
		fprintf(stderr, "krelay queue: import-sendmail: %s\n", err);
		return 1;
	}
	q.wait_lock = true;
	ret = smq_run(&q, dir, &st, err, sizeof(err));
	smq_free(&q);
	if (ret < 0) {
		fprintf(stderr, "krelay queue: import-sendmail: %s\n", err);
		return 1;
	}
	printf("%s: %u message%s taken into %s", dir, st.taken, st.taken == 1 ? "" : "s",
	       c->queue_directory);
	if (st.recovered)
		printf(", %u handover%s a crash had cut short finished", st.recovered,
		       st.recovered == 1 ? "" : "s");
	printf("; %u left: %u locked (being written or delivered by Sendmail), %u that cannot "
	       "be taken (see above), %u failed here\n",
	       st.waiting, st.locked, st.bad, st.failed);
	if ((st.taken > 0 || st.recovered > 0) && (pid = relay_pid(c)) != 0) {
		if (kill(pid, SIGUSR2) == 0)
			printf("told krelay (pid %d): it delivers them now\n", (int)pid);
	} else if (st.taken > 0 || st.recovered > 0) {
		printf("krelay is not running: it delivers them at its next start\n");
	}
	return st.waiting > 0 ? 1 : 0;
}

/* ---- summary: qshape's table ---- */

static int shape_env(struct qshape *q, const struct spool_env *e, time_t now)
{
	for (size_t r = 0; r < e->rcpt_count; r++) {
		const char *at;

		if (e->rcpts[r].state != SPOOL_RCPT_PENDING)
			continue;
		at = strrchr(e->rcpts[r].addr, '@');
		if (qshape_add(q, at ? at + 1 : e->rcpts[r].addr, (int64_t)(now - e->arrival)) < 0)
			return -1;
	}
	return 0;
}

struct seg_shaper {
	struct qshape *q;
	int queue_dfd;
	time_t now;
	bool oom;
};

static void seg_shape_cb(void *arg, const char *id, const char *file, size_t len)
{
	struct seg_shaper *s = arg;
	struct spool_env e;

	if (s->queue_dfd >= 0 && faccessat(s->queue_dfd, id, F_OK, 0) == 0)
		return; /* (written to queue/ meanwhile: counted from there) */
	if (seg_env(file, len, &e) < 0)
		return;
	if (shape_env(s->q, &e, s->now) < 0)
		s->oom = true;
	spool_env_free(&e);
}

/* `krelay queue summary [--json] [--top N]`: the recipients waiting in
 * queue/ and in segments (not the held ones), by domain and age. */
static int summary(const struct config *c, bool json, size_t top)
{
	struct qshape *q = qshape_new();
	struct seg_shaper s = {q, open_sub(c, "queue"), time(NULL), q == NULL};
	char **ids, err[256];
	size_t n = 0;
	int dfd = s.queue_dfd;

	if (dfd >= 0 && spool_list_in(c->queue_directory, "queue", &ids, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			struct spool_env e;

			if (!s.oom && spool_state_load(dfd, ids[i], &e, err, sizeof(err)) == 0) {
				if (shape_env(q, &e, s.now) < 0)
					s.oom = true;
				spool_env_free(&e);
			}
			free(ids[i]);
		}
		free(ids);
	}
	if (!s.oom)
		spool_seg_list(c->queue_directory, seg_shape_cb, &s);
	if (dfd >= 0)
		close(dfd);
	if (s.oom) {
		fprintf(stderr, "krelay queue: summary: out of memory\n");
		qshape_free(q);
		return 1;
	}
	if (json) {
		qshape_json(q, top, stdout);
	} else {
		int held = count_sub(c, "hold");
		qshape_print(q, top, stdout);
		if (held > 0)
			printf("(and %d held message%s: krelay queue list)\n", held,
			       held == 1 ? "" : "s");
	}
	qshape_free(q);
	return 0;
}

static int usage(void)
{
	fprintf(
	    stderr,
	    "usage: krelay queue [-C FILE] list [--json] | summary [--json] [--top N] | flush | "
	    "delete ID | hold ID | release ID | import-sendmail MQUEUE-DIR\n");
	return 2;
}

int queue_cli(const struct config *c, int argc, char **argv)
{
	const char *verb = argc > 0 ? argv[0] : "";
	const char *id = argc > 1 ? argv[1] : NULL;
	pid_t pid;
	int ret;

	if (strcmp(verb, "list") == 0 && argc == 1) {
		int shown = 0;
		int n = list_sub(c, "queue", false, LIST_TEXT, &shown) +
		        list_segments(c, LIST_TEXT, &shown, false, NULL) +
		        list_sub(c, "hold", true, LIST_TEXT, &shown);
		printf("%d message%s\n", n, n == 1 ? "" : "s");
		list_sendmail_queues(c);
		return 0;
	}
	if (strcmp(verb, "list") == 0 && argc == 2 && strcmp(argv[1], "--json") == 0) {
		int shown = 0;
		printf("[");
		list_sub(c, "queue", false, LIST_JSON, &shown);
		list_segments(c, LIST_JSON, &shown, false, NULL);
		list_sub(c, "hold", true, LIST_JSON, &shown);
		printf("%s]\n", shown ? "\n" : "");
		return 0;
	}
	if (strcmp(verb, "summary") == 0) {
		bool json = false;
		size_t top = 0;

		for (int i = 1; i < argc; i++) {
			char *end;
			if (strcmp(argv[i], "--json") == 0) {
				json = true;
			} else if (strcmp(argv[i], "--top") == 0 && i + 1 < argc) {
				unsigned long v = strtoul(argv[++i], &end, 10);
				if (*end != '\0' || v == 0 || argv[i][0] == '-') {
					fprintf(stderr,
					        "krelay queue: --top '%s' is not a number\n",
					        argv[i]);
					return 2;
				}
				top = v;
			} else {
				return usage();
			}
		}
		return summary(c, json, top);
	}
	if (strcmp(verb, "flush") == 0 && argc == 1)
		return poke(c, "deferred messages are tried");
	if (strcmp(verb, "import-sendmail") == 0 && argc == 2)
		return import_sendmail(c, argv[1]);
	if (argc != 2 || (strcmp(verb, "delete") != 0 && strcmp(verb, "hold") != 0 &&
	                  strcmp(verb, "release") != 0))
		return usage();
	if (!spool_id_valid(id)) {
		fprintf(stderr, "krelay queue: '%s' is not a queue ID (16 hex digits)\n", id);
		return 1;
	}
	if ((pid = relay_pid(c)) == 0) {
		/* stopped: what a crash left in segments goes to queue/ first,
		 * as the next start would do */
		unsigned segs;
		int n = spool_seg_recover(c->queue_directory, &segs);
		if (n < 0)
			fprintf(stderr, "krelay queue: %s/seg: %s\n", c->queue_directory,
			        strerror(-n));
	}
	if (strcmp(verb, "release") != 0 && pid != 0 && in_queue(c, id)) {
		/* the running relay may be delivering it: it does the move */
		ret = ask_relay(c, pid, verb, id);
		if (ret < 0) {
			fprintf(stderr, "krelay queue: %s %s: %s\n", verb, id, strerror(-ret));
			return 1;
		}
		if (ret == 0) {
			printf("%s: asked krelay (pid %d); a delivery under way has not ended yet: "
			       "the message is %s when it does\n",
			       id, (int)pid, strcmp(verb, "hold") == 0 ? "held" : "deleted");
			return 0;
		}
		if (strcmp(verb, "hold") == 0 && !in_sub(c, "hold", id)) {
			printf("%s: not held: it left the queue (delivered) meanwhile\n", id);
			return 0;
		}
		printf("%s: %s by krelay (pid %d)\n", id,
		       strcmp(verb, "hold") == 0 ? "held" : "deleted", (int)pid);
		return 0;
	}
	if (strcmp(verb, "delete") == 0) {
		if (remove_msg(c, id) == 0) {
			fprintf(stderr, "krelay queue: %s: no such message\n", id);
			return 1;
		}
		printf("%s: deleted (a delivery already under way finishes)\n", id);
		return 0;
	}
	ret =
	    strcmp(verb, "hold") == 0 ? move(c, id, "queue", "hold") : move(c, id, "hold", "queue");
	if (ret < 0) {
		fprintf(stderr, "krelay queue: %s %s: %s\n", verb, id,
		        ret == -ENOENT ? "no such message" : strerror(-ret));
		return 1;
	}
	if (strcmp(verb, "hold") == 0) {
		printf("%s: held (not tried until released; a delivery under way finishes)\n", id);
		return 0;
	}
	if (mark_released(c, id) < 0) {
		fprintf(stderr, "krelay queue: release %s: %s/release: %s\n", id,
		        c->queue_directory, strerror(errno));
		return 1;
	}
	printf("%s: released\n", id);
	return poke(c, "it is tried");
}
