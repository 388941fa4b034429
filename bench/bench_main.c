/* krelay-bench: an SMTP load generator (source) and server (sink) on
 * io_uring, with STARTTLS, implicit TLS and kTLS where the kernel has it,
 * for benchmarking krelay and its peers.  `message` prints one generated
 * message, for checking other tools against the X-Bench checksum. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "bench_msg.h"
#include "bench_sink.h"
#include "bench_source.h"

static const char usage_text[] =
    "usage: krelay-bench source --to HOST:PORT --messages N --size SIZE --concurrency C ...\n"
    "       krelay-bench sink --listen HOST:PORT ...\n"
    "       krelay-bench message [--size SIZE] [--seq N] [--from ADDR] [--rcpt-domain DOMAIN]\n"
    "`krelay-bench source --help` and `krelay-bench sink --help` say more.\n";

/* Prints message --seq (default 1) of --size (default 4k) as it is sent:
 * CRLF lines, not dot-stuffed. */
static int message_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"size", required_argument, NULL, 's'},
	    {"seq", required_argument, NULL, 'n'},
	    {"from", required_argument, NULL, 'f'},
	    {"rcpt-domain", required_argument, NULL, 'd'},
	    {NULL, 0, NULL, 0},
	};
	static struct bench_msg m;
	struct size_dist size;
	struct body_pool pool;
	struct msg_params mp = {"bench@krelay-bench.localhost", "example.com", "message"};
	uint64_t seq = 1;
	char err[400];
	int c;

	size_dist_parse("4k", &size, err, sizeof(err));
	while ((c = bench_getopt("message", argc, argv, opts)) != -1) {
		switch (c) {
		case 's':
			if (size_dist_parse(optarg, &size, err, sizeof(err)) < 0)
				bench_usage_error("message", "--size: %s", err);
			break;
		case 'n':
			if (bench_parse_count(optarg, UINT64_MAX / 2, &seq) < 0)
				bench_usage_error("message", "--seq: \"%s\" is not a number",
				                  optarg);
			break;
		case 'f':
			mp.from = optarg;
			break;
		case 'd':
			mp.rcpt_domain = optarg;
			break;
		}
	}
	if (body_pool_init(&pool, size.max) < 0) {
		fprintf(stderr, "%s message: out of memory\n", BENCH_PROG);
		return BENCH_EXIT_FAILED;
	}
	bench_msg_make(&m, &pool, &mp, seq, size_dist_pick(&size, seq));
	fwrite(m.hdr, 1, m.hdr_len, stdout);
	fwrite(m.body, 1, m.body_len, stdout);
	fwrite(m.fill, 1, m.fill_len, stdout);
	body_pool_free(&pool);
	return fflush(stdout) == 0 ? BENCH_EXIT_OK : BENCH_EXIT_FAILED;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "source") == 0)
		return bench_source_main(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "sink") == 0)
		return bench_sink_main(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "message") == 0)
		return message_main(argc - 1, argv + 1);
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		fputs(usage_text, stdout);
		return BENCH_EXIT_OK;
	}
	fprintf(stderr, "%s: %s%s%s\n%s", BENCH_PROG, argc >= 2 ? "unknown command \"" : "",
	        argc >= 2 ? argv[1] : "a command is needed", argc >= 2 ? "\"" : "", usage_text);
	return BENCH_EXIT_USAGE;
}
