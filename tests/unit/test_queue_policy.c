/* test_queue_policy: the queue's rules (relay/queue_policy.c), one table
 * each: every row is inputs and the exact answer expected. */
#include <limits.h>

#include "queue_policy.h"
#include "unit.h"

#define ROWS(t) (sizeof(t) / sizeof((t)[0]))

TEST(backoff)
{
	static const struct {
		unsigned min, max, attempts, want;
	} rows[] = {
	    {60, 3600, 0, 60},  /* before any attempt: the minimum */
	    {60, 3600, 1, 60},  /* after the first */
	    {60, 3600, 2, 120}, /* doubled */
	    {60, 3600, 3, 240},
	    {60, 3600, 6, 1920},
	    {60, 3600, 7, 3600},    /* 3840 capped */
	    {60, 3600, 1000, 3600}, /* no wrap */
	    {60, 3600, UINT_MAX, 3600},
	    {1, UINT_MAX, 32, 1u << 31}, /* 2^31 */
	    {1, UINT_MAX, 33, UINT_MAX}, /* 2^32 does not wrap to 0: capped */
	    {1, UINT_MAX, 40, UINT_MAX},
	    {7, 7, 5, 7},     /* min == max */
	    {600, 60, 1, 60}, /* min > max: max wins */
	    {600, 60, 9, 60},
	    {0, 3600, 5, 0}, /* RetrySchedule=0: at once, every time */
	};

	for (size_t i = 0; i < ROWS(rows); i++) {
		unsigned got = qpolicy_backoff_s(rows[i].min, rows[i].max, rows[i].attempts);
		if (got != rows[i].want)
			printf("  row %zu: backoff(%u, %u, %u) = %u, want %u\n", i, rows[i].min,
			       rows[i].max, rows[i].attempts, got, rows[i].want);
		CHECK(got == rows[i].want);
	}
}

TEST(share)
{
	static const struct {
		unsigned limit, workers, index, want;
	} rows[] = {
	    {20, 1, 0, 20}, {20, 2, 0, 10}, {20, 2, 1, 10}, /* exact division */
	    {20, 3, 0, 7},  {20, 3, 1, 7},  {20, 3, 2, 6},  /* the remainder to the first */
	    {2, 4, 0, 1},   {2, 4, 1, 1},   {2, 4, 3, 1},   /* fewer than workers: 1 each */
	    {0, 2, 0, 1},   {0, 2, 1, 1},                   /* 0: still one connection */
	    {5, 0, 0, 5},                                   /* no workers counted yet */
	    {1, 1, 0, 1},
	};

	for (size_t i = 0; i < ROWS(rows); i++) {
		unsigned got = qpolicy_share(rows[i].limit, rows[i].workers, rows[i].index);
		if (got != rows[i].want)
			printf("  row %zu: share(%u, %u, %u) = %u, want %u\n", i, rows[i].limit,
			       rows[i].workers, rows[i].index, got, rows[i].want);
		CHECK(got == rows[i].want);
	}
}

TEST(reply_codes)
{
	static const struct {
		int code;
		char state;
		bool final;
		const char *status;
	} rows[] = {
	    {0, SPOOL_RCPT_PENDING, false, "deferred"}, /* no reply: connection lost */
	    {199, SPOOL_RCPT_PENDING, false, "deferred"},
	    {200, SPOOL_RCPT_DELIVERED, true, "sent"},
	    {250, SPOOL_RCPT_DELIVERED, true, "sent"},
	    {299, SPOOL_RCPT_DELIVERED, true, "sent"},
	    {300, SPOOL_RCPT_PENDING, true, "deferred"}, /* recorded, not settled */
	    {421, SPOOL_RCPT_PENDING, true, "deferred"},
	    {450, SPOOL_RCPT_PENDING, true, "deferred"},
	    {499, SPOOL_RCPT_PENDING, true, "deferred"},
	    {500, SPOOL_RCPT_FAILED, true, "bounced"},
	    {550, SPOOL_RCPT_FAILED, true, "bounced"},
	    {554, SPOOL_RCPT_FAILED, true, "bounced"},
	    {599, SPOOL_RCPT_FAILED, true, "bounced"},
	};

	for (size_t i = 0; i < ROWS(rows); i++) {
		CHECK((char)qpolicy_outcome(rows[i].code) == rows[i].state);
		CHECK(qpolicy_final(rows[i].code) == rows[i].final);
		CHECK_STR(qpolicy_status(rows[i].code), rows[i].status);
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
	    {550, "550 4.1.1 mismatch", "5.0.0"}, /* class differs from the code's */
	    {250, "250 2.0.0", "2.0.0"},          /* at the end of the reply */
	    {250, "250-2.0.0 first line", "2.0.0"},
	    {250, "250 2.0.00x", "2.0.0"},   /* %3d takes "00", then "x": no space */
	    {250, "250 2.0.0x Ok", "2.0.0"}, /* not followed by a space */
	    {250, "250 2.100.999 Ok", "2.100.999"},
	    {250, "250 2.1000.1 Ok", "2.0.0"}, /* more than three digits */
	    {250, "250 Ok", "2.0.0"},
	    {421, "421 4.4.2 x", "4.4.2"},
	    {451, "451", "4.0.0"},
	    {0, "", "4.0.0"}, /* no reply at all */
	    {0, "cannot open a socket", "4.0.0"},
	    {554, "554 5.7.1 relay denied", "5.7.1"},
	    {550, "550 5.1.2 example.test: domain does not exist", "5.1.2"},
	};
	char out[16];

	for (size_t i = 0; i < ROWS(rows); i++) {
		qpolicy_dsn(rows[i].code, rows[i].reply, out, sizeof(out));
		if (strcmp(out, rows[i].want) != 0)
			printf("  row %zu: dsn(%d, \"%s\") = %s, want %s\n", i, rows[i].code,
			       rows[i].reply, out, rows[i].want);
		CHECK_STR(out, rows[i].want);
	}
}

TEST(expired)
{
	static const struct {
		time_t now, arrival;
		unsigned lifetime;
		bool want;
	} rows[] = {
	    {1000, 1000, 0, true},     /* QueueLifetime=0: at once */
	    {1000, 500, 500, true},    /* exactly the lifetime */
	    {1000, 501, 500, false},   /* a second short */
	    {1000, 2000, 500, false},  /* arrival in the future (clock stepped) */
	    {432000, 0, 432000, true}, /* 5 days */
	    {431999, 0, 432000, false},
	};

	for (size_t i = 0; i < ROWS(rows); i++)
		CHECK(qpolicy_expired(rows[i].now, rows[i].arrival, rows[i].lifetime) ==
		      rows[i].want);
}

TEST(dest_step)
{
	static const struct {
		enum qdest_addrs st;
		time_t resolved_at, now;
		enum qdest_step want;
	} rows[] = {
	    {QDEST_UNRESOLVED, 0, 1000, QSTEP_RESOLVE},
	    {QDEST_RESOLVING, 0, 1000, QSTEP_WAIT},
	    {QDEST_RESOLVING, 990, 1000, QSTEP_WAIT},
	    {QDEST_RESOLVED, 1000, 1000, QSTEP_CONNECT},
	    {QDEST_RESOLVED, 700, 1000, QSTEP_CONNECT},  /* 300 s: still fresh */
	    {QDEST_RESOLVED, 699, 1000, QSTEP_RESOLVE},  /* 301 s: looked up again */
	    {QDEST_FAILED, 1000, 1000, QSTEP_FAIL_JOBS}, /* just failed */
	    {QDEST_FAILED, 999, 1000, QSTEP_RESOLVE},    /* a second later: ask again */
	    {QDEST_FAILED, 0, 0, QSTEP_RESOLVE},         /* never looked up */
	};

	for (size_t i = 0; i < ROWS(rows); i++) {
		enum qdest_step got =
		    qpolicy_dest_step(rows[i].st, rows[i].resolved_at, rows[i].now);
		if (got != rows[i].want)
			printf("  row %zu: dest_step(%d, %ld, %ld) = %d, want %d\n", i, rows[i].st,
			       (long)rows[i].resolved_at, (long)rows[i].now, got, rows[i].want);
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

	for (size_t i = 0; i < ROWS(rows); i++)
		CHECK(qpolicy_dest_sweep(rows[i].unused, rows[i].since, rows[i].now) ==
		      rows[i].want);
}

int main(void)
{
	RUN(backoff);
	RUN(share);
	RUN(reply_codes);
	RUN(dsn);
	RUN(expired);
	RUN(dest_step);
	RUN(dest_sweep);
	UNIT_END("test_queue_policy");
}
