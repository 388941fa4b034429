/* fuzz_smtp_parse: command lines and the line splitter.  Oracles: a parsed
 * command's address fits its buffer and holds no CR, LF or NUL; the line
 * splitter consumes what it says and never reports a line past the input. */
#include "fuzz.h"
#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_lines st = {0};
	const char *buf = (const char *)data;
	size_t off = 0;

	while (off < size) {
		size_t used = 0, len = 0;
		enum smtp_line_result r = smtp_line_next(&st, buf + off, size - off, &used, &len);
		struct smtp_cmd c;

		FUZZ_CHECK(used <= size - off);
		if (r == SMTP_LINE_MORE && used == 0)
			break;
		if (r == SMTP_LINE_OK) {
			FUZZ_CHECK(len <= used);
			if (smtp_parse_command(buf + off, len, &c) == NULL) {
				size_t n = strlen(c.addr);
				FUZZ_CHECK(n <= SMTP_PATH_MAX);
				FUZZ_CHECK(strpbrk(c.addr, "\r\n") == NULL);
			}
		}
		off += used;
		if (used == 0)
			break;
	}
	return 0;
}
