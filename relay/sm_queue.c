/* sm_queue: see sm_queue.h. */
#include "sm_queue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "log.h"
#include "runas.h"
#include "safe.h"
#include "sm_qf.h"
#include "spool_format.h"

#define QF_MAX     (16u << 20) /* a control file larger than this is not Sendmail's */
#define CHUNK      (64u << 10)
#define EPOCH_2020 1577836800

struct smq_seen {
	dev_t dev;
	ino_t ino;
	int64_t mtime;
};

/* FNV-1a, 32 bits: a short stable tag for a directory's path. */
static uint32_t path_tag(const char *path)
{
	return fnv1a(path);
}

static int open_dir(int at, const char *path, bool create)
{
	if (create && mkdirat(at, path, 0700) < 0 && errno != EEXIST)
		return -1;
	return openat(at, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* A test of the handover's crash safety stops the process at a step. */
static void crash_point(const char *step)
{
	const char *at = getenv("KRELAY_TEST_SMQ_CRASH");

	if (at != NULL && strcmp(at, step) == 0)
		_exit(86);
}

int smq_init(struct smq *q, const char *queue_dir, const char *hostname, char *err, size_t errlen)
{
	struct stat st;

	memset(q, 0, sizeof(*q));
	q->queue_dir = queue_dir;
	q->hostname = hostname;
	if (stat(queue_dir, &st) < 0) {
		snprintf(err, errlen, "QueueDirectory %s: %s", queue_dir, strerror(errno));
		return -1;
	}
	if (geteuid() == 0 && st.st_uid != 0) {
		q->chown_to_owner = true;
		q->owner_uid = st.st_uid;
		q->owner_gid = st.st_gid;
	}
	return 0;
}

void smq_free(struct smq *q)
{
	free(q->seen);
	q->seen = NULL;
	q->nseen = q->seen_cap = 0;
}

/* Whether this bad file was reported already (and remembers it if not). */
static bool seen_before(struct smq *q, const struct stat *st)
{
	for (size_t i = 0; i < q->nseen; i++)
		if (q->seen[i].dev == st->st_dev && q->seen[i].ino == st->st_ino &&
		    q->seen[i].mtime == (int64_t)st->st_mtime)
			return true;
	if (q->nseen == q->seen_cap) {
		size_t cap = q->seen_cap ? 2 * q->seen_cap : 16;
		void *p = realloc(q->seen, cap * sizeof(*q->seen));
		if (p == NULL)
			return false;
		q->seen = p;
		q->seen_cap = cap;
	}
	q->seen[q->nseen++] = (struct smq_seen){st->st_dev, st->st_ino, (int64_t)st->st_mtime};
	return false;
}

/* The directories of one pass. */
struct pass {
	struct smq *q;
	const char *mqueue;
	int mq_dfd;     /* the mqueue */
	int qf_dfd;     /* where qf (and kf) files are: mqueue or mqueue/qf */
	int df_dfd;     /* where df files are: mqueue or mqueue/df */
	int import_dfd; /* QueueDirectory/import */
	int queue_dfd;  /* QueueDirectory/queue */
	int request_dfd;
	char mq_tag[9], kq_tag[9];
	struct smq_stats *st;
};

static void give(struct pass *p, int fd)
{
	if (p->q->chown_to_owner && fchown(fd, p->q->owner_uid, p->q->owner_gid) < 0)
		log_warnx("sendmail queue: chown in %s: %s", p->q->queue_dir, strerror(errno));
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Sendmail's body (LF line ends, not dot-stuffed) in krelay's wire form:
 * every LF becomes CRLF, as Sendmail's own delivery writes it; a last line
 * without its line end gets one. */
struct body_state {
	bool line_start, dot_lines, eight_bit, ended_nl;
	uint64_t size;
};

static int copy_body(int dfd, int out, struct body_state *bs)
{
	char *in = malloc(CHUNK), *buf = malloc(2 * CHUNK + 2);
	int ret = -1;
	ssize_t n;

	if (in == NULL || buf == NULL) {
		errno = ENOMEM;
		goto out;
	}
	bs->line_start = true;
	bs->ended_nl = true;
	while ((n = read(dfd, in, CHUNK)) != 0) {
		size_t k = 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out;
		for (ssize_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)in[i];
			if (bs->line_start && c == '.')
				bs->dot_lines = true;
			if (c >= 0x80)
				bs->eight_bit = true;
			if (c == '\n')
				buf[k++] = '\r';
			buf[k++] = (char)c;
			bs->line_start = c == '\n';
		}
		bs->ended_nl = in[n - 1] == '\n';
		if (write_all(out, buf, k) < 0)
			goto out;
		bs->size += k;
	}
	if (!bs->ended_nl) {
		if (write_all(out, "\r\n", 2) < 0)
			goto out;
		bs->size += 2;
	}
	ret = 0;
out:
	free(in);
	free(buf);
	return ret;
}

/* An ID for an imported message: the seconds field has its top bit set,
 * which no worker's ID has before 2088 (spool_new_id), and the rest is
 * random; not in use in queue/ or hold/. */
static void new_id(struct pass *p, char id[SPOOL_ID_LEN + 1])
{
	char hold[PATH_MAX];

	for (;;) {
		uint64_t secs = (uint64_t)(time(NULL) - EPOCH_2020) & 0x7fffffffu;
		uint32_t r = 0;
		if (getrandom(&r, sizeof(r), 0) < 0)
			r = (uint32_t)rand();
		snprintf(id, SPOOL_ID_LEN + 1, "%016" PRIX64, (secs | 0x80000000u) << 32 | r);
		snprintf(hold, sizeof(hold), "%s/hold/%s", p->q->queue_dir, id);
		if (faccessat(p->queue_dfd, id, F_OK, 0) < 0 && access(hold, F_OK) < 0)
			return;
	}
}

/* Step 1: import/MQ.SMID, durable.  0 or -1 (errno; the file removed). */
static int stage(struct pass *p, const char *name, const struct smqf *m, int dfd,
                 const char id[SPOOL_ID_LEN + 1])
{
	struct body_state bs = {0};
	struct spool_env env;
	struct spool_rcpt *rc = calloc(m->rcpt_count, sizeof(*rc));
	char trailer[SPOOL_TRAILER_LEN], *text = NULL;
	const char *client = smqf_macro(m, "_"), *helo = smqf_macro(m, "s");
	size_t tlen;
	int fd, saved;

	if (rc == NULL)
		return -1;
	fd = openat(p->import_dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		free(rc);
		return -1;
	}
	give(p, fd);
	if (write_all(fd, m->headers, m->headers_len) < 0 || copy_body(dfd, fd, &bs) < 0)
		goto fail;
	memset(&env, 0, sizeof(env));
	memcpy(env.id, id, SPOOL_ID_LEN + 1);
	env.arrival = m->created > 0 ? m->created : (int64_t)time(NULL);
	env.body_size = m->headers_len + bs.size;
	env.dot_lines = bs.dot_lines;
	env.final_crlf = true;
	env.eight_bit = m->eight_bit || bs.eight_bit;
	env.smtputf8 = m->smtputf8;
	env.body_type = m->body_type == 8 ? 8 : m->body_type == 7 ? 7 : 0;
	env.sender = m->sender;
	for (size_t i = 0; i < m->rcpt_count; i++)
		rc[i] = (struct spool_rcpt){m->rcpts[i].addr, SPOOL_RCPT_PENDING};
	env.rcpts = rc;
	env.rcpt_count = m->rcpt_count;
	env.client = (char *)(client ? client : "");
	env.helo = (char *)(helo ? helo : "");
	env.tls = "";
	env.client_cert = "none";
	tlen = spool_env_format(&env, NULL, 0);
	if ((text = malloc(tlen + 1)) == NULL)
		goto fail;
	spool_env_format(&env, text, tlen + 1);
	spool_trailer_format(trailer, env.body_size, (uint32_t)tlen);
	if (write_all(fd, text, tlen) < 0 || write_all(fd, trailer, sizeof(trailer)) < 0 ||
	    fdatasync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	free(text);
	free(rc);
	return fsync(p->import_dfd);
fail:
	saved = errno;
	if (fd >= 0)
		close(fd);
	unlinkat(p->import_dfd, name, 0);
	free(text);
	free(rc);
	errno = saved;
	return -1;
}

/* The krelay ID written in a staged file's envelope. */
static int staged_id(struct pass *p, const char *name, char id[SPOOL_ID_LEN + 1])
{
	char trailer[SPOOL_TRAILER_LEN], *text;
	uint64_t off;
	uint32_t len;
	struct spool_env env;
	char err[128];
	struct stat st;
	int fd = openat(p->import_dfd, name, O_RDONLY | O_CLOEXEC), ret = -1;

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(trailer) ||
	    pread(fd, trailer, sizeof(trailer), st.st_size - (off_t)sizeof(trailer)) !=
	        (ssize_t)sizeof(trailer) ||
	    spool_trailer_parse(trailer, &off, &len) < 0 || len > SPOOL_ENV_MAX) {
		close(fd);
		return -1;
	}
	if ((text = malloc(len)) != NULL && pread(fd, text, len, (off_t)off) == (ssize_t)len &&
	    spool_env_parse(text, len, &env, err, sizeof(err)) == 0) {
		memcpy(id, env.id, SPOOL_ID_LEN + 1);
		spool_env_free(&env);
		ret = 0;
	}
	free(text);
	close(fd);
	return ret;
}

/* Step 3: import/NAME -> queue/ID, durable, and the relay told. */
static int enqueue(struct pass *p, const char *name, const char *id)
{
	char req[SPOOL_ID_LEN + 8];
	int fd;

	if (renameat2(p->import_dfd, name, p->queue_dfd, id, RENAME_NOREPLACE) < 0)
		return -1;
	if (fsync(p->queue_dfd) < 0)
		return -1;
	snprintf(req, sizeof(req), "take.%s", id);
	fd = openat(p->request_dfd, req, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		give(p, fd);
		close(fd);
	}
	return 0;
}

static void names(struct pass *p, const char *smid, char stage_name[64], char kf[64], char df[64])
{
	snprintf(stage_name, 64, "%s.%s", p->mq_tag, smid);
	snprintf(kf, 64, "kf%s.%s", smid, p->kq_tag);
	snprintf(df, 64, "df%s", smid);
}

/* The df of a control file: in its d directory, or beside it. */
static int open_df(struct pass *p, const struct smqf *m, const char *df)
{
	if (m != NULL && m->df_dir != NULL) {
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", m->df_dir, df);
		return open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	}
	return openat(p->df_dfd, df, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
}

/* Removes the df: in dir (the qf's d record) or beside the qf. */
static void unlink_df(struct pass *p, const char *df, const char *dir)
{
	char path[PATH_MAX];
	int r;

	if (dir != NULL) {
		snprintf(path, sizeof(path), "%s/%s", dir, df);
		r = unlink(path);
	} else {
		r = unlinkat(p->df_dfd, df, 0);
	}
	if (r < 0 && errno != ENOENT)
		log_warnx("sendmail queue %s: %s: %s (left behind)", p->mqueue, df,
		          strerror(errno));
}

/* The d record of a marker (a qf renamed kf...): where its df is, or NULL
 * (beside it).  Malloc'd. */
static char *marker_df_dir(struct pass *p, const char *kf)
{
	char buf[8192], *dir = NULL;
	int fd = openat(p->qf_dfd, kf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	for (char *line = buf; line != NULL && *line; line = strchr(line, '\n')) {
		if (*line == '\n')
			line++;
		if (*line == 'd') {
			size_t len = strcspn(line + 1, "\n");
			dir = strndup(line + 1, len);
			break;
		}
	}
	return dir;
}

/* Step 4: the marker and its df. */
static void remove_marker(struct pass *p, const char *kf, const char *df)
{
	char *dir = marker_df_dir(p, kf);

	unlink_df(p, df, dir);
	unlinkat(p->qf_dfd, kf, 0);
	free(dir);
}

/* Names in a directory (malloc'd array of malloc'd strings). */
static char **list_dir(int dfd, size_t *n)
{
	char **v = NULL;
	size_t cap = 0;
	struct dirent *de;
	int fd = dup(dfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;

	*n = 0;
	if (d == NULL) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	rewinddir(d); /* the dup shares its offset with dfd, read before */
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (*n == cap) {
			void *g = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof(*v));
			if (g == NULL)
				break;
			v = g;
		}
		if ((v[*n] = strdup(de->d_name)) != NULL)
			(*n)++;
	}
	closedir(d);
	return v;
}

static void free_list(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Handovers a crash cut short (see sm_queue.h). */
static void recover(struct pass *p)
{
	char stage_name[64], kf[64], df[64], id[SPOOL_ID_LEN + 1];
	size_t tl = strlen(p->mq_tag), kl = strlen(p->kq_tag), n;
	char **v = list_dir(p->import_dfd, &n);

	for (size_t i = 0; i < n; i++) {
		const char *smid = v[i] + tl + 1;
		if (strncmp(v[i], p->mq_tag, tl) != 0 || v[i][tl] != '.' ||
		    smqf_name_id(smid, "") == NULL)
			continue;
		names(p, smid, stage_name, kf, df);
		if (faccessat(p->qf_dfd, kf, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
			/* step 2 never happened: the qf is still Sendmail's */
			unlinkat(p->import_dfd, stage_name, 0);
			continue;
		}
		if (staged_id(p, stage_name, id) < 0 || enqueue(p, stage_name, id) < 0) {
			log_warnx(
			    "sendmail queue %s: %s: finishing its handover from import/%s: %s "
			    "(tried again next pass)",
			    p->mqueue, kf, stage_name, strerror(errno));
			p->st->failed++;
			continue;
		}
		remove_marker(p, kf, df);
		log_info("%s: from Sendmail queue %s id=%s (a handover cut short, finished)", id,
		         p->mqueue, smid);
		p->st->recovered++;
	}
	free_list(v, n);
	v = list_dir(p->qf_dfd, &n);
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(v[i]);
		char smid[32];
		if (strncmp(v[i], "kf", 2) != 0 || len < 2 + 8 + 1 + kl ||
		    len - kl - 3 >= sizeof(smid) || v[i][len - kl - 1] != '.' ||
		    strcmp(v[i] + len - kl, p->kq_tag) != 0)
			continue;
		memcpy(smid, v[i] + 2, len - kl - 3);
		smid[len - kl - 3] = '\0';
		if (smqf_name_id(smid, "") == NULL)
			continue;
		names(p, smid, stage_name, kf, df);
		if (faccessat(p->import_dfd, stage_name, F_OK, 0) == 0)
			continue; /* its handover failed above: next pass */
		/* step 3 had happened: the message is in krelay's queue */
		remove_marker(p, kf, df);
		p->st->recovered++;
		log_info("sendmail queue %s: %s: its message was already in krelay's queue; "
		         "removed with its df",
		         p->mqueue, kf);
	}
	free_list(v, n);
}

/* Locks qf NAME as Sendmail does, without waiting: the open fd, -1 when
 * somebody holds it (or it went away), -2 on another error (errno). */
static int lock_qf(struct pass *p, const char *name, struct stat *st)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	struct stat now;
	int fd = openat(p->qf_dfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return errno == ENOENT ? -1 : -2;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 || fcntl(fd, F_SETLK, &fl) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return e == EWOULDBLOCK || e == EAGAIN || e == EACCES ? -1 : -2;
	}
	/* still the file that has the name (Sendmail renames a tf over it) */
	if (fstat(fd, st) < 0 || fstatat(p->qf_dfd, name, &now, AT_SYMLINK_NOFOLLOW) < 0 ||
	    now.st_dev != st->st_dev || now.st_ino != st->st_ino || st->st_nlink != 1 ||
	    !S_ISREG(st->st_mode)) {
		close(fd);
		return -1;
	}
	return fd;
}

static char *read_qf(int fd, const struct stat *st, size_t *len)
{
	char *buf;
	ssize_t n;

	if (st->st_size > (off_t)QF_MAX) {
		errno = EFBIG;
		return NULL;
	}
	if ((buf = malloc((size_t)st->st_size + 1)) == NULL)
		return NULL;
	n = pread(fd, buf, (size_t)st->st_size, 0);
	if (n != st->st_size) {
		free(buf);
		if (n >= 0)
			errno = EIO;
		return NULL;
	}
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

/* A file left in place: logged the first time this process sees it. */
static void bad(struct pass *p, const char *name, const struct stat *st, const char *why)
{
	char safe[SAFE_LEN(512)];

	p->st->bad++;
	if (seen_before(p->q, st))
		return;
	log_warnx("sendmail queue %s: %s: left for Sendmail: %s", p->mqueue, name,
	          safe_log_text(safe, sizeof(safe), why));
}

/* One qf: taken (1), skipped (0). */
static int take(struct pass *p, const char *name)
{
	char stage_name[64], kf[64], df[64], id[SPOOL_ID_LEN + 1], err[512];
	const char *smid = name + 2;
	struct smqf m;
	struct stat st;
	size_t len;
	char *text;
	int fd, dfd;

	fd = lock_qf(p, name, &st);
	if (fd == -1) {
		p->st->locked++;
		return 0;
	}
	if (fd < 0) {
		p->st->failed++;
		log_warnx("sendmail queue %s: %s: %s", p->mqueue, name, strerror(errno));
		return 0;
	}
	if ((text = read_qf(fd, &st, &len)) == NULL) {
		snprintf(err, sizeof(err), "cannot be read: %s", strerror(errno));
		bad(p, name, &st, err);
		close(fd);
		return 0;
	}
	if (smqf_parse(text, len, p->q->hostname, &m, err, sizeof(err)) < 0) {
		free(text);
		bad(p, name, &st, err);
		close(fd);
		return 0;
	}
	free(text);
	names(p, smid, stage_name, kf, df);
	if (m.body_type == 9) {
		bad(p, name, &st, "a BINARYMIME body: krelay relays text bodies only");
		goto skip;
	}
	if ((dfd = open_df(p, &m, df)) < 0) {
		snprintf(err, sizeof(err), "its %s: %s", df, strerror(errno));
		bad(p, name, &st, err);
		goto skip;
	}
	new_id(p, id);
	if (stage(p, stage_name, &m, dfd, id) < 0) {
		p->st->failed++;
		log_warnx("sendmail queue %s: %s: writing import/%s: %s (tried again next pass)",
		          p->mqueue, name, stage_name, strerror(errno));
		close(dfd);
		goto skip;
	}
	close(dfd);
	crash_point("staged");
	/* step 2: from here on the message is krelay's */
	if (renameat(p->qf_dfd, name, p->qf_dfd, kf) < 0 || fsync(p->qf_dfd) < 0) {
		p->st->failed++;
		log_warnx("sendmail queue %s: %s: rename to %s: %s (tried again next pass)",
		          p->mqueue, name, kf, strerror(errno));
		unlinkat(p->import_dfd, stage_name, 0);
		goto skip;
	}
	crash_point("marked");
	if (enqueue(p, stage_name, id) < 0) {
		p->st->failed++;
		log_warnx("sendmail queue %s: %s: moving import/%s to queue/%s: %s (finished "
		          "next pass)",
		          p->mqueue, kf, stage_name, id, strerror(errno));
		goto skip;
	}
	crash_point("moved");
	unlink_df(p, df, m.df_dir);
	unlinkat(p->qf_dfd, kf, 0);
	close(fd);
	{
		char sender[SAFE_LEN(256)], first[SAFE_LEN(256)];
		log_info("%s: from Sendmail queue %s id=%s from=<%s> nrcpt=%zu first_rcpt=<%s> "
		         "tries=%u",
		         id, p->mqueue, smid, safe_log(sender, sizeof(sender), m.sender),
		         m.rcpt_count, safe_log(first, sizeof(first), m.rcpts[0].addr), m.attempts);
	}
	smqf_free(&m);
	p->st->taken++;
	return 1;
skip:
	smqf_free(&m);
	close(fd);
	return 0;
}

static void close_pass(struct pass *p)
{
	if (p->qf_dfd >= 0 && p->qf_dfd != p->mq_dfd)
		close(p->qf_dfd);
	if (p->df_dfd >= 0 && p->df_dfd != p->mq_dfd)
		close(p->df_dfd);
	if (p->mq_dfd >= 0)
		close(p->mq_dfd);
	if (p->import_dfd >= 0)
		close(p->import_dfd);
	if (p->queue_dfd >= 0)
		close(p->queue_dfd);
	if (p->request_dfd >= 0)
		close(p->request_dfd);
	p->mq_dfd = p->qf_dfd = p->df_dfd = p->import_dfd = p->queue_dfd = p->request_dfd = -1;
}

/* Opens the directories of a pass over mqueue. */
static int open_pass(struct pass *p, struct smq *q, const char *mqueue, bool for_import, char *err,
                     size_t errlen)
{
	char real[PATH_MAX];

	memset(p, 0, sizeof(*p));
	p->q = q;
	p->mqueue = mqueue;
	p->mq_dfd = p->qf_dfd = p->df_dfd = p->import_dfd = p->queue_dfd = p->request_dfd = -1;
	if ((p->mq_dfd = open_dir(AT_FDCWD, mqueue, false)) < 0) {
		snprintf(err, errlen, "SendmailQueue %s: %s", mqueue, strerror(errno));
		return -1;
	}
	/* Sendmail's split queue: qf/ and df/ subdirectories */
	if ((p->qf_dfd = open_dir(p->mq_dfd, "qf", false)) < 0)
		p->qf_dfd = p->mq_dfd;
	if ((p->df_dfd = open_dir(p->mq_dfd, "df", false)) < 0)
		p->df_dfd = p->mq_dfd;
	snprintf(p->mq_tag, sizeof(p->mq_tag), "%08x",
	         path_tag(realpath(mqueue, real) ? real : mqueue));
	if (!for_import)
		return 0;
	snprintf(p->kq_tag, sizeof(p->kq_tag), "%08x",
	         path_tag(realpath(q->queue_dir, real) ? real : q->queue_dir));
	int qdfd = open_dir(AT_FDCWD, q->queue_dir, false);
	if (qdfd < 0) {
		snprintf(err, errlen, "QueueDirectory %s: %s", q->queue_dir, strerror(errno));
		close_pass(p);
		return -1;
	}
	const char *subs[] = {"import", "queue", "request"};
	int *fds[] = {&p->import_dfd, &p->queue_dfd, &p->request_dfd};
	for (size_t i = 0; i < 3; i++) {
		struct stat st;
		bool made = fstatat(qdfd, subs[i], &st, 0) < 0;
		if ((*fds[i] = open_dir(qdfd, subs[i], true)) < 0) {
			snprintf(err, errlen, "%s/%s: %s", q->queue_dir, subs[i], strerror(errno));
			close(qdfd);
			close_pass(p);
			return -1;
		}
		if (made)
			give(p, *fds[i]);
	}
	close(qdfd);
	return 0;
}

static bool stop_pending(void)
{
	sigset_t pend;

	return sigpending(&pend) == 0 &&
	       (sigismember(&pend, SIGTERM) || sigismember(&pend, SIGINT));
}

int smq_run(struct smq *q, const char *mqueue, struct smq_stats *st, char *err, size_t errlen)
{
	struct pass p;
	char **v;
	size_t n;

	memset(st, 0, sizeof(*st));
	if (open_pass(&p, q, mqueue, true, err, errlen) < 0)
		return -1;
	p.st = st;
	/* one importer at a time per krelay queue (the relay's runner, a
	 * `krelay queue import-sendmail`): recovery must not take another's
	 * handover under way for one a crash cut short */
	int lk = openat(p.import_dfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lk < 0 || flock(lk, LOCK_EX | (q->wait_lock ? 0 : LOCK_NB)) < 0) {
		if (lk >= 0 && (errno == EWOULDBLOCK || errno == EAGAIN)) {
			st->busy = true;
			close(lk);
			close_pass(&p);
			return 0;
		}
		snprintf(err, errlen, "%s/import/.lock: %s", q->queue_dir, strerror(errno));
		if (lk >= 0)
			close(lk);
		close_pass(&p);
		return -1;
	}
	give(&p, lk);
	recover(&p);
	v = list_dir(p.qf_dfd, &n);
	for (size_t i = 0; i < n; i++) {
		if (smqf_name_id(v[i], "qf") == NULL)
			continue;
		if (q->stop_on_term && stop_pending()) {
			st->waiting++;
			continue;
		}
		if (!take(&p, v[i]))
			st->waiting++;
	}
	free_list(v, n);
	if (st->taken > 0 && fsync(p.qf_dfd) < 0)
		log_warnx("sendmail queue %s: fsync: %s", mqueue, strerror(errno));
	close(lk); /* the lock goes with it */
	close_pass(&p);
	return 0;
}

int smq_look(const char *mqueue, const char *hostname, bool list, struct smq_look *lk, char *err,
             size_t errlen)
{
	struct smq q = {.hostname = hostname};
	struct pass p;
	char **v;
	size_t n;

	memset(lk, 0, sizeof(*lk));
	if (open_pass(&p, &q, mqueue, false, err, errlen) < 0)
		return -1;
	v = list_dir(p.qf_dfd, &n);
	for (size_t i = 0; i < n; i++) {
		char why[512] = "ok", df[64];
		struct smqf m;
		struct stat st;
		size_t len;
		char *text;
		int fd;
		if (smqf_name_id(v[i], "qf") == NULL)
			continue;
		lk->files++;
		fd = openat(p.qf_dfd, v[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_SH | LOCK_NB) < 0) {
			lk->locked++;
			snprintf(why, sizeof(why), "locked");
		} else if (fstat(fd, &st) < 0 || (text = read_qf(fd, &st, &len)) == NULL) {
			lk->bad++;
			snprintf(why, sizeof(why), "cannot be read: %s", strerror(errno));
		} else if (smqf_parse(text, len, hostname, &m, why, sizeof(why)) < 0) {
			free(text);
			lk->bad++;
		} else {
			int dfd;
			free(text);
			snprintf(df, sizeof(df), "df%s", v[i] + 2);
			if ((dfd = open_df(&p, &m, df)) < 0) {
				lk->bad++;
				snprintf(why, sizeof(why), "its %s: %s", df, strerror(errno));
			} else {
				close(dfd);
				lk->ok++;
			}
			smqf_free(&m);
		}
		close(fd);
		if (list) {
			char safe[SAFE_LEN(512)];
			printf("  %s/%s: %s\n", mqueue, v[i],
			       safe_log_text(safe, sizeof(safe), why));
		}
	}
	free_list(v, n);
	close_pass(&p);
	return (int)lk->files;
}

/* Whether request/ holds take.ID files the relay has not taken yet. */
static bool takes_waiting(const char *queue_dir)
{
	char path[PATH_MAX];
	struct dirent *de;
	bool any = false;
	DIR *d;

	snprintf(path, sizeof(path), "%s/request", queue_dir);
	if ((d = opendir(path)) == NULL)
		return false;
	while (!any && (de = readdir(d)) != NULL)
		any = strncmp(de->d_name, "take.", 5) == 0;
	closedir(d);
	return any;
}

static void runner(char *const *mqueues, size_t n, const char *queue_dir, const char *hostname,
                   unsigned interval_s, pid_t relay)
{
	struct smq q;
	char err[1024], *last_err = NULL;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (smq_init(&q, queue_dir, hostname, err, sizeof(err)) < 0) {
		log_warnx("sendmail queue runner: %s: not running", err);
		return;
	}
	q.stop_on_term = true;
	log_info("sendmail queue runner pid=%d queues=%zu interval=%us", (int)getpid(), n,
	         interval_s);
	for (;;) {
		unsigned taken = 0;
		for (size_t i = 0; i < n; i++) {
			struct smq_stats st;
			if (smq_run(&q, mqueues[i], &st, err, sizeof(err)) < 0) {
				/* said once until it changes */
				if (last_err == NULL || strcmp(last_err, err) != 0) {
					log_warnx(
					    "sendmail queue runner: %s (tried again every %us)",
					    err, interval_s);
					free(last_err);
					last_err = strdup(err);
				}
				continue;
			}
			taken += st.taken + st.recovered;
			if (st.taken + st.recovered + st.failed > 0)
				log_info(
				    "sendmail queue %s: taken=%u recovered=%u left=%u locked=%u "
				    "bad=%u failed=%u",
				    mqueues[i], st.taken, st.recovered, st.waiting, st.locked,
				    st.bad, st.failed);
		}
		if ((taken > 0 || takes_waiting(queue_dir)) && kill(relay, SIGUSR2) < 0)
			break;
		struct timespec ts = {(time_t)interval_s, 0};
		int sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT || getppid() != relay)
			break;
	}
	free(last_err);
	smq_free(&q);
}

pid_t smq_runner_start(char *const *mqueues, size_t n, const char *queue_dir, const char *hostname,
                       unsigned interval_s, const struct runas *ra, char *err, size_t errlen)
{
	pid_t relay = getpid(), pid;

	log_flush();
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "sendmail queue runner: fork: %s", strerror(errno));
		return -1;
	}
	if (pid > 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != relay)
		_exit(0);
	prctl(PR_SET_NAME, "krelay-mqueue");
	if (runas_drop_keep_dac(ra, err, errlen) < 0) {
		log_warnx("sendmail queue runner: %s: not running", err);
		log_flush();
		_exit(1);
	}
	runner(mqueues, n, queue_dir, hostname, interval_s, relay);
	log_flush();
	_exit(0);
}
