/* Unit tests for relay/smtp_data.c: DATA/BDAT content scanning. */
#include "smtp_data.h"
#include "unit.h"

#include <stdint.h>

#define OUT_MAX 8192

/* What a scan of some input, fed in pieces, came to. */
struct scan_result {
	char out[OUT_MAX];
	size_t out_len;
	size_t consumed;
	struct smtp_data d;
};

/* Feeds in[0..len) in pieces ending at cuts[0..ncuts) (then at len), each
 * piece in a buffer of exactly its size, so ASan sees any write past it.
 * With in_place the output goes over the piece itself.  Stops feeding once
 * the scanner reports the end of DATA. */
static void scan_pieces(const char *in, size_t len, const size_t *cuts, size_t ncuts, bool dot_mode,
                        bool in_place, struct scan_result *r)
{
	size_t start = 0;

	memset(r, 0, sizeof(*r));
	smtp_data_init(&r->d, dot_mode);
	for (size_t k = 0; k <= ncuts && !r->d.done; k++) {
		size_t end = k < ncuts ? cuts[k] : len;
		size_t n = end - start, got, out_len = 12345;
		char *piece = malloc(n ? n : 1);
		char *out = in_place ? piece : malloc(n ? n : 1);

		memcpy(piece, in + start, n);
		got = smtp_data_scan(&r->d, piece, n, out, &out_len);
		if (got > n || out_len > n || r->out_len + out_len > OUT_MAX) {
			printf("  scan_pieces: impossible counts got=%zu out_len=%zu n=%zu\n", got,
			       out_len, n);
			unit_cur_failed = 1;
		} else {
			memcpy(r->out + r->out_len, out, out_len);
			r->out_len += out_len;
			r->consumed += got;
			if (got < n && !r->d.done) {
				printf("  scan_pieces: %zu of %zu consumed without done\n", got, n);
				unit_cur_failed = 1;
			}
		}
		if (!in_place)
			free(out);
		free(piece);
		start = end;
	}
}

static void scan_all(const char *in, size_t len, bool dot_mode, struct scan_result *r)
{
	scan_pieces(in, len, NULL, 0, dot_mode, false, r);
}

static int same_result(const struct scan_result *a, const struct scan_result *b)
{
	return a->out_len == b->out_len && memcmp(a->out, b->out, a->out_len) == 0 &&
	       a->consumed == b->consumed && a->d.done == b->d.done &&
	       a->d.bare_cr == b->d.bare_cr && a->d.bare_lf == b->d.bare_lf &&
	       a->d.long_line == b->d.long_line && a->d.dot_lines == b->d.dot_lines &&
	       a->d.eight_bit == b->d.eight_bit && a->d.size == b->d.size &&
	       a->d.line_len == b->d.line_len && a->d.state == b->d.state;
}

/* Checks that every split into two pieces, every split into three pieces
 * (for short inputs), and byte-by-byte feeding, in place or not, all give
 * the one-shot result. */
static int split_invariant(const char *in, size_t len, bool dot_mode)
{
	static struct scan_result whole, part;
	size_t cuts[OUT_MAX];
	int good = 1;

	scan_all(in, len, dot_mode, &whole);
	for (int in_place = 0; in_place < 2; in_place++) {
		for (size_t i = 0; i <= len; i++) {
			cuts[0] = i;
			scan_pieces(in, len, cuts, 1, dot_mode, in_place, &part);
			if (!same_result(&whole, &part)) {
				printf("  split at %zu (in_place %d) differs\n", i, in_place);
				good = 0;
			}
			for (size_t j = i; len <= 64 && j <= len; j++) {
				cuts[1] = j;
				scan_pieces(in, len, cuts, 2, dot_mode, in_place, &part);
				if (!same_result(&whole, &part)) {
					printf("  split at %zu,%zu (in_place %d) differs\n", i, j,
					       in_place);
					good = 0;
				}
			}
		}
		for (size_t i = 0; i < len; i++)
			cuts[i] = i + 1;
		scan_pieces(in, len, cuts, len, dot_mode, in_place, &part);
		if (!same_result(&whole, &part)) {
			printf("  byte-by-byte (in_place %d) differs\n", in_place);
			good = 0;
		}
	}
	return good;
}

#define S(lit) lit, sizeof(lit) - 1

/* Output of a one-shot scan equals want (a string literal). */
#define CHECK_OUT(r, lit)                                                                          \
	CHECK((r).out_len == sizeof(lit) - 1 && memcmp((r).out, lit, sizeof(lit) - 1) == 0)

static struct scan_result res;

/* ---- DATA: end detection ---- */

TEST(data_init)
{
	struct smtp_data d;

	memset(&d, 0xff, sizeof(d));
	smtp_data_init(&d, true);
	CHECK(d.dot_mode && !d.done && !d.bare_cr && !d.bare_lf && !d.long_line);
	CHECK(!d.dot_lines && !d.eight_bit && d.line_len == 0 && d.size == 0);
	smtp_data_init(&d, false);
	CHECK(!d.dot_mode && !d.done);
}

TEST(data_simple_end)
{
	scan_all(S("Hello\r\n.\r\n"), true, &res);
	CHECK(res.d.done);
	CHECK(res.consumed == 10);
	CHECK_OUT(res, "Hello\r\n");
	CHECK(res.d.size == 7);
	CHECK(!res.d.bare_cr && !res.d.bare_lf && !res.d.long_line && !res.d.dot_lines);
	CHECK(!res.d.eight_bit);
}

TEST(data_empty_message)
{
	scan_all(S(".\r\n"), true, &res);
	CHECK(res.d.done && res.consumed == 3 && res.out_len == 0 && res.d.size == 0);
	scan_all(S("\r\n.\r\n"), true, &res);
	CHECK(res.d.done && res.consumed == 5);
	CHECK_OUT(res, "\r\n");
}

TEST(data_not_ended)
{
	scan_all(S("Hello\r\n"), true, &res);
	CHECK(!res.d.done && res.consumed == 7);
	CHECK_OUT(res, "Hello\r\n");
	scan_all(S("Hello\r\n."), true, &res);
	CHECK(!res.d.done && res.consumed == 8);
	CHECK_OUT(res, "Hello\r\n");
	scan_all(S("Hello\r\n.\r"), true, &res);
	CHECK(!res.d.done && res.consumed == 9);
	CHECK_OUT(res, "Hello\r\n");
	scan_all(S("Hello.\r\n"), true, &res);
	CHECK(!res.d.done);
	CHECK_OUT(res, "Hello.\r\n");
	scan_all(S("Hello\r\n .\r\n"), true, &res);
	CHECK(!res.d.done);
	CHECK_OUT(res, "Hello\r\n .\r\n");
}

TEST(data_rest_not_consumed)
{
	static const char in[] = "Hi\r\n.\r\nQUIT\r\n";
	struct smtp_data d;
	char out[sizeof(in)];
	size_t out_len, got;

	smtp_data_init(&d, true);
	got = smtp_data_scan(&d, in, sizeof(in) - 1, out, &out_len);
	CHECK(d.done);
	CHECK(got == 7);
	CHECK_STR(in + got, "QUIT\r\n");
	CHECK(out_len == 4 && memcmp(out, "Hi\r\n", 4) == 0);
	/* once done, nothing more is taken */
	got = smtp_data_scan(&d, in + 7, 6, out, &out_len);
	CHECK(got == 0 && out_len == 0 && d.size == 4);
	/* a pipelined ".\r\n" right after the end stays too */
	smtp_data_init(&d, true);
	got = smtp_data_scan(&d, S(".\r\n.\r\n"), out, &out_len);
	CHECK(d.done && got == 3 && out_len == 0);
}

TEST(data_end_split_everywhere)
{
	static const char msg[] = "Subject: t\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\n";

	scan_all(S(msg), true, &res);
	CHECK(res.d.done);
	CHECK(res.consumed == 23);
	CHECK_OUT(res, "Subject: t\r\n\r\nbody\r\n");
	CHECK(split_invariant(S(msg), true));
	CHECK(split_invariant(S("\r\n.\r\n"), true));
	CHECK(split_invariant(S(".\r\n"), true));
	CHECK(split_invariant(S("x\r\n.\r\nRSET\r\n"), true));
}

TEST(data_end_byte_by_byte)
{
	static const char in[] = "a\r\n..b\r\n.\r\nNOOP\r\n";
	struct smtp_data d;
	char out[64];
	size_t total_out = 0, i;

	smtp_data_init(&d, true);
	for (i = 0; i < sizeof(in) - 1 && !d.done; i++) {
		size_t out_len;
		size_t got = smtp_data_scan(&d, in + i, 1, out + total_out, &out_len);

		CHECK(got == 1);
		total_out += out_len;
	}
	CHECK(d.done && i == 11);
	CHECK(total_out == 7 && memcmp(out, "a\r\n.b\r\n", 7) == 0);
	CHECK(d.dot_lines && d.size == 7);
}

/* ---- DATA: dot stuffing ---- */

TEST(data_unstuffing)
{
	scan_all(S("..foo\r\n.\r\n"), true, &res);
	CHECK_OUT(res, ".foo\r\n");
	CHECK(res.d.dot_lines && res.d.done);

	scan_all(S(".foo\r\n.\r\n"), true, &res);
	CHECK_OUT(res, "foo\r\n");
	CHECK(!res.d.dot_lines && res.d.done);

	scan_all(S("..\r\n.\r\n"), true, &res);
	CHECK_OUT(res, ".\r\n");
	CHECK(res.d.dot_lines);

	scan_all(S("...\r\n.\r\n"), true, &res);
	CHECK_OUT(res, "..\r\n");
	CHECK(res.d.dot_lines);

	scan_all(S("a.b\r\nc..\r\n.\r\n"), true, &res);
	CHECK_OUT(res, "a.b\r\nc..\r\n");
	CHECK(!res.d.dot_lines);

	scan_all(S("x\r\n. y\r\n.\r\n"), true, &res);
	CHECK_OUT(res, "x\r\n y\r\n");
	CHECK(split_invariant(S("..foo\r\n.bar\r\n..\r\n...\r\n.\r\n"), true));
}

TEST(data_in_place)
{
	char buf[] = "..one\r\n.two\r\nthree.\r\n..\r\n.\r\nX";
	const char want[] = ".one\r\ntwo\r\nthree.\r\n.\r\n";
	struct smtp_data d;
	size_t out_len, got;

	smtp_data_init(&d, true);
	got = smtp_data_scan(&d, buf, sizeof(buf) - 1, buf, &out_len);
	CHECK(d.done && got == sizeof(buf) - 2);
	CHECK(out_len == sizeof(want) - 1 && memcmp(buf, want, out_len) == 0);
	CHECK(d.size == out_len);
}

/* ---- DATA: smuggling ---- */

TEST(smuggle_lf_dot_lf)
{
	scan_all(S("a\n.\nb\r\n.\r\n"), true, &res);
	CHECK(res.d.done && res.consumed == 10);
	CHECK_OUT(res, "a\n.\nb\r\n");
	CHECK(res.d.bare_lf && !res.d.bare_cr);
	scan_all(S("a\n.\n"), true, &res);
	CHECK(!res.d.done && res.d.bare_lf);
	CHECK_OUT(res, "a\n.\n");
	CHECK(split_invariant(S("a\n.\nb\r\n.\r\n"), true));
}

TEST(smuggle_lf_dot_crlf)
{
	scan_all(S("a\n.\r\nMAIL FROM:<x@y>\r\n\r\n.\r\n"), true, &res);
	CHECK(res.d.done);
	CHECK_OUT(res, "a\n.\r\nMAIL FROM:<x@y>\r\n\r\n");
	CHECK(res.d.bare_lf && !res.d.bare_cr);
	/* a bare LF at the very start does not make a line start either */
	scan_all(S("\n.\r\n"), true, &res);
	CHECK(!res.d.done && res.d.bare_lf);
	CHECK_OUT(res, "\n.\r\n");
	CHECK(split_invariant(S("a\n.\r\nb\r\n.\r\n"), true));
}

TEST(smuggle_cr_dot_crlf)
{
	scan_all(S("a\r.\r\nb\r\n.\r\n"), true, &res);
	CHECK(res.d.done);
	CHECK_OUT(res, "a\r.\r\nb\r\n");
	CHECK(res.d.bare_cr && !res.d.bare_lf);
	scan_all(S("a\r.\r\n"), true, &res);
	CHECK(!res.d.done && res.d.bare_cr);
	CHECK(split_invariant(S("a\r.\r\nb\r\n.\r\n"), true));
}

TEST(smuggle_crlf_dot_lf)
{
	/* the line ".\n..." is not the end; its leading dot is stuffing */
	scan_all(S("a\r\n.\nb\r\n.\r\n"), true, &res);
	CHECK(res.d.done && res.consumed == 11);
	CHECK_OUT(res, "a\r\n\nb\r\n");
	CHECK(res.d.bare_lf && !res.d.bare_cr);
	scan_all(S("a\r\n.\n"), true, &res);
	CHECK(!res.d.done && res.d.bare_lf);
	CHECK(split_invariant(S("a\r\n.\nb\r\n.\r\n"), true));
}

TEST(data_dot_cr_not_end)
{
	/* ".\r" then not LF: the dot was stuffing, the CR is bare and kept */
	scan_all(S("a\r\n.\rX\r\n.\r\n"), true, &res);
	CHECK(res.d.done);
	CHECK_OUT(res, "a\r\n\rX\r\n");
	CHECK(res.d.bare_cr && !res.d.bare_lf && !res.d.dot_lines);
	scan_all(S(".\r.\r\n.\r\n"), true, &res);
	CHECK_OUT(res, "\r.\r\n");
	CHECK(res.d.bare_cr && !res.d.dot_lines);
	scan_all(S(".\r\r\n.\r\n"), true, &res);
	CHECK_OUT(res, "\r\r\n");
	CHECK(res.d.bare_cr && !res.d.bare_lf);
	/* every split, in place: the CR is owed across a piece boundary */
	CHECK(split_invariant(S("a\r\n.\rXYZ\r\n.\r\n"), true));
	CHECK(split_invariant(S(".\r.\r\n.\r\n"), true));
	CHECK(split_invariant(S(".\r\r\n.\r\n"), true));
	CHECK(split_invariant(S(".\rab\r\n.\rcd\r\n..\r\r\n.\r\n"), true));
}

TEST(data_carry_in_place_pieces)
{
	/* ".\r" | "XYZ\r\n.\r\n": the second piece yields "\rXYZ\r\n" in place */
	char p1[] = "a\r\n.\r";
	char p2[] = "XYZ\r\n.\r\n";
	char all[64];
	struct smtp_data d;
	size_t out_len, got, total = 0;

	smtp_data_init(&d, true);
	got = smtp_data_scan(&d, p1, sizeof(p1) - 1, p1, &out_len);
	CHECK(got == 5 && out_len == 3);
	memcpy(all + total, p1, out_len);
	total += out_len;
	got = smtp_data_scan(&d, p2, sizeof(p2) - 1, p2, &out_len);
	CHECK(got == 8 && d.done);
	CHECK(out_len <= got);
	memcpy(all + total, p2, out_len);
	total += out_len;
	CHECK(total == 9 && memcmp(all, "a\r\n\rXYZ\r\n", 9) == 0);
	CHECK(d.size == 9 && d.bare_cr);
}

/* ---- flags ---- */

TEST(bare_cr_held_across_pieces)
{
	struct smtp_data d;
	char out[8];
	size_t out_len;

	smtp_data_init(&d, true);
	smtp_data_scan(&d, "abc\r", 4, out, &out_len);
	CHECK(!d.bare_cr && !d.bare_lf);
	smtp_data_scan(&d, "\n", 1, out, &out_len);
	CHECK(!d.bare_cr && !d.bare_lf && d.line_len == 0);

	smtp_data_init(&d, true);
	smtp_data_scan(&d, "abc\r", 4, out, &out_len);
	CHECK(!d.bare_cr);
	smtp_data_scan(&d, "x", 1, out, &out_len);
	CHECK(d.bare_cr && !d.bare_lf);

	smtp_data_init(&d, true);
	smtp_data_scan(&d, "abc\r", 4, out, &out_len);
	smtp_data_scan(&d, "\r", 1, out, &out_len);
	CHECK(d.bare_cr);
	smtp_data_scan(&d, "\n", 1, out, &out_len);
	CHECK(!d.bare_lf);
	CHECK(split_invariant(S("abc\r\rdef\r\r\r\n\n.\r\n\r\n.\r\n"), true));
}

TEST(bare_lf_flags)
{
	scan_all(S("abc\ndef\r\n.\r\n"), true, &res);
	CHECK(res.d.bare_lf && !res.d.bare_cr && res.d.done);
	CHECK_OUT(res, "abc\ndef\r\n");
	scan_all(S("\n\r\n.\r\n"), true, &res);
	CHECK(res.d.bare_lf && res.d.done);
	scan_all(S("abc\r\r\n.\r\n"), true, &res);
	CHECK(res.d.bare_cr && !res.d.bare_lf && res.d.done);
	CHECK_OUT(res, "abc\r\r\n");
}

TEST(long_lines)
{
	static char buf[2200];
	size_t n;

	/* 998 octets: fine */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf + 998, "\r\n.\r\n", 5);
	scan_all(buf, 1003, true, &res);
	CHECK(res.d.done && !res.d.long_line && res.out_len == 1000);
	/* 999 octets: too long */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf + 999, "\r\n.\r\n", 5);
	scan_all(buf, 1004, true, &res);
	CHECK(res.d.done && res.d.long_line);
	/* a stuffing dot does not count: ".." + 997 stores 998 */
	memset(buf, 'a', sizeof(buf));
	buf[0] = buf[1] = '.';
	memcpy(buf + 999, "\r\n.\r\n", 5);
	scan_all(buf, 1004, true, &res);
	CHECK(res.d.done && !res.d.long_line && res.d.dot_lines);
	/* a bare CR does count: 997 + CR + 'a' is 999 */
	memset(buf, 'a', sizeof(buf));
	buf[997] = '\r';
	memcpy(buf + 999, "\r\n.\r\n", 5);
	scan_all(buf, 1004, true, &res);
	CHECK(res.d.long_line && res.d.bare_cr);
	/* 998 then a bare CR then CRLF: 999 */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf + 998, "\r\r\n.\r\n", 6);
	scan_all(buf, 1004, true, &res);
	CHECK(res.d.long_line && res.d.bare_cr);
	/* after a stuffing dot, a bare CR starts the stored line: ".\r" + 997 */
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, ".\r", 2);
	memcpy(buf + 999, "\r\n.\r\n", 5);
	scan_all(buf, 1004, true, &res);
	CHECK(res.d.done && !res.d.long_line && res.d.bare_cr && res.out_len == 1000);
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, ".\r", 2);
	memcpy(buf + 1000, "\r\n.\r\n", 5);
	scan_all(buf, 1005, true, &res);
	CHECK(res.d.done && res.d.long_line);
	/* many short lines add up to nothing */
	n = 0;
	for (int i = 0; i < 300; i++) {
		memcpy(buf + n, "abcde\r\n", 7);
		n += 7;
	}
	memcpy(buf + n, ".\r\n", 3);
	scan_all(buf, n + 3, true, &res);
	CHECK(res.d.done && !res.d.long_line);
	/* flagged before the line even ends, and the same for any split */
	memset(buf, 'b', 1500);
	scan_all(buf, 1500, false, &res);
	CHECK(res.d.long_line && res.d.line_len == 1500);
	memset(buf, 'a', sizeof(buf));
	memcpy(buf + 999, "\r\n.\r\n", 5);
	CHECK(split_invariant(buf, 1004, true));
}

TEST(eight_bit)
{
	scan_all(S("caf\xc3\xa9\r\n.\r\n"), true, &res);
	CHECK(res.d.eight_bit && res.d.done);
	CHECK_OUT(res, "caf\xc3\xa9\r\n");
	scan_all(S("plain ascii ~\x7f\r\n.\r\n"), true, &res);
	CHECK(!res.d.eight_bit);
	scan_all(S(".\xff\r\n.\r\n"), true, &res);
	CHECK(res.d.eight_bit);
	CHECK_OUT(res, "\xff\r\n");
}

TEST(nul_bytes_pass)
{
	scan_all(S("a\0b\r\n\0\r\n.\r\n"), true, &res);
	CHECK(res.d.done);
	CHECK_OUT(res, "a\0b\r\n\0\r\n");
}

TEST(size_across_calls)
{
	struct smtp_data d;
	char out[32];
	size_t out_len, sum = 0;

	smtp_data_init(&d, true);
	smtp_data_scan(&d, "abc\r\n", 5, out, &out_len);
	sum += out_len;
	CHECK(d.size == 5);
	smtp_data_scan(&d, "..d\r\n.", 6, out, &out_len);
	sum += out_len;
	CHECK(d.size == 9);
	smtp_data_scan(&d, "\r\n", 2, out, &out_len);
	sum += out_len;
	CHECK(d.done && d.size == 9 && sum == 9);
}

/* ---- BDAT ---- */

TEST(bdat_copies_everything)
{
	static const char in[] = "..x\r\n.\r\n.y\r\nmore";

	scan_all(S(in), false, &res);
	CHECK(!res.d.done);
	CHECK(res.consumed == sizeof(in) - 1);
	CHECK(res.out_len == sizeof(in) - 1 && memcmp(res.out, in, res.out_len) == 0);
	CHECK(res.d.dot_lines && res.d.size == sizeof(in) - 1);
	CHECK(!res.d.bare_cr && !res.d.bare_lf);
	CHECK(split_invariant(S(in), false));
}

TEST(bdat_flags)
{
	scan_all(S("abc\r\n"), false, &res);
	CHECK(!res.d.dot_lines && !res.d.bare_cr && !res.d.bare_lf && !res.d.eight_bit);
	scan_all(S("a.b\r\n"), false, &res);
	CHECK(!res.d.dot_lines);
	scan_all(S("a\r\n.b"), false, &res);
	CHECK(res.d.dot_lines);
	scan_all(S("a\n.b\r\n"), false, &res);
	CHECK(res.d.bare_lf && !res.d.dot_lines);
	scan_all(S("a\r.b\r\n"), false, &res);
	CHECK(res.d.bare_cr && !res.d.dot_lines);
	scan_all(S("\xe2\x82\xac\r\n"), false, &res);
	CHECK(res.d.eight_bit);
	CHECK(split_invariant(S("x\r\n.\r\r\n\n.\n\r\r.\r\n\xc3\xa9"), false));
}

TEST(bdat_line_len_tells_unterminated)
{
	scan_all(S("abc\r\n"), false, &res);
	CHECK(res.d.line_len == 0);
	scan_all(S(""), false, &res);
	CHECK(res.d.line_len == 0 && res.out_len == 0 && res.consumed == 0);
	scan_all(S("abc\r\nde"), false, &res);
	CHECK(res.d.line_len == 2);
	/* a final CR may still be part of a CRLF; it is written and counted */
	scan_all(S("abc\r"), false, &res);
	CHECK(res.d.line_len == 4 && !res.d.bare_cr);
	CHECK_OUT(res, "abc\r");
}

/* Long content (so the 32-octet block path runs) scanned whole, and byte by
 * byte (where it never runs), in place and not, comes out the same: lines of
 * every length near the block size, stuffed dots, 8-bit octets, bare CR and
 * LF, CRLF across block ends, a line of 999 octets, then the end. */
TEST(block_path_same_as_byte_by_byte)
{
	static char in[6000];
	static size_t cuts[sizeof(in)];
	static struct scan_result whole, bytes, placed;
	const char *extras[] = {"", ".", "..", "\xc3\xa9", "\r", "\n", ".\r"};

	for (int variant = 0; variant < 14; variant++) {
		bool dot_mode = variant % 2 == 0;
		const char *extra = extras[variant / 2];
		size_t len = 0;

		for (size_t line = 0; line < 80; line++) {
			size_t n = (line * 7) % 67;
			if (line == (size_t)variant * 5)
				len += (size_t)snprintf(in + len, sizeof(in) - len, "%s", extra);
			memset(in + len, 'a' + (int)(line % 26), n);
			len += n;
			in[len++] = '\r';
			in[len++] = '\n';
		}
		memset(in + len, 'x', 999);
		len += 999;
		len += (size_t)snprintf(in + len, sizeof(in) - len, "\r\nlast\r\n.\r\n");
		for (size_t k = 0; k < len; k++)
			cuts[k] = k + 1;
		scan_pieces(in, len, NULL, 0, dot_mode, false, &whole);
		scan_pieces(in, len, NULL, 0, dot_mode, true, &placed);
		scan_pieces(in, len, cuts, len - 1, dot_mode, false, &bytes);
		CHECK(same_result(&whole, &bytes));
		CHECK(same_result(&placed, &bytes));
		CHECK(whole.d.long_line);
		CHECK(whole.out_len > 3500);
	}
}

int main(void)
{
	RUN(data_init);
	RUN(block_path_same_as_byte_by_byte);
	RUN(data_simple_end);
	RUN(data_empty_message);
	RUN(data_not_ended);
	RUN(data_rest_not_consumed);
	RUN(data_end_split_everywhere);
	RUN(data_end_byte_by_byte);
	RUN(data_unstuffing);
	RUN(data_in_place);
	RUN(smuggle_lf_dot_lf);
	RUN(smuggle_lf_dot_crlf);
	RUN(smuggle_cr_dot_crlf);
	RUN(smuggle_crlf_dot_lf);
	RUN(data_dot_cr_not_end);
	RUN(data_carry_in_place_pieces);
	RUN(bare_cr_held_across_pieces);
	RUN(bare_lf_flags);
	RUN(long_lines);
	RUN(eight_bit);
	RUN(nul_bytes_pass);
	RUN(size_across_calls);
	RUN(bdat_copies_everything);
	RUN(bdat_flags);
	RUN(bdat_line_len_tells_unterminated);
	UNIT_END("test_smtp_data");
}
