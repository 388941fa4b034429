/* smtp_data: scanner for message content (DATA and BDAT).  Pure code.
 * For DATA it finds the one true end, <CRLF>.<CRLF>, and removes dot
 * stuffing; for both it flags what makes a message unsafe to relay: bare CR
 * or bare LF (SMTP smuggling), lines over 998 octets, and records whether
 * any stored line starts with '.', which decides how it can be sent on. */
#ifndef KRELAY_SMTP_DATA_H
#define KRELAY_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_TEXT_LINE_MAX 998 /* octets before CRLF, RFC 5321 4.5.3.1.6 */

struct smtp_data {
	int state;
	bool dot_mode;   /* DATA: dot stuffing and end detection */
	bool done;       /* DATA only: end seen, terminator consumed */
	bool bare_cr;    /* a CR not followed by LF */
	bool bare_lf;    /* an LF not preceded by CR */
	bool long_line;  /* a line longer than SMTP_TEXT_LINE_MAX */
	bool dot_lines;  /* a stored line starts with '.' */
	bool eight_bit;  /* a byte >= 0x80 */
	size_t line_len; /* octets in the current line so far */
	uint64_t size;   /* octets of output so far */
};

void smtp_data_init(struct smtp_data *d, bool dot_mode);

/* The widest vector path the scanner takes, for the whole process: what the
 * CPU has (SMTP_DATA_AUTO, the default) or, for the tests and the fuzzer's
 * differential oracle, at most that path.  Every path gives the same
 * output and flags.  smtp_data_use returns false when the CPU lacks it. */
enum smtp_data_path { SMTP_DATA_AUTO = -1, SMTP_DATA_SCALAR, SMTP_DATA_SSE2, SMTP_DATA_AVX2 };
bool smtp_data_use(enum smtp_data_path p);

/* Scans in[0..in_len) and writes the content to keep to out (out may equal
 * in: it never writes ahead of what it has read).  Returns how many input
 * bytes were consumed: all of them, or, in DATA mode, up to and including the
 * terminating ".\r\n" (then d->done is set).  *out_len is set to the number
 * of bytes written. */
size_t smtp_data_scan(struct smtp_data *d, const char *in, size_t in_len, char *out,
                      size_t *out_len);

#endif
