/* log: see log.h. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_fd = -1;
static int log_to_stderr = 1;

int log_open(const char *path)
{
	int fd = -1;

	if (path != NULL) {
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (fd < 0)
			return -errno;
	}
	if (log_fd >= 0)
		close(log_fd);
	log_fd = fd;
	return 0;
}

void log_stderr(int on)
{
	log_to_stderr = on;
}

static void log_emit(const char *prefix, const char *fmt, va_list ap, const char *suffix)
{
	char line[4096];
	struct timeval tv;
	struct tm tm;
	size_t n;
	int k;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	k = snprintf(line + n, sizeof(line) - n, ".%06ldZ krelay[%d]: %s", (long)tv.tv_usec,
	             (int)getpid(), prefix);
	n += (size_t)k;
	k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	n = k < 0 ? n : n + (size_t)k;
	if (suffix != NULL && n < sizeof(line))
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s", suffix);
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2; /* truncated: still one line */
	line[n++] = '\n';
	if (log_to_stderr && write(STDERR_FILENO, line, n) < 0)
		(void)0; /* nowhere left to report it */
	if (log_fd >= 0 && write(log_fd, line, n) < 0)
		(void)0;
}

void log_event(uint64_t id, const char *fmt, ...)
{
	char prefix[24];
	va_list ap;

	snprintf(prefix, sizeof(prefix), "%016llx ", (unsigned long long)id);
	va_start(ap, fmt);
	log_emit(prefix, fmt, ap, NULL);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit("", fmt, ap, NULL);
	va_end(ap);
}

void log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit("warning: ", fmt, ap, NULL);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	char suffix[256];
	va_list ap;

	snprintf(suffix, sizeof(suffix), ": %s", strerror(errno));
	va_start(ap, fmt);
	log_emit("fatal: ", fmt, ap, suffix);
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit("fatal: ", fmt, ap, NULL);
	va_end(ap);
	exit(1);
}
