/* test_shaping: relay/shaping.c, the ShapingTable: rates and durations,
 * sources and pools, rules merged in file order (by domain, by site, by
 * source), reply rules, errors named with their line, the site name, the
 * GCRA's pacing and the weighted round robin. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "shaping.h"
#include "unit.h"

static struct shaping_table *parse(const char *text, char *err)
{
	err[0] = '\0';
	return shaping_parse(text, "shaping", err, 320);
}

TEST(rates_and_durations)
{
	struct shaping_rate r;
	char why[160];
	unsigned s;

	CHECK(shaping_parse_rate("100/s", &r, why, sizeof(why)) == 0 && r.n == 100 && r.per_s == 1);
	CHECK(shaping_parse_rate("5/m", &r, why, sizeof(why)) == 0 && r.n == 5 && r.per_s == 60);
	CHECK(shaping_parse_rate("1000/h", &r, why, sizeof(why)) == 0 && r.per_s == 3600);
	CHECK(shaping_parse_rate("10000/d", &r, why, sizeof(why)) == 0 && r.per_s == 86400);
	CHECK(shaping_parse_rate("7/min", &r, why, sizeof(why)) == 0 && r.per_s == 60);
	CHECK(shaping_parse_rate("0/s", &r, why, sizeof(why)) < 0);
	CHECK(shaping_parse_rate("10", &r, why, sizeof(why)) < 0);
	CHECK(shaping_parse_rate("10/w", &r, why, sizeof(why)) < 0);
	CHECK(strstr(why, "unit") != NULL);
	CHECK(shaping_parse_rate("-1/s", &r, why, sizeof(why)) < 0);
	CHECK(shaping_parse_rate("99999999999/s", &r, why, sizeof(why)) < 0);
	CHECK(shaping_parse_duration("30", &s) == 0 && s == 30);
	CHECK(shaping_parse_duration("30s", &s) == 0 && s == 30);
	CHECK(shaping_parse_duration("10m", &s) == 0 && s == 600);
	CHECK(shaping_parse_duration("2h", &s) == 0 && s == 7200);
	CHECK(shaping_parse_duration("1d", &s) == 0 && s == 86400);
	CHECK(shaping_parse_duration("1w", &s) < 0);
	CHECK(shaping_parse_duration("m", &s) < 0);
	CHECK(shaping_parse_duration("400d", &s) < 0);
	CHECK(shaping_parse_duration("10ms", &s) < 0);
}

static const char table[] = "# a comment\n"
                            "source ip1 127.0.0.11 ehlo=mta1.example.net\n"
                            "source ip2 ::1\n"
                            "pool bulk ip1:3 ip2\n"
                            "\n"
                            "default max_connections=50 max_message_rate=100/s\n"
                            "site:*.outlook.example max_connections=5 pool=bulk  # trailing\n"
                            "domain:gmail.example max_message_rate=20/s idle_timeout=30s\n"
                            "default source:ip2 max_message_rate=10/m\n"
                            "site:*.outlook.example reply=\"^421 4\\.7\\.\" suspend=10m\n"
                            "default reply=\"^4[0-9][0-9] .*(rate|too many)\" rate=10/m for=1h\n";

TEST(sources_and_pools)
{
	char err[320];
	struct shaping_table *t = parse(table, err);
	const struct shaping_source *s;
	const struct shaping_pool *p;

	CHECK(t != NULL);
	if (t == NULL) {
		printf("  %s\n", err);
		return;
	}
	CHECK(shaping_nsources(t) == 2);
	s = shaping_source(t, 0);
	CHECK_STR(s->name, "ip1");
	CHECK_STR(s->ehlo, "mta1.example.net");
	CHECK(s->addr.ss_family == AF_INET && s->addrlen == sizeof(struct sockaddr_in));
	CHECK(((const struct sockaddr_in *)&s->addr)->sin_addr.s_addr == htonl(0x7f00000b));
	s = shaping_source(t, 1);
	CHECK(s->addr.ss_family == AF_INET6 && s->ehlo[0] == '\0');
	CHECK(shaping_source(t, 2) == NULL);
	p = shaping_pool(t, 0);
	CHECK_STR(p->name, "bulk");
	CHECK(p->n == 2 && p->src[0] == 0 && p->weight[0] == 3 && p->src[1] == 1 &&
	      p->weight[1] == 1);
	CHECK(shaping_pool(t, 1) == NULL && shaping_pool(t, -1) == NULL);
	shaping_free(t);
}

TEST(rules_in_file_order)
{
	char err[320];
	struct shaping_table *t = parse(table, err);
	struct shaping_limits l;
	const char *outlook[] = {"mx2.outlook.example", "mx1.outlook.example"};
	const char *gmail[] = {"mx.gmail.example"};
	const char *other[] = {"mx.other.example"};

	if (t == NULL)
		return;
	/* default only */
	shaping_match(t, "other.example", other, 1, -1, &l);
	CHECK(l.max_connections == 50 && l.msg_rate.n == 100 && l.msg_rate.per_s == 1);
	CHECK(l.pool == -1 && !l.by_domain && l.idle_timeout_s == 0 && l.max_deliveries == 0);
	CHECK(l.nreply == 1);
	/* by site: any MX host matches; the later rule replaces one setting */
	shaping_match(t, "customer.example", outlook, 2, -1, &l);
	CHECK(l.max_connections == 5 && l.msg_rate.n == 100 && l.pool == 0 && !l.by_domain);
	CHECK(l.nreply == 2);
	CHECK(l.reply[0]->action == SHAPING_SUSPEND && l.reply[0]->duration_s == 600);
	CHECK(l.reply[1]->action == SHAPING_SLOW && l.reply[1]->duration_s == 3600 &&
	      l.reply[1]->rate.n == 10 && l.reply[1]->rate.per_s == 60);
	/* by domain, case-insensitive: counted by domain */
	shaping_match(t, "GMAIL.example", gmail, 1, -1, &l);
	CHECK(l.msg_rate.n == 20 && l.idle_timeout_s == 30 && l.by_domain);
	/* a source's rule: only for that source */
	shaping_match(t, "other.example", other, 1, 1, &l);
	CHECK(l.msg_rate.n == 10 && l.msg_rate.per_s == 60);
	shaping_match(t, "other.example", other, 1, 0, &l);
	CHECK(l.msg_rate.n == 100);
	/* no table: nothing limited */
	shaping_match(NULL, "x", other, 1, -1, &l);
	CHECK(l.max_connections == 0 && l.msg_rate.n == 0 && l.pool == -1 && l.nreply == 0);
	shaping_free(t);
}

TEST(reply_rules)
{
	char err[320];
	struct shaping_table *t = parse(table, err);
	struct shaping_limits l;
	const char *outlook[] = {"mx1.outlook.example"};
	const struct shaping_reply_rule *r;

	if (t == NULL)
		return;
	shaping_match(t, "customer.example", outlook, 1, -1, &l);
	r = shaping_reply_match(&l, "421 4.7.0 Too many connections, slow down");
	CHECK(r != NULL && r->action == SHAPING_SUSPEND && r->line == 10);
	r = shaping_reply_match(&l, "451 4.3.0 Rate limit exceeded");
	CHECK(r != NULL && r->action == SHAPING_SLOW && r->line == 11);
	r = shaping_reply_match(&l, "451 4.3.0 RATE limited");
	CHECK(r != NULL && r->action == SHAPING_SLOW);
	CHECK(shaping_reply_match(&l, "250 2.0.0 Ok") == NULL);
	CHECK(shaping_reply_match(&l, "550 5.1.1 no such user") == NULL);
	shaping_free(t);
}

static void bad(const char *text, const char *why)
{
	char err[320];
	struct shaping_table *t = parse(text, err);

	CHECK(t == NULL);
	if (strstr(err, why) == NULL) {
		unit_cur_failed = 1;
		printf("  '%s': got '%s', wanted '%s'\n", text, err, why);
	}
	shaping_free(t);
}

TEST(errors_name_the_line)
{
	bad("\n\nbogus max_connections=1\n", "shaping:3: 'bogus': a line starts with");
	bad("default\n", "shaping:1: no setting after 'default'");
	bad("default max_connections=0\n", "a number from 1");
	bad("default max_connections=x\n", "a number from 1");
	bad("default max_message_rate=10\n", "not a rate");
	bad("default speed=10\n", "unknown setting 'speed'");
	bad("default max_connections\n", "is not SETTING=VALUE");
	bad("default idle_timeout=2h\n", "from 1s to 1h");
	bad("default pool=none\n", "no pool 'none'");
	bad("source a 127.0.0.1\ndefault source:a pool=x\n", "pool= cannot be on a source: rule");
	bad("default source:nobody max_connections=1\n", "no source 'nobody'");
	bad("source a 300.0.0.1\n", "not an IP address");
	bad("source a 127.0.0.1\nsource a 127.0.0.2\n", "defined twice");
	bad("source a!b 127.0.0.1\n", "not a source name");
	bad("source a 127.0.0.1 helo=x\n", "only ehlo=NAME");
	bad("source a 127.0.0.1 ehlo=a_b\n", "not a host name");
	bad("pool p nobody\n", "no source 'nobody'");
	bad("source a 127.0.0.1\npool p a:0\n", "the weight is a number from 1");
	bad("source a 127.0.0.1\npool p a a\n", "twice in the pool");
	bad("default reply=\"^421\n", "double quote is not closed");
	bad("default reply=\"(\" suspend=1m\n", "reply=\"(\":");
	bad("default reply=\"^421\"\n", "needs suspend=DURATION");
	bad("default reply=\"^421\" rate=1/s\n", "needs for=DURATION");
	bad("default reply=\"^421\" suspend=1m for=1h\n", "for= goes with rate=");
	bad("default reply=\"^421\" suspend=1m max_connections=3\n", "cannot be on a reply rule");
	bad("default reply=\"^421\" reply=\"^451\" suspend=1m\n", "one reply= per line");
	bad("site: max_connections=1\n", "a pattern must follow");
	bad("default reply=\"^4.++\" suspend=1m\n", "a repetition follows another");
	bad("default reply=\"(a{50}){99}\" suspend=1m\n", "a repeated group ends with");
	bad("default reply=\"(a*)*\" suspend=1m\n", "a repeated group ends with");
	bad("default reply=\"a{101}\" suspend=1m\n", "a count above 100");
	bad("default reply=\"[abc\" suspend=1m\n", "a '[' is not closed");
	bad("default reply=x\\ suspend=1m\n", "ends with a backslash");
}

TEST(quoting)
{
	char err[320];
	struct shaping_table *t =
	    parse("default reply=\"^421 say \\\"no\\\" # not a comment\" suspend=1m # one\n", err);
	struct shaping_limits l;
	const char *mx[] = {"mx"};

	CHECK(t != NULL);
	if (t == NULL)
		return;
	shaping_match(t, "d", mx, 1, -1, &l);
	CHECK(l.nreply == 1);
	CHECK_STR(l.reply[0]->pattern, "^421 say \"no\" # not a comment");
	CHECK(shaping_reply_match(&l, "421 say \"no\" # not a comment, really") != NULL);
	shaping_free(t);
}

TEST(site_names)
{
	char out[64];
	const char *a[] = {"MX2.Example.NET.", "mx1.example.net", "mx2.example.net"};
	const char *b[] = {"mx1.example.net", "mx2.example.net"};
	const char *many[] = {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example",
	                      "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.example",
	                      "cccccccccccccccccccccccccccccccc.example"};
	const char *many2[] = {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example",
	                       "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.example",
	                       "dddddddddddddddddddddddddddddddd.example"};
	char x[64];

	CHECK_STR(shaping_site_name(a, 3, out, sizeof(out)), "mx1.example.net,mx2.example.net");
	CHECK_STR(shaping_site_name(b, 2, x, sizeof(x)), out);
	CHECK_STR(shaping_site_name(b, 0, out, sizeof(out)), "");
	shaping_site_name(many, 3, out, sizeof(out));
	shaping_site_name(many2, 3, x, sizeof(x));
	CHECK(strlen(out) == sizeof(out) - 1 && out[sizeof(out) - 10] == '~');
	CHECK(strcmp(out, x) != 0);
}

TEST(gcra_paces_evenly)
{
	struct shaping_rate r = {10, 1}; /* one per 100 ms */
	int64_t tat = 0, now = 1000000000LL, wait;
	unsigned passed = 0;

	CHECK(gcra_interval(&r) == 100000000LL);
	/* a burst of two, then one per interval (the tolerance is 150 ms) */
	CHECK(gcra_take(&tat, now, &r) == 0);
	CHECK(gcra_take(&tat, now, &r) == 0);
	wait = gcra_take(&tat, now, &r);
	CHECK(wait == 50000000LL);
	CHECK(gcra_wait(tat, now, &r) == wait);
	/* over 10 s, taking whenever allowed, with each wake 3 ms late: the
	 * rate holds (the lateness is not lost) */
	for (int64_t t = now; t < now + 10000000000LL;) {
		wait = gcra_take(&tat, t, &r);
		if (wait == 0) {
			passed++;
			continue;
		}
		t += wait + 3000000;
	}
	CHECK(passed >= 99 && passed <= 101);
	if (passed < 99 || passed > 101)
		printf("  passed %u\n", passed);
	/* after a long pause, no credit piles up beyond the burst */
	now += 60000000000LL;
	CHECK(gcra_take(&tat, now, &r) == 0);
	CHECK(gcra_take(&tat, now, &r) == 0);
	CHECK(gcra_take(&tat, now, &r) > 0);
	/* a high rate: 150 ms's worth at once, then paced; wakes 40 ms
	 * late lose nothing */
	r.n = 1000;
	tat = 0;
	passed = 0;
	while (gcra_take(&tat, now, &r) == 0)
		passed++;
	CHECK(passed == 151);
	passed = 0;
	for (int64_t t = now; t < now + 10000000000LL;) {
		wait = gcra_take(&tat, t, &r);
		if (wait == 0) {
			passed++;
			continue;
		}
		t += wait + 40000000;
	}
	CHECK(passed >= 9950 && passed <= 10010);
	if (passed < 9950 || passed > 10010)
		printf("  passed %u\n", passed);
	/* no limit */
	r.n = 0;
	CHECK(gcra_take(&tat, now, &r) == 0 && gcra_interval(&r) == 0);
}

TEST(weighted_round_robin)
{
	struct shaping_pool p = {"p", 3, {0, 1, 2}, {5, 1, 1}};
	int cur[SHAPING_POOL_MAX] = {0};
	unsigned count[3] = {0};
	bool usable[3] = {true, false, true};
	int seq[7];

	for (int i = 0; i < 7; i++)
		seq[i] = shaping_pool_next(&p, cur, NULL);
	for (int i = 0; i < 7; i++)
		count[seq[i]]++;
	CHECK(count[0] == 5 && count[1] == 1 && count[2] == 1);
	/* smooth: the heavy member is not picked five times in a row */
	CHECK(seq[0] == 0 && seq[1] != seq[2]);
	memset(count, 0, sizeof(count));
	for (int i = 0; i < 60; i++)
		count[shaping_pool_next(&p, cur, usable)]++;
	CHECK(count[1] == 0 && count[0] == 50 && count[2] == 10);
	usable[0] = usable[2] = false;
	CHECK(shaping_pool_next(&p, cur, usable) == -1);
}

int main(void)
{
	RUN(rates_and_durations);
	RUN(sources_and_pools);
	RUN(rules_in_file_order);
	RUN(reply_rules);
	RUN(errors_name_the_line);
	RUN(quoting);
	RUN(site_names);
	RUN(gcra_paces_evenly);
	RUN(weighted_round_robin);
	UNIT_END("test_shaping");
}
