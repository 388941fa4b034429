/* Unit tests: tls_policy (TLSPolicyTable). */
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "tls_policy.h"
#include "unit.h"

static char path[] = "/tmp/krelay_tlspol_XXXXXX";

static struct tls_policy_table *load(const char *text, char *err, size_t len)
{
	int fd = mkstemp(path);
	struct tls_policy_table *t;

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		return NULL;
	close(fd);
	t = tls_policy_load(path, err, len);
	unlink(path);
	strcpy(path, "/tmp/krelay_tlspol_XXXXXX");
	return t;
}

TEST(lookup_order)
{
	char err[256];
	struct tls_policy_table *t =
	    load("# policies\nexample.com verify\n.example.com encrypt\n.com may\n"
	         "Legacy.Example.ORG. none  # trailing dot and case\n",
	         err, sizeof(err));

	CHECK(t != NULL);
	CHECK(tls_policy_lookup(t, "example.com", TLS_POLICY_MAY) == TLS_POLICY_VERIFY);
	CHECK(tls_policy_lookup(t, "mx.example.com", TLS_POLICY_MAY) == TLS_POLICY_ENCRYPT);
	CHECK(tls_policy_lookup(t, "a.b.example.com", TLS_POLICY_NONE) == TLS_POLICY_ENCRYPT);
	CHECK(tls_policy_lookup(t, "other.com", TLS_POLICY_VERIFY) == TLS_POLICY_MAY);
	CHECK(tls_policy_lookup(t, "legacy.example.org", TLS_POLICY_VERIFY) == TLS_POLICY_NONE);
	CHECK(tls_policy_lookup(t, "example.net", TLS_POLICY_ENCRYPT) == TLS_POLICY_ENCRYPT);
	CHECK(tls_policy_lookup(NULL, "x", TLS_POLICY_MAY) == TLS_POLICY_MAY);
	CHECK(!tls_policy_any_dane(t));
	tls_policy_free(t);
}

TEST(dane_levels)
{
	char err[256];
	struct tls_policy_table *t = load("a.test dane\n.b.test DANE-ONLY\n", err, sizeof(err));

	CHECK(t != NULL);
	CHECK(tls_policy_lookup(t, "a.test", TLS_POLICY_MAY) == TLS_POLICY_DANE);
	CHECK(tls_policy_lookup(t, "mx.b.test", TLS_POLICY_MAY) == TLS_POLICY_DANE_ONLY);
	CHECK(tls_policy_any_dane(t));
	CHECK(!tls_policy_any_dane(NULL));
	tls_policy_free(t);
	CHECK(load("a.test dane-sometimes\n", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "(none, may, encrypt, verify, dane, dane-only)") != NULL);
}

TEST(errors_name_the_line)
{
	char err[256];

	CHECK(load("a.test verify\nb.test sometimes\n", err, sizeof(err)) == NULL);
	CHECK(strstr(err, ":2: 'sometimes' is not a TLS policy") != NULL);
	CHECK(load("a.test verify extra\n", err, sizeof(err)) == NULL);
	CHECK(strstr(err, ":1: expected \"domain level\"") != NULL);
	CHECK(load("a.test verify\nA.TEST may\n", err, sizeof(err)) == NULL);
	CHECK(strstr(err, ":2: 'A.TEST' is listed twice") != NULL);
	CHECK(tls_policy_load("/nonexistent/file", err, sizeof(err)) == NULL);
	CHECK(strstr(err, "cannot read") != NULL);
}

TEST(duplicates_as_looked_up)
{
	char err[256];

	/* "a.example." and "a.example" are the same key: the second line used
	 * to load and be ignored without a word */
	CHECK(load("a.example. verify\na.example none\n", err, sizeof(err)) == NULL);
	CHECK(strstr(err, ":2: 'a.example' is listed twice") != NULL);
	CHECK(load("A.Example verify\na.example. none\n", err, sizeof(err)) == NULL);
}

TEST(long_lines_are_whole_lines)
{
	char err[256], text[4096], key[700];
	struct tls_policy_table *t;

	/* a comment longer than any buffer: its tail is no entry */
	memset(text, 0, sizeof(text));
	strcpy(text, "# ");
	memset(text + 2, 'x', 1500);
	strcat(text, " evil.example none\ngood.example verify\n");
	t = load(text, err, sizeof(err));
	CHECK(t != NULL);
	CHECK(tls_policy_lookup(t, "evil.example", TLS_POLICY_ENCRYPT) == TLS_POLICY_ENCRYPT);
	CHECK(tls_policy_lookup(t, "good.example", TLS_POLICY_MAY) == TLS_POLICY_VERIFY);
	tls_policy_free(t);
	/* a name too long is an error, never cut short */
	memset(key, 'k', 600);
	key[600] = '\0';
	snprintf(text, sizeof(text), "%s verify\n", key);
	CHECK(load(text, err, sizeof(err)) == NULL);
	CHECK(strstr(err, ":1: name longer than") != NULL);
}

TEST(nul_byte_is_an_error)
{
	char err[256];
	int fd = mkstemp(path);
	static const char text[] = "a.example verify\nb.example\0 none\n";

	CHECK(fd >= 0 && write(fd, text, sizeof(text) - 1) == (ssize_t)sizeof(text) - 1);
	close(fd);
	CHECK(tls_policy_load(path, err, sizeof(err)) == NULL);
	CHECK(strstr(err, ":2: line contains a NUL byte") != NULL);
	unlink(path);
	strcpy(path, "/tmp/krelay_tlspol_XXXXXX");
}

int main(void)
{
	RUN(lookup_order);
	RUN(dane_levels);
	RUN(duplicates_as_looked_up);
	RUN(long_lines_are_whole_lines);
	RUN(nul_byte_is_an_error);
	RUN(errors_name_the_line);
	UNIT_END("test_tls_policy");
}
