/* fuzz_config: a whole configuration file, loaded as krelay loads one.
 * Oracle: no crash or sanitizer report; a file that loads loads again the
 * same (the parser keeps no state between files). */
#include "config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config c, d;
	char err[1024], err2[1024];
	const char *path = fuzz_file(data, size);
	int r1, r2;

	config_defaults(&c);
	r1 = config_load(&c, path, err, sizeof(err));
	config_defaults(&d);
	r2 = config_load(&d, path, err2, sizeof(err2));
	FUZZ_CHECK(r1 == r2);
	if (r1 == 0)
		FUZZ_CHECK(c.workers == d.workers && c.max_message_size == d.max_message_size);
	config_free(&c);
	config_free(&d);
	return 0;
}
