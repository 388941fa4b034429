/* smtp_data: scanner for message content (see smtp_data.h).
 *
 * A byte-at-a-time state machine whose whole state lives in struct
 * smtp_data, so any split of the input gives the same output and flags.
 * Inside a line it takes the run up to the next CR at once (mid_run: memchr
 * and a word-wide scan), and plain lines 64 or 32 octets at a time
 * (block_run: AVX2 where the CPU has it, else SSE2), with the same outcome
 * as byte by byte.
 * Lines end with CRLF only: a bare LF does not start a line, so "\n.\n",
 * "\n.\r\n", "\r.\r\n" and "\r\n.\n" never end DATA (SMTP smuggling,
 * CVE-2023-51764); they are stored as they are and flagged.
 *
 * Output is the input minus DATA's stuffing dots and its terminator ".\r\n"
 * (the CRLF before the terminating dot belongs to the message).
 *
 * line_len counts the octets of the current line as stored (a stuffing dot
 * is not counted; a CR is counted from when it is read, and dropped again
 * from the count when it turns out to end the line).  long_line is set as
 * soon as a line has more than SMTP_TEXT_LINE_MAX octets before its CRLF.
 * In BDAT mode line_len is 0 exactly when the content so far is empty or
 * ends with CRLF, so after the LAST chunk a non-zero line_len means the
 * message ends in an unterminated line (possibly a lone CR, which no later
 * byte can now show to be bare).
 *
 * Writing in place.  Only ".\r" at the start of a line makes output wait:
 * the CR is kept if something other than LF follows (the dot was stuffing),
 * dropped if LF follows (the terminator).  When ".\r" ends one input chunk
 * and the deciding byte starts the next, that byte produces two output
 * octets while only one has been read in this call, so to stay behind the
 * read pointer the last octet is carried in the state and written on the
 * next byte read.  The carry never exceeds one octet, because every ".\r"
 * that creates it also consumes two bytes that produce nothing; it is
 * always gone by the time the terminator's LF has been read. */
#include "smtp_data.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

enum {
	S_SOL,    /* at the start of a line */
	S_MID,    /* inside a line */
	S_CR,     /* after a CR (already written) not yet known to end the line */
	S_DOT,    /* DATA: after a '.' at the start of a line (not written) */
	S_DOT_CR, /* DATA: after ".\r" at the start of a line (neither written) */
};

#define STATE_MASK  0xff
#define CARRY_FLAG  0x100
#define CARRY_SHIFT 16

struct sink {
	char *out;
	size_t w;  /* octets written to out in this call */
	size_t r;  /* input octets read in this call */
	int carry; /* an octet owed to out, or -1 */
};

static void flush(struct sink *s)
{
	if (s->carry >= 0 && s->w < s->r) {
		s->out[s->w++] = (char)s->carry;
		s->carry = -1;
	}
}

/* Appends one octet to the output, never at or past the read pointer. */
static void put(struct sink *s, unsigned char c)
{
	flush(s);
	if (s->carry < 0 && s->w < s->r) {
		s->out[s->w++] = (char)c;
	} else {
		assert(s->carry < 0); /* see the comment at the top */
		s->carry = c;
	}
}

/* An octet inside a line; returns the next state. */
static int mid(struct smtp_data *d, struct sink *s, unsigned char c)
{
	put(s, c);
	d->line_len++;
	if (c == '\r')
		return S_CR;
	if (c == '\n')
		d->bare_lf = true;
	if (c >= 0x80)
		d->eight_bit = true;
	if (d->line_len > SMTP_TEXT_LINE_MAX)
		d->long_line = true;
	return S_MID;
}

/* True when a byte of p[0..n) is >= 0x80. */
static bool any_high(const char *p, size_t n)
{
	uint64_t acc = 0, w;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		acc |= w;
	}
	for (; i < n; i++)
		acc |= (unsigned char)p[i];
	return (acc & 0x8080808080808080ull) != 0;
}

/* The fast way through S_MID: the octets before the next CR (or the end of
 * the input) go on as they are, with the same flags mid() would set one by
 * one.  Called with no octet owed (carry), so output stays behind input.
 * Returns how many octets it took. */
static size_t mid_run(struct smtp_data *d, const char *in, size_t len, char *out)
{
	const char *cr = memchr(in, '\r', len);
	size_t n = cr != NULL ? (size_t)(cr - in) : len;

	if (n == 0)
		return 0;
	if (!d->bare_lf && memchr(in, '\n', n) != NULL)
		d->bare_lf = true;
	if (!d->eight_bit && any_high(in, n))
		d->eight_bit = true;
	d->line_len += n;
	if (d->line_len > SMTP_TEXT_LINE_MAX)
		d->long_line = true;
	if (out != in)
		memmove(out, in, n);
	return n;
}

#if defined(__SSE2__)
/* What block_run has learnt so far. */
struct blocks {
	size_t line;   /* line_len */
	uint64_t high; /* some octet >= 0x80 */
	uint64_t sol;  /* 1: the next block starts a line */
	bool long_line, dot_lines;
};

/* One block of w (32 or 64) octets, as masks of its CRs, LFs, dots and high
 * octets (bit k: octet k).  Returns false, learning nothing, when the block
 * must go the byte-wise way; else *drop marks DATA's stuffing dots (a dot
 * starting a line, not followed by CR) to leave out of the output. */
static inline bool block_take(struct blocks *b, bool dot_mode, unsigned w, uint64_t cr, uint64_t lf,
                              uint64_t dot, uint64_t high, uint64_t *drop)
{
	uint64_t last = 1ull << (w - 1), full = last | (last - 1);
	uint64_t lead = dot & ((lf << 1 | b->sol) & full); /* dots starting a line */

	*drop = 0;
	if ((cr & last) != 0 || ((cr << 1) & full) != lf)
		return false;
	if (lead != 0) {
		if (!dot_mode) {
			b->dot_lines = true;
		} else {
			/* ".\r" may end DATA, and a dot last in the block waits
			 * for its next octet: both go the byte-wise way. */
			if ((lead & last) != 0 || ((lead << 1) & cr) != 0)
				return false;
			if (((lead << 1) & dot) != 0)
				b->dot_lines = true; /* ".." stored as "." */
			*drop = lead;
		}
	}
	b->high |= high;
	if (lf == 0) {
		b->line += w - (size_t)(*drop & 1);
		if (b->line > SMTP_TEXT_LINE_MAX)
			b->long_line = true;
	} else {
		unsigned hi = 63u - (unsigned)__builtin_clzll(lf); /* the last LF */

		if (b->line + (size_t)__builtin_ctzll(cr) - (size_t)(*drop & 1) >
		    SMTP_TEXT_LINE_MAX)
			b->long_line = true;
		/* octets after the last LF, less a stuffing dot starting them */
		b->line = (size_t)(w - 1 - hi);
		if (hi + 1 < w)
			b->line -= (size_t)((*drop >> (hi + 1)) & 1);
	}
	b->sol = (lf & last) != 0;
	return true;
}

/* Writes block in[0..w) less the octets marked in drop to out (which may
 * overlap it from below); returns how many it wrote. */
static inline size_t block_out(char *out, const char *in, unsigned w, uint64_t drop)
{
	size_t n = 0;
	unsigned from = 0;

	while (drop != 0) {
		unsigned k = (unsigned)__builtin_ctzll(drop);
		memmove(out + n, in + from, k - from);
		n += k - from;
		from = k + 1;
		drop &= drop - 1;
	}
	memmove(out + n, in + from, w - from);
	return n + w - from;
}

static inline uint32_t eq_mask(__m128i a, __m128i b, __m128i v)
{
	return (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(a, v)) |
	       (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(b, v)) << 16;
}

static size_t blocks_sse2(struct blocks *bl, bool dot_mode, const char *in, size_t len, char *out,
                          size_t *written)
{
	const __m128i vcr = _mm_set1_epi8('\r'), vlf = _mm_set1_epi8('\n'),
	              vdot = _mm_set1_epi8('.');
	size_t i = 0;

	for (; i + 32 <= len; i += 32) {
		__m128i a = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
		__m128i b = _mm_loadu_si128((const __m128i *)(const void *)(in + i + 16));
		uint32_t high = (uint32_t)_mm_movemask_epi8(a) | (uint32_t)_mm_movemask_epi8(b)
		                                                     << 16;

		uint64_t drop;

		if (!block_take(bl, dot_mode, 32, eq_mask(a, b, vcr), eq_mask(a, b, vlf),
		                eq_mask(a, b, vdot), high, &drop))
			break;
		if (drop != 0) {
			*written += block_out(out + *written, in + i, 32, drop);
			continue;
		}
		if (out + *written != in + i) { /* behind: the block is loaded already */
			_mm_storeu_si128((__m128i *)(void *)(out + *written), a);
			_mm_storeu_si128((__m128i *)(void *)(out + *written + 16), b);
		}
		*written += 32;
	}
	return i;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_BLOCKS 1

/* Whether this CPU runs the AVX2 scanner: asked once, by whichever worker
 * comes first; an atomic, so that workers asking at once do not race. */
static bool have_avx2(void)
{
	static atomic_int known = -1;
	int v = atomic_load_explicit(&known, memory_order_relaxed);

	if (v < 0) {
		v = __builtin_cpu_supports("avx2") ? 1 : 0;
		atomic_store_explicit(&known, v, memory_order_relaxed);
	}
	return v == 1;
}

__attribute__((target("avx2"))) static inline uint64_t eq_mask64(__m256i a, __m256i b, __m256i v)
{
	return (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(a, v)) |
	       (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(b, v)) << 32;
}

/* The same 64 octets at a time, where the CPU has AVX2. */
__attribute__((target("avx2"))) static size_t blocks_avx2(struct blocks *bl, bool dot_mode,
                                                          const char *in, size_t len, char *out,
                                                          size_t *written)
{
	const __m256i vcr = _mm256_set1_epi8('\r'), vlf = _mm256_set1_epi8('\n'),
	              vdot = _mm256_set1_epi8('.');
	size_t i = 0;

	for (; i + 64 <= len; i += 64) {
		__m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(in + i));
		__m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(in + i + 32));
		uint64_t high = (uint64_t)(uint32_t)_mm256_movemask_epi8(a) |
		                (uint64_t)(uint32_t)_mm256_movemask_epi8(b) << 32;

		uint64_t drop;

		if (!block_take(bl, dot_mode, 64, eq_mask64(a, b, vcr), eq_mask64(a, b, vlf),
		                eq_mask64(a, b, vdot), high, &drop))
			break;
		if (drop != 0) {
			*written += block_out(out + *written, in + i, 64, drop);
			continue;
		}
		if (out + *written != in + i) { /* behind: the block is loaded already */
			_mm256_storeu_si256((__m256i *)(void *)(out + *written), a);
			_mm256_storeu_si256((__m256i *)(void *)(out + *written + 32), b);
		}
		*written += 64;
	}
	return i;
}
#endif

/* The fast way through S_SOL and S_MID, 64 (AVX2) or 32 (SSE2) octets at a
 * time: a block is taken whole when each of its CRs is followed by an LF
 * inside it, each LF follows a CR, and (DATA) each dot starting a line is
 * followed by something other than CR inside it (a stuffing dot, left out);
 * the flags and line_len come out as byte by byte.  Anything else (a CR or
 * such a dot at the block's end, a bare CR or LF, ".\r" at the start of a
 * line, the last octets) is left to the byte-wise path.  Called with no
 * octet owed (carry), so output stays behind input.  Returns how many
 * octets it read, *written how many it wrote; *st becomes S_SOL or S_MID. */
static atomic_int path_used = SMTP_DATA_AUTO;

bool smtp_data_use(enum smtp_data_path p)
{
	if (p == SMTP_DATA_AVX2 && !have_avx2())
		return false;
	atomic_store(&path_used, p);
	return true;
}

static size_t block_run(struct smtp_data *d, int *st, const char *in, size_t len, char *out,
                        size_t *written)
{
	struct blocks bl = {.line = d->line_len, .sol = *st == S_SOL};
	int path = atomic_load_explicit(&path_used, memory_order_relaxed);
	size_t i = 0;

	*written = 0;
	if (path == SMTP_DATA_SCALAR)
		return 0;
#ifdef HAVE_AVX2_BLOCKS
	if (path != SMTP_DATA_SSE2 && have_avx2())
		i = blocks_avx2(&bl, d->dot_mode, in, len, out, written);
#endif
	i += blocks_sse2(&bl, d->dot_mode, in + i, len - i, out, written);
	if (i == 0)
		return 0;
	d->line_len = bl.line;
	if (bl.long_line)
		d->long_line = true;
	if (bl.dot_lines)
		d->dot_lines = true;
	if (bl.high != 0)
		d->eight_bit = true;
	*st = bl.sol ? S_SOL : S_MID;
	return i;
}
#else
bool smtp_data_use(enum smtp_data_path p)
{
	return p == SMTP_DATA_AUTO || p == SMTP_DATA_SCALAR;
}

static size_t block_run(struct smtp_data *d, int *st, const char *in, size_t len, char *out,
                        size_t *written)
{
	(void)d, (void)st, (void)in, (void)len, (void)out;
	*written = 0;
	return 0;
}
#endif

void smtp_data_init(struct smtp_data *d, bool dot_mode)
{
	memset(d, 0, sizeof(*d));
	d->dot_mode = dot_mode;
	d->state = S_SOL;
}

size_t smtp_data_scan(struct smtp_data *d, const char *in, size_t in_len, char *out,
                      size_t *out_len)
{
	struct sink s = {.out = out, .w = 0, .r = 0, .carry = -1};
	int st = d->state & STATE_MASK;
	size_t i;

	*out_len = 0;
	if (d->done)
		return 0;
	if (d->state & CARRY_FLAG)
		s.carry = (d->state >> CARRY_SHIFT) & 0xff;

	for (i = 0; i < in_len; i++) {
		unsigned char c;

		if ((st == S_MID || st == S_SOL) && s.carry < 0 && in_len - i >= 32) {
			size_t wrote, n = block_run(d, &st, in + i, in_len - i, out + s.w, &wrote);
			s.w += wrote;
			i += n;
		}
		if (st == S_MID && s.carry < 0) {
			size_t n = mid_run(d, in + i, in_len - i, out + s.w);
			s.w += n;
			i += n;
		}
		if (i == in_len)
			break;
		c = (unsigned char)in[i];
		s.r = i + 1;
		flush(&s);
		switch (st) {
		case S_SOL:
			if (c == '.') {
				if (d->dot_mode) {
					st = S_DOT;
					break;
				}
				d->dot_lines = true;
			}
			st = mid(d, &s, c);
			break;
		case S_MID:
			st = mid(d, &s, c);
			break;
		case S_CR:
			if (c == '\n') {
				put(&s, c);
				d->line_len = 0;
				st = S_SOL;
				break;
			}
			d->bare_cr = true;
			if (d->line_len > SMTP_TEXT_LINE_MAX)
				d->long_line = true;
			st = mid(d, &s, c);
			break;
		case S_DOT:
			if (c == '\r') {
				st = S_DOT_CR;
				break;
			}
			/* a stuffing dot, removed (RFC 5321 4.5.2) */
			if (c == '.')
				d->dot_lines = true;
			st = mid(d, &s, c);
			break;
		case S_DOT_CR:
			if (c == '\n') {
				assert(s.carry < 0);
				d->done = true;
				d->state = S_SOL;
				*out_len = s.w;
				d->size += s.w;
				return i + 1;
			}
			/* the dot was stuffing; the CR is bare */
			d->bare_cr = true;
			put(&s, '\r');
			d->line_len = 1;
			st = mid(d, &s, c);
			break;
		}
	}

	d->state = st;
	if (s.carry >= 0)
		d->state |= CARRY_FLAG | (s.carry << CARRY_SHIFT);
	*out_len = s.w;
	d->size += s.w;
	return in_len;
}
