/* bench: what krelay-bench's parts share: argument errors, clocks, CPU time,
 * HOST:PORT and byte-size parsing, JSON strings.  Nothing here does I/O on
 * the ring. */
#ifndef KRELAY_BENCH_H
#define KRELAY_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define BENCH_PROG "krelay-bench"

/* Exit statuses shared by source and sink. */
enum { BENCH_EXIT_OK = 0, BENCH_EXIT_FAILED = 1, BENCH_EXIT_USAGE = 2 };

/* Prints "krelay-bench CMD: message" and a hint to --help on stderr, then
 * exits with status 2. */
void bench_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

struct option;
/* getopt_long over long options only, for subcommand cmd: returns the next
 * option's value or -1 at the end; a missing value, an unknown option or a
 * stray argument ends the process through bench_usage_error. */
int bench_getopt(const char *cmd, int argc, char **argv, const struct option *opts);

/* SIGTERM and SIGINT set a flag (read with bench_signalled); SIGPIPE is
 * ignored. */
void bench_catch_signals(void);
int bench_signalled(void);

/* Wall clock (epoch seconds with fractions) and a monotonic clock. */
double bench_unix_now(void);
double bench_mono_now(void);
/* User + system CPU seconds of this process, all threads. */
double bench_cpu_seconds(void);
/* Raises the open-file limit to its hard maximum (many connections). */
void bench_raise_nofile(void);

struct bench_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[160]; /* as given, for messages */
};

/* Parses HOST:PORT (IPv4, [IPv6] or a name; port 0 lets a listener's kernel
 * choose).  Returns 0, or -1 with err. */
int bench_parse_addr(const char *text, struct bench_addr *a, char *err, size_t errlen);

/* Parses a decimal count up to max.  Returns 0 or -1. */
int bench_parse_count(const char *text, uint64_t max, uint64_t *out);
/* Parses 4096, 4k, 100k, 1m, 10m (k = KiB, m = MiB).  Returns 0 or -1. */
int bench_parse_bytes(const char *text, uint64_t *out);

/* Writes s as a JSON string (quotes included). */
void bench_json_str(FILE *f, const char *s);

/* A monotonic-seconds value as milliseconds, for reports. */
static inline double bench_ms(double seconds)
{
	return seconds * 1000.0;
}

#endif
