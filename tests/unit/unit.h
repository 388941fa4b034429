/* unit.h: a minimal table-free test harness for krelay's pure code.
 * Each CHECK counts as one assertion; each TEST as one test, which passes
 * when all its checks hold.  main() ends with UNIT_END(), which prints
 * "<name>: N passed, N failed" and exits non-zero on any failure. */
#ifndef KRELAY_UNIT_H
#define KRELAY_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unit_passed, unit_failed, unit_cur_failed;
static const char *unit_cur;

#define TEST(name)                                                                                 \
	static void test_##name(void);                                                             \
	static void run_##name(void)                                                               \
	{                                                                                          \
		unit_cur = #name;                                                                  \
		unit_cur_failed = 0;                                                               \
		test_##name();                                                                     \
		if (unit_cur_failed) {                                                             \
			unit_failed++;                                                             \
			printf("FAIL %s\n", #name);                                                \
		} else {                                                                           \
			unit_passed++;                                                             \
			printf("PASS %s\n", #name);                                                \
		}                                                                                  \
	}                                                                                          \
	static void test_##name(void)

#define RUN(name) run_##name()

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			unit_cur_failed = 1;                                                       \
			printf("  %s:%d: %s: check failed: %s\n", __FILE__, __LINE__, unit_cur,    \
			       #cond);                                                             \
		}                                                                                  \
	} while (0)

#define CHECK_STR(a, b)                                                                            \
	do {                                                                                       \
		const char *a_ = (a), *b_ = (b);                                                   \
		if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                             \
			unit_cur_failed = 1;                                                       \
			printf("  %s:%d: %s: \"%s\" != \"%s\"\n", __FILE__, __LINE__, unit_cur,    \
			       a_ ? a_ : "(null)", b_ ? b_ : "(null)");                            \
		}                                                                                  \
	} while (0)

/* True when s starts with prefix. */
static inline int unit_prefix(const char *s, const char *prefix)
{
	return s != NULL && strncmp(s, prefix, strlen(prefix)) == 0;
}

#define UNIT_END(suite)                                                                            \
	do {                                                                                       \
		printf("%s: %d passed, %d failed\n", suite, unit_passed, unit_failed);             \
		return unit_failed ? 1 : 0;                                                        \
	} while (0)

#endif
