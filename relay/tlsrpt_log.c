/* tlsrpt_log: see tlsrpt_log.h. */
#include "tlsrpt_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

struct tlsrpt_log {
	pthread_mutex_t lock;
	char *dir;
	int fd;
	int64_t day; /* of fd: unix seconds / 86400 */
	bool warned;
};

struct tlsrpt_log *tlsrpt_log_open(const char *dir)
{
	struct tlsrpt_log *l;

	if ((l = calloc(1, sizeof(*l))) == NULL || (l->dir = strdup(dir)) == NULL) {
		free(l);
		return NULL;
	}
	pthread_mutex_init(&l->lock, NULL);
	l->fd = -1;
	l->day = -1;
	return l;
}

void tlsrpt_log_record(struct tlsrpt_log *l, const struct tlsrpt_event *e)
{
	char line[1024], path[4096];
	size_t n = tlsrpt_line_format(e, line, sizeof(line));
	int64_t day = e->when / 86400;

	if (l == NULL || n >= sizeof(line))
		return;
	pthread_mutex_lock(&l->lock);
	if (day != l->day) {
		time_t t = (time_t)e->when;
		struct tm tm;

		if (l->fd >= 0)
			close(l->fd);
		gmtime_r(&t, &tm);
		/* made by the first record (as the user the relay runs as) */
		if (mkdir(l->dir, 0750) < 0 && errno != EEXIST && !l->warned) {
			log_warnx("tlsrpt: %s: %s", l->dir, strerror(errno));
			l->warned = true;
		}
		snprintf(path, sizeof(path), "%s/%04d-%02d-%02d", l->dir, tm.tm_year + 1900,
		         tm.tm_mon + 1, tm.tm_mday);
		l->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		l->day = day;
		if (l->fd < 0 && !l->warned) {
			log_warnx("tlsrpt: %s: %s", path, strerror(errno));
			l->warned = true;
		}
	}
	if (l->fd >= 0 && write(l->fd, line, n) < 0 && !l->warned) {
		log_warnx("tlsrpt: write: %s", strerror(errno));
		l->warned = true;
	}
	pthread_mutex_unlock(&l->lock);
}

void tlsrpt_log_close(struct tlsrpt_log *l)
{
	if (l == NULL)
		return;
	if (l->fd >= 0)
		close(l->fd);
	pthread_mutex_destroy(&l->lock);
	free(l->dir);
	free(l);
}
