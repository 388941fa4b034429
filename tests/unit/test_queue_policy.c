/* test_queue_policy: the queue's rules (queue_policy.c), each a table of
 * {inputs, expected} rows; every row checks an exact value. */
#include <limits.h>
#include <stdint.h>

#include "queue_policy.h"
#include "unit.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

TEST(backoff)
{
	static const struct {
		unsigned min, max, attempts, want;
	} rows[] = {
	    {60, 3600, 0, 60},
	    {60, 3600, 1, 60},
	    {60, 3600, 2, 120},
	    {60, 3600, 3, 240},
	    {60, 3600, 6, 1920},
	    {60, 3600, 7, 3600}, /* 3840, capped */
	    {60, 3600, 8, 3600},
	    {60, 3600, 1000, 3600},
	    {60, 3600, UINT_MAX, 3600},
	    {60, 60, 0, 60},
	    {60, 60, 5, 60},
	    {60, 119, 2, 119},
	    {60, 120, 2, 120},
	    {60, 121, 3, 121},
	    {3000, 60, 0, 60}, /* min > max: max */
	    {3000, 60, 1, 60},
	    {3000, 60, 5, 60},
	    {0, 0, 0, 0},
	    {0, 3600, 2, 0},
	    {0, 3600, UINT_MAX, 0},
	    {1, UINT_MAX, 32, 1u << 31},
	    {1, UINT_MAX, 33, UINT_MAX}, /* 2^32: no wrap to 0 */
	    {1, UINT_MAX, UINT_MAX, UINT_MAX},
	    {0x80000000u, UINT_MAX, 1, 0x80000000u},
	    {0x80000000u, UINT_MAX, 2, UINT_MAX},
	    {UINT_MAX - 1, UINT_MAX, 2, UINT_MAX},
	    {UINT_MAX, UINT_MAX, UINT_MAX, UINT_MAX},
	    {UINT_MAX, 3600, UINT_MAX, 3600},
	};

	for (size_t i = 0; i < N(rows); i++) {
		unsigned got = qpolicy_backoff_s(rows[i].min, rows[i].max, rows[i].attempts);
		if (got != rows[i].want)
			printf("  backoff(%u, %u, %u) = %u, want %u\n", rows[i].min, rows[i].max,
			       rows[i].attempts, got, rows[i].want);
		CHECK(got == rows[i].want);
	}
}

TEST(share)
{
	static const struct {
		unsigned limit, workers, index, want;
	} rows[] = {
	    {20, 4, 0, 5},         {20, 4, 1, 5},        {20, 4, 3, 5}, /* exact division */
	    {20, 3, 0, 7},         {20, 3, 1, 7},        {20, 3, 2, 6}, /* remainder 2 */
	    {5, 2, 0, 3},          {5, 2, 1, 2},         {2, 4, 0, 1},
	    {2, 4, 1, 1},          {2, 4, 2, 1},                       /* limit < workers */
	    {2, 4, 3, 1},          {0, 4, 0, 1},         {0, 4, 3, 1}, /* limit 0 */
	    {0, 1, 0, 1},          {1, 1, 0, 1},         {7, 1, 0, 7},
	    {10000, 256, 0, 40},   {10000, 256, 15, 40}, {10000, 256, 16, 39},
	    {10000, 256, 255, 39}, {5, 2, 2, 2}, /* index past the workers: no extra */
	    {5, 0, 0, 5},                        /* workers 0 counts as 1 */
	};

	for (size_t i = 0; i < N(rows); i++) {
		unsigned got = qpolicy_share(rows[i].limit, rows[i].workers, rows[i].index);
		if (got != rows[i].want)
			printf("  share(%u, %u, %u) = %u, want %u\n", rows[i].limit,
			       rows[i].workers, rows[i].index, got, rows[i].want);
		CHECK(got == rows[i].want);
	}
}

TEST(share_sums_to_max_of_limit_and_workers)
{
	static const struct {
		unsigned limit, workers, want;
	} rows[] = {
	    {20, 4, 20},         {20, 3, 20},     {2, 4, 4},       {0, 4, 4},
	    {10000, 256, 10000}, {255, 256, 256}, {257, 256, 257}, {1, 1, 1},
	};

	for (size_t i = 0; i < N(rows); i++) {
		unsigned sum = 0;
		for (unsigned w = 0; w < rows[i].workers; w++)
			sum += qpolicy_share(rows[i].limit, rows[i].workers, w);
		if (sum != rows[i].want)
			printf("  sum of shares(%u, %u) = %u, want %u\n", rows[i].limit,
			       rows[i].workers, sum, rows[i].want);
		CHECK(sum == rows[i].want);
	}
}

TEST(outcome_final_status)
{
	static const struct {
		int code;
		enum spool_rcpt_state state;
		bool final;
		const char *status;
	} rows[] = {
	    {-1, SPOOL_RCPT_PENDING, false, "deferred"},
	    {0, SPOOL_RCPT_PENDING, false, "deferred"}, /* no reply (connection failed) */
	    {199, SPOOL_RCPT_PENDING, false, "deferred"},
	    {200, SPOOL_RCPT_DELIVERED, true, "sent"},
	    {250, SPOOL_RCPT_DELIVERED, true, "sent"},
	    {299, SPOOL_RCPT_DELIVERED, true, "sent"},
	    {300, SPOOL_RCPT_PENDING, true, "deferred"},
	    {354, SPOOL_RCPT_PENDING, true, "deferred"},
	    {421, SPOOL_RCPT_PENDING, true, "deferred"},
	    {450, SPOOL_RCPT_PENDING, true, "deferred"},
	    {499, SPOOL_RCPT_PENDING, true, "deferred"},
	    {500, SPOOL_RCPT_FAILED, true, "bounced"},
	    {554, SPOOL_RCPT_FAILED, true, "bounced"},
	    {599, SPOOL_RCPT_FAILED, true, "bounced"},
	    {600, SPOOL_RCPT_FAILED, true, "bounced"},
	};

	for (size_t i = 0; i < N(rows); i++) {
		enum spool_rcpt_state st = qpolicy_outcome(rows[i].code);
		bool fin = qpolicy_final(rows[i].code);
		const char *status = qpolicy_status(rows[i].code);
		if (st != rows[i].state || fin != rows[i].final ||
		    strcmp(status, rows[i].status) != 0)
			printf("  code %d: state %c final %d status %s, want %c %d %s\n",
			       rows[i].code, (char)st, fin, status, (char)rows[i].state,
			       rows[i].final, rows[i].status);
		CHECK(st == rows[i].state);
		CHECK(fin == rows[i].final);
		CHECK_STR(status, rows[i].status);
	}
}

TEST(dsn)
{
	static const struct {
		int code;
		const char *reply, *want;
	} rows[] = {
	    {250, "250 2.1.5 Ok", "2.1.5"},
	    {550, "550 5.1.1 no such user", "5.1.1"},
	    {421, "421 4.4.2 x", "4.4.2"},
	    {550, "550 4.1.1 mismatch", "5.0.0"}, /* class is not code/100 */
	    {250, "250 5.1.1 mismatch", "2.0.0"},
	    {451, "451 2.0.0 mismatch", "4.0.0"},
	    {250, "250 2.0.0", "2.0.0"}, /* at the end */
	    {250, "250 2.1.5", "2.1.5"},
	    {250, "250-2.0.0", "2.0.0"},
	    {250, "250-2.1.5 Ok", "2.1.5"}, /* the 4th character is not checked */
	    {250, "25x 2.1.5 Ok", "2.1.5"}, /* nor is the code in the text */
	    {250, "550 2.1.5 Ok", "2.1.5"},
	    {550, "250 2.1.5 Ok", "5.0.0"},
	    {250, "250 2.0.00x", "2.0.0"},
	    {250, "250 2.1.50x", "2.0.0"}, /* not followed by space or end */
	    {250, "250 2.1.5x", "2.0.0"},
	    {250, "250 2.1.5\tOk", "2.0.0"},
	    {250, "250 2.1.5.6", "2.0.0"},
	    {250, "250 2.1.500", "2.1.500"},
	    {250, "250 2.1.5000", "2.0.0"}, /* %3d stops at 3 digits */
	    {250, "250 2.1234.5", "2.0.0"},
	    {250, "250 22.1.5", "2.0.0"},      /* %1d: one digit */
	    {250, "250 2.01.005 Ok", "2.1.5"}, /* written back as %d */
	    {250, "250  2.1.5 Ok", "2.1.5"},   /* %d skips blanks */
	    {250, "250 2. 1.5", "2.1.5"},
	    {250, "250 2.-1.5", "2.-1.5"}, /* %d takes a sign */
	    {250, "250 +2.1.5", "2.0.0"},  /* the sign fills %1d: no digit */
	    {250, "250 2.1", "2.0.0"},
	    {250, "250 Ok", "2.0.0"},
	    {451, "", "4.0.0"},
	    {451, "451", "4.0.0"},
	    {451, "4510", "4.0.0"},
	    {451, "451 4", "4.0.0"},
	    {0, "", "4.0.0"},
	    {0, "421 4.4.2 x", "4.0.0"}, /* code/100 is 0 */
	    {0, "451 4.4.3 mx.example: DNS lookup failed temporarily", "4.0.0"},
	    {0, "000 0.1.2", "0.1.2"},
	    {199, "199 1.2.3", "1.2.3"},
	    {199, "", "4.0.0"},
	    {200, "", "2.0.0"},
	    {299, "", "2.0.0"},
	    {300, "", "4.0.0"},
	    {354, "354 3.0.0 go", "3.0.0"},
	    {450, "", "4.0.0"},
	    {499, "", "4.0.0"},
	    {500, "", "5.0.0"},
	    {554, "554", "5.0.0"},
	    {599, "", "5.0.0"},
	    {600, "600 6.0.1", "6.0.1"},
	    {600, "", "5.0.0"},
	    {550, NULL, "5.0.0"}, /* NULL counts as "" */
	};

	for (size_t i = 0; i < N(rows); i++) {
		char out[16];
		memset(out, 'X', sizeof(out));
		qpolicy_dsn(rows[i].code, rows[i].reply, out, sizeof(out));
		if (strcmp(out, rows[i].want) != 0)
			printf("  dsn(%d, \"%s\") = \"%s\", want \"%s\"\n", rows[i].code,
			       rows[i].reply ? rows[i].reply : "(null)", out, rows[i].want);
		CHECK_STR(out, rows[i].want);
	}
}

TEST(dsn_truncates_to_len)
{
	static const struct {
		int code;
		const char *reply;
		size_t len;
		const char *want;
	} rows[] = {
	    {250, "250 2.1.5 Ok", 6, "2.1.5"},
	    {250, "250 2.1.5 Ok", 4, "2.1"},
	    {250, "250 2.1.5 Ok", 1, ""},
	    {451, "", 4, "4.0"},
	    {250, "250 2.123.456", 16, "2.123.456"},
	    {250, "250 2.123.456", 8, "2.123.4"},
	};

	for (size_t i = 0; i < N(rows); i++) {
		char out[17]; /* one past the longest len: must stay 'X' */
		memset(out, 'X', sizeof(out));
		qpolicy_dsn(rows[i].code, rows[i].reply, out, rows[i].len);
		CHECK_STR(out, rows[i].want);
		CHECK(out[rows[i].len] == 'X'); /* nothing past len */
	}
	/* len 0: nothing written */
	char out[4] = "XXX";
	qpolicy_dsn(250, "250 2.1.5 Ok", out, 0);
	CHECK_STR(out, "XXX");
}

TEST(expired)
{
	static const struct {
		time_t now, arrival;
		unsigned lifetime;
		bool want;
	} rows[] = {
	    {1000, 1000, 0, true},
	    {1000, 1000, 1, false},
	    {1001, 1000, 1, true},
	    {1000 + 431999, 1000, 432000, false},
	    {1000 + 432000, 1000, 432000, true}, /* exactly the limit */
	    {1000 + 432001, 1000, 432000, true},
	    {1000, 2000, 0, false}, /* arrival in the future */
	    {0, 0, 0, true},
	    {4294967294, 0, UINT_MAX, false},
	    {4294967295, 0, UINT_MAX, true},
	    {1795898853 + 86399, 1795898853, 86400, false},
	    {1795898853 + 86400, 1795898853, 86400, true},
	};

	for (size_t i = 0; i < N(rows); i++) {
		bool got = qpolicy_expired(rows[i].now, rows[i].arrival, rows[i].lifetime);
		if (got != rows[i].want)
			printf("  expired(%lld, %lld, %u) = %d, want %d\n", (long long)rows[i].now,
			       (long long)rows[i].arrival, rows[i].lifetime, got, rows[i].want);
		CHECK(got == rows[i].want);
	}
}

TEST(dest_step)
{
	static const char *const names[] = {"WAIT", "RESOLVE", "FAIL_JOBS", "CONNECT"};
	static const char *const states[] = {"UNRESOLVED", "RESOLVING", "RESOLVED", "FAILED"};
	static const struct {
		enum qdest_addrs st;
		time_t resolved_at, now;
		enum qdest_step want;
	} rows[] = {
	    {QDEST_RESOLVING, 0, 1000, QSTEP_WAIT},
	    {QDEST_RESOLVING, 1000, 1000, QSTEP_WAIT},
	    {QDEST_RESOLVING, 1000, 1301, QSTEP_WAIT},
	    {QDEST_RESOLVED, 1000, 1000, QSTEP_CONNECT}, /* 0 s */
	    {QDEST_RESOLVED, 1000, 1001, QSTEP_CONNECT}, /* 1 s */
	    {QDEST_RESOLVED, 1000, 1300, QSTEP_CONNECT}, /* 300 s: still good */
	    {QDEST_RESOLVED, 1000, 1301, QSTEP_RESOLVE}, /* 301 s: look again */
	    {QDEST_RESOLVED, 1000, 999, QSTEP_CONNECT},  /* the clock went back */
	    {QDEST_RESOLVED, 0, 300, QSTEP_CONNECT},     /* resolved_at 0: only the age counts */
	    {QDEST_RESOLVED, 0, 301, QSTEP_RESOLVE},
	    {QDEST_RESOLVED, 0, 1000, QSTEP_RESOLVE},
	    {QDEST_FAILED, 1000, 1000, QSTEP_FAIL_JOBS}, /* 0 s: just failed */
	    {QDEST_FAILED, 1000, 999, QSTEP_FAIL_JOBS},  /* -1 s < 1 */
	    {QDEST_FAILED, 1000, 1001, QSTEP_RESOLVE},   /* 1 s: ask again */
	    {QDEST_FAILED, 1000, 1300, QSTEP_RESOLVE},
	    {QDEST_FAILED, 1000, 1301, QSTEP_RESOLVE},
	    {QDEST_FAILED, 0, 0, QSTEP_RESOLVE}, /* resolved_at 0: never fails jobs */
	    {QDEST_FAILED, 0, 1000, QSTEP_RESOLVE},
	    {QDEST_UNRESOLVED, 0, 0, QSTEP_RESOLVE},
	    {QDEST_UNRESOLVED, 0, 1000, QSTEP_RESOLVE},
	    {QDEST_UNRESOLVED, 1000, 1000, QSTEP_RESOLVE},
	    {QDEST_UNRESOLVED, 1000, 1301, QSTEP_RESOLVE},
	};

	for (size_t i = 0; i < N(rows); i++) {
		enum qdest_step got =
		    qpolicy_dest_step(rows[i].st, rows[i].resolved_at, rows[i].now);
		if (got != rows[i].want)
			printf("  dest_step(%s, %lld, %lld) = %s, want %s\n", states[rows[i].st],
			       (long long)rows[i].resolved_at, (long long)rows[i].now, names[got],
			       names[rows[i].want]);
		CHECK(got == rows[i].want);
	}
}

TEST(dest_sweep)
{
	static const struct {
		bool unused;
		time_t since, now;
		enum qdest_sweep want;
	} rows[] = {
	    {false, 0, 1000, QSWEEP_KEEP},
	    {false, 500, 1000, QSWEEP_KEEP}, /* in use again: kept (the caller resets) */
	    {true, 0, 1000, QSWEEP_MARK},    /* first seen unused */
	    {true, 1000, 1000, QSWEEP_KEEP},
	    {true, 701, 1000, QSWEEP_KEEP}, /* 299 s */
	    {true, 700, 1000, QSWEEP_FREE}, /* 300 s */
	    {true, 1, 100000, QSWEEP_FREE},
	};

	for (size_t i = 0; i < N(rows); i++)
		CHECK(qpolicy_dest_sweep(rows[i].unused, rows[i].since, rows[i].now) ==
		      rows[i].want);
}

int main(void)
{
	RUN(backoff);
	RUN(share);
	RUN(share_sums_to_max_of_limit_and_workers);
	RUN(outcome_final_status);
	RUN(dsn);
	RUN(dsn_truncates_to_len);
	RUN(expired);
	RUN(dest_step);
	RUN(dest_sweep);
	UNIT_END("test_queue_policy");
}
