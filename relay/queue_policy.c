/* queue_policy: see queue_policy.h. */
#include "queue_policy.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

unsigned qpolicy_backoff_s(unsigned retry_min_s, unsigned retry_max_s, unsigned attempts)
{
	uint64_t d = retry_min_s;

	for (unsigned i = 1; i < attempts && d < retry_max_s; i++)
		d *= 2;
	return d > retry_max_s ? retry_max_s : (unsigned)d;
}

unsigned qpolicy_share(unsigned limit, unsigned workers, unsigned index)
{
	unsigned share;

	if (workers == 0)
		return limit > 0 ? limit : 1;
	share = limit / workers + (index < limit % workers);
	return share > 0 ? share : 1;
}

enum spool_rcpt_state qpolicy_outcome(int code)
{
	if (code >= 200 && code < 300)
		return SPOOL_RCPT_DELIVERED;
	if (code >= 500)
		return SPOOL_RCPT_FAILED;
	return SPOOL_RCPT_PENDING;
}

bool qpolicy_final(int code)
{
	return code >= 200;
}

const char *qpolicy_status(int code)
{
	return code >= 200 && code < 300 ? "sent" : code >= 500 ? "bounced" : "deferred";
}

void qpolicy_dsn(int code, const char *reply, char *out, size_t len)
{
	int a, b, c, n = 0;

	if (reply == NULL)
		reply = "";
	if (strlen(reply) > 4 && sscanf(reply + 4, "%1d.%3d.%3d%n", &a, &b, &c, &n) == 3 && n > 0 &&
	    (reply[4 + n] == ' ' || reply[4 + n] == '\0') && a == code / 100) {
		snprintf(out, len, "%d.%d.%d", a, b, c);
		return;
	}
	snprintf(out, len, "%d.0.0", code >= 200 && code < 300 ? 2 : code >= 500 ? 5 : 4);
}

bool qpolicy_expired(time_t now, time_t arrival, unsigned lifetime_s)
{
	return now - arrival >= (time_t)lifetime_s;
}

enum qdest_step qpolicy_dest_step(enum qdest_addrs st, time_t resolved_at, time_t now)
{
	if (st == QDEST_RESOLVING)
		return QSTEP_WAIT;
	if (st == QDEST_RESOLVED && now - resolved_at <= QDEST_RESOLVED_KEEP_S)
		return QSTEP_CONNECT;
	if (st == QDEST_FAILED && resolved_at != 0 && now - resolved_at < 1)
		return QSTEP_FAIL_JOBS;
	return QSTEP_RESOLVE;
}

enum qdest_sweep qpolicy_dest_sweep(bool unused, time_t unused_since, time_t now)
{
	if (!unused)
		return QSWEEP_KEEP;
	if (unused_since == 0)
		return QSWEEP_MARK;
	return now - unused_since >= QDEST_UNUSED_KEEP_S ? QSWEEP_FREE : QSWEEP_KEEP;
}
