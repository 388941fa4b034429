/* log: see log.h. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096
#define LOG_BUF_SIZE (64u << 10)

static atomic_int log_fd = -1;
static atomic_int log_to_stderr = 1;
static atomic_int stderr_kind; /* 0: not looked at yet, 1: /dev/null, 2: anything else */
static atomic_int log_pid;
static atomic_uint log_level = LOG_LEVEL_DEFAULT;

enum log_sink { SINK_STDERR, SINK_JOURNAL, SINK_SYSLOG };
static atomic_int sink = SINK_STDERR;
static int syslog_fd = -1;
static struct sockaddr_un syslog_addr;
static pthread_mutex_t syslog_lock = PTHREAD_MUTEX_INITIALIZER;
static time_t syslog_retry; /* no reconnecting before (under syslog_lock) */

/* A thread that asked for it (log_buffer_start) gathers its lines here and
 * writes them with log_flush: one write(2) per destination per ring turn. */
struct log_buf {
	char *p;
	size_t len;
	time_t stamp_sec; /* the second stamp[] was made for */
	char stamp[32];   /* "%Y-%m-%dT%H:%M:%S" of stamp_sec */
};
static _Thread_local struct log_buf tbuf = {.stamp_sec = -1};

int log_open(const char *path)
{
	int fd = -1, old = atomic_load(&log_fd);

	if (path != NULL) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd < 0)
			return -errno;
	}
	if (fd >= 0 && old >= 0) {
		/* Swap the file under the same descriptor: a worker writing at
		 * this moment never sees a closed (or reused) fd. */
		if (dup3(fd, old, O_CLOEXEC) < 0) {
			int err = -errno;
			close(fd);
			return err;
		}
		close(fd);
		return 0;
	}
	atomic_store(&log_fd, fd);
	if (old >= 0)
		close(old);
	return 0;
}

void log_stderr(int on)
{
	atomic_store(&log_to_stderr, on);
}

/* True when stderr is /dev/null: no write(2) to make there. */
static bool stderr_is_null(void)
{
	int k = atomic_load(&stderr_kind);

	if (k == 0) {
		struct stat st;
		k = fstat(STDERR_FILENO, &st) == 0 && S_ISCHR(st.st_mode) &&
		            st.st_rdev == makedev(1, 3)
		        ? 1
		        : 2;
		atomic_store(&stderr_kind, k);
	}
	return k == 1;
}

bool log_file_is_syslog(const char *log_file, const char **socket)
{
	if (log_file == NULL || strncmp(log_file, "syslog", 6) != 0 ||
	    (log_file[6] != '\0' && log_file[6] != ':'))
		return false;
	*socket = log_file[6] == ':' && log_file[7] != '\0' ? log_file + 7 : LOG_SYSLOG_SOCKET;
	return true;
}

/* Whether stderr is the stream systemd's journal reads: $JOURNAL_STREAM is
 * "device:inode" of it (systemd.exec(5)). */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	return js != NULL && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
	       fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

static void syslog_connect(void)
{
	if (syslog_fd >= 0)
		close(syslog_fd);
	syslog_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (syslog_fd >= 0 &&
	    connect(syslog_fd, (struct sockaddr *)&syslog_addr, sizeof(syslog_addr)) < 0) {
		close(syslog_fd);
		syslog_fd = -1;
	}
}

void log_choose(const char *syslog_socket)
{
	struct stat st;
	int kind = SINK_STDERR;

	if (syslog_socket != NULL)
		kind = SINK_SYSLOG;
	else if (stderr_is_journal())
		kind = SINK_JOURNAL;
	else if (fstat(STDERR_FILENO, &st) < 0 || stderr_is_null())
		kind = SINK_SYSLOG; /* nobody reads stderr: a daemon's */
	if (kind == SINK_SYSLOG) {
		pthread_mutex_lock(&syslog_lock);
		memset(&syslog_addr, 0, sizeof(syslog_addr));
		syslog_addr.sun_family = AF_UNIX;
		snprintf(syslog_addr.sun_path, sizeof(syslog_addr.sun_path), "%s",
		         syslog_socket ? syslog_socket : LOG_SYSLOG_SOCKET);
		syslog_connect();
		pthread_mutex_unlock(&syslog_lock);
	}
	atomic_store(&sink, kind);
}

const char *log_sink_name(void)
{
	switch (atomic_load(&sink)) {
	case SINK_JOURNAL:
		return "journal";
	case SINK_SYSLOG:
		return "syslog";
	default:
		return "stderr";
	}
}

/* One line (msg: after "krelay[pid]: ", with its newline) to the journal or
 * syslog, at its priority. */
static void side_out(int prio, const char *msg, size_t n)
{
	char buf[LOG_LINE_MAX + 96];
	int k;

	if (atomic_load(&sink) == SINK_JOURNAL) {
		k = snprintf(buf, sizeof(buf), "<%d>%.*s", prio, (int)n, msg);
		if (k > 0 && write(STDERR_FILENO, buf,
		                   (size_t)k < sizeof(buf) ? (size_t)k : sizeof(buf) - 1) < 0)
			(void)0;
		return;
	}
	/* RFC 3164 as syslog(3) sends it, without the newline */
	time_t now = time(NULL);
	struct tm tm;
	char stamp[32];
	localtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm);
	k = snprintf(buf, sizeof(buf), "<%d>%s krelay[%d]: %.*s", LOG_MAIL | prio, stamp,
	             atomic_load(&log_pid), (int)(n > 0 ? n - 1 : 0), msg);
	if (k < 0)
		return;
	if ((size_t)k >= sizeof(buf))
		k = sizeof(buf) - 1;
	pthread_mutex_lock(&syslog_lock);
	if ((syslog_fd < 0 || send(syslog_fd, buf, (size_t)k, MSG_NOSIGNAL) < 0) &&
	    now >= syslog_retry) {
		/* the daemon restarted (or was not there yet): once more, and
		 * not again for a while when it is not back */
		syslog_connect();
		if (syslog_fd < 0 || send(syslog_fd, buf, (size_t)k, MSG_NOSIGNAL) < 0)
			syslog_retry = now + 5;
	}
	pthread_mutex_unlock(&syslog_lock);
}

static void write_out(const char *p, size_t n)
{
	int fd = atomic_load(&log_fd);

	if (atomic_load(&log_to_stderr) && atomic_load(&sink) == SINK_STDERR && !stderr_is_null() &&
	    write(STDERR_FILENO, p, n) < 0)
		(void)0; /* nowhere left to report it */
	if (fd >= 0 && write(fd, p, n) < 0)
		(void)0;
}

void log_buffer_start(void)
{
	if (tbuf.p == NULL)
		tbuf.p = malloc(LOG_BUF_SIZE);
	tbuf.len = 0;
}

void log_flush(void)
{
	if (tbuf.len > 0)
		write_out(tbuf.p, tbuf.len);
	tbuf.len = 0;
}

void log_buffer_stop(void)
{
	log_flush();
	free(tbuf.p);
	tbuf.p = NULL;
}

static void log_emit(int prio, const char *prefix, const char *fmt, va_list ap, const char *suffix,
                     bool direct)
{
	char local[LOG_LINE_MAX], *line;
	struct timeval tv;
	size_t n, head;
	int k, pid = atomic_load(&log_pid);

	if (pid == 0) {
		pid = (int)getpid();
		atomic_store(&log_pid, pid);
	}
	if (tbuf.p != NULL && direct)
		log_flush(); /* keep the order: what was buffered goes first */
	if (tbuf.p != NULL && !direct) {
		if (tbuf.len + LOG_LINE_MAX > LOG_BUF_SIZE)
			log_flush();
		line = tbuf.p + tbuf.len;
	} else {
		line = local;
	}
	gettimeofday(&tv, NULL);
	if (tv.tv_sec != tbuf.stamp_sec) {
		struct tm tm;
		gmtime_r(&tv.tv_sec, &tm);
		strftime(tbuf.stamp, sizeof(tbuf.stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		tbuf.stamp_sec = tv.tv_sec;
	}
	k = snprintf(line, LOG_LINE_MAX, "%s.%06ldZ krelay[%d]: %s", tbuf.stamp, (long)tv.tv_usec,
	             pid, prefix);
	n = k < 0 ? 0 : (size_t)k;
	head = n - strlen(prefix); /* where the message starts */
	k = vsnprintf(line + n, LOG_LINE_MAX - n, fmt, ap);
	n = k < 0 ? n : n + (size_t)k;
	if (suffix != NULL && n < LOG_LINE_MAX)
		n += (size_t)snprintf(line + n, LOG_LINE_MAX - n, "%s", suffix);
	if (n > LOG_LINE_MAX - 2)
		n = LOG_LINE_MAX - 2; /* truncated: still one line */
	line[n++] = '\n';
	if (atomic_load(&sink) != SINK_STDERR && atomic_load(&log_to_stderr))
		side_out(prio, line + head, n - head);
	if (line == local)
		write_out(line, n);
	else
		tbuf.len += n;
}

void log_event(uint64_t id, const char *fmt, ...)
{
	char prefix[24];
	va_list ap;

	snprintf(prefix, sizeof(prefix), "%016llx ", (unsigned long long)id);
	va_start(ap, fmt);
	log_emit(LOG_INFO, prefix, fmt, ap, NULL, false);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_INFO, "", fmt, ap, NULL, false);
	va_end(ap);
}

void log_set_level(unsigned level)
{
	atomic_store(&log_level, level);
}

bool log_tracing(void)
{
	return atomic_load_explicit(&log_level, memory_order_relaxed) >= LOG_LEVEL_TRACE;
}

void log_trace(const char *fmt, ...)
{
	va_list ap;

	if (!log_tracing())
		return;
	va_start(ap, fmt);
	log_emit(LOG_DEBUG, "trace: ", fmt, ap, NULL, false);
	va_end(ap);
}

void log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_WARNING, "warning: ", fmt, ap, NULL, false);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	char suffix[256];
	va_list ap;

	snprintf(suffix, sizeof(suffix), ": %s", strerror(errno));
	va_start(ap, fmt);
	log_emit(LOG_CRIT, "fatal: ", fmt, ap, suffix, true);
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_CRIT, "fatal: ", fmt, ap, NULL, true);
	va_end(ap);
	exit(1);
}
