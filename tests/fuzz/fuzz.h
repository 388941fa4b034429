/* fuzz.h: what the libFuzzer harnesses share.  Each harness is one file,
 * fuzz_NAME.c, built by `make fuzz` with clang -fsanitize=fuzzer,address,
 * undefined against the pure modules (RELAY_PURE); a crash, a sanitizer
 * report or a failed FUZZ_CHECK is a finding. */
#ifndef KRELAY_FUZZ_H
#define KRELAY_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* The input as a NUL-terminated string (a copy; NULs inside stay). */
static inline char *fuzz_str(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* The input written to a file of this process's own, for the loaders that
 * read a path; returns the path (static). */
static inline const char *fuzz_file(const uint8_t *data, size_t size)
{
	static char path[64];
	FILE *f;

	if (path[0] == '\0')
		snprintf(path, sizeof(path), "/tmp/krelay-fuzz-%d", (int)getpid());
	f = fopen(path, "w");
	if (f == NULL || fwrite(data, 1, size, f) != size)
		abort();
	fclose(f);
	return path;
}

#endif
