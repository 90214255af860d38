/*
 * internal.h - helpers shared by the native sources; not part of the contract.
 * Big-endian loads/stores (Kafka's byte order) and zig-zag varints.
 */
#ifndef LOGKERNEL_INTERNAL_H
#define LOGKERNEL_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "logkernel.h"

static inline uint16_t lk_load_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t lk_load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t lk_load_be64(const uint8_t *p)
{
    return ((uint64_t)lk_load_be32(p) << 32) | lk_load_be32(p + 4);
}
static inline void lk_store_be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void lk_store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void lk_store_be64(uint8_t *p, uint64_t v)
{
    lk_store_be32(p, (uint32_t)(v >> 32));
    lk_store_be32(p + 4, (uint32_t)v);
}

/* ------------------------------------------------------------------------------------
 * Varints (batch.c, cleaner.c). Decoding follows Kafka's ByteUtils.readVarint/readVarlong exactly: at most
 * 5 (10) bytes, bits that overflow the final byte are discarded, a sixth (eleventh)
 * continuation byte is an error. Matching Kafka here matters more than strictness:
 * a batch Kafka accepts must not be rejected by us.
 * --------------------------------------------------------------------------------- */
static inline int read_varint_slow(const uint8_t **pp, const uint8_t *end, int32_t *out)
{
    const uint8_t *p = *pp;
    uint32_t value = 0;
    for (int shift = 0; shift <= 28; shift += 7) {
        if (p >= end)
            return 0;
        uint8_t b = *p++;
        value |= (uint32_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int32_t)((value >> 1) ^ (0u - (value & 1)));
            *pp = p;
            return 1;
        }
    }
    return 0;
}

static inline int read_varlong_slow(const uint8_t **pp, const uint8_t *end, int64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t value = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
        if (p >= end)
            return 0;
        uint8_t b = *p++;
        value |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)((value >> 1) ^ (0ull - (value & 1)));
            *pp = p;
            return 1;
        }
    }
    return 0;
}

/* The one- and two-byte forms (-8192..8191: every length and delta of an ordinary record)
 * are decoded inline; anything longer, cut short or malformed goes the general way. */
static inline int read_varint(const uint8_t **pp, const uint8_t *end, int32_t *out)
{
    const uint8_t *p = *pp;
    uint32_t value;
    if (p < end && p[0] < 0x80) {
        value = p[0];
        p += 1;
    } else if (end - p >= 2 && p[1] < 0x80) {
        value = (uint32_t)(p[0] & 0x7f) | (uint32_t)p[1] << 7;
        p += 2;
    } else {
        return read_varint_slow(pp, end, out);
    }
    *out = (int32_t)((value >> 1) ^ (0u - (value & 1)));
    *pp = p;
    return 1;
}

static inline int read_varlong(const uint8_t **pp, const uint8_t *end, int64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t value;
    if (p < end && p[0] < 0x80) {
        value = p[0];
        p += 1;
    } else if (end - p >= 2 && p[1] < 0x80) {
        value = (uint64_t)(p[0] & 0x7f) | (uint64_t)p[1] << 7;
        p += 2;
    } else {
        return read_varlong_slow(pp, end, out);
    }
    *out = (int64_t)((value >> 1) ^ (0ull - (value & 1)));
    *pp = p;
    return 1;
}

static inline uint32_t zigzag32(int32_t v) { return ((uint32_t)v << 1) ^ (uint32_t)(v >> 31); }
static inline uint64_t zigzag64(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static inline int varint_size(int32_t v)
{
    uint32_t z = zigzag32(v);
    int n = 1;
    while (z >= 0x80) {
        z >>= 7;
        n++;
    }
    return n;
}

static inline int varlong_size(int64_t v)
{
    uint64_t z = zigzag64(v);
    int n = 1;
    while (z >= 0x80) {
        z >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *write_varint(uint8_t *p, int32_t v)
{
    uint32_t z = zigzag32(v);
    while (z >= 0x80) {
        *p++ = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    *p++ = (uint8_t)z;
    return p;
}

static inline uint8_t *write_varlong(uint8_t *p, int64_t v)
{
    uint64_t z = zigzag64(v);
    while (z >= 0x80) {
        *p++ = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    *p++ = (uint8_t)z;
    return p;
}

/* Fills *err (if given) and returns code: the one way every function reports failure. */
static inline int lk_fail(lk_error *err, int code, int64_t position, int32_t record_index,
                          const char *what)
{
    if (err) {
        err->code = code;
        err->position = position;
        err->record_index = record_index;
        err->what = what;
    }
    return code;
}

/* Batch header field offsets (see logkernel.h). */
enum {
    LK_OFF_BASE_OFFSET = 0,
    LK_OFF_LENGTH = 8,
    LK_OFF_LEADER_EPOCH = 12,
    LK_OFF_MAGIC = 16,
    LK_OFF_CRC = 17,
    LK_OFF_ATTRIBUTES = 21,
    LK_OFF_LAST_OFFSET_DELTA = 23,
    LK_OFF_BASE_TIMESTAMP = 27,
    LK_OFF_MAX_TIMESTAMP = 35,
    LK_OFF_PRODUCER_ID = 43,
    LK_OFF_PRODUCER_EPOCH = 51,
    LK_OFF_BASE_SEQUENCE = 53,
    LK_OFF_RECORD_COUNT = 57,
    /* batchLength counts from the leader epoch on; a header-only batch has 49. */
    LK_MIN_BATCH_LENGTH = LK_BATCH_HEADER_SIZE - LK_LOG_OVERHEAD
};

/* One record as lk_segment_append_record takes it; batch.c encodes it as a one-record
 * batch (segment.c decides where). Pointers are borrowed; lengths as in logkernel.h. */
typedef struct {
    int64_t offset;
    int64_t timestamp;
    int16_t attributes;
    int32_t partition_leader_epoch;
    const uint8_t *key;
    int32_t key_len;
    const uint8_t *value;
    int32_t value_len;
    const uint8_t *headers;
    int32_t headers_count;
    int32_t headers_len;
    int64_t producer_id;    /* -1, or an idempotent producer's (then epoch and sequence) */
    int16_t producer_epoch;
    int32_t base_sequence;
} lk_one_record;

/* Checks the record's fields (the ARGUMENT cases of lk_segment_append_record) and returns
 * the size of the batch it encodes to, or LK_ERR_ARGUMENT. The size may pass INT32_MAX:
 * the caller compares it with its batch size limit before writing anything. O(headers). */
int64_t lk_one_record_batch_size(const lk_one_record *r);

/* Encodes the record's batch, CRC included, into exactly `size` bytes at out (size as
 * lk_one_record_batch_size returned it, at most INT32_MAX). O(size). */
void lk_one_record_batch_write(const lk_one_record *r, int64_t size, uint8_t *out);

#endif
