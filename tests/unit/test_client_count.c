/* test_client_count: the relay-wide count of sessions per client address. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>

#include "client_count.h"
#include "unit.h"

static struct client_key v4(const char *text)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *a = (struct sockaddr_in *)&ss;
	struct client_key k;

	a->sin_family = AF_INET;
	inet_pton(AF_INET, text, &a->sin_addr);
	client_key_of(&ss, &k);
	return k;
}

static struct client_key v6(const char *text)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
	struct client_key k;

	a->sin6_family = AF_INET6;
	inet_pton(AF_INET6, text, &a->sin6_addr);
	client_key_of(&ss, &k);
	return k;
}

/* A distinct IPv6 address for each n. */
static struct client_key nth(unsigned n)
{
	char text[64];

	snprintf(text, sizeof(text), "2001:db8::%x:%x", n >> 16, n & 0xffff);
	return v6(text);
}

TEST(mapped_ipv6_is_the_ipv4_address)
{
	struct client_count *t = client_count_new();
	struct client_key a = v4("192.0.2.7"), b = v6("::ffff:192.0.2.7"), c = v4("192.0.2.8");
	struct client_key d = nth(1);
	char text[64];

	CHECK(client_count_add(t, &a) == 1);
	CHECK(client_count_add(t, &b) == 2);
	CHECK(client_count_add(t, &c) == 1);
	client_key_text(&b, text, sizeof(text));
	CHECK_STR(text, "192.0.2.7");
	client_key_text(&d, text, sizeof(text));
	CHECK_STR(text, "2001:db8::1");
	client_count_del(t, &a);
	CHECK(client_count_get(t, &b) == 1);
	client_count_del(t, &b);
	CHECK(client_count_get(t, &a) == 0);
	CHECK(client_count_get(t, &c) == 1);
	client_count_free(t);
}

TEST(other_families_have_no_key)
{
	struct sockaddr_storage ss = {0};
	struct client_key k;

	ss.ss_family = AF_UNIX;
	CHECK(!client_key_of(&ss, &k));
}

/* Many addresses, half removed in a scattered order: every one left keeps
 * its count (deletion must not strand entries behind a hole). */
TEST(removal_keeps_the_others_reachable)
{
	struct client_count *t = client_count_new();
	enum { N = 30000 };
	static unsigned want[N];
	unsigned bad = 0, full = 0;

	for (unsigned i = 0; i < N; i++) {
		struct client_key k = nth(i);
		want[i] = i % 3 + 1;
		for (unsigned j = 0; j < want[i]; j++)
			full += client_count_add(t, &k) == 0;
	}
	CHECK(full == 0);
	for (unsigned i = 0; i < N / 2; i++) {
		unsigned n = (i * 7919u) % N;
		struct client_key k = nth(n);
		for (; want[n] > 0; want[n]--)
			client_count_del(t, &k);
	}
	for (unsigned i = 0; i < N; i++) {
		struct client_key k = nth(i);
		bad += client_count_get(t, &k) != want[i];
	}
	CHECK(bad == 0);
	for (unsigned i = 0; i < N; i++) {
		struct client_key k = nth(i);
		for (; want[i] > 0; want[i]--)
			client_count_del(t, &k);
	}
	for (unsigned i = 0; i < N; i++) {
		struct client_key k = nth(i);
		bad += client_count_get(t, &k) != 0;
	}
	CHECK(bad == 0);
	client_count_free(t);
}

TEST(removed_half_really_is_gone)
{
	struct client_count *t = client_count_new();
	enum { N = 5000 };
	unsigned left = 0;

	for (unsigned i = 0; i < N; i++) {
		struct client_key k = nth(i);
		client_count_add(t, &k);
	}
	for (unsigned i = 0; i < N; i += 2) {
		struct client_key k = nth(i);
		client_count_del(t, &k);
	}
	for (unsigned i = 0; i < N; i++) {
		struct client_key k = nth(i);
		left += client_count_get(t, &k);
	}
	CHECK(left == N / 2);
	client_count_free(t);
}

static struct client_count *shared;

static void *churn(void *arg)
{
	struct client_key k = v4("198.51.100.1");

	for (int i = 0; i < 20000; i++) {
		client_count_add(shared, &k);
		client_count_del(shared, &k);
	}
	return arg;
}

TEST(threads_share_one_count)
{
	pthread_t th[4];
	struct client_key k = v4("198.51.100.1");

	shared = client_count_new();
	client_count_add(shared, &k);
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, churn, NULL);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	CHECK(client_count_get(shared, &k) == 1);
	client_count_free(shared);
}

int main(void)
{
	RUN(mapped_ipv6_is_the_ipv4_address);
	RUN(other_families_have_no_key);
	RUN(removal_keeps_the_others_reachable);
	RUN(removed_half_really_is_gone);
	RUN(threads_share_one_count);
	UNIT_END("test_client_count");
}
