/*
 * test_columns.c - lk_decode_columns against a model built from what was encoded.
 *
 * A random log is a run of batches: data batches (null, empty and random keys, values
 * and headers; contiguous or gapped offset deltas; CreateTime or LogAppendTime), control
 * batches, empty (header-only) batches and compressed batches, with offset gaps between
 * them. The model knows every record's offset, timestamp and bytes; the decoder's rows
 * are checked by content (the bytes at key_pos, value_pos, headers_pos), so positions are
 * checked without trusting the shared record walker. A driver resumes after FULL (at
 * position, from next_offset) and after COMPRESSED (past the batch, as a caller that
 * decompressed it would), so every capacity must give the same rows. Then: min and max
 * offsets inside batches, every cut of the buffer (TORN or END with the whole-batch
 * prefix), a byte flipped in each batch (CRC error, good prefix kept), random damage
 * (no out-of-bounds read under ASan; rows always inside the buffer), and the arguments.
 *
 * With --bench, measures records/s for 100-byte values in 1-record and 1000-record
 * batches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logkernel.h"

#include "check.h"
#include "support.h"


/* ------------------------------------------------------------------------------------
 * The log and its model
 * --------------------------------------------------------------------------------- */

enum { KIND_DATA, KIND_CONTROL, KIND_EMPTY, KIND_COMPRESSED };
enum { MAX_RECORDS = 40, MAX_BATCHES = 400, POOL = 1 << 14 };

typedef struct {
    int64_t offset, timestamp;
    const uint8_t *key, *value; /* into the pools; NULL with length -1 for null */
    int32_t key_len, value_len;
    int32_t headers_count;
    uint8_t headers[64];        /* the headers section as the encoder must write it */
    int32_t headers_len;
} model_record;

typedef struct {
    int kind;
    int64_t position, size, base, last;
    int32_t count;
    model_record *records;      /* data batches only */
} model_batch;

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    model_batch batches[MAX_BATCHES];
    int n;
} log_model;

static uint8_t key_pool[POOL], value_pool[POOL];

static uint8_t *put_varint(uint8_t *p, int32_t v)
{
    uint32_t z = ((uint32_t)v << 1) ^ (uint32_t)(v >> 31);
    while (z >= 0x80) {
        *p++ = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    *p++ = (uint8_t)z;
    return p;
}

static void random_bytes(const uint8_t *pool, const uint8_t **data, int32_t *len, int32_t max)
{
    uint32_t kind = rnd_below(6);
    if (kind == 0) {
        *data = NULL;
        *len = -1;
    } else if (kind == 1) {
        *data = pool;
        *len = 0;
    } else {
        *len = (int32_t)rnd_below((uint32_t)max + 1);
        *data = pool + rnd_below(POOL - (uint32_t)max);
    }
}

static void append_bytes(log_model *m, const uint8_t *p, size_t n)
{
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->buf = realloc(m->buf, m->cap);
    }
    memcpy(m->buf + m->len, p, n);
    m->len += n;
}

/* A data batch of `count` random records at offset base. */
static void add_data_batch(log_model *m, int64_t base, int32_t count, int gapped, int log_append_time)
{
    static uint8_t keys[MAX_RECORDS * 300], values[MAX_RECORDS * 300], hdata[MAX_RECORDS * 64];
    static int32_t klen[MAX_RECORDS], vlen[MAX_RECORDS], deltas[MAX_RECORDS], hcounts[MAX_RECORDS],
        hlens[MAX_RECORDS * 4];
    static int64_t ts[MAX_RECORDS];
    static uint8_t out[1 << 16];
    model_batch *b = &m->batches[m->n++];
    b->kind = KIND_DATA;
    b->records = calloc((size_t)count, sizeof *b->records);
    b->count = count;
    size_t kpos = 0, vpos = 0, hpos = 0, hl = 0;
    int32_t delta = 0;
    int64_t max_ts = INT64_MIN, base_ts = 0;
    for (int32_t i = 0; i < count; i++) {
        model_record *r = &b->records[i];
        random_bytes(key_pool, &r->key, &r->key_len, 40);
        random_bytes(value_pool, &r->value, &r->value_len, 250);
        klen[i] = r->key_len;
        vlen[i] = r->value_len;
        if (r->key_len > 0)
            memcpy(keys + kpos, r->key, (size_t)r->key_len);
        kpos += r->key_len > 0 ? (size_t)r->key_len : 0;
        if (r->value_len > 0)
            memcpy(values + vpos, r->value, (size_t)r->value_len);
        vpos += r->value_len > 0 ? (size_t)r->value_len : 0;
        deltas[i] = delta;
        r->offset = base + delta;
        delta += gapped ? 1 + (int32_t)rnd_below(3) : 1;
        ts[i] = rnd_below(5) == 0 ? -1 : 1700000000000LL + (int64_t)rnd_below(100000) - 50000;
        if (i == 0)
            base_ts = ts[0];
        if (ts[i] > max_ts)
            max_ts = ts[i];
        r->timestamp = ts[i];
        r->headers_count = rnd_below(3) == 0 ? (int32_t)rnd_below(3) : 0;
        hcounts[i] = r->headers_count;
        uint8_t *s = r->headers;
        for (int32_t h = 0; h < r->headers_count; h++) {
            int32_t hk = (int32_t)rnd_below(6), hv = (int32_t)rnd_below(8) - 1;
            hlens[hl++] = hk;
            hlens[hl++] = hv;
            s = put_varint(s, hk);
            for (int32_t j = 0; j < hk; j++)
                *s++ = hdata[hpos++] = (uint8_t)('a' + rnd_below(26));
            s = put_varint(s, hv);
            for (int32_t j = 0; j < hv; j++)
                *s++ = hdata[hpos++] = (uint8_t)rnd();
        }
        r->headers_len = (int32_t)(s - r->headers);
    }
    (void)base_ts;
    if (log_append_time)
        for (int32_t i = 0; i < count; i++)
            b->records[i].timestamp = max_ts;
    lk_records_in in;
    memset(&in, 0, sizeof in);
    in.count = count;
    in.keys = keys;
    in.keys_size = kpos;
    in.key_lengths = klen;
    in.values = values;
    in.values_size = vpos;
    in.value_lengths = vlen;
    in.timestamps = ts;
    in.offset_deltas = deltas;
    in.header_counts = hcounts;
    in.header_lengths = hlens;
    in.header_lengths_count = hl;
    in.header_data = hdata;
    in.header_data_size = hpos;
    lk_batch_params p = {base, 3, (int16_t)(log_append_time ? LK_ATTR_LOG_APPEND_TIME : 0), 0,
                         -1, -1, -1};
    size_t n = 0;
    REQUIRE_OK(lk_batch_encode(&p, &in, out, sizeof out, &n, NULL));
    b->position = (int64_t)m->len;
    b->size = (int64_t)n;
    b->base = base;
    b->last = base + deltas[count - 1];
    append_bytes(m, out, n);
}

static void add_other_batch(log_model *m, int kind, int64_t base)
{
    uint8_t out[512];
    size_t n = 0;
    model_batch *b = &m->batches[m->n++];
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->base = base;
    lk_batch_params p = {base, 0, 0, 1234, 77, 1, -1};
    if (kind == KIND_CONTROL) {
        REQUIRE_OK(lk_control_batch_encode(&p, (int16_t)rnd_below(2), 5, 999, out, sizeof out, &n,
                                           NULL));
        b->last = base;
        b->count = 1;
    } else if (kind == KIND_EMPTY) {
        /* What compaction leaves when it removes every record of a batch whose producer
         * state must be kept: a header, recordsCount 0, the old lastOffsetDelta. */
        int32_t last_delta = (int32_t)rnd_below(4);
        REQUIRE_OK(lk_batch_frame(&p, 0, last_delta, 1234, NULL, 0, out, sizeof out, &n, NULL));
        b->last = base + last_delta;
    } else {
        /* A "compressed" batch: the decoder never looks inside, so any payload will do. */
        uint8_t payload[40];
        for (size_t i = 0; i < sizeof payload; i++)
            payload[i] = (uint8_t)rnd();
        int32_t count = 1 + (int32_t)rnd_below(5);
        p.attributes = (int16_t)(1 + rnd_below(4));
        REQUIRE_OK(lk_batch_frame(&p, count, count - 1, 1234, payload, sizeof payload, out,
                                  sizeof out, &n, NULL));
        b->last = base + count - 1;
        b->count = count;
    }
    b->position = (int64_t)m->len;
    b->size = (int64_t)n;
    append_bytes(m, out, n);
}

static void build_log(log_model *m, int batches, int64_t first_offset, int with_compressed)
{
    memset(m, 0, sizeof *m);
    int64_t next = first_offset;
    for (int i = 0; i < batches && m->n < MAX_BATCHES; i++) {
        int64_t base = next + (rnd_below(5) == 0 ? (int64_t)rnd_below(4) : 0);
        uint32_t k = rnd_below(20);
        if (k == 0)
            add_other_batch(m, KIND_CONTROL, base);
        else if (k == 1)
            add_other_batch(m, KIND_EMPTY, base);
        else if (k == 2 && with_compressed)
            add_other_batch(m, KIND_COMPRESSED, base);
        else
            add_data_batch(m, base, 1 + (int32_t)rnd_below(k < 10 ? 3 : MAX_RECORDS),
                           rnd_below(4) == 0, rnd_below(5) == 0);
        next = m->batches[m->n - 1].last + 1;
    }
}

static void free_log(log_model *m)
{
    for (int i = 0; i < m->n; i++)
        free(m->batches[i].records);
    free(m->buf);
}

/* ------------------------------------------------------------------------------------
 * Rows: what the decoder (through the driver) gives, and what the model expects. A
 * compressed batch handed back to the caller is a marker row (offset = its base).
 * --------------------------------------------------------------------------------- */

typedef struct {
    int64_t offset, timestamp;
    int compressed_marker;
    const model_record *expected; /* model rows only */
    int32_t key_pos, key_len, value_pos, value_len, headers_pos, headers_len, headers_count;
} row;

typedef struct {
    row *rows;
    size_t n, cap;
    int stop;          /* the driver's final stop */
    int rc;            /* the final return code */
    int64_t next_offset, position;
    lk_error err;
} run;

static void push(run *r, row x)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->rows = realloc(r->rows, r->cap * sizeof *r->rows);
    }
    r->rows[r->n++] = x;
}

/* The model's rows for the first `batches` batches of m, reading [min, max). */
static void expect(const log_model *m, int batches, int64_t min, int64_t max, run *out)
{
    memset(out, 0, sizeof *out);
    int64_t next = min;
    out->stop = LK_COLUMNS_END;
    for (int i = 0; i < batches; i++) {
        const model_batch *b = &m->batches[i];
        if (b->kind == KIND_COMPRESSED) {
            if (b->last < min)
                continue;
            if (b->base >= max) {
                out->stop = LK_COLUMNS_LIMIT;
                if (next < max)
                    next = max;
                break;
            }
            row x;
            memset(&x, 0, sizeof x);
            x.offset = b->base;
            x.compressed_marker = 1;
            push(out, x);
            if (b->last >= max) { /* the caller that decompressed it meets the limit */
                out->stop = LK_COLUMNS_LIMIT;
                if (next < max)
                    next = max;
                break;
            }
            if (b->last >= next)
                next = b->last + 1;
            continue;
        }
        for (int32_t k = 0; b->kind == KIND_DATA && k < b->count; k++) {
            const model_record *r = &b->records[k];
            if (r->offset < min || r->offset >= max)
                continue;
            row x;
            memset(&x, 0, sizeof x);
            x.offset = r->offset;
            x.timestamp = r->timestamp;
            x.expected = r;
            push(out, x);
            next = r->offset + 1;
        }
        if (b->last >= max && b->last >= min) {
            out->stop = LK_COLUMNS_LIMIT;
            if (next < max)
                next = max;
            break;
        }
        if (b->last >= next)
            next = b->last + 1;
    }
    out->next_offset = next;
}

/* Column storage of one call. */
typedef struct {
    int64_t offsets[4096], timestamps[4096];
    int32_t key_pos[4096], key_len[4096], value_pos[4096], value_len[4096], headers_pos[4096],
        headers_len[4096], headers_count[4096];
} column_store;

static column_store store;

static lk_columns columns_of(size_t capacity)
{
    lk_columns c = {store.offsets,     store.timestamps,  store.key_pos,
                    store.key_len,     store.value_pos,   store.value_len,
                    store.headers_pos, store.headers_len, store.headers_count,
                    capacity};
    return c;
}

/* Decodes buf[0, len) completely, resuming after FULL and COMPRESSED like a consumer. */
static void drive(const uint8_t *buf, size_t len, int64_t min, int64_t max, size_t capacity,
                  int flags, run *out)
{
    memset(out, 0, sizeof *out);
    size_t at = 0;
    int64_t from = min;
    for (int calls = 0;; calls++) {
        lk_columns c = columns_of(capacity);
        lk_columns_result res;
        lk_error err = {LK_OK, 0, -1, NULL};
        int rc = lk_decode_columns(buf + at, len - at, from, max, flags, &c, &res, &err);
        CHECK(res.records >= 0 && (size_t)res.records <= capacity);
        CHECK(res.position >= 0 && (size_t)res.position <= len - at);
        CHECK(res.next_offset >= from);
        for (int64_t i = 0; i < res.records; i++) {
            row x;
            memset(&x, 0, sizeof x);
            x.offset = store.offsets[i];
            x.timestamp = store.timestamps[i];
            /* positions made relative to the whole buffer */
            x.key_pos = store.key_pos[i] + (int32_t)at;
            x.key_len = store.key_len[i];
            x.value_pos = store.value_pos[i] + (int32_t)at;
            x.value_len = store.value_len[i];
            x.headers_pos = store.headers_pos[i] + (int32_t)at;
            x.headers_len = store.headers_len[i];
            x.headers_count = store.headers_count[i];
            /* every span inside the buffer, whatever the bytes were */
            CHECK(x.key_len >= -1 && x.value_len >= -1 && x.headers_len >= 0);
            CHECK(x.key_pos >= 0 && (size_t)x.key_pos + (size_t)(x.key_len > 0 ? x.key_len : 0) <= len);
            CHECK(x.value_pos >= 0 &&
                  (size_t)x.value_pos + (size_t)(x.value_len > 0 ? x.value_len : 0) <= len);
            CHECK(x.headers_pos >= 0 && (size_t)x.headers_pos + (size_t)x.headers_len <= len);
            push(out, x);
        }
        out->rc = rc;
        out->stop = res.stop;
        out->next_offset = res.next_offset;
        out->position = (int64_t)at + res.position;
        out->err = err;
        if (rc != LK_OK) {
            CHECK_EQ(res.stop, LK_COLUMNS_CORRUPT);
            out->err.position += (int64_t)at;
            return;
        }
        if (res.stop == LK_COLUMNS_FULL) {
            CHECK_EQ(res.records, (int64_t)capacity);
            if (capacity == 0)
                return; /* would never finish */
            at += (size_t)res.position;
            from = res.next_offset;
            continue;
        }
        if (res.stop == LK_COLUMNS_COMPRESSED) {
            lk_batch_header h;
            REQUIRE_OK(lk_batch_parse_header(buf + at + res.position, len - at - (size_t)res.position,
                                             0, &h, NULL));
            row x;
            memset(&x, 0, sizeof x);
            x.offset = h.base_offset;
            x.compressed_marker = 1;
            push(out, x);
            int64_t last = h.base_offset + h.last_offset_delta;
            if (last >= max) {
                out->stop = LK_COLUMNS_LIMIT;
                out->next_offset = res.next_offset > max ? res.next_offset : max;
                return;
            }
            at += (size_t)res.position + (size_t)h.batch_length + LK_LOG_OVERHEAD;
            from = res.next_offset > last + 1 ? res.next_offset : last + 1;
            continue;
        }
        return;
    }
}

static int same_rows(const run *got, const run *want, const uint8_t *buf)
{
    int ok = got->n == want->n;
    CHECK_EQ(got->n, want->n);
    for (size_t i = 0; ok && i < want->n; i++) {
        const row *g = &got->rows[i], *w = &want->rows[i];
        int same = g->offset == w->offset && g->compressed_marker == w->compressed_marker;
        const model_record *r = w->expected;
        if (same && r) {
            same = g->timestamp == r->timestamp && g->key_len == r->key_len &&
                   g->value_len == r->value_len && g->headers_count == r->headers_count &&
                   g->headers_len == r->headers_len &&
                   (r->key_len <= 0 || memcmp(buf + g->key_pos, r->key, (size_t)r->key_len) == 0) &&
                   (r->value_len <= 0 ||
                    memcmp(buf + g->value_pos, r->value, (size_t)r->value_len) == 0) &&
                   memcmp(buf + g->headers_pos, r->headers, (size_t)r->headers_len) == 0;
        }
        if (!same) {
            fprintf(stderr, "row %zu differs: offset %lld vs %lld\n", i, (long long)g->offset,
                    (long long)w->offset);
            ok = 0;
        }
    }
    CHECK(ok);
    return ok;
}

/* ------------------------------------------------------------------------------------
 * Tests
 * --------------------------------------------------------------------------------- */

static void test_against_model(void)
{
    static const size_t capacities[] = {1, 2, 3, 7, 40, 41, 4096};
    for (int round = 0; round < 60; round++) {
        log_model m;
        build_log(&m, 1 + (int)rnd_below(round < 10 ? 5 : 120), (int64_t)rnd_below(1000),
                  round % 3 != 0);
        int64_t first = m.batches[0].base, end = m.batches[m.n - 1].last + 1;
        int64_t bounds[][2] = {
            {0, INT64_MAX},
            {first + (int64_t)rnd_below((uint32_t)(end - first + 1)), INT64_MAX},
            {0, first + (int64_t)rnd_below((uint32_t)(end - first + 1))},
            {first + (int64_t)rnd_below((uint32_t)(end - first + 1)),
             first + (int64_t)rnd_below((uint32_t)(end - first + 1))},
            {end, INT64_MAX},
            {INT64_MIN, 0},
        };
        int64_t data_records = 0;
        for (int i = 0; i < m.n; i++)
            data_records += m.batches[i].kind == KIND_DATA ? m.batches[i].count : 0;
        CHECK_EQ(lk_columns_bound(m.buf, m.len), data_records);
        for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
            run want;
            expect(&m, m.n, bounds[b][0], bounds[b][1], &want);
            for (size_t c = 0; c < sizeof capacities / sizeof capacities[0]; c++) {
                int flags = c % 2 ? LK_VALIDATE_CRC : 0;
                run got;
                drive(m.buf, m.len, bounds[b][0], bounds[b][1], capacities[c], flags, &got);
                CHECK_EQ(got.rc, LK_OK);
                CHECK_EQ(got.stop, want.stop);
                CHECK_EQ(got.next_offset, want.next_offset);
                if (got.stop == LK_COLUMNS_END)
                    CHECK_EQ(got.position, (int64_t)m.len);
                same_rows(&got, &want, m.buf);
                free(got.rows);
            }
            free(want.rows);
        }
        free_log(&m);
    }
}

/* Every cut of a log: the rows of the whole batches before the cut; TORN unless the cut
 * falls on a batch boundary. */
static void test_cuts(void)
{
    for (int round = 0; round < 6; round++) {
        log_model m;
        build_log(&m, 8, 50, 1);
        int whole = 0;
        for (size_t cut = 0; cut <= m.len; cut++) {
            while (whole < m.n &&
                   (size_t)(m.batches[whole].position + m.batches[whole].size) <= cut)
                whole++;
            int boundary = whole == m.n || (size_t)m.batches[whole].position == cut;
            run want, got;
            expect(&m, whole, 0, INT64_MAX, &want);
            /* a copy of exactly `cut` bytes, so ASan sees any read past the cut */
            uint8_t *copy = malloc(cut ? cut : 1);
            memcpy(copy, m.buf, cut);
            drive(copy, cut, 0, INT64_MAX, 4096, LK_VALIDATE_CRC, &got);
            CHECK_EQ(got.rc, LK_OK);
            CHECK_EQ(got.stop, boundary ? want.stop : LK_COLUMNS_TORN);
            if (!boundary)
                CHECK_EQ(got.position, m.batches[whole].position);
            same_rows(&got, &want, copy);
            free(copy);
            free(got.rows);
            free(want.rows);
        }
        free_log(&m);
    }
}

/* A byte flipped anywhere the CRC covers: LK_ERR_CRC at that batch's crc field, and the
 * rows of the batches before it. */
static void test_flipped_bytes(void)
{
    log_model m;
    build_log(&m, 40, 0, 1);
    for (int k = 0; k < m.n; k++) {
        const model_batch *b = &m.batches[k];
        size_t at = (size_t)b->position + 21 + rnd_below((uint32_t)b->size - 21);
        uint8_t saved = m.buf[at];
        m.buf[at] ^= (uint8_t)(1u << rnd_below(8));
        run want, got;
        expect(&m, k, 0, INT64_MAX, &want);
        drive(m.buf, m.len, 0, INT64_MAX, 1 + rnd_below(60), LK_VALIDATE_CRC, &got);
        /* a compressed batch is CRC-checked before it is reported as COMPRESSED */
        CHECK_EQ(got.rc, LK_ERR_CRC);
        CHECK_EQ(got.stop, LK_COLUMNS_CORRUPT);
        CHECK_EQ(got.err.position, b->position + 17);
        CHECK_EQ(got.position, b->position);
        same_rows(&got, &want, m.buf);
        free(got.rows);
        free(want.rows);
        m.buf[at] = saved;
    }
    free_log(&m);
}

/* Random damage, decoded with and without CRC checks: never a read outside the buffer
 * (ASan), rows always inside it (drive checks), and a failure is a stop, never a crash. */
static void test_damage(void)
{
    for (int round = 0; round < 300; round++) {
        log_model m;
        build_log(&m, 10, 0, 1);
        int flips = 1 + (int)rnd_below(6);
        for (int f = 0; f < flips; f++)
            m.buf[rnd_below((uint32_t)m.len)] = (uint8_t)rnd();
        run got;
        for (int flags = 0; flags <= LK_VALIDATE_CRC; flags += LK_VALIDATE_CRC) {
            drive(m.buf, m.len, 0, INT64_MAX, 1 + rnd_below(50), flags, &got);
            if (got.rc != LK_OK)
                CHECK(got.err.position >= got.position && got.err.position <= (int64_t)m.len);
            free(got.rows);
        }
        free_log(&m);
    }
}

static void test_arguments(void)
{
    uint8_t buf[128];
    size_t n = 0;
    lk_batch_params p = {0, 0, 0, 0, -1, -1, -1};
    REQUIRE_OK(lk_control_batch_encode(&p, 1, 0, 0, buf, sizeof buf, &n, NULL));
    lk_columns c = columns_of(10);
    lk_columns_result r;
    lk_error e;
    CHECK_EQ(lk_decode_columns(NULL, 5, 0, 10, 0, &c, &r, &e), LK_ERR_ARGUMENT);
    CHECK_EQ(r.next_offset, 0);
    CHECK_EQ(lk_decode_columns(buf, n, 7, 10, 0, NULL, &r, &e), LK_ERR_ARGUMENT);
    CHECK_EQ(r.next_offset, 7);
    CHECK_EQ(lk_decode_columns(buf, n, 0, 10, 0, &c, NULL, &e), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_decode_columns(buf, n, 0, 10, 64, &c, &r, &e), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_decode_columns(buf, (size_t)INT32_MAX + 1, 0, 10, 0, &c, &r, &e), LK_ERR_ARGUMENT);
    lk_columns missing = c;
    missing.headers_count = NULL;
    CHECK_EQ(lk_decode_columns(buf, n, 0, 10, 0, &missing, &r, &e), LK_ERR_ARGUMENT);
    missing.capacity = 0; /* no rows to write: NULL columns are fine */
    CHECK_EQ(lk_decode_columns(buf, n, 0, 10, 0, &missing, &r, NULL), LK_OK);
    CHECK_EQ(r.stop, LK_COLUMNS_END); /* a control batch needs no row */
    CHECK_EQ(r.next_offset, 1);
    CHECK_EQ(lk_decode_columns(buf, n - 1, 0, 10, 0, &missing, &r, NULL), LK_OK);
    CHECK_EQ(r.stop, LK_COLUMNS_TORN); /* nor does a torn one */
    uint8_t data[128];
    size_t dn = 0;
    lk_records_in one;
    memset(&one, 0, sizeof one);
    one.count = 3;
    p.base_offset = 5;
    REQUIRE_OK(lk_batch_encode(&p, &one, data, sizeof data, &dn, NULL));
    CHECK_EQ(lk_decode_columns(data, dn, 0, 10, 0, &missing, &r, NULL), LK_OK);
    CHECK_EQ(r.stop, LK_COLUMNS_FULL); /* a data batch does, judged from its header */
    CHECK_EQ(r.position, 0);
    CHECK_EQ(lk_decode_columns(data, dn, 8, 10, 0, &missing, &r, NULL), LK_OK);
    CHECK_EQ(r.stop, LK_COLUMNS_END); /* ... unless all its offsets are below min_offset */
    CHECK_EQ(r.next_offset, 8);
    CHECK_EQ(lk_decode_columns(data, dn, 0, 5, 0, &missing, &r, NULL), LK_OK);
    CHECK_EQ(r.stop, LK_COLUMNS_LIMIT); /* ... or at or above max_offset */
    CHECK_EQ(r.next_offset, 5);
    CHECK_EQ(lk_columns_bound(data, dn), 3);
    /* A header that declares records with no room for one after it: CORRUPT whatever the
     * capacity, never FULL, which would send a caller sizing its columns by the bound (0
     * rows here) round the same call for ever. */
    uint8_t header_only[LK_BATCH_HEADER_SIZE];
    memcpy(header_only, data, sizeof header_only);
    header_only[8] = 0, header_only[9] = 0, header_only[10] = 0;
    header_only[11] = LK_BATCH_HEADER_SIZE - LK_LOG_OVERHEAD; /* batchLength: the header alone */
    REQUIRE_OK(lk_batch_update_crc(header_only, sizeof header_only, NULL));
    CHECK_EQ(lk_columns_bound(header_only, sizeof header_only), 0);
    CHECK(lk_decode_columns(header_only, sizeof header_only, 0, 10, LK_VALIDATE_CRC, &missing,
                            &r, NULL) != LK_OK);
    CHECK_EQ(r.stop, LK_COLUMNS_CORRUPT);
    CHECK_EQ(lk_columns_bound(buf, n), 0); /* control batches give no rows */
    CHECK_EQ(lk_columns_bound(NULL, 5), 0);
    CHECK_EQ(lk_decode_columns(NULL, 0, 3, 10, 0, &missing, &r, NULL), LK_OK);
    CHECK_EQ(r.stop, LK_COLUMNS_END);
    CHECK_EQ(r.next_offset, 3);
    /* a control batch alone: no rows, its offset consumed */
    CHECK_EQ(lk_decode_columns(buf, n, 0, INT64_MAX, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS |
                                                         LK_VALIDATE_CONTIGUOUS,
                               &c, &r, NULL),
             LK_OK);
    CHECK_EQ(r.records, 0);
    CHECK_EQ(r.next_offset, 1);
    CHECK_EQ(r.stop, LK_COLUMNS_END);

    /* lk_columns_layout */
    static uint64_t block[11 * 8];
    lk_columns l;
    REQUIRE_OK(lk_columns_layout(&l, block, 16));
    CHECK((uint8_t *)l.offsets == (uint8_t *)block);
    CHECK((uint8_t *)l.timestamps == (uint8_t *)block + 16 * 8);
    CHECK((uint8_t *)l.key_pos == (uint8_t *)block + 32 * 8);
    CHECK((uint8_t *)l.headers_count == (uint8_t *)block + 32 * 8 + 6 * 16 * 4);
    CHECK((uint8_t *)(l.headers_count + 16) == (uint8_t *)block + 16 * LK_COLUMNS_ROW_BYTES);
    CHECK_EQ(l.capacity, 16);
    CHECK_EQ(lk_columns_layout(&l, NULL, 0), LK_OK);
    CHECK(l.offsets == NULL && l.capacity == 0);
    CHECK_EQ(lk_columns_layout(NULL, block, 1), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_columns_layout(&l, NULL, 1), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_columns_layout(&l, (uint8_t *)block + 4, 1), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_columns_layout(&l, block, SIZE_MAX / LK_COLUMNS_ROW_BYTES + 1), LK_ERR_ARGUMENT);
}

/* Batch-level corruption the CRC does not cover, and the one the contract adds. */
static void test_header_damage(void)
{
    uint8_t buf[256];
    size_t n = 0;
    lk_batch_params p = {INT64_MAX - 1, 0, 0, 0, -1, -1, -1};
    lk_records_in in;
    memset(&in, 0, sizeof in);
    in.count = 2; /* offsets INT64_MAX - 1 and INT64_MAX: the last one exists, +1 does not */
    REQUIRE_OK(lk_batch_encode(&p, &in, buf, sizeof buf, &n, NULL));
    lk_columns c = columns_of(10);
    lk_columns_result r;
    lk_error e;
    CHECK_EQ(lk_decode_columns(buf, n, 0, INT64_MAX, LK_VALIDATE_CRC, &c, &r, &e), LK_OK);
    CHECK_EQ(r.records, 1); /* INT64_MAX itself is never below max_offset */
    CHECK_EQ(r.stop, LK_COLUMNS_LIMIT);
    CHECK_EQ(r.next_offset, INT64_MAX);
    p.base_offset = INT64_MAX;
    REQUIRE_OK(lk_batch_encode(&p, &in, buf, sizeof buf, &n, NULL));
    CHECK_EQ(lk_decode_columns(buf, n, 0, INT64_MAX, LK_VALIDATE_CRC, &c, &r, &e),
             LK_ERR_CORRUPT_RECORD);
    CHECK_EQ(r.stop, LK_COLUMNS_CORRUPT);
    CHECK_EQ(e.position, 23);
    /* Record deltas past lastOffsetDelta near INT64_MAX: found corrupt after the last
     * record, and (UBSan) no signed overflow on the way. */
    int32_t deltas[2] = {0, 100};
    in.offset_deltas = deltas;
    p.base_offset = INT64_MAX - 1;
    CHECK_EQ(lk_batch_encode(&p, &in, buf, sizeof buf, &n, NULL), LK_OK);
    buf[23] = buf[24] = buf[25] = 0;
    buf[26] = 1; /* lastOffsetDelta 1 */
    REQUIRE_OK(lk_batch_update_crc(buf, n, NULL));
    CHECK_EQ(lk_decode_columns(buf, n, INT64_MIN, INT64_MAX, LK_VALIDATE_CRC, &c, &r, &e),
             LK_ERR_CORRUPT_RECORD);
    CHECK_EQ(r.records, 0);
    CHECK_EQ(e.position, 23);
    in.offset_deltas = NULL;
    /* magic 1 */
    p.base_offset = 0;
    REQUIRE_OK(lk_batch_encode(&p, &in, buf, sizeof buf, &n, NULL));
    memcpy(buf + n, buf, n);
    buf[n + 16] = 1;
    CHECK_EQ(lk_decode_columns(buf, 2 * n, 0, INT64_MAX, 0, &c, &r, &e), LK_ERR_BAD_MAGIC);
    CHECK_EQ(r.records, 2);
    CHECK_EQ(r.position, (int64_t)n);
    CHECK_EQ(r.next_offset, 2);
    CHECK_EQ(e.position, (int64_t)n + 16);
    /* a batch length below the header's */
    buf[n + 16] = 2;
    buf[n + 11] = 10;
    CHECK_EQ(lk_decode_columns(buf, 2 * n, 0, INT64_MAX, 0, &c, &r, &e), LK_ERR_BAD_LENGTH);
    CHECK_EQ(r.records, 2);
}

/* ------------------------------------------------------------------------------------
 * Benchmark
 * --------------------------------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 1M records of 100-byte values (8-byte keys) in batches of per_batch; best of 5 runs of
 * lk_decode_columns over the whole buffer into 1M-row columns. */
static void bench(int32_t per_batch, int flags)
{
    enum { RECORDS = 1000000 };
    size_t cap = (size_t)RECORDS * 200 + 4096;
    uint8_t *buf = malloc(cap);
    static uint8_t keys[8 * 1000], values[100 * 1000];
    static int32_t klen[1000], vlen[1000];
    for (size_t i = 0; i < sizeof values; i++)
        values[i] = (uint8_t)rnd();
    for (size_t i = 0; i < sizeof keys; i++)
        keys[i] = (uint8_t)('a' + rnd_below(26));
    for (int i = 0; i < 1000; i++) {
        klen[i] = 8;
        vlen[i] = 100;
    }
    size_t len = 0;
    for (int64_t offset = 0; offset < RECORDS; offset += per_batch) {
        lk_records_in in;
        memset(&in, 0, sizeof in);
        in.count = per_batch;
        in.keys = keys;
        in.keys_size = 8 * (size_t)per_batch;
        in.key_lengths = klen;
        in.values = values;
        in.values_size = 100 * (size_t)per_batch;
        in.value_lengths = vlen;
        lk_batch_params p = {offset, 0, 0, 1700000000000LL, -1, -1, -1};
        size_t n = 0;
        REQUIRE_OK(lk_batch_encode(&p, &in, buf + len, cap - len, &n, NULL));
        len += n;
    }
    uint8_t *block = malloc((size_t)RECORDS * LK_COLUMNS_ROW_BYTES);
    lk_columns c;
    REQUIRE_OK(lk_columns_layout(&c, block, RECORDS));
    memset(block, 0, (size_t)RECORDS * LK_COLUMNS_ROW_BYTES); /* fault the pages in */
    double best = 1e9;
    for (int run_index = 0; run_index < 5; run_index++) {
        lk_columns_result r;
        double t = now_seconds();
        REQUIRE_OK(lk_decode_columns(buf, len, 0, INT64_MAX, flags, &c, &r, NULL));
        t = now_seconds() - t;
        CHECK_EQ(r.records, RECORDS);
        CHECK_EQ(r.stop, LK_COLUMNS_END);
        if (t < best)
            best = t;
    }
    printf("lk_decode_columns: %4d-record batches, %s: %6.1f M records/s (%.2f GB/s, %.1f ns/record)\n",
           (int)per_batch, flags & LK_VALIDATE_CRC ? "CRC checked" : "no CRC     ",
           RECORDS / best / 1e6, (double)len / best / 1e9, best / RECORDS * 1e9);
    free(block);
    free(buf);
}

int main(int argc, char **argv)
{
    for (size_t i = 0; i < POOL; i++) {
        key_pool[i] = (uint8_t)rnd();
        value_pool[i] = (uint8_t)rnd();
    }
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        bench(1, LK_VALIDATE_CRC);
        bench(1, 0);
        bench(1000, LK_VALIDATE_CRC);
        bench(1000, 0);
        return failures ? 1 : 0;
    }
    if (argc > 1) {
        fprintf(stderr, "usage: %s [--bench]\n", argv[0]);
        return 2;
    }
    test_arguments();
    test_header_damage();
    test_against_model();
    test_cuts();
    test_flipped_bytes();
    test_damage();
    return check_summary("test_columns");
}
