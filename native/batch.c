/*
 * batch.c - RecordBatch v2: header parsing, validation, record decoding and encoding.
 *
 * The layouts are in logkernel.h. This file trusts nothing it reads: every length read
 * from a buffer is compared with the bytes that remain before it is used, and record
 * boundaries are computed in 64 bits so that a length near INT32_MAX cannot wrap.
 *
 * Invariants of a batch this file accepts (what lk_batch_validate checks):
 *   1. 12 + batchLength bytes are present, batchLength >= 49, magic == 2.
 *   2. CRC-32C of bytes [21, 12 + batchLength) equals the crc field.
 *   3. (uncompressed, when records are walked) exactly recordsCount records fill the
 *      records section with no byte left over; each record's length prefix covers
 *      exactly its fields; header-key lengths and header counts are >= 0 (negative
 *      key, value and header-value lengths mean null, as Kafka reads them); offset
 *      deltas strictly increase from >= 0, the last one at most lastOffsetDelta (equal
 *      to it when LK_VALIDATE_CONTIGUOUS: compaction may drop a batch's last records).
 *   4. A control batch holds exactly one record.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

const char *lk_status_message(int status)
{
    switch (status) {
    case LK_OK: return "LK_OK: success";
    case LK_ERR_ARGUMENT: return "LK_ERR_ARGUMENT: invalid argument";
    case LK_ERR_TRUNCATED: return "LK_ERR_TRUNCATED: input ends before the structure does";
    case LK_ERR_BAD_LENGTH: return "LK_ERR_BAD_LENGTH: batch length out of range";
    case LK_ERR_BAD_MAGIC: return "LK_ERR_BAD_MAGIC: magic byte is not 2";
    case LK_ERR_CRC: return "LK_ERR_CRC: CRC-32C mismatch";
    case LK_ERR_CORRUPT_RECORD: return "LK_ERR_CORRUPT_RECORD: malformed record";
    case LK_ERR_BUFFER_TOO_SMALL: return "LK_ERR_BUFFER_TOO_SMALL: output buffer too small";
    case LK_ERR_UNSUPPORTED: return "LK_ERR_UNSUPPORTED: not supported here";
    case LK_ERR_IO: return "LK_ERR_IO: system call failed";
    case LK_ERR_NO_SPACE: return "LK_ERR_NO_SPACE: file system full";
    case LK_ERR_SEGMENT_FULL: return "LK_ERR_SEGMENT_FULL: segment capacity reached";
    case LK_ERR_NOT_FOUND: return "LK_ERR_NOT_FOUND: beyond this segment";
    case LK_ERR_NO_MEMORY: return "LK_ERR_NO_MEMORY: out of memory";
    case LK_ERR_OFFSET_ORDER: return "LK_ERR_OFFSET_ORDER: offsets out of order or range";
    case LK_ERR_INDEX_CORRUPT: return "LK_ERR_INDEX_CORRUPT: index file invalid";
    case LK_ERR_CLOSED: return "LK_ERR_CLOSED: segment sealed or closed";
    case LK_ERR_NEEDS_RECOVERY:
        return "LK_ERR_NEEDS_RECOVERY: unrecognised bytes after the last batch; recover first";
    default: return "unknown logkernel status";
    }
}

/* ------------------------------------------------------------------------------------
 * Header
 * --------------------------------------------------------------------------------- */
static void read_header(const uint8_t *buf, lk_batch_header *h)
{
    h->base_offset = (int64_t)lk_load_be64(buf + LK_OFF_BASE_OFFSET);
    h->batch_length = (int32_t)lk_load_be32(buf + LK_OFF_LENGTH);
    h->partition_leader_epoch = (int32_t)lk_load_be32(buf + LK_OFF_LEADER_EPOCH);
    h->magic = (int8_t)buf[LK_OFF_MAGIC];
    h->crc = lk_load_be32(buf + LK_OFF_CRC);
    h->attributes = (int16_t)lk_load_be16(buf + LK_OFF_ATTRIBUTES);
    h->last_offset_delta = (int32_t)lk_load_be32(buf + LK_OFF_LAST_OFFSET_DELTA);
    h->base_timestamp = (int64_t)lk_load_be64(buf + LK_OFF_BASE_TIMESTAMP);
    h->max_timestamp = (int64_t)lk_load_be64(buf + LK_OFF_MAX_TIMESTAMP);
    h->producer_id = (int64_t)lk_load_be64(buf + LK_OFF_PRODUCER_ID);
    h->producer_epoch = (int16_t)lk_load_be16(buf + LK_OFF_PRODUCER_EPOCH);
    h->base_sequence = (int32_t)lk_load_be32(buf + LK_OFF_BASE_SEQUENCE);
    h->record_count = (int32_t)lk_load_be32(buf + LK_OFF_RECORD_COUNT);
}

int lk_batch_parse_header(const uint8_t *buf, size_t len, uint32_t max_batch_size,
                          lk_batch_header *out, lk_error *err)
{
    if (!buf && len)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "buffer is NULL");
    if (len < LK_LOG_OVERHEAD)
        return lk_fail(err, LK_ERR_TRUNCATED, (int64_t)len, -1,
                       "fewer than 12 bytes: no room for baseOffset and batchLength");
    int64_t batch_length = (int32_t)lk_load_be32(buf + LK_OFF_LENGTH);
    int64_t limit = max_batch_size ? (int64_t)max_batch_size : (int64_t)INT32_MAX;
    if (batch_length < LK_MIN_BATCH_LENGTH)
        return lk_fail(err, LK_ERR_BAD_LENGTH, LK_OFF_LENGTH, -1,
                       "batchLength is smaller than a record batch header (49)");
    if (batch_length + LK_LOG_OVERHEAD > limit)
        return lk_fail(err, LK_ERR_BAD_LENGTH, LK_OFF_LENGTH, -1,
                       "batch is larger than the maximum batch size");
    if (len < LK_BATCH_HEADER_SIZE || (uint64_t)(batch_length + LK_LOG_OVERHEAD) > len) {
        /* Magic is checked first when it is present: a v0/v1 message set is a clearer
         * diagnosis than "truncated". */
        if (len > LK_OFF_MAGIC && buf[LK_OFF_MAGIC] != 2)
            return lk_fail(err, LK_ERR_BAD_MAGIC, LK_OFF_MAGIC, -1,
                           "magic is not 2: only RecordBatch v2 is supported");
        return lk_fail(err, LK_ERR_TRUNCATED, (int64_t)len, -1,
                       "the batch extends past the end of the buffer");
    }
    if (buf[LK_OFF_MAGIC] != 2)
        return lk_fail(err, LK_ERR_BAD_MAGIC, LK_OFF_MAGIC, -1,
                       "magic is not 2: only RecordBatch v2 is supported");
    if (out)
        read_header(buf, out);
    return LK_OK;
}

/* ------------------------------------------------------------------------------------
 * Records
 * --------------------------------------------------------------------------------- */

/* Where lk_decode_columns wants the records of one batch: the columns, and what turns a
 * record's deltas into its row. Rows are written from `written` on; the walker only
 * fills rows, the caller decides after the whole batch validated whether they count. */
typedef struct {
    int64_t *offsets;
    int64_t *timestamps;
    int32_t *key_pos, *key_len, *value_pos, *value_len, *headers_pos, *headers_len,
        *headers_count;
    int64_t capacity;
    int64_t written;          /* rows of the columns in use */
    int64_t base_offset;      /* the batch's */
    int64_t min_offset;       /* rows for offsets in [min_offset, max_offset) only */
    int64_t max_offset;
    uint64_t timestamp_base;  /* baseTimestamp, or maxTimestamp for LogAppendTime */
    uint64_t timestamp_mask;  /* all ones, or 0 for LogAppendTime: deltas are ignored */
    int64_t next_offset;      /* raised past every row written */
    int32_t position_bias;    /* where the batch starts in the caller's buffer */
    int control;              /* a control batch: its record is validated, never written */
    int full;                 /* a record wanted a row and found none free */
} column_sink;

/* One validated record, offered to the columns. Positions are relative to the batch. */
static inline void sink_record(column_sink *s, int32_t offset_delta, int64_t timestamp_delta,
                               int32_t key_pos, int32_t key_len, int32_t value_pos,
                               int32_t value_len, int32_t headers_pos, int32_t headers_count,
                               int32_t headers_len)
{
    /* Unsigned: a damaged batch may carry deltas past its lastOffsetDelta (found, and its
     * rows dropped, only after its last record); the sum must not overflow meanwhile. */
    int64_t offset = (int64_t)((uint64_t)s->base_offset + (uint64_t)offset_delta);
    if (offset < s->min_offset || offset >= s->max_offset || s->control || s->full)
        return;
    if (s->written >= s->capacity) {
        s->full = 1;
        return;
    }
    int64_t row = s->written++;
    int32_t bias = s->position_bias;
    s->offsets[row] = offset;
    s->timestamps[row] =
        (int64_t)(s->timestamp_base + ((uint64_t)timestamp_delta & s->timestamp_mask));
    s->key_pos[row] = key_pos + bias;
    s->key_len[row] = key_len;
    s->value_pos[row] = value_pos + bias;
    s->value_len[row] = value_len;
    s->headers_pos[row] = headers_pos + bias;
    s->headers_len[row] = headers_len;
    s->headers_count[row] = headers_count;
    s->next_offset = offset + 1;
}

/* Walks count records in [base + start, base + end). Positions reported in spans and
 * errors are relative to base. contiguous: deltas must be 0..count-1.
 * expected_last: -1 to skip the lastOffsetDelta check. spans and sink may be NULL; a
 * record is handed to either only once it has been checked completely. */
static int walk_records(const uint8_t *base, size_t start, size_t end, int32_t count,
                        int32_t expected_last, int contiguous, lk_record_span *spans,
                        column_sink *sink, lk_error *err)
{
    const uint8_t *p = base + start;
    const uint8_t *const limit = base + end;
    int32_t previous_delta = -1;

    if (count < 0)
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, LK_OFF_RECORD_COUNT, -1,
                       "recordsCount is negative");
    /* Every record takes at least 7 bytes (length, attributes, timestamp delta, offset
     * delta, key length, value length, header count: one byte each). Checking this
     * first turns a hostile count into an error before anything is allocated for it. */
    if ((uint64_t)count * 7 > (uint64_t)(end - start))
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, (int64_t)start, -1,
                       "recordsCount is larger than the records section can hold");

    for (int32_t i = 0; i < count; i++) {
        const uint8_t *record_start = p;
        int32_t length, offset_delta, key_len, value_len, headers_count;
        int64_t timestamp_delta;
        if (!read_varint(&p, limit, &length))
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, record_start - base, i,
                           "record length varint is malformed or cut short");
        if (length < 0 || length > limit - p)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, record_start - base, i,
                           "record length is negative or runs past the records section");
        const uint8_t *const record_end = p + length;
        if (p >= record_end)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                           "record is empty: no attributes byte");
        int8_t attributes = (int8_t)*p++;
        if (!read_varlong(&p, record_end, &timestamp_delta))
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                           "timestampDelta varlong is malformed or runs past the record");
        if (!read_varint(&p, record_end, &offset_delta))
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                           "offsetDelta varint is malformed or runs past the record");
        if (offset_delta <= previous_delta)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                           "offsetDelta does not increase (or is negative)");
        if (contiguous && offset_delta != i)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                           "offsetDelta is not the record's index in the batch");
        previous_delta = offset_delta;
        /* Kafka reads any negative key, value or header-value length as null (only
         * -1 is ever written); spans report null as -1. */
        if (!read_varint(&p, record_end, &key_len) || key_len > record_end - p)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                           "key length is malformed or runs past the record");
        if (key_len < 0)
            key_len = -1;
        const uint8_t *key = p;
        if (key_len > 0)
            p += key_len;
        if (!read_varint(&p, record_end, &value_len) || value_len > record_end - p)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                           "value length is malformed or runs past the record");
        if (value_len < 0)
            value_len = -1;
        const uint8_t *value = p;
        if (value_len > 0)
            p += value_len;
        if (!read_varint(&p, record_end, &headers_count) || headers_count < 0)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                           "header count is malformed or negative");
        const uint8_t *headers = p;
        /* each header takes at least two bytes */
        if ((int64_t)headers_count * 2 > record_end - p)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                           "header count is larger than the record can hold");
        for (int32_t h = 0; h < headers_count; h++) {
            int32_t hk, hv;
            if (!read_varint(&p, record_end, &hk) || hk < 0 || hk > record_end - p)
                return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                               "header key length is malformed, negative, or too long");
            p += hk;
            if (!read_varint(&p, record_end, &hv) || hv > record_end - p)
                return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                               "header value length is malformed or too long");
            if (hv > 0)
                p += hv;
        }
        if (p != record_end)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, i,
                           "record length does not match the fields it holds");
        if (spans) {
            lk_record_span *s = &spans[i];
            s->timestamp_delta = timestamp_delta;
            s->offset_delta = offset_delta;
            s->key_pos = (int32_t)(key - base);
            s->key_len = key_len;
            s->value_pos = (int32_t)(value - base);
            s->value_len = value_len;
            s->headers_pos = (int32_t)(headers - base);
            s->headers_count = headers_count;
            s->headers_len = (int32_t)(record_end - headers);
            s->attributes = attributes;
        }
        if (sink)
            sink_record(sink, offset_delta, timestamp_delta, (int32_t)(key - base), key_len,
                        (int32_t)(value - base), value_len, (int32_t)(headers - base),
                        headers_count, (int32_t)(record_end - headers));
    }
    if (p != limit)
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - base, -1,
                       "bytes are left over after the last record");
    /* A producer's batch ends at lastOffsetDelta; a compacted one may have lost its last
     * records and keeps lastOffsetDelta (Kafka preserves it), so only "past" is wrong. */
    if (expected_last >= 0 && count > 0
        && (contiguous ? previous_delta != expected_last : previous_delta > expected_last))
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, LK_OFF_LAST_OFFSET_DELTA, -1,
                       contiguous ? "lastOffsetDelta does not match the last record's offsetDelta"
                                  : "a record's offsetDelta is past the batch's lastOffsetDelta");
    return LK_OK;
}

static int check_batch(const uint8_t *buf, size_t len, uint32_t max_batch_size, int flags,
                       lk_batch_header *h, lk_error *err)
{
    int rc = lk_batch_parse_header(buf, len, max_batch_size, h, err);
    if (rc != LK_OK)
        return rc;
    size_t size = (size_t)h->batch_length + LK_LOG_OVERHEAD;
    if (flags & LK_VALIDATE_CRC) {
        uint32_t crc = lk_crc32c(0, buf + LK_OFF_ATTRIBUTES, size - LK_OFF_ATTRIBUTES);
        if (crc != h->crc)
            return lk_fail(err, LK_ERR_CRC, LK_OFF_CRC, -1,
                           "CRC-32C of the batch does not match its crc field");
    }
    if (h->record_count < 0)
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, LK_OFF_RECORD_COUNT, -1,
                       "recordsCount is negative");
    if (h->record_count > 0 && h->last_offset_delta < h->record_count - 1)
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, LK_OFF_LAST_OFFSET_DELTA, -1,
                       "lastOffsetDelta is smaller than recordsCount - 1");
    if ((h->attributes & LK_ATTR_CONTROL) && h->record_count != 1)
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, LK_OFF_RECORD_COUNT, -1,
                       "a control batch must hold exactly one record");
    return LK_OK;
}

int lk_batch_validate(const uint8_t *buf, size_t len, uint32_t max_batch_size, int flags,
                      lk_batch_header *out, lk_error *err)
{
    lk_batch_header h;
    int rc = check_batch(buf, len, max_batch_size, flags, &h, err);
    if (rc != LK_OK)
        return rc;
    if ((flags & LK_VALIDATE_RECORDS) && !(h.attributes & LK_ATTR_COMPRESSION_MASK)) {
        rc = walk_records(buf, LK_BATCH_HEADER_SIZE, (size_t)h.batch_length + LK_LOG_OVERHEAD,
                          h.record_count, h.last_offset_delta,
                          (flags & LK_VALIDATE_CONTIGUOUS) != 0, NULL, NULL, err);
        if (rc != LK_OK)
            return rc;
    }
    if (out)
        *out = h;
    return LK_OK;
}

int lk_records_decode(const uint8_t *records, size_t len, int32_t expected_count,
                      int32_t expected_last_offset_delta, lk_record_span *out,
                      size_t out_capacity, lk_error *err)
{
    if ((!records && len) || (!out && expected_count > 0))
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "records or out is NULL");
    if (len > INT32_MAX)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "records section larger than 2 GiB");
    /* The count comes from the batch: one the bytes cannot hold is corrupt data, reported
     * before it is compared with the caller's capacity. */
    if (expected_count < 0 || (uint64_t)expected_count * 7 > len)
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, 0, -1,
                       "recordsCount is negative or larger than the records section can hold");
    if ((size_t)expected_count > out_capacity)
        return lk_fail(err, LK_ERR_BUFFER_TOO_SMALL, 0, -1,
                       "span array is smaller than the record count");
    return walk_records(records, 0, len, expected_count, expected_last_offset_delta, 0, out, NULL,
                        err);
}

int lk_batch_decode(const uint8_t *buf, size_t len, uint32_t max_batch_size,
                    lk_batch_header *header, lk_record_span *out, size_t out_capacity,
                    int32_t *decoded, lk_error *err)
{
    lk_batch_header h;
    if (decoded)
        *decoded = 0;
    int rc = check_batch(buf, len, max_batch_size, LK_VALIDATE_CRC, &h, err);
    if (rc != LK_OK)
        return rc;
    if (header)
        *header = h;
    if (h.attributes & LK_ATTR_COMPRESSION_MASK)
        return LK_OK;
    /* A count the records section cannot hold is the batch's fault, not the caller's:
     * report it as corrupt before comparing it with the span capacity. */
    if ((uint64_t)h.record_count * 7 > (uint64_t)h.batch_length + LK_LOG_OVERHEAD - LK_BATCH_HEADER_SIZE)
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, LK_OFF_RECORD_COUNT, -1,
                       "recordsCount is larger than the records section can hold");
    if ((size_t)h.record_count > out_capacity || (!out && h.record_count > 0))
        return lk_fail(err, LK_ERR_BUFFER_TOO_SMALL, LK_OFF_RECORD_COUNT, -1,
                       "span array is smaller than recordsCount");
    rc = walk_records(buf, LK_BATCH_HEADER_SIZE, (size_t)h.batch_length + LK_LOG_OVERHEAD,
                      h.record_count, h.last_offset_delta, 0, out, NULL, err);
    if (rc == LK_OK && decoded)
        *decoded = h.record_count;
    return rc;
}

int lk_headers_decode(const uint8_t *buf, size_t len, int32_t headers_count,
                      lk_header_span *out, size_t out_capacity, lk_error *err)
{
    const uint8_t *p = buf, *end = buf + len;
    if ((!buf && len) || headers_count < 0 || (!out && headers_count > 0))
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "bad arguments to lk_headers_decode");
    if (len > INT32_MAX)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "headers larger than 2 GiB");
    if ((size_t)headers_count > out_capacity)
        return lk_fail(err, LK_ERR_BUFFER_TOO_SMALL, 0, -1,
                       "span array is smaller than the header count");
    for (int32_t h = 0; h < headers_count; h++) {
        int32_t hk, hv;
        if (!read_varint(&p, end, &hk) || hk < 0 || hk > end - p)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - buf, h,
                           "header key length is malformed, negative, or too long");
        out[h].key_pos = (int32_t)(p - buf);
        out[h].key_len = hk;
        p += hk;
        if (!read_varint(&p, end, &hv) || hv > end - p)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - buf, h,
                           "header value length is malformed or too long");
        out[h].value_pos = (int32_t)(p - buf);
        out[h].value_len = hv < 0 ? -1 : hv;
        if (hv > 0)
            p += hv;
    }
    if (p != end)
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, p - buf, -1,
                       "bytes are left over after the last header");
    return LK_OK;
}

/* ------------------------------------------------------------------------------------
 * Columnar decoding
 * --------------------------------------------------------------------------------- */

int lk_columns_layout(lk_columns *out, void *block, size_t capacity)
{
    if (!out || (!block && capacity) || capacity > SIZE_MAX / LK_COLUMNS_ROW_BYTES ||
        ((uintptr_t)block & 7))
        return LK_ERR_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (capacity == 0)
        return LK_OK;
    uint8_t *p = block;
    out->offsets = (int64_t *)(void *)p;
    p += capacity * sizeof(int64_t);
    out->timestamps = (int64_t *)(void *)p;
    p += capacity * sizeof(int64_t);
    int32_t **int32_columns[] = {&out->key_pos,     &out->key_len,     &out->value_pos,
                                 &out->value_len,   &out->headers_pos, &out->headers_len,
                                 &out->headers_count};
    for (size_t i = 0; i < sizeof int32_columns / sizeof int32_columns[0]; i++) {
        *int32_columns[i] = (int32_t *)(void *)p;
        p += capacity * sizeof(int32_t);
    }
    out->capacity = capacity;
    return LK_OK;
}

int64_t lk_columns_bound(const uint8_t *buf, size_t len)
{
    int64_t rows = 0;
    size_t pos = 0;
    lk_batch_header h;
    while (buf && pos < len && lk_batch_parse_header(buf + pos, len - pos, 0, &h, NULL) == LK_OK) {
        int64_t size = (int64_t)h.batch_length + LK_LOG_OVERHEAD;
        int64_t fit = (size - LK_BATCH_HEADER_SIZE) / 7;
        if (!(h.attributes & (LK_ATTR_COMPRESSION_MASK | LK_ATTR_CONTROL)) && h.record_count > 0)
            rows += h.record_count < fit ? h.record_count : fit;
        pos += (size_t)size;
    }
    return rows;
}

static int columns_usable(const lk_columns *c)
{
    return c->capacity == 0 ||
           (c->offsets && c->timestamps && c->key_pos && c->key_len && c->value_pos &&
            c->value_len && c->headers_pos && c->headers_len && c->headers_count);
}

/* Whether the batch at buf could give rows for [min_offset, max_offset): a whole
 * uncompressed data batch with records whose offsets reach into the range, and room for
 * at least one record (7 bytes) after its header. Header only. A batch that declares
 * records but has no room for one is corrupt, and must be found so: answering FULL for
 * it would send a caller that sizes its columns with lk_columns_bound (0 rows for it)
 * round the same call for ever. */
static int might_have_rows(const uint8_t *buf, size_t len, int64_t min_offset,
                           int64_t max_offset)
{
    lk_batch_header h;
    if (lk_batch_parse_header(buf, len, 0, &h, NULL) != LK_OK || h.record_count <= 0 ||
        (h.attributes & (LK_ATTR_COMPRESSION_MASK | LK_ATTR_CONTROL)) ||
        (int64_t)h.batch_length + LK_LOG_OVERHEAD - LK_BATCH_HEADER_SIZE < 7 ||
        h.last_offset_delta < 0 || h.base_offset > INT64_MAX - h.last_offset_delta)
        return 0;
    return h.base_offset < max_offset && h.base_offset + h.last_offset_delta >= min_offset;
}

/* The walk over batches. Each batch is checked whole before its rows count: the sink
 * writes rows as the walker accepts records, and a batch that then fails takes its rows
 * back (written is reset), so the columns only ever count rows of valid batches. */
int lk_decode_columns(const uint8_t *buf, size_t len, int64_t min_offset, int64_t max_offset,
                      int flags, lk_columns *out, lk_columns_result *result, lk_error *err)
{
    if (result) {
        result->records = 0;
        result->position = 0;
        result->next_offset = min_offset;
        result->stop = LK_COLUMNS_END;
    }
    if (!out || !result || (!buf && len) ||
        (flags & ~(LK_VALIDATE_CRC | LK_VALIDATE_RECORDS | LK_VALIDATE_CONTIGUOUS)))
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1,
                       "out or result is NULL, buf is NULL, or flags has unknown bits");
    if (len > INT32_MAX)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1,
                       "buffer larger than 2 GiB: column positions are int32");
    if (!columns_usable(out))
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "a column pointer is NULL");

    column_sink sink;
    memset(&sink, 0, sizeof sink);
    sink.offsets = out->offsets;
    sink.timestamps = out->timestamps;
    sink.key_pos = out->key_pos;
    sink.key_len = out->key_len;
    sink.value_pos = out->value_pos;
    sink.value_len = out->value_len;
    sink.headers_pos = out->headers_pos;
    sink.headers_len = out->headers_len;
    sink.headers_count = out->headers_count;
    sink.capacity = out->capacity > (size_t)INT64_MAX ? INT64_MAX : (int64_t)out->capacity;
    sink.min_offset = min_offset;
    sink.max_offset = max_offset;
    sink.next_offset = min_offset;
    int contiguous = (flags & LK_VALIDATE_CONTIGUOUS) != 0;
    int stop = LK_COLUMNS_END, rc = LK_OK;
    size_t pos = 0;
    while (pos < len) {
        lk_batch_header h;
        if (sink.written >= sink.capacity && might_have_rows(buf + pos, len - pos, min_offset,
                                                             max_offset)) {
            /* Checked on the header alone: validating a batch only to find no room for
             * it would be repeated in full by the call that resumes here. */
            stop = LK_COLUMNS_FULL;
            break;
        }
        lk_error e = {LK_OK, 0, -1, NULL};
        rc = check_batch(buf + pos, len - pos, 0, flags & LK_VALIDATE_CRC, &h, &e);
        if (rc == LK_OK && (h.last_offset_delta < 0 ||
                            h.base_offset > INT64_MAX - h.last_offset_delta)) {
            rc = lk_fail(&e, LK_ERR_CORRUPT_RECORD, LK_OFF_LAST_OFFSET_DELTA, -1,
                         "lastOffsetDelta is negative or the batch's last offset overflows");
        }
        if (rc == LK_ERR_TRUNCATED) {
            rc = LK_OK;
            stop = LK_COLUMNS_TORN;
            break;
        }
        if (rc != LK_OK) {
            lk_fail(err, rc, (int64_t)pos + e.position, e.record_index, e.what);
            stop = LK_COLUMNS_CORRUPT;
            break;
        }
        int64_t last = h.base_offset + h.last_offset_delta;
        size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
        /* The batch holds offsets the caller does not want yet: stop at it. (A batch below
         * min_offset is passed over even when it is also above max_offset.) */
        int reaches_limit = last >= max_offset && last >= min_offset;
        if ((h.attributes & LK_ATTR_COMPRESSION_MASK) && h.record_count > 0) {
            if (last < min_offset) {
                pos += size; /* nothing wanted in it: no need to decompress */
                continue;
            }
            stop = h.base_offset >= max_offset ? LK_COLUMNS_LIMIT : LK_COLUMNS_COMPRESSED;
            if (stop == LK_COLUMNS_LIMIT && sink.next_offset < max_offset)
                sink.next_offset = max_offset;
            break;
        }
        int64_t written_before = sink.written, next_before = sink.next_offset;
        sink.base_offset = h.base_offset;
        int log_append_time = (h.attributes & LK_ATTR_LOG_APPEND_TIME) != 0;
        sink.timestamp_base = (uint64_t)(log_append_time ? h.max_timestamp : h.base_timestamp);
        sink.timestamp_mask = log_append_time ? 0 : UINT64_MAX;
        sink.position_bias = (int32_t)pos;
        sink.control = (h.attributes & LK_ATTR_CONTROL) != 0;
        sink.full = 0;
        rc = walk_records(buf + pos, LK_BATCH_HEADER_SIZE, size, h.record_count,
                          h.last_offset_delta, contiguous, NULL, &sink, &e);
        if (rc != LK_OK) {
            sink.written = written_before;
            sink.next_offset = next_before;
            lk_fail(err, rc, (int64_t)pos + e.position, e.record_index, e.what);
            stop = LK_COLUMNS_CORRUPT;
            break;
        }
        if (sink.full) {
            stop = LK_COLUMNS_FULL;
            break;
        }
        if (reaches_limit) {
            if (sink.next_offset < max_offset)
                sink.next_offset = max_offset;
            stop = LK_COLUMNS_LIMIT;
            break;
        }
        if (last >= sink.next_offset) /* last < max_offset or < min_offset: no overflow */
            sink.next_offset = last + 1;
        pos += size;
    }
    result->records = sink.written;
    result->position = (int64_t)pos;
    result->next_offset = sink.next_offset;
    result->stop = stop;
    return rc;
}

/* ------------------------------------------------------------------------------------
 * Encoding
 * --------------------------------------------------------------------------------- */

/* Per-record worst case: length 5 + attributes 1 + timestamp delta 10 + offset delta 5
 * + key length 5 + value length 5 + header count 5; each header adds two lengths. */
enum { RECORD_BOUND = 36, HEADER_LENGTH_BOUND = 5 };

int64_t lk_batch_encoded_bound(const lk_records_in *r)
{
    if (!r || r->count < 0)
        return -1;
    return (int64_t)LK_BATCH_HEADER_SIZE + (int64_t)r->count * RECORD_BOUND +
           (int64_t)r->keys_size + (int64_t)r->values_size + (int64_t)r->header_data_size +
           (int64_t)r->header_lengths_count * HEADER_LENGTH_BOUND;
}

/* Checks that the columns describe exactly the bytes they point at, so the encoder can
 * then copy without further checks. */
static int check_columns(const lk_records_in *r, lk_error *err)
{
    if (!r || r->count < 1)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "a batch needs at least one record");
    int64_t keys = 0, values = 0, header_lengths = 0, header_bytes = 0;
    for (int32_t i = 0; i < r->count; i++) {
        if (r->key_lengths) {
            if (r->key_lengths[i] < -1)
                return lk_fail(err, LK_ERR_ARGUMENT, 0, i, "key length below -1");
            if (r->key_lengths[i] > 0)
                keys += r->key_lengths[i];
        }
        if (r->value_lengths) {
            if (r->value_lengths[i] < -1)
                return lk_fail(err, LK_ERR_ARGUMENT, 0, i, "value length below -1");
            if (r->value_lengths[i] > 0)
                values += r->value_lengths[i];
        }
        if (r->offset_deltas &&
            (r->offset_deltas[i] < 0 || (i > 0 && r->offset_deltas[i] <= r->offset_deltas[i - 1])))
            return lk_fail(err, LK_ERR_ARGUMENT, 0, i, "offset deltas must increase from >= 0");
        if (r->header_counts) {
            int32_t n = r->header_counts[i];
            if (n < 0 || (int64_t)n * 2 > (int64_t)r->header_lengths_count - header_lengths)
                return lk_fail(err, LK_ERR_ARGUMENT, 0, i,
                               "header count negative or more than header_lengths holds");
            for (int32_t h = 0; h < n; h++) {
                int32_t hk = r->header_lengths[header_lengths++];
                int32_t hv = r->header_lengths[header_lengths++];
                if (hk < 0 || hv < -1)
                    return lk_fail(err, LK_ERR_ARGUMENT, 0, i,
                                   "header key length negative or value length below -1");
                header_bytes += (int64_t)hk + (hv > 0 ? hv : 0);
            }
        }
    }
    if (keys != (int64_t)r->keys_size || (keys && !r->keys))
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "key lengths do not add up to keys_size");
    if (values != (int64_t)r->values_size || (values && !r->values))
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1,
                       "value lengths do not add up to values_size");
    if (header_lengths != (int64_t)r->header_lengths_count ||
        header_bytes != (int64_t)r->header_data_size || (header_bytes && !r->header_data))
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1,
                       "header lengths do not add up to header_data_size");
    return LK_OK;
}

/* Writes the records section at out; returns bytes written or -1 if it would pass
 * out + capacity. *max_timestamp gets the largest record timestamp. Columns must have
 * passed check_columns. */
static int64_t write_records(const lk_records_in *r, int64_t base_timestamp, uint8_t *out,
                             size_t capacity, int64_t *max_timestamp)
{
    uint8_t *p = out;
    uint8_t *const end = out + capacity;
    const uint8_t *key = r->keys, *value = r->values, *hdata = r->header_data;
    const int32_t *hlen = r->header_lengths;
    int64_t max_ts = INT64_MIN;

    for (int32_t i = 0; i < r->count; i++) {
        int64_t ts = r->timestamps ? r->timestamps[i] : base_timestamp;
        int64_t ts_delta = (int64_t)((uint64_t)ts - (uint64_t)base_timestamp);
        int32_t offset_delta = r->offset_deltas ? r->offset_deltas[i] : i;
        int32_t klen = r->key_lengths ? r->key_lengths[i] : -1;
        int32_t vlen = r->value_lengths ? r->value_lengths[i] : -1;
        int32_t hcount = r->header_counts ? r->header_counts[i] : 0;
        if (ts > max_ts)
            max_ts = ts;

        int64_t body = 1 + varlong_size(ts_delta) + varint_size(offset_delta) +
                       varint_size(klen) + (int64_t)(klen > 0 ? klen : 0) + varint_size(vlen) +
                       (int64_t)(vlen > 0 ? vlen : 0) + varint_size(hcount);
        for (int32_t h = 0; h < hcount; h++) {
            int32_t hk = hlen[2 * h], hv = hlen[2 * h + 1];
            body += varint_size(hk) + (int64_t)hk + varint_size(hv) + (int64_t)(hv > 0 ? hv : 0);
        }
        if (body > INT32_MAX || body + varint_size((int32_t)body) > end - p)
            return -1;
        p = write_varint(p, (int32_t)body);
        *p++ = 0; /* record attributes: unused in v2 */
        p = write_varlong(p, ts_delta);
        p = write_varint(p, offset_delta);
        p = write_varint(p, klen);
        if (klen > 0) {
            memcpy(p, key, (size_t)klen);
            p += klen;
            key += klen;
        }
        p = write_varint(p, vlen);
        if (vlen > 0) {
            memcpy(p, value, (size_t)vlen);
            p += vlen;
            value += vlen;
        }
        p = write_varint(p, hcount);
        for (int32_t h = 0; h < hcount; h++) {
            int32_t hk = *hlen++, hv = *hlen++;
            p = write_varint(p, hk);
            memcpy(p, hdata, (size_t)hk);
            p += hk;
            hdata += hk;
            p = write_varint(p, hv);
            if (hv > 0) {
                memcpy(p, hdata, (size_t)hv);
                p += hv;
                hdata += hv;
            }
        }
    }
    *max_timestamp = max_ts;
    return p - out;
}

static void write_header(uint8_t *out, const lk_batch_params *params, int64_t base_timestamp,
                         int32_t record_count, int32_t last_offset_delta, int64_t max_timestamp,
                         size_t total_size)
{
    lk_store_be64(out + LK_OFF_BASE_OFFSET, (uint64_t)params->base_offset);
    lk_store_be32(out + LK_OFF_LENGTH, (uint32_t)(total_size - LK_LOG_OVERHEAD));
    lk_store_be32(out + LK_OFF_LEADER_EPOCH, (uint32_t)params->partition_leader_epoch);
    out[LK_OFF_MAGIC] = 2;
    lk_store_be16(out + LK_OFF_ATTRIBUTES, (uint16_t)params->attributes);
    lk_store_be32(out + LK_OFF_LAST_OFFSET_DELTA, (uint32_t)last_offset_delta);
    lk_store_be64(out + LK_OFF_BASE_TIMESTAMP, (uint64_t)base_timestamp);
    lk_store_be64(out + LK_OFF_MAX_TIMESTAMP, (uint64_t)max_timestamp);
    lk_store_be64(out + LK_OFF_PRODUCER_ID, (uint64_t)params->producer_id);
    lk_store_be16(out + LK_OFF_PRODUCER_EPOCH, (uint16_t)params->producer_epoch);
    lk_store_be32(out + LK_OFF_BASE_SEQUENCE, (uint32_t)params->base_sequence);
    lk_store_be32(out + LK_OFF_RECORD_COUNT, (uint32_t)record_count);
    uint32_t crc = lk_crc32c(0, out + LK_OFF_ATTRIBUTES, total_size - LK_OFF_ATTRIBUTES);
    lk_store_be32(out + LK_OFF_CRC, crc);
}

static int64_t records_base_timestamp(const lk_records_in *r, int64_t fallback)
{
    return r->timestamps ? r->timestamps[0] : fallback;
}

int lk_records_encode(const lk_records_in *records, int64_t base_timestamp, uint8_t *out,
                      size_t out_capacity, size_t *out_len, lk_error *err)
{
    if (!out || !out_len)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "out or out_len is NULL");
    int rc = check_columns(records, err);
    if (rc != LK_OK)
        return rc;
    int64_t max_ts;
    int64_t n = write_records(records, base_timestamp, out, out_capacity, &max_ts);
    if (n < 0)
        return lk_fail(err, LK_ERR_BUFFER_TOO_SMALL, 0, -1,
                       "output buffer too small: size it with lk_batch_encoded_bound");
    *out_len = (size_t)n;
    return LK_OK;
}

int lk_batch_encode(const lk_batch_params *params, const lk_records_in *records, uint8_t *out,
                    size_t out_capacity, size_t *out_len, lk_error *err)
{
    if (!params || !out || !out_len)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "params, out or out_len is NULL");
    int rc = check_columns(records, err);
    if (rc != LK_OK)
        return rc;
    if (out_capacity < LK_BATCH_HEADER_SIZE)
        return lk_fail(err, LK_ERR_BUFFER_TOO_SMALL, 0, -1, "output buffer too small");
    int64_t base_ts = records_base_timestamp(records, params->base_timestamp);
    int64_t max_ts;
    int64_t n = write_records(records, base_ts, out + LK_BATCH_HEADER_SIZE,
                              out_capacity - LK_BATCH_HEADER_SIZE, &max_ts);
    if (n < 0)
        return lk_fail(err, LK_ERR_BUFFER_TOO_SMALL, 0, -1,
                       "output buffer too small: size it with lk_batch_encoded_bound");
    if (n + LK_BATCH_HEADER_SIZE > INT32_MAX)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "batch would be larger than 2 GiB");
    int32_t last_delta = records->offset_deltas ? records->offset_deltas[records->count - 1]
                                                : records->count - 1;
    size_t total = (size_t)n + LK_BATCH_HEADER_SIZE;
    write_header(out, params, base_ts, records->count, last_delta, max_ts, total);
    *out_len = total;
    return LK_OK;
}

/* ------------------------------------------------------------------------------------
 * One record, one batch (lk_segment_append_record encodes through these, straight into
 * the segment's map). The layout is write_records' for a single record with timestamp
 * delta 0 and offset delta 0, so the bytes equal lk_batch_encode's.
 * --------------------------------------------------------------------------------- */

/* Whether headers[0, len) is exactly `count` headers as lk_batch_encode would write them:
 * key length >= 0, value length >= -1, nothing left over. */
static int headers_well_formed(const uint8_t *headers, int32_t len, int32_t count)
{
    const uint8_t *p = headers, *end = headers + len;
    if ((int64_t)count * 2 > len)
        return 0;
    for (int32_t i = 0; i < count; i++) {
        int32_t hk, hv;
        if (!read_varint(&p, end, &hk) || hk < 0 || hk > end - p)
            return 0;
        p += hk;
        if (!read_varint(&p, end, &hv) || hv < -1 || hv > end - p)
            return 0;
        if (hv > 0)
            p += hv;
    }
    return p == end;
}

/* Bytes of the record after its length varint. */
static int64_t one_record_body(const lk_one_record *r)
{
    return 3 /* attributes, timestampDelta 0, offsetDelta 0: one byte each */ +
           varint_size(r->key_len) + (r->key_len > 0 ? r->key_len : 0) +
           varint_size(r->value_len) + (r->value_len > 0 ? r->value_len : 0) +
           varint_size(r->headers_count) + (int64_t)r->headers_len;
}

int64_t lk_one_record_batch_size(const lk_one_record *r)
{
    if (r->key_len < -1 || r->value_len < -1 || r->headers_count < 0 || r->headers_len < 0 ||
        (!r->key && r->key_len > 0) || (!r->value && r->value_len > 0) ||
        (!r->headers && r->headers_len > 0))
        return LK_ERR_ARGUMENT;
    if (r->attributes & ~(LK_ATTR_LOG_APPEND_TIME | LK_ATTR_TRANSACTIONAL))
        return LK_ERR_ARGUMENT;
    if (r->producer_id < 0 ? (r->attributes & LK_ATTR_TRANSACTIONAL) != 0 ||
                                 r->producer_epoch != -1 || r->base_sequence != -1
                           : r->producer_epoch < 0 || r->base_sequence < 0)
        return LK_ERR_ARGUMENT; /* producer fields all unset, or all set */
    if (r->headers_count > 0 && !headers_well_formed(r->headers, r->headers_len, r->headers_count))
        return LK_ERR_ARGUMENT;
    if (r->headers_count == 0 && r->headers_len != 0)
        return LK_ERR_ARGUMENT;
    int64_t body = one_record_body(r);
    /* A body past INT32_MAX cannot be framed; its size (with the longest length varint)
     * is then only reported, for the caller's BAD_LENGTH. */
    int length_varint = body > INT32_MAX ? 5 : varint_size((int32_t)body);
    return LK_BATCH_HEADER_SIZE + length_varint + body;
}

void lk_one_record_batch_write(const lk_one_record *r, int64_t size, uint8_t *out)
{
    uint8_t *p = out + LK_BATCH_HEADER_SIZE;
    p = write_varint(p, (int32_t)one_record_body(r));
    *p++ = 0; /* record attributes: unused in v2 */
    *p++ = 0; /* timestampDelta 0 (zig-zag varlong) */
    *p++ = 0; /* offsetDelta 0 */
    p = write_varint(p, r->key_len);
    if (r->key_len > 0) {
        memcpy(p, r->key, (size_t)r->key_len);
        p += r->key_len;
    }
    p = write_varint(p, r->value_len);
    if (r->value_len > 0) {
        memcpy(p, r->value, (size_t)r->value_len);
        p += r->value_len;
    }
    p = write_varint(p, r->headers_count);
    if (r->headers_len > 0)
        memcpy(p, r->headers, (size_t)r->headers_len);
    lk_batch_params params = {r->offset, r->partition_leader_epoch, r->attributes,
                              r->timestamp, r->producer_id, r->producer_epoch,
                              r->base_sequence};
    write_header(out, &params, r->timestamp, 1, 0, r->timestamp, (size_t)size);
}

int lk_batch_frame(const lk_batch_params *params, int32_t record_count, int32_t last_offset_delta,
                   int64_t max_timestamp, const uint8_t *records, size_t records_len,
                   uint8_t *out, size_t out_capacity, size_t *out_len, lk_error *err)
{
    if (!params || !out || !out_len || (!records && records_len))
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "a required pointer is NULL");
    if (record_count < 0 || last_offset_delta < (record_count > 0 ? record_count - 1 : 0))
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1,
                       "record_count negative or last_offset_delta < record_count - 1");
    if (records_len > (size_t)INT32_MAX - LK_BATCH_HEADER_SIZE)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "batch would be larger than 2 GiB");
    size_t total = records_len + LK_BATCH_HEADER_SIZE;
    if (out_capacity < total)
        return lk_fail(err, LK_ERR_BUFFER_TOO_SMALL, 0, -1, "output buffer too small");
    if (records_len)
        memmove(out + LK_BATCH_HEADER_SIZE, records, records_len);
    write_header(out, params, params->base_timestamp, record_count, last_offset_delta,
                 max_timestamp, total);
    *out_len = total;
    return LK_OK;
}

int lk_control_batch_encode(const lk_batch_params *params, int16_t control_type,
                            int32_t coordinator_epoch, int64_t timestamp, uint8_t *out,
                            size_t out_capacity, size_t *out_len, lk_error *err)
{
    if (!params || !out || !out_len)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "params, out or out_len is NULL");
    if (control_type != LK_CONTROL_ABORT && control_type != LK_CONTROL_COMMIT)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1,
                       "only ABORT (0) and COMMIT (1) markers are encoded");
    uint8_t key[4], value[6];
    lk_store_be16(key, 0);
    lk_store_be16(key + 2, (uint16_t)control_type);
    lk_store_be16(value, 0);
    lk_store_be32(value + 2, (uint32_t)coordinator_epoch);
    int32_t klen = 4, vlen = 6;
    lk_records_in r;
    memset(&r, 0, sizeof r);
    r.count = 1;
    r.keys = key;
    r.keys_size = sizeof key;
    r.key_lengths = &klen;
    r.values = value;
    r.values_size = sizeof value;
    r.value_lengths = &vlen;
    r.timestamps = &timestamp;
    lk_batch_params p = *params;
    p.attributes = (int16_t)(p.attributes | LK_ATTR_CONTROL | LK_ATTR_TRANSACTIONAL);
    return lk_batch_encode(&p, &r, out, out_capacity, out_len, err);
}

int lk_control_record_parse(const uint8_t *key, int32_t key_len, const uint8_t *value,
                            int32_t value_len, int16_t *control_type,
                            int32_t *coordinator_epoch, lk_error *err)
{
    if (!control_type || !coordinator_epoch)
        return lk_fail(err, LK_ERR_ARGUMENT, 0, -1, "output pointers are NULL");
    if (!key || key_len < 4)
        return lk_fail(err, LK_ERR_CORRUPT_RECORD, 0, 0,
                       "control record key is shorter than 4 bytes (version, type)");
    *control_type = (int16_t)lk_load_be16(key + 2);
    *coordinator_epoch = -1;
    if (*control_type == LK_CONTROL_ABORT || *control_type == LK_CONTROL_COMMIT) {
        if (!value || value_len < 6)
            return lk_fail(err, LK_ERR_CORRUPT_RECORD, 0, 0,
                           "end-transaction marker value is shorter than 6 bytes");
        *coordinator_epoch = (int32_t)lk_load_be32(value + 2);
    }
    return LK_OK;
}

int lk_batch_update_crc(uint8_t *buf, size_t len, lk_error *err)
{
    lk_batch_header h;
    int rc = lk_batch_parse_header(buf, len, 0, &h, err);
    if (rc != LK_OK)
        return rc;
    size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
    lk_store_be32(buf + LK_OFF_CRC, lk_crc32c(0, buf + LK_OFF_ATTRIBUTES, size - LK_OFF_ATTRIBUTES));
    return LK_OK;
}
