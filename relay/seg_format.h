/* seg_format: the on-disk form of a spool segment.  Pure code.
 *
 * A segment (QueueDirectory/seg/NAME) is a preallocated file that small
 * messages are appended to, so that one fdatasync makes a whole group of
 * them durable (spool_seg.h says how it is used):
 *   [header: SEG_HEADER_LEN bytes: "KRSEG001", worker, created, crc]
 *   [record] [record] ... then zeros (the preallocated rest)
 * A record is SEG_REC_HDR_LEN bytes of header then its payload:
 *   u32 magic "KRR1", u8 type, 3 bytes 0, u32 payload length,
 *   u32 CRC-32C of the header's other 28 bytes and the payload,
 *   16 bytes: the message's queue ID.
 *   SEG_MSG: the payload is exactly a queue file (body, envelope, trailer:
 *            spool_format.h), so the body starts right after the header.
 *   SEG_DONE: no payload; the message of that ID in this segment is out of
 *            it (delivered, bounced, deleted, or written to queue/ID).
 * Integers are little-endian.  A reader stops at the first record that is
 * not whole and valid: the writer makes a record durable only after every
 * byte before it (seg_scan's result is the end of that prefix). */
#ifndef KRELAY_SEG_FORMAT_H
#define KRELAY_SEG_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "spool_format.h"

#define SEG_HEADER_LEN  64
#define SEG_REC_HDR_LEN 32
#define SEG_REC_MAGIC   0x3152524bu /* "KRR1" */

enum seg_rec_type { SEG_MSG = 1, SEG_DONE = 2 };

/* CRC-32C; with SSE4.2's instruction where the CPU has it.  The same
 * without it, a table a byte at a time (what other CPUs run). */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t crc32c_portable(uint32_t crc, const void *buf, size_t len);

void seg_header_format(char out[SEG_HEADER_LEN], unsigned worker, uint64_t created);
/* 0, or -1 when p is not a segment header. */
int seg_header_parse(const char *p, size_t len, unsigned *worker, uint64_t *created);

/* The record header for a payload of len bytes (its CRC covers payload). */
void seg_rec_format(char out[SEG_REC_HDR_LEN], enum seg_rec_type type, const char *id,
                    const void *payload, uint32_t len);

/* Called for every valid record, in order: off is the payload's offset in
 * buf (the record header is just before it). */
typedef void (*seg_rec_cb)(void *arg, enum seg_rec_type type, const char *id, size_t off,
                           uint32_t len);

/* Reads the records of a whole segment file held in buf (header
 * included).  Returns the length of the valid prefix (header and whole
 * records), or -1 when the header is not a segment's. */
long seg_scan(const char *buf, size_t len, seg_rec_cb cb, void *arg);

#endif
