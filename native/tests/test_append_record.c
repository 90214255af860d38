/*
 * test_append_record.c - lk_segment_append_record against its definition: for the same
 * record and params it must leave exactly what lk_batch_encode followed by
 * lk_segment_append leaves (return value or error, segment info, .log, .index and
 * .timeindex bytes), and nothing at all when it fails.
 *
 * Twin segments take the same random stream of records (null, empty and random keys,
 * values and headers; offset gaps; LogAppendTime; offsets that go backwards; records too
 * large for max_batch_size; a log and an index that fill up), one through each path, and
 * are compared after every call. Indexes are tiny and the interval short so that every
 * branch of the index rule runs. Under `make test-asan` (-DLK_DEBUG) segment.c's
 * invariant checker also runs after every append.
 *
 * With --bench, measures ns per append of a 100-byte record into a new segment, and the
 * encoding alone into warm memory (the difference is mostly the kernel faulting in the
 * map's fresh pages).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "logkernel.h"

#include "check.h"
#include "support.h"


static char dir[256];

typedef struct {
    char log[512], index[512], time[512];
} seg_paths;

static seg_paths paths_in(const char *where, const char *name)
{
    seg_paths p;
    snprintf(p.log, sizeof p.log, "%s/%s.log", where, name);
    snprintf(p.index, sizeof p.index, "%s/%s.index", where, name);
    snprintf(p.time, sizeof p.time, "%s/%s.timeindex", where, name);
    return p;
}

static void remove_paths(const seg_paths *p)
{
    unlink(p->log);
    unlink(p->index);
    unlink(p->time);
}

static int same_file(const char *a, const char *b)
{
    size_t na, nb;
    uint8_t *x = read_whole(a, &na), *y = read_whole(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* Whether the file holds only zeros from `from` on (nothing written past the size). */
static int zeros_after(const char *path, int64_t from)
{
    size_t n;
    uint8_t *b = read_whole(path, &n);
    int ok = 1;
    for (size_t i = (size_t)from; b && i < n; i++)
        ok &= b[i] == 0;
    free(b);
    return ok;
}

static lk_segment_config config(int64_t base, uint64_t capacity, uint64_t index_capacity,
                                uint32_t interval, uint32_t max_batch_size, int32_t flags)
{
    lk_segment_config c;
    memset(&c, 0, sizeof c);
    c.base_offset = base;
    c.log_capacity = capacity;
    c.index_capacity = index_capacity;
    c.grow_step = 4096;
    c.index_interval_bytes = interval;
    c.max_batch_size = max_batch_size;
    c.flags = flags;
    return c;
}

static lk_segment *open_seg(const seg_paths *p, const lk_segment_config *c)
{
    lk_segment *s = NULL;
    REQUIRE_OK(lk_segment_open(p->log, p->index, p->time, c, &s));
    return s;
}

/* ------------------------------------------------------------------------------------
 * One record, held both ways: as lk_segment_append_record takes it (an encoded headers
 * section) and as lk_batch_encode takes it (header lengths and data).
 * --------------------------------------------------------------------------------- */

enum { MAX_HEADERS = 4 };

typedef struct {
    int64_t offset, timestamp;
    int16_t attributes;
    int32_t epoch;
    const char *key, *value;
    int32_t key_len, value_len;
    int32_t headers_count;
    int32_t header_lengths[2 * MAX_HEADERS];
    uint8_t header_data[MAX_HEADERS * 40];
    size_t header_data_size;
    uint8_t section[MAX_HEADERS * 50];
    int32_t section_len;
    int producer; /* nonzero: an idempotent producer's record, with the fields below */
    int64_t producer_id;
    int16_t producer_epoch;
    int32_t base_sequence;
} record;

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

/* Fills the headers both ways from key and value lengths (-1: null value). */
static void set_headers(record *r, int32_t count, const int32_t *key_lengths,
                        const int32_t *value_lengths)
{
    uint8_t *s = r->section, *d = r->header_data;
    r->headers_count = count;
    for (int32_t h = 0; h < count; h++) {
        int32_t kl = key_lengths[h], vl = value_lengths[h];
        r->header_lengths[2 * h] = kl;
        r->header_lengths[2 * h + 1] = vl;
        s = put_varint(s, kl);
        for (int32_t i = 0; i < kl; i++)
            *s++ = *d++ = (uint8_t)('a' + rnd_below(26));
        s = put_varint(s, vl);
        for (int32_t i = 0; i < vl; i++)
            *s++ = *d++ = (uint8_t)rnd();
    }
    r->section_len = (int32_t)(s - r->section);
    r->header_data_size = (size_t)(d - r->header_data);
}

static size_t encode(const record *r, uint8_t *out, size_t cap)
{
    lk_records_in in;
    memset(&in, 0, sizeof in);
    in.count = 1;
    in.keys = (const uint8_t *)r->key;
    in.keys_size = r->key_len > 0 ? (size_t)r->key_len : 0;
    in.key_lengths = &r->key_len;
    in.values = (const uint8_t *)r->value;
    in.values_size = r->value_len > 0 ? (size_t)r->value_len : 0;
    in.value_lengths = &r->value_len;
    in.header_counts = &r->headers_count;
    in.header_lengths = r->header_lengths;
    in.header_lengths_count = 2 * (size_t)r->headers_count;
    in.header_data = r->header_data;
    in.header_data_size = r->header_data_size;
    lk_batch_params p = {r->offset, r->epoch, r->attributes, r->timestamp,
                         r->producer ? r->producer_id : -1,
                         r->producer ? r->producer_epoch : (int16_t)-1,
                         r->producer ? r->base_sequence : -1};
    size_t n = 0;
    REQUIRE_OK(lk_batch_encode(&p, &in, out, cap, &n, NULL));
    return n;
}

static int64_t append_record(lk_segment *s, const record *r)
{
    if (r->producer)
        return lk_segment_append_producer_record(
            s, r->offset, r->timestamp, r->attributes, r->epoch, r->producer_id,
            r->producer_epoch, r->base_sequence, r->key, r->key_len, r->value, r->value_len,
            r->headers_count ? (const char *)r->section : NULL, r->headers_count,
            r->section_len);
    return lk_segment_append_record(s, r->offset, r->timestamp, r->attributes, r->epoch, r->key,
                                    r->key_len, r->value, r->value_len,
                                    r->headers_count ? (const char *)r->section : NULL,
                                    r->headers_count, r->section_len);
}

static void same_info(lk_segment *a, lk_segment *b)
{
    lk_segment_info x, y;
    REQUIRE_OK(lk_segment_get_info(a, &x));
    REQUIRE_OK(lk_segment_get_info(b, &y));
    CHECK_EQ(x.size, y.size);
    CHECK_EQ(x.next_offset, y.next_offset);
    CHECK_EQ(x.max_timestamp, y.max_timestamp);
    CHECK_EQ(x.offset_of_max_timestamp, y.offset_of_max_timestamp);
    CHECK_EQ(x.index_entries, y.index_entries);
    CHECK_EQ(x.time_index_entries, y.time_index_entries);
    CHECK(x.size == 0 || memcmp(lk_segment_data(a), lk_segment_data(b), (size_t)x.size) == 0);
}

/* Appends r both ways; returns 1 if it was appended. */
static int twin_append(lk_segment *a, lk_segment *b, const record *r, const char *log_a)
{
    static uint8_t batch[1 << 17];
    lk_segment_info before;
    REQUIRE_OK(lk_segment_get_info(a, &before));
    int64_t got = append_record(a, r);
    size_t n = encode(r, batch, sizeof batch);
    int64_t pos = -1, next = -1;
    int rc = lk_segment_append(b, batch, n, r->offset, &pos, &next);
    CHECK_EQ(got < 0 ? got : LK_OK, rc);
    if (rc == LK_OK) {
        CHECK_EQ(got, pos + (int64_t)n); /* the new end */
        CHECK_EQ(pos, before.size);
    } else {
        lk_segment_info after;
        REQUIRE_OK(lk_segment_get_info(a, &after));
        CHECK_EQ(after.size, before.size);
        CHECK_EQ(after.next_offset, before.next_offset);
        CHECK(zeros_after(log_a, before.size));
    }
    same_info(a, b);
    return rc == LK_OK;
}

/* A random record: keys and values null, empty (with and without a pointer) or random,
 * sometimes long enough for 2- and 3-byte length varints; up to MAX_HEADERS headers. */
static void random_record(record *r, int64_t next_offset)
{
    static char keys[1 << 16], values[1 << 16];
    static int filled;
    if (!filled) {
        for (size_t i = 0; i < sizeof keys; i++) {
            keys[i] = (char)rnd();
            values[i] = (char)rnd();
        }
        filled = 1;
    }
    memset(r, 0, sizeof *r);
    uint32_t gap = rnd_below(10);
    r->offset = gap == 0 ? next_offset - 1 - (int64_t)rnd_below(3) /* backwards */
              : gap == 1 ? next_offset + (int64_t)rnd_below(1000)
                         : next_offset;
    uint32_t t = rnd_below(8);
    r->timestamp = t == 0 ? -1 : t == 1 ? 0 : t == 2 ? INT64_MAX : 1700000000000LL + rnd();
    r->attributes = rnd_below(4) == 0 ? LK_ATTR_LOG_APPEND_TIME : 0;
    r->epoch = rnd_below(3) == 0 ? -1 : (int32_t)rnd_below(100);
    if (rnd_below(3) == 0) { /* an idempotent producer's, maybe in a transaction */
        r->producer = 1;
        r->producer_id = rnd_below(2) ? (int64_t)rnd_below(1000) : INT64_MAX - rnd_below(3);
        r->producer_epoch = (int16_t)rnd_below(32767);
        r->base_sequence = rnd_below(2) ? (int32_t)rnd_below(1000) : INT32_MAX;
        if (rnd_below(2))
            r->attributes |= LK_ATTR_TRANSACTIONAL;
    }
    int32_t *lengths[2] = {&r->key_len, &r->value_len};
    const char **data[2] = {&r->key, &r->value};
    const char *pool[2] = {keys, values};
    for (int i = 0; i < 2; i++) {
        uint32_t kind = rnd_below(8);
        if (kind == 0) {
            *data[i] = NULL;
            *lengths[i] = -1;
        } else if (kind == 1) {
            *data[i] = pool[i];
            *lengths[i] = -1; /* a pointer with -1 is null too */
        } else if (kind == 2) {
            *data[i] = rnd_below(2) ? NULL : pool[i];
            *lengths[i] = 0;
        } else {
            int32_t len = kind == 3 ? (int32_t)rnd_below(20000) : (int32_t)rnd_below(200);
            *data[i] = pool[i] + rnd_below(1000);
            *lengths[i] = len;
        }
    }
    int32_t count = rnd_below(3) == 0 ? (int32_t)rnd_below(MAX_HEADERS + 1) : 0;
    int32_t kl[MAX_HEADERS], vl[MAX_HEADERS];
    for (int32_t h = 0; h < count; h++) {
        kl[h] = (int32_t)rnd_below(12);
        vl[h] = (int32_t)rnd_below(14) - 1;
    }
    set_headers(r, count, kl, vl);
}

/* ------------------------------------------------------------------------------------
 * Tests
 * --------------------------------------------------------------------------------- */

static void test_twins(int64_t base, uint64_t capacity, uint64_t index_capacity, uint32_t interval,
                       uint32_t max_batch_size, int records, int min_appended)
{
    seg_paths pa = paths_in(dir, "a"), pb = paths_in(dir, "b");
    remove_paths(&pa);
    remove_paths(&pb);
    lk_segment_config c = config(base, capacity, index_capacity, interval, max_batch_size,
                                 LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *a = open_seg(&pa, &c), *b = open_seg(&pb, &c);
    int appended = 0;
    for (int i = 0; i < records; i++) {
        lk_segment_info info;
        REQUIRE_OK(lk_segment_get_info(a, &info));
        record r;
        random_record(&r, info.next_offset);
        if (twin_append(a, b, &r, pa.log))
            appended++;
        if (i % 97 == 0) {
            REQUIRE_OK(lk_segment_flush(a));
            REQUIRE_OK(lk_segment_flush(b));
        }
    }
    CHECK(appended >= min_appended);
    REQUIRE_OK(lk_segment_close(a));
    REQUIRE_OK(lk_segment_close(b));
    CHECK(same_file(pa.log, pb.log));
    CHECK(same_file(pa.index, pb.index));
    CHECK(same_file(pa.time, pb.time));

    /* Recovery with every check finds every batch valid, and rebuilds the same indexes
     * (sealing appended the final time entry; recovery writes it as well). */
    lk_segment_config rw = config(base, capacity, index_capacity, interval, max_batch_size,
                                  LK_SEGMENT_WRITABLE);
    a = open_seg(&pa, &rw);
    lk_segment_info info;
    REQUIRE_OK(lk_segment_get_info(a, &info));
    lk_scan_result scan;
    REQUIRE_OK(lk_segment_recover(
        a, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS | LK_VALIDATE_CONTIGUOUS, &scan));
    CHECK_EQ(scan.stop_reason, LK_SCAN_END);
    CHECK_EQ(scan.valid_bytes, info.size);
    CHECK_EQ(scan.batches, appended);
    CHECK_EQ(scan.records, appended);
    CHECK_EQ(scan.next_offset, info.next_offset);
    REQUIRE_OK(lk_segment_close(a));
    CHECK(same_file(pa.index, pb.index));
}

/* Every error of the contract, each compared with lk_segment_append of the same bytes
 * where that call can express it, and each leaving the segment untouched. */
static void test_errors(void)
{
    seg_paths pa = paths_in(dir, "e"), pb = paths_in(dir, "f");
    remove_paths(&pa);
    remove_paths(&pb);
    lk_segment_config c = config(100, 4096, 4096, 0, 300, LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *a = open_seg(&pa, &c), *b = open_seg(&pb, &c);
    record r;
    memset(&r, 0, sizeof r);
    r.offset = 100;
    r.timestamp = 5;
    r.key = "k";
    r.key_len = 1;
    r.value = "value";
    r.value_len = 5;
    CHECK(twin_append(a, b, &r, pa.log));

    /* ARGUMENT: lengths, pointers, headers, attributes. */
    const char *h = "\x04hi\x04yo"; /* one header: key "hi" (length 2), value "yo" */
    CHECK_EQ(lk_segment_append_record(NULL, 101, 0, 0, -1, NULL, -1, NULL, -1, NULL, 0, 0),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -2, NULL, -1, NULL, 0, 0),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -7, NULL, 0, 0),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, 3, NULL, -1, NULL, 0, 0),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, 3, NULL, 0, 0),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, NULL, -1, 0),
             LK_ERR_ARGUMENT);
    /* Producer fields: all set (id, epoch and sequence >= 0) or none; transactional only
     * with them. */
    CHECK_EQ(lk_segment_append_record(a, 101, 0, LK_ATTR_TRANSACTIONAL, -1, NULL, -1, NULL, -1,
                                      NULL, 0, 0), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_producer_record(NULL, 101, 0, 0, -1, 1, 0, 0, NULL, -1, NULL, -1,
                                               NULL, 0, 0), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_producer_record(a, 101, 0, 0, -1, -1, 0, 0, NULL, -1, NULL, -1,
                                               NULL, 0, 0), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_producer_record(a, 101, 0, 0, -1, 1, -1, 0, NULL, -1, NULL, -1,
                                               NULL, 0, 0), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_producer_record(a, 101, 0, 0, -1, 1, 0, -1, NULL, -1, NULL, -1,
                                               NULL, 0, 0), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_producer_record(a, 101, 0, LK_ATTR_CONTROL, -1, 1, 0, 0, NULL, -1,
                                               NULL, -1, NULL, 0, 0), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, h, 1, -1),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, NULL, 1, 6),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, h, 0, 6),
             LK_ERR_ARGUMENT); /* bytes but no count */
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, h, 2, 6),
             LK_ERR_ARGUMENT); /* fewer headers than the count */
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, h, 1, 5),
             LK_ERR_ARGUMENT); /* cut short */
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, "\x04hi\x04yoX", 1, 7),
             LK_ERR_ARGUMENT); /* bytes left over */
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, "\x03", 1, 1),
             LK_ERR_ARGUMENT); /* negative key length */
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, "\x00\x03", 1, 2),
             LK_ERR_ARGUMENT); /* value length -2 */
    CHECK_EQ(lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, "\x00\xff", 1, 2),
             LK_ERR_ARGUMENT); /* an unterminated varint */
    lk_segment_info info;
    REQUIRE_OK(lk_segment_get_info(a, &info));
    CHECK_EQ(info.size, 74); /* 61 + length 1 + body 12 ("k", "value", no headers) */
    CHECK_EQ(info.next_offset, 101);
    int64_t end = lk_segment_append_record(a, 101, 0, 0, -1, NULL, -1, NULL, -1, h, 1, 6);
    REQUIRE_OK(lk_segment_get_info(a, &info));
    CHECK_EQ(end, info.size); /* returns the new end */
    CHECK(end > 74);
    end = lk_segment_append_record(a, 102, 0, 0, -1, NULL, -1, NULL, -1, "\x00\x01", 1, 2);
    REQUIRE_OK(lk_segment_get_info(a, &info)); /* header key "" and value null: valid */
    CHECK_EQ(end, info.size);
    CHECK_EQ(info.next_offset, 103);
    int16_t bad_attributes[] = {1, 2, 4, LK_ATTR_TRANSACTIONAL, LK_ATTR_CONTROL,
                                LK_ATTR_DELETE_HORIZON, LK_ATTR_LOG_APPEND_TIME | 3, -1, 128};
    for (size_t i = 0; i < sizeof bad_attributes / sizeof bad_attributes[0]; i++)
        CHECK_EQ(lk_segment_append_record(a, 103, 0, bad_attributes[i], -1, NULL, -1, NULL, -1,
                                          NULL, 0, 0),
                 LK_ERR_ARGUMENT);
    REQUIRE_OK(lk_segment_close(a));
    REQUIRE_OK(lk_segment_close(b));
    remove_paths(&pa);
    remove_paths(&pb);

    /* The rest through twins: OFFSET_ORDER both ways, BAD_LENGTH, SEGMENT_FULL. */
    a = open_seg(&pa, &c);
    b = open_seg(&pb, &c);
    static char big[1000];
    memset(big, 'x', sizeof big);
    memset(&r, 0, sizeof r);
    r.key_len = r.value_len = -1;
    r.offset = 99;
    CHECK(!twin_append(a, b, &r, pa.log)); /* below the segment's base offset */
    r.offset = 100 + (int64_t)INT32_MAX + 1;
    CHECK(!twin_append(a, b, &r, pa.log)); /* past the int32 relative range */
    r.offset = 100 + (int64_t)INT32_MAX;
    CHECK(twin_append(a, b, &r, pa.log)); /* the last relative offset there is */
    CHECK(!twin_append(a, b, &r, pa.log)); /* again: now below the next offset */
    REQUIRE_OK(lk_segment_close(a));
    REQUIRE_OK(lk_segment_close(b));
    remove_paths(&pa);
    remove_paths(&pb);

    a = open_seg(&pa, &c);
    b = open_seg(&pb, &c);
    r.offset = 100;
    r.value = big;
    /* 61 header + 2 length + 3 fixed + 1 key length + 2 value length + value + 1 header
     * count: 301 bytes, one more than max_batch_size */
    r.value_len = 231;
    CHECK(!twin_append(a, b, &r, pa.log));
    CHECK_EQ(append_record(a, &r), LK_ERR_BAD_LENGTH);
    r.value_len--; /* exactly max_batch_size */
    CHECK(twin_append(a, b, &r, pa.log));
    r.offset = 101;
    int appended = 1;
    while (twin_append(a, b, &r, pa.log)) {
        appended++;
        r.offset++;
    }
    CHECK_EQ(append_record(a, &r), LK_ERR_SEGMENT_FULL);
    CHECK_EQ(appended, 4096 / 300);

    /* CLOSED */
    REQUIRE_OK(lk_segment_seal(a));
    REQUIRE_OK(lk_segment_seal(b));
    r.value_len = 1;
    CHECK(!twin_append(a, b, &r, pa.log));
    CHECK_EQ(append_record(a, &r), LK_ERR_CLOSED);
    REQUIRE_OK(lk_segment_close(a));
    REQUIRE_OK(lk_segment_close(b));

    /* NEEDS_RECOVERY: bytes after the last batch that are neither a batch nor zeros. */
    int fd = open(pa.log, O_WRONLY | O_APPEND);
    CHECK(fd >= 0 && write(fd, "junk", 4) == 4);
    close(fd);
    lk_segment_config rw = config(100, 4096 * 2, 4096, 0, 300, LK_SEGMENT_WRITABLE);
    a = open_seg(&pa, &rw);
    CHECK_EQ(append_record(a, &r), LK_ERR_NEEDS_RECOVERY);
    lk_scan_result scan;
    REQUIRE_OK(lk_segment_recover(a, LK_VALIDATE_CRC, &scan));
    CHECK_EQ(scan.stop_reason, LK_SCAN_TORN);
    CHECK(append_record(a, &r) > 0);
    REQUIRE_OK(lk_segment_close(a));
    remove_paths(&pa);
    remove_paths(&pb);

    /* SEGMENT_FULL from the offset index: 2 entries, interval 0 (an entry per batch after
     * the first), so the fourth record is refused, the same way for both paths. */
    lk_segment_config tiny = config(0, 1 << 20, 16, 0, 0, LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    a = open_seg(&pa, &tiny);
    b = open_seg(&pb, &tiny);
    memset(&r, 0, sizeof r);
    r.key_len = r.value_len = -1;
    for (int i = 0; i < 3; i++) {
        r.offset = i;
        r.timestamp = 10 + i;
        CHECK(twin_append(a, b, &r, pa.log));
    }
    r.offset = 3;
    CHECK(!twin_append(a, b, &r, pa.log));
    CHECK_EQ(append_record(a, &r), LK_ERR_SEGMENT_FULL);
    REQUIRE_OK(lk_segment_close(a));
    REQUIRE_OK(lk_segment_close(b));
    CHECK(same_file(pa.index, pb.index));
    CHECK(same_file(pa.time, pb.time));
    remove_paths(&pa);
    remove_paths(&pb);
}

/* A full file system (a 256 KiB tmpfs; skipped without the right to mount): NO_SPACE,
 * errno ENOSPC, nothing half-written, and recovery keeps every record appended before. */
static void test_no_space(void)
{
    char mnt[300];
    snprintf(mnt, sizeof mnt, "%s/tmpfs", dir);
    if (mkdir(mnt, 0700) != 0)
        return;
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=256k") != 0) {
        printf("test_append_record: ENOSPC test skipped (mount: %s)\n", strerror(errno));
        rmdir(mnt);
        return;
    }
    seg_paths p = paths_in(mnt, "0");
    lk_segment_config c = config(0, 4 << 20, 64 * 1024, 4096, 0,
                                 LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *s = open_seg(&p, &c);
    static char value[1000];
    memset(value, 'v', sizeof value);
    int64_t rc = 0, offset = 0;
    lk_segment_info before;
    for (; offset < 100000 && rc >= 0; offset++) {
        REQUIRE_OK(lk_segment_get_info(s, &before));
        rc = lk_segment_append_record(s, offset, 1000 + offset, 0, 0, "key", 3, value,
                                      (int32_t)sizeof value, NULL, 0, 0);
    }
    CHECK_EQ(rc, LK_ERR_NO_SPACE);
    CHECK(errno == ENOSPC);
    lk_segment_info after;
    REQUIRE_OK(lk_segment_get_info(s, &after));
    CHECK_EQ(after.size, before.size);
    CHECK_EQ(after.next_offset, before.next_offset);
    CHECK(before.size > 128 * 1024);
    REQUIRE_OK(lk_segment_flush(s));
    REQUIRE_OK(lk_segment_close(s));
    lk_segment_config rw = config(0, 4 << 20, 64 * 1024, 4096, 0, LK_SEGMENT_WRITABLE);
    s = open_seg(&p, &rw);
    lk_scan_result scan;
    REQUIRE_OK(lk_segment_recover(s, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, &scan));
    CHECK_EQ(scan.valid_bytes, before.size);
    CHECK_EQ(scan.records, before.next_offset);
    REQUIRE_OK(lk_segment_close(s));
    remove_paths(&p);
    if (umount2(mnt, 0) != 0)
        umount2(mnt, MNT_DETACH);
    rmdir(mnt);
}

/* ------------------------------------------------------------------------------------
 * Benchmark: 1M records of 100-byte values with 8-byte keys into a new segment (page
 * faults of the fresh map included), against the encoding alone into warm memory.
 * --------------------------------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run_bench(void)
{
    enum { RECORDS = 1000000 };
    static char value[100];
    memset(value, 'v', sizeof value);
    double best_append = 1e9, best_encode = 1e9;
    for (int run = 0; run < 3; run++) {
        seg_paths p = paths_in(dir, "bench");
        remove_paths(&p);
        lk_segment_config c = config(0, 1u << 30, 10 << 20, 4096, 0,
                                     LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
        c.grow_step = 8 << 20;
        lk_segment *s = open_seg(&p, &c);
        double t = now_seconds();
        for (int64_t i = 0; i < RECORDS; i++)
            if (lk_segment_append_record(s, i, 1700000000000LL + i, 0, -1, "key-0001", 8, value,
                                         (int32_t)sizeof value, NULL, 0, 0) < 0)
                return 2;
        t = now_seconds() - t;
        if (t < best_append)
            best_append = t;
        REQUIRE_OK(lk_segment_close(s));
        remove_paths(&p);

        static uint8_t out[256];
        lk_one_record r = {0, 1700000000000LL, 0, -1, (const uint8_t *)"key-0001", 8,
                           (const uint8_t *)value, (int32_t)sizeof value, NULL, 0, 0,
                           -1, -1, -1};
        int64_t size = lk_one_record_batch_size(&r);
        t = now_seconds();
        for (int64_t i = 0; i < RECORDS; i++) {
            r.offset = i;
            lk_one_record_batch_write(&r, lk_one_record_batch_size(&r), out);
        }
        t = now_seconds() - t;
        if (t < best_encode)
            best_encode = t;
        CHECK(size == 61 + 2 + 3 + 1 + 8 + 2 + 100 + 1);
    }
    printf("lk_segment_append_record: %.0f ns/record into a new segment (%.1f M/s); "
           "encoding alone, warm memory: %.0f ns/record\n",
           best_append / RECORDS * 1e9, RECORDS / best_append / 1e6, best_encode / RECORDS * 1e9);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    rng_state = 0x2545F4914F6CDD1Dull; /* this test's sequences */
    snprintf(dir, sizeof dir, "/tmp/lk_test_append_record_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (argc > 1) {
        int rc = strcmp(argv[1], "--bench") == 0 ? run_bench() : 2;
        if (rc == 2)
            fprintf(stderr, "usage: %s [--bench]\n", argv[0]);
        rmdir(dir);
        return rc;
    }
    /* generous: every record fits; entries at every ~200 bytes */
    test_twins(0, 64 << 20, 1 << 16, 200, 0, 3000, 2500);
    /* base offset past 0, tiny interval, max_batch_size refusing the long keys and values,
     * and a log that fills up part way */
    test_twins(1000, 256 * 1024, 1 << 12, 0, 4000, 3000, 400);
    /* an offset index (100 entries) that fills up before the log */
    test_twins(7, 64 << 20, 800, 1000, 0, 1000, 100);
    test_errors();
    test_no_space();
    rmdir(dir);
    return check_summary("test_append_record");
}
