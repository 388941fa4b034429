/* test_metrics_http: relay/metrics_http.c, the pure part of the metrics
 * endpoint: the request parse (the one path, its methods, what is
 * malformed, told as early as a byte shows it, the size bound, requests
 * cut anywhere) and the escaping of label values and HELP text. */
#include "metrics_http.h"
#include "unit.h"

static int parse(const char *s, bool *head)
{
	return metrics_http_parse(s, strlen(s), head);
}

TEST(the_one_path)
{
	bool head = true;

	CHECK(parse("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", &head) == 200);
	CHECK(!head);
	CHECK(parse("HEAD /metrics HTTP/1.0\r\n\r\n", &head) == 200);
	CHECK(head);
	CHECK(parse("GET /metrics?name[]=krelay_up HTTP/1.1\r\n\r\n", &head) == 200);
	CHECK(parse("GET http://127.0.0.1:9125/metrics HTTP/1.1\r\n\r\n", &head) == 200);
	CHECK(parse("GET /metrics HTTP/1.1\n\n", &head) == 200); /* bare LF */
	/* Prometheus's own request */
	CHECK(parse("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9125\r\nUser-Agent: "
	            "Prometheus/2.45.0\r\nAccept: application/openmetrics-text;version=1.0.0,"
	            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\n"
	            "X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
	            &head) == 200);
}

TEST(other_paths_and_methods)
{
	bool head;

	CHECK(parse("GET / HTTP/1.1\r\n\r\n", &head) == 404);
	CHECK(parse("GET /metrics/ HTTP/1.1\r\n\r\n", &head) == 404);
	CHECK(parse("GET /metricsx HTTP/1.1\r\n\r\n", &head) == 404);
	CHECK(parse("GET /METRICS HTTP/1.1\r\n\r\n", &head) == 404);
	CHECK(parse("GET http://host HTTP/1.1\r\n\r\n", &head) == 404);
	CHECK(parse("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &head) == 405);
	CHECK(parse("DELETE /metrics HTTP/1.1\r\n\r\n", &head) == 405);
	CHECK(parse("get /metrics HTTP/1.1\r\n\r\n", &head) == 405); /* case matters */
	CHECK(parse("POST /other HTTP/1.1\r\n\r\n", &head) == 404);
	CHECK_STR(metrics_http_reason(200), "OK");
	CHECK_STR(metrics_http_reason(404), "Not Found");
	CHECK_STR(metrics_http_reason(405), "Method Not Allowed");
	CHECK_STR(metrics_http_reason(400), "Bad Request");
}

TEST(malformed)
{
	static const char *const bad[] = {
	    "\r\n",                                        /* no request line */
	    "GET\r\n\r\n",                                 /* no target */
	    "GET /metrics\r\n\r\n",                        /* HTTP/0.9 */
	    "GET /metrics HTTP/2.0\r\n\r\n",               /* not 1.x */
	    "GET /metrics HTTP/1.1x\r\n\r\n",              /* junk after the version */
	    "GET  /metrics HTTP/1.1\r\n\r\n",              /* two spaces */
	    "GET /met rics HTTP/1.1\r\n\r\n",              /* a space in the target */
	    "G(T /metrics HTTP/1.1\r\n\r\n",               /* not a token */
	    "GET /metrics HTTP/1.1\r\nHost x\r\n\r\n",     /* no colon */
	    "GET /metrics HTTP/1.1\r\n: x\r\n\r\n",        /* no name */
	    "GET /metrics HTTP/1.1\r\nA: b\r\n c\r\n\r\n", /* line folding */
	    "GET /metrics HTTP/1.1\r\nA: b\rc\r\n\r\n",    /* a bare CR */
	    "GET /metrics HTTP/1.1\r\nA: \x01\r\n\r\n",    /* a control character */
	    "GET /metrics HTTP/1.1\r\r\n\r\n",             /* CR CR LF */
	};
	bool head;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int st = parse(bad[i], &head);
		if (st != 400)
			printf("  case %zu: %d\n", i, st);
		CHECK(st == 400);
	}
	/* a NUL byte anywhere */
	CHECK(metrics_http_parse("GET /metrics HTTP/1.1\r\nA: \0\r\n\r\n", 28, &head) == 400);
	/* A TLS ClientHello, or binary: refused at its first byte. */
	CHECK(metrics_http_parse("\x16\x03\x01", 3, &head) == 400);
	CHECK(parse("GET /metrics HTTP/1.1\r\nA: b\r\n\t", &head) == 400);
}

TEST(incomplete_and_early)
{
	const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
	size_t n = strlen(req);
	bool head;

	/* every cut short of the end waits for more */
	for (size_t k = 0; k < n; k++) {
		int st = metrics_http_parse(req, k, &head);
		if (st != 0)
			printf("  cut at %zu: %d\n", k, st);
		CHECK(st == 0);
	}
	CHECK(metrics_http_parse(req, n, &head) == 200);
	/* what a byte already shows is told at once */
	CHECK(parse("GET /metrics HTTP/3", &head) == 400);
	CHECK(parse("GET /metrics HTTP/1.1\r\nHo st", &head) == 400);
	CHECK(parse("GE\x80", &head) == 400);
	/* a body after the head is not looked at */
	CHECK(parse("GET /metrics HTTP/1.1\r\n\r\n\x01\x02garbage", &head) == 200);
}

TEST(size_bound)
{
	static char big[METRICS_HTTP_MAX + 64];
	bool head;
	size_t n;

	/* a head that fits exactly */
	n = (size_t)snprintf(big, sizeof(big), "GET /metrics HTTP/1.1\r\nX: ");
	memset(big + n, 'a', METRICS_HTTP_MAX - n - 4);
	memcpy(big + METRICS_HTTP_MAX - 4, "\r\n\r\n", 4);
	CHECK(metrics_http_parse(big, METRICS_HTTP_MAX, &head) == 200);
	/* one byte more and no end in sight: 400, not a wait */
	n = (size_t)snprintf(big, sizeof(big), "GET /metrics HTTP/1.1\r\nX: ");
	memset(big + n, 'a', sizeof(big) - n);
	CHECK(metrics_http_parse(big, METRICS_HTTP_MAX - 1, &head) == 0);
	CHECK(metrics_http_parse(big, METRICS_HTTP_MAX, &head) == 400);
	/* many short headers count the same */
	n = (size_t)snprintf(big, sizeof(big), "GET /metrics HTTP/1.1\r\n");
	while (n + 6 < METRICS_HTTP_MAX) {
		memcpy(big + n, "A: b\r\n", 6);
		n += 6;
	}
	CHECK(metrics_http_parse(big, n, &head) == 0);
	memcpy(big + n, "A: b\r\n\r\n", 8);
	CHECK(metrics_http_parse(big, n + 8, &head) == 400);
}

static char *label(const char *v)
{
	static struct strbuf b;

	strbuf_free(&b);
	metrics_label_value(&b, v);
	return b.p ? b.p : "";
}

TEST(label_escaping)
{
	CHECK_STR(label("mx.example.org:25"), "mx.example.org:25");
	CHECK_STR(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
	CHECK_STR(label("\"\"\\\\"), "\\\"\\\"\\\\\\\\");
	CHECK_STR(label(""), "");
	CHECK_STR(label(NULL), "");
	/* controls and bytes that are not UTF-8 become '?'; UTF-8 stays */
	CHECK_STR(label("a\rb\tc\x7f"), "a?b?c?");
	CHECK_STR(label("b\xc3\xbc\xc3r"), "b\xc3\xbc?r");                  /* cut sequence */
	CHECK_STR(label("\xc0\xaf"), "??");                                 /* overlong '/' */
	CHECK_STR(label("\xed\xa0\x80"), "???");                            /* a surrogate */
	CHECK_STR(label("\xf4\x90\x80\x80"), "????");                       /* past U+10FFFF */
	CHECK_STR(label("\xf0\x9f\x93\xa7 mail"), "\xf0\x9f\x93\xa7 mail"); /* U+1F4E7 */
	/* an escaped value is whole: no lone backslash, quote or newline */
	const char *e = label("\\\"\n\\");
	for (const char *p = e; *p; p++) {
		if (*p == '\\') {
			CHECK(p[1] == '\\' || p[1] == '"' || p[1] == 'n');
			p++;
		} else {
			CHECK(*p != '"' && *p != '\n');
		}
	}
}

TEST(label_length)
{
	char in[METRICS_LABEL_MAX * 3];
	const char *out;

	memset(in, 'x', sizeof(in) - 1);
	in[sizeof(in) - 1] = '\0';
	CHECK(strlen(label(in)) == METRICS_LABEL_MAX);
	/* escapes double what is kept, never more */
	memset(in, '"', sizeof(in) - 1);
	CHECK(strlen(label(in)) == 2 * METRICS_LABEL_MAX);
	/* a character that would not fit whole is left out: no half of it */
	memset(in, 'x', METRICS_LABEL_MAX - 1);
	memcpy(in + METRICS_LABEL_MAX - 1, "\xc3\xbc", 3);
	out = label(in);
	CHECK(strlen(out) == METRICS_LABEL_MAX - 1);
	CHECK(out[METRICS_LABEL_MAX - 2] == 'x');
}

TEST(help_text)
{
	struct strbuf b = {0};

	metrics_help_text(&b, "a \"quoted\" \\ and\na line");
	CHECK_STR(b.p, "a \"quoted\" \\\\ and\\na line");
	strbuf_free(&b);
}

int main(void)
{
	RUN(the_one_path);
	RUN(other_paths_and_methods);
	RUN(malformed);
	RUN(incomplete_and_early);
	RUN(size_bound);
	RUN(label_escaping);
	RUN(label_length);
	RUN(help_text);
	label(NULL); /* (frees its buffer on the next call: leave it empty) */
	UNIT_END("test_metrics_http");
}
