/*
 * test_segment.c - the segment, log scan and index search against a simple model.
 *
 * Every test keeps a model of what it appended (each batch's position, offsets and max
 * timestamp, plus a shadow copy of the .log bytes with base offsets patched) and checks
 * the segment against it: every offset through find_offset, timestamps around every
 * batch's max through find_timestamp, the mapped bytes, and the info fields. Recovery
 * is tested by breaking files (STYLE.md 8); sizes are tiny so edge cases come quickly.
 *
 * Build (from the repository root):
 *   gcc -O2 -g -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -Inative native/[*].c
 *       native/tests/test_segment.c -o /tmp/test_segment
 * (native/[*].c: every source of the core.)
 * Add -DLK_DEBUG to run segment.c's invariant checker after every mutating call.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "logkernel.h"
#include "internal.h"

#include "check.h"
#include "support.h"

/* ------------------------------------------------------------------------------------
 * Random numbers, files
 * --------------------------------------------------------------------------------- */


static char dir[256];

static void path_for(char *out, size_t cap, const char *name, const char *suffix)
{
    snprintf(out, cap, "%s/%s%s", dir, name, suffix);
}

typedef struct {
    char log[512], index[512], time[512];
} seg_paths;

static seg_paths paths_for(const char *name)
{
    seg_paths p;
    path_for(p.log, sizeof p.log, name, ".log");
    path_for(p.index, sizeof p.index, name, ".index");
    path_for(p.time, sizeof p.time, name, ".timeindex");
    return p;
}

static void write_at(const char *path, int64_t at, const void *bytes, size_t n)
{
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, bytes, n, at) == (ssize_t)n);
    close(fd);
}

static int64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void remove_dir_contents(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (unlink(p) != 0)
            rmdir(p);
    }
    closedir(d);
}

/* ------------------------------------------------------------------------------------
 * The model
 * --------------------------------------------------------------------------------- */

typedef struct {
    int64_t position, size, base, last, max_ts;
} model_batch;

typedef struct {
    int64_t base_offset;
    int64_t next_offset;
    int64_t max_ts, offset_of_max;
    model_batch *b;
    size_t n, cap;
    uint8_t *shadow;
    size_t len, shadow_cap;
} model;

static void model_init(model *m, int64_t base)
{
    memset(m, 0, sizeof *m);
    m->base_offset = m->next_offset = base;
    m->max_ts = m->offset_of_max = -1;
}

static void model_free(model *m)
{
    free(m->b);
    free(m->shadow);
    memset(m, 0, sizeof *m);
}

static void model_rebuild_totals(model *m)
{
    m->max_ts = m->offset_of_max = -1;
    m->next_offset = m->n ? m->b[m->n - 1].last + 1 : m->base_offset;
    for (size_t i = 0; i < m->n; i++)
        if (m->b[i].max_ts > m->max_ts) {
            m->max_ts = m->b[i].max_ts;
            m->offset_of_max = m->b[i].last;
        }
    m->len = m->n ? (size_t)(m->b[m->n - 1].position + m->b[m->n - 1].size) : 0;
}

/* Adds the batches of a record set appended at offset `base`. */
static void model_add(model *m, const uint8_t *set, size_t len, int64_t base)
{
    if (m->len + len > m->shadow_cap) {
        m->shadow_cap = (m->len + len) * 2;
        m->shadow = realloc(m->shadow, m->shadow_cap);
    }
    memcpy(m->shadow + m->len, set, len);
    size_t pos = 0;
    while (pos < len) {
        lk_batch_header h;
        REQUIRE_OK(lk_batch_parse_header(set + pos, len - pos, 0, &h, NULL));
        if (m->n == m->cap) {
            m->cap = m->cap ? m->cap * 2 : 64;
            m->b = realloc(m->b, m->cap * sizeof *m->b);
        }
        model_batch *b = &m->b[m->n++];
        b->position = (int64_t)(m->len + pos);
        b->size = h.batch_length + 12;
        b->base = base;
        b->last = base + h.last_offset_delta;
        b->max_ts = h.max_timestamp;
        lk_store_be64(m->shadow + m->len + pos, (uint64_t)base);
        base = b->last + 1;
        pos += (size_t)b->size;
    }
    m->len += len;
    model_rebuild_totals(m);
}

/* Keeps only batches whose last offset < offset (what truncate_to_offset leaves). */
static void model_truncate(model *m, int64_t offset)
{
    size_t k = 0;
    while (k < m->n && m->b[k].last < offset)
        k++;
    m->n = k;
    model_rebuild_totals(m);
}

/* Builds one batch of `count` records into out; returns its size. */
static size_t make_batch(uint8_t *out, size_t cap, int32_t count, int64_t ts0, int value_max)
{
    int32_t vlen[64];
    int64_t ts[64];
    uint8_t values[64 * 64];
    size_t total = 0;
    if (count > 64)
        count = 64;
    for (int32_t i = 0; i < count; i++) {
        vlen[i] = (int32_t)rnd_below((uint32_t)value_max + 1);
        for (int32_t j = 0; j < vlen[i]; j++)
            values[total + (size_t)j] = (uint8_t)rnd();
        total += (size_t)vlen[i];
        ts[i] = ts0 + (int64_t)rnd_below(50) - 10;
    }
    lk_records_in in;
    memset(&in, 0, sizeof in);
    in.count = count;
    in.values = values;
    in.values_size = total;
    in.value_lengths = vlen;
    in.timestamps = ts;
    lk_batch_params p = {0, 0, 0, ts0, -1, -1, -1};
    size_t n = 0;
    REQUIRE_OK(lk_batch_encode(&p, &in, out, cap, &n, NULL));
    return n;
}

/* A batch whose every record carries timestamp ts. */
static size_t make_batch_ts(uint8_t *out, size_t cap, int32_t count, int64_t ts)
{
    lk_records_in in;
    memset(&in, 0, sizeof in);
    in.count = count;
    lk_batch_params p = {0, 0, 0, ts, -1, -1, -1};
    size_t n = 0;
    REQUIRE_OK(lk_batch_encode(&p, &in, out, cap, &n, NULL));
    return n;
}

static lk_segment_config config(int64_t base, uint64_t capacity, uint64_t index_capacity,
                                uint64_t grow_step, uint32_t interval, int32_t flags)
{
    lk_segment_config c;
    memset(&c, 0, sizeof c);
    c.base_offset = base;
    c.log_capacity = capacity;
    c.index_capacity = index_capacity;
    c.grow_step = grow_step;
    c.index_interval_bytes = interval;
    c.max_batch_size = 0;
    c.flags = flags;
    return c;
}

static lk_segment *open_seg(const seg_paths *p, const lk_segment_config *c)
{
    lk_segment *s = NULL;
    REQUIRE_OK(lk_segment_open(p->log, p->index, p->time, c, &s));
    return s;
}

/* Appends one record set (made by the caller) at offset base and records it. */
static void append_set(lk_segment *s, model *m, const uint8_t *set, size_t len, int64_t base)
{
    int64_t pos = -1, next = -1;
    REQUIRE_OK(lk_segment_append(s, set, len, base, &pos, &next));
    CHECK_EQ(pos, (int64_t)m->len);
    model_add(m, set, len, base);
    CHECK_EQ(next, m->next_offset);
}

/* Appends n random batches (sometimes several per call, sometimes with an offset gap). */
static void append_random(lk_segment *s, model *m, int n, int64_t *ts)
{
    static uint8_t set[64 * 1024];
    for (int i = 0; i < n;) {
        int per_call = 1 + (rnd_below(4) == 0 ? (int)rnd_below(3) : 0);
        size_t len = 0;
        for (int k = 0; k < per_call && i < n; k++, i++) {
            *ts += 7 + (int64_t)rnd_below(20);
            int64_t t = rnd_below(10) == 0 ? *ts - 500 : *ts; /* sometimes late */
            len += make_batch(set + len, sizeof set - len, 1 + (int32_t)rnd_below(12), t, 40);
        }
        int64_t base = m->next_offset + (rnd_below(8) == 0 ? (int64_t)rnd_below(5) : 0);
        append_set(s, m, set, len, base);
    }
}

static int expected_offset_batch(const model *m, int64_t target)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->b[i].last >= target)
            return (int)i;
    return -1;
}

static int expected_time_batch(const model *m, int64_t target)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->b[i].max_ts >= target)
            return (int)i;
    return -1;
}

static void check_find_timestamp(lk_segment *s, const model *m, int64_t t)
{
    int64_t pos = -1, base = -1;
    int k = expected_time_batch(m, t);
    int rc = lk_segment_find_timestamp(s, t, &pos, &base);
    if (k < 0) {
        CHECK_EQ(rc, LK_ERR_NOT_FOUND);
    } else {
        CHECK_EQ(rc, LK_OK);
        CHECK_EQ(pos, m->b[k].position);
        CHECK_EQ(base, m->b[k].base);
    }
}

/* Everything the model knows, checked against the segment. */
static void verify(lk_segment *s, const model *m)
{
    lk_segment_info info;
    REQUIRE_OK(lk_segment_get_info(s, &info));
    CHECK_EQ(info.base_offset, m->base_offset);
    CHECK_EQ(info.size, (int64_t)m->len);
    CHECK_EQ(info.next_offset, m->next_offset);
    CHECK_EQ(info.max_timestamp, m->max_ts);
    CHECK_EQ(info.offset_of_max_timestamp, m->offset_of_max);
    if (m->len)
        CHECK(lk_segment_data(s) && memcmp(lk_segment_data(s), m->shadow, m->len) == 0);
    CHECK(lk_segment_map_length(s) >= (uint64_t)m->len);

    for (int64_t t = m->base_offset; t < m->next_offset; t++) {
        int k = expected_offset_batch(m, t);
        int64_t pos = -1, base = -1;
        int rc = lk_segment_find_offset(s, t, &pos, &base);
        CHECK_EQ(rc, LK_OK);
        if (k >= 0 && rc == LK_OK) {
            CHECK_EQ(pos, m->b[k].position);
            CHECK_EQ(base, m->b[k].base);
        }
    }
    int64_t pos, base;
    CHECK_EQ(lk_segment_find_offset(s, m->next_offset, &pos, &base), LK_ERR_NOT_FOUND);
    CHECK_EQ(lk_segment_find_offset(s, m->next_offset + 1000, &pos, &base), LK_ERR_NOT_FOUND);
    if (m->base_offset > 0)
        CHECK_EQ(lk_segment_find_offset(s, m->base_offset - 1, &pos, &base), LK_ERR_ARGUMENT);

    check_find_timestamp(s, m, INT64_MIN);
    check_find_timestamp(s, m, -1);
    check_find_timestamp(s, m, m->max_ts + 1);
    check_find_timestamp(s, m, INT64_MAX);
    for (size_t i = 0; i < m->n; i++) {
        check_find_timestamp(s, m, m->b[i].max_ts);
        check_find_timestamp(s, m, m->b[i].max_ts - 1);
        check_find_timestamp(s, m, m->b[i].max_ts + 1);
    }
}

static void close_seg(lk_segment *s) { REQUIRE_OK(lk_segment_close(s)); }

/* Entries of an index file (whole entries only). */
static uint8_t *read_entries(const char *path, size_t entry_size, size_t *count)
{
    size_t len;
    uint8_t *b = read_whole(path, &len);
    *count = b ? len / entry_size : 0;
    return b;
}

/* ------------------------------------------------------------------------------------
 * Tests
 * --------------------------------------------------------------------------------- */

/* Appends, lookups, reopening read-only and writable, and the index rule's determinism. */
static void test_append_find_reopen(void)
{
    seg_paths p = paths_for("00000000000000001000");
    lk_segment_config c = config(1000, 1 << 20, 4096, 8192, 64,
                                 LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *s = open_seg(&p, &c);
    model m;
    model_init(&m, 1000);
    verify(s, &m);
    int64_t ts = 1700000000000;
    append_random(s, &m, 400, &ts);
    verify(s, &m);

    lk_segment_info info;
    REQUIRE_OK(lk_segment_get_info(s, &info));
    CHECK(info.index_entries > 20);
    CHECK(info.time_index_entries > 5);
    CHECK_EQ(info.writable, 1);
    CHECK_EQ(info.flushed_size, 0);
    REQUIRE_OK(lk_segment_flush(s));
    REQUIRE_OK(lk_segment_get_info(s, &info));
    CHECK_EQ(info.flushed_size, (int64_t)m.len);

    /* Bad appends change nothing. */
    uint8_t batch[8192], two[16384];
    size_t n = make_batch(batch, sizeof batch, 3, ts, 10);
    int64_t pos, next;
    CHECK_EQ(lk_segment_append(s, batch, n, m.next_offset - 1, &pos, &next), LK_ERR_OFFSET_ORDER);
    CHECK_EQ(lk_segment_append(s, batch, 0, m.next_offset, &pos, &next), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append(s, NULL, n, m.next_offset, &pos, &next), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append(NULL, batch, n, m.next_offset, &pos, &next), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_append(s, batch, n - 1, m.next_offset, &pos, &next), LK_ERR_TRUNCATED);
    memcpy(two, batch, n);
    memcpy(two + n, batch, n);
    CHECK_EQ(lk_segment_append(s, two, 2 * n - 5, m.next_offset, &pos, &next), LK_ERR_TRUNCATED);
    two[n + 16] = 1; /* second batch: magic 1 */
    CHECK_EQ(lk_segment_append(s, two, 2 * n, m.next_offset, &pos, &next), LK_ERR_BAD_MAGIC);
    uint8_t negative[8192];
    memcpy(negative, batch, n);
    lk_store_be32(negative + 23, (uint32_t)-1); /* lastOffsetDelta -1 (not CRC-checked here) */
    CHECK_EQ(lk_segment_append(s, negative, n, m.next_offset, &pos, &next), LK_ERR_OFFSET_ORDER);
    verify(s, &m);

    /* The index is a function of the log: a rebuild writes the same offset entries, and
     * the same time entries plus (at most) the final max-timestamp entry. */
    size_t oi_n, ti_n, oi2_n, ti2_n;
    REQUIRE_OK(lk_segment_get_info(s, &info));
    uint8_t *oi = read_entries(p.index, 8, &oi_n);
    uint8_t *ti = read_entries(p.time, 12, &ti_n);
    REQUIRE_OK(lk_segment_rebuild_indexes(s));
    lk_segment_info info2;
    REQUIRE_OK(lk_segment_get_info(s, &info2));
    CHECK_EQ(info2.index_entries, info.index_entries);
    CHECK(info2.time_index_entries == info.time_index_entries ||
          info2.time_index_entries == info.time_index_entries + 1);
    uint8_t *oi2 = read_entries(p.index, 8, &oi2_n);
    uint8_t *ti2 = read_entries(p.time, 12, &ti2_n);
    CHECK(oi && oi2 && memcmp(oi, oi2, (size_t)info.index_entries * 8) == 0);
    CHECK(ti && ti2 && memcmp(ti, ti2, (size_t)info.time_index_entries * 12) == 0);
    free(oi);
    free(ti);
    free(oi2);
    free(ti2);
    verify(s, &m);
    append_random(s, &m, 30, &ts);
    verify(s, &m);
    REQUIRE_OK(lk_segment_get_info(s, &info));
    close_seg(s);

    /* Closing trimmed the files to their logical sizes. */
    CHECK_EQ(file_size(p.log), (int64_t)m.len);
    CHECK_EQ(file_size(p.index), info.index_entries * 8);
    CHECK(file_size(p.time) == info.time_index_entries * 12 ||
          file_size(p.time) == (info.time_index_entries + 1) * 12);

    /* Read-only reopen. */
    lk_segment_config ro = config(1000, 0, 0, 0, 64, 0);
    s = open_seg(&p, &ro);
    verify(s, &m);
    REQUIRE_OK(lk_segment_get_info(s, &info2));
    CHECK_EQ(info2.writable, 0);
    CHECK_EQ(info2.index_entries, info.index_entries);
    CHECK_EQ(lk_segment_append(s, batch, n, m.next_offset, &pos, &next), LK_ERR_CLOSED);
    CHECK_EQ(lk_segment_recover(s, 0, NULL), LK_ERR_CLOSED);
    CHECK_EQ(lk_segment_truncate_to_offset(s, m.base_offset), LK_ERR_CLOSED);
    REQUIRE_OK(lk_segment_seal(s));
    REQUIRE_OK(lk_segment_flush(s));
    close_seg(s);

    /* Writable reopen, more appends, and again. */
    lk_segment_config rw = config(1000, 1 << 20, 4096, 8192, 64, LK_SEGMENT_WRITABLE);
    s = open_seg(&p, &rw);
    verify(s, &m);
    append_random(s, &m, 60, &ts);
    verify(s, &m);
    close_seg(s);
    s = open_seg(&p, &ro);
    verify(s, &m);
    close_seg(s);
    s = open_seg(&p, &rw);
    lk_scan_result r;
    REQUIRE_OK(lk_segment_recover(s, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, &r));
    CHECK_EQ(r.stop_reason, LK_SCAN_END);
    CHECK_EQ(r.valid_bytes, (int64_t)m.len);
    CHECK_EQ(r.batches, (int64_t)m.n);
    CHECK_EQ(r.next_offset, m.next_offset);
    CHECK_EQ(r.max_timestamp, m.max_ts);
    CHECK_EQ(r.offset_of_max_timestamp, m.offset_of_max);
    CHECK_EQ(r.first_offset, m.b[0].base);
    verify(s, &m);
    close_seg(s);

    /* CREATE on existing files fails and leaves them alone. */
    lk_segment *t = NULL;
    CHECK_EQ(lk_segment_open(p.log, p.index, p.time, &c, &t), LK_ERR_IO);
    CHECK_EQ(errno, EEXIST);
    CHECK(t == NULL);
    CHECK_EQ(file_size(p.log), (int64_t)m.len);
    model_free(&m);
}

/* Writes a fresh sealed segment of n random batches. */
static void build_segment(const seg_paths *p, int64_t base, int n, uint32_t interval, model *m)
{
    unlink(p->log);
    unlink(p->index);
    unlink(p->time);
    lk_segment_config c = config(base, 1 << 20, 4096, 4096, interval,
                                 LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *s = open_seg(p, &c);
    model_init(m, base);
    int64_t ts = 1600000000000;
    append_random(s, m, n, &ts);
    REQUIRE_OK(lk_segment_seal(s));
    close_seg(s);
}

static void recover_expect(const seg_paths *p, int64_t base, model *m, size_t keep, int reason,
                           int code)
{
    lk_segment_config rw = config(base, 1 << 20, 4096, 4096, 100, LK_SEGMENT_WRITABLE);
    lk_segment *s = open_seg(p, &rw);
    lk_scan_result r;
    REQUIRE_OK(lk_segment_recover(s, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, &r));
    CHECK_EQ(r.stop_reason, reason);
    if (code != 1)
        CHECK_EQ(r.stop_error.code, code);
    CHECK(r.stop_error.what != NULL);
    m->n = keep;
    model_rebuild_totals(m);
    CHECK_EQ(r.valid_bytes, (int64_t)m->len);
    CHECK_EQ(r.batches, (int64_t)keep);
    CHECK_EQ(r.next_offset, m->next_offset);
    CHECK_EQ(file_size(p->log), (int64_t)m->len);
    verify(s, m);
    /* Appending after recovery continues cleanly. */
    int64_t ts = m->max_ts + 1;
    append_random(s, m, 5, &ts);
    verify(s, m);
    close_seg(s);
    lk_segment_config ro = config(base, 0, 0, 0, 100, 0);
    s = open_seg(p, &ro);
    verify(s, m);
    close_seg(s);
}

static void test_recovery(void)
{
    seg_paths p = paths_for("00000000000000000500");
    model m;

    /* Torn tail: the file ends in the middle of the last batch. */
    build_segment(&p, 500, 60, 100, &m);
    CHECK(truncate(p.log, (off_t)(m.len - 7)) == 0);
    recover_expect(&p, 500, &m, m.n - 1, LK_SCAN_TORN, LK_ERR_TRUNCATED);
    model_free(&m);

    /* Torn header: fewer than 12 bytes of the next batch. */
    build_segment(&p, 500, 20, 100, &m);
    {
        uint8_t junk[5] = {0, 0, 0, 1, 2};
        write_at(p.log, (int64_t)m.len, junk, sizeof junk);
    }
    recover_expect(&p, 500, &m, m.n, LK_SCAN_TORN, 1);
    model_free(&m);

    /* A flipped byte inside batch 30: CRC. */
    build_segment(&p, 500, 60, 100, &m);
    {
        uint8_t x;
        int64_t at = m.b[30].position + m.b[30].size - 3;
        x = (uint8_t)(m.shadow[at] ^ 0x40);
        write_at(p.log, at, &x, 1);
    }
    recover_expect(&p, 500, &m, 30, LK_SCAN_CORRUPT, LK_ERR_CRC);
    model_free(&m);

    /* A zero-filled (allocated, never written) tail. */
    build_segment(&p, 500, 40, 100, &m);
    CHECK(truncate(p.log, (off_t)(m.len + 100000)) == 0);
    recover_expect(&p, 500, &m, m.n, LK_SCAN_ZEROS, LK_OK);
    model_free(&m);

    /* A torn last batch followed by zeros (its length fits, its bytes do not). */
    build_segment(&p, 500, 40, 100, &m);
    {
        int64_t at = m.b[39].position + 30;
        CHECK(truncate(p.log, (off_t)at) == 0);
        CHECK(truncate(p.log, (off_t)(m.len + 4096)) == 0);
    }
    recover_expect(&p, 500, &m, 39, LK_SCAN_CORRUPT, LK_ERR_CRC);
    model_free(&m);

    /* A base offset going backwards (baseOffset is not covered by the CRC). */
    build_segment(&p, 500, 50, 100, &m);
    {
        uint8_t be[8];
        lk_store_be64(be, (uint64_t)m.b[19].base);
        write_at(p.log, m.b[25].position, be, 8);
    }
    recover_expect(&p, 500, &m, 25, LK_SCAN_OFFSET, LK_ERR_OFFSET_ORDER);
    model_free(&m);

    /* A base offset below the segment's base. */
    build_segment(&p, 500, 10, 100, &m);
    {
        uint8_t be[8];
        lk_store_be64(be, 499);
        write_at(p.log, 0, be, 8);
    }
    recover_expect(&p, 500, &m, 0, LK_SCAN_OFFSET, LK_ERR_OFFSET_ORDER);
    model_free(&m);

    /* A corrupt batch length in the middle. */
    build_segment(&p, 500, 30, 100, &m);
    {
        uint8_t be[4];
        lk_store_be32(be, 20);
        write_at(p.log, m.b[12].position + 8, be, 4);
    }
    recover_expect(&p, 500, &m, 12, LK_SCAN_CORRUPT, LK_ERR_BAD_LENGTH);
    model_free(&m);

    /* Recover on an empty segment. */
    unlink(p.log);
    unlink(p.index);
    unlink(p.time);
    lk_segment_config c = config(500, 1 << 20, 4096, 4096, 100,
                                 LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *s = open_seg(&p, &c);
    lk_scan_result r;
    REQUIRE_OK(lk_segment_recover(s, 0, &r));
    CHECK_EQ(r.stop_reason, LK_SCAN_END);
    CHECK_EQ(r.valid_bytes, 0);
    CHECK_EQ(r.next_offset, 500);
    CHECK_EQ(r.first_offset, -1);
    CHECK_EQ(lk_segment_recover(s, 64, &r), LK_ERR_ARGUMENT);
    close_seg(s);
}

/* A writable segment left as a crash would leave it: the files still at their grown
 * sizes (copied while open), then recovered. */
static void test_crash_copy(void)
{
    seg_paths p = paths_for("00000000000000000000");
    seg_paths q = paths_for("crashcopy");
    lk_segment_config c = config(0, 1 << 20, 4096, 64 * 1024, 0,
                                 LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *s = open_seg(&p, &c);
    model m;
    model_init(&m, 0);
    int64_t ts = 1000;
    append_random(s, &m, 80, &ts);
    REQUIRE_OK(lk_segment_flush(s));
    CHECK_EQ(file_size(p.log), 64 * 1024);
    const char *from[3] = {p.log, p.index, p.time}, *to[3] = {q.log, q.index, q.time};
    for (int i = 0; i < 3; i++) {
        size_t len;
        uint8_t *b = read_whole(from[i], &len);
        CHECK(b != NULL);
        FILE *f = fopen(to[i], "wb");
        CHECK(f && fwrite(b, 1, len, f) == len);
        fclose(f);
        free(b);
    }
    close_seg(s);
    lk_segment_config rw = config(0, 1 << 20, 4096, 64 * 1024, 0, LK_SEGMENT_WRITABLE);
    s = open_seg(&q, &rw);
    verify(s, &m); /* the zero tail is not taken for data even before recovery */
    lk_scan_result r;
    REQUIRE_OK(lk_segment_recover(s, LK_VALIDATE_CRC, &r));
    CHECK_EQ(r.stop_reason, LK_SCAN_ZEROS);
    CHECK_EQ(r.valid_bytes, (int64_t)m.len);
    CHECK_EQ(file_size(q.log), (int64_t)m.len);
    verify(s, &m);
    append_random(s, &m, 10, &ts);
    verify(s, &m);
    close_seg(s);
    /* Read-only open of a crash copy. */
    lk_segment_config ro = config(0, 0, 0, 0, 0, 0);
    s = open_seg(&q, &ro);
    verify(s, &m);
    close_seg(s);
    model_free(&m);
}

static void test_indexes(void)
{
    seg_paths p = paths_for("00000000000000002000");
    model m;
    build_segment(&p, 2000, 200, 50, &m);
    size_t oi_n, ti_n, n2;
    uint8_t *oi = read_entries(p.index, 8, &oi_n);
    uint8_t *ti = read_entries(p.time, 12, &ti_n);
    CHECK(oi_n > 20 && ti_n > 5);
    lk_segment_config rw = config(2000, 1 << 20, 4096, 4096, 50, LK_SEGMENT_WRITABLE);
    lk_segment_config ro = config(2000, 0, 0, 0, 50, 0);

    /* Deleted indexes: recreated empty, lookups still right, rebuild restores them byte
     * for byte. */
    unlink(p.index);
    unlink(p.time);
    lk_segment *s = open_seg(&p, &rw);
    lk_segment_info info;
    REQUIRE_OK(lk_segment_get_info(s, &info));
    CHECK_EQ(info.index_entries, 0);
    verify(s, &m);
    REQUIRE_OK(lk_segment_rebuild_indexes(s));
    REQUIRE_OK(lk_segment_get_info(s, &info));
    CHECK_EQ(info.index_entries, (int64_t)oi_n);
    CHECK_EQ(info.time_index_entries, (int64_t)ti_n);
    verify(s, &m);
    close_seg(s);
    uint8_t *x = read_entries(p.index, 8, &n2);
    CHECK(n2 == oi_n && x && memcmp(x, oi, oi_n * 8) == 0);
    free(x);
    x = read_entries(p.time, 12, &n2);
    CHECK(n2 == ti_n && x && memcmp(x, ti, ti_n * 12) == 0);
    free(x);

    /* Missing indexes on a read-only segment: lookups walk; rebuild creates the files. */
    unlink(p.index);
    unlink(p.time);
    s = open_seg(&p, &ro);
    verify(s, &m);
    REQUIRE_OK(lk_segment_rebuild_indexes(s));
    verify(s, &m);
    close_seg(s);
    x = read_entries(p.index, 8, &n2);
    CHECK(n2 == oi_n && x && memcmp(x, oi, oi_n * 8) == 0);
    free(x);

    /* A garbled offset index: writable open refuses with nothing leaked; read-only open
     * uses the valid prefix; rebuild on the read-only handle repairs the file. */
    uint8_t garbage[8] = {0xff, 0xff, 0xff, 0xf0, 0x7f, 0, 0, 1};
    write_at(p.index, 8 * 5, garbage, 8);
    int fds = count_fds();
    lk_segment *bad = NULL;
    CHECK_EQ(lk_segment_open(p.log, p.index, p.time, &rw, &bad), LK_ERR_INDEX_CORRUPT);
    CHECK(bad == NULL);
    CHECK_EQ(count_fds(), fds);
    s = open_seg(&p, &ro);
    verify(s, &m);
    REQUIRE_OK(lk_segment_get_info(s, &info));
    CHECK_EQ(info.index_entries, 5);
    REQUIRE_OK(lk_segment_rebuild_indexes(s));
    verify(s, &m);
    REQUIRE_OK(lk_segment_get_info(s, &info));
    CHECK_EQ(info.index_entries, (int64_t)oi_n);
    close_seg(s);
    x = read_entries(p.index, 8, &n2);
    CHECK(n2 == oi_n && x && memcmp(x, oi, oi_n * 8) == 0);
    free(x);

    /* A garbled time index. */
    write_at(p.time, 12 * 2, garbage, 8);
    CHECK_EQ(lk_segment_open(p.log, p.index, p.time, &rw, &bad), LK_ERR_INDEX_CORRUPT);
    CHECK_EQ(count_fds(), fds);
    s = open_seg(&p, &ro);
    verify(s, &m);
    close_seg(s);
    write_at(p.time, 0, ti, ti_n * 12);

    /* Structurally valid entries that point at the wrong place (mid-batch, wrong
     * offset): a read-only segment's lookups notice and still answer right. */
    for (size_t i = 1; i + 1 < oi_n; i += 3) {
        int32_t pos = (int32_t)lk_load_be32(oi + i * 8 + 4);
        int32_t prev = (int32_t)lk_load_be32(oi + (i - 1) * 8 + 4);
        uint8_t be[4];
        lk_store_be32(be, (uint32_t)(prev + (pos - prev) / 2 + 1));
        write_at(p.index, (int64_t)(i * 8 + 4), be, 4);
    }
    s = open_seg(&p, &ro);
    verify(s, &m);
    close_seg(s);
    write_at(p.index, 0, oi, oi_n * 8);

    /* Index files of a writable segment that point past the log (index written back,
     * log not, then a crash): trimmed at open. */
    CHECK(truncate(p.log, (off_t)m.b[150].position) == 0);
    s = open_seg(&p, &rw);
    m.n = 150;
    model_rebuild_totals(&m);
    verify(s, &m);
    REQUIRE_OK(lk_segment_get_info(s, &info));
    CHECK(info.index_entries < (int64_t)oi_n);
    close_seg(s);

    free(oi);
    free(ti);
    model_free(&m);
}

static void test_full(void)
{
    seg_paths p = paths_for("00000000000000003000");
    lk_segment_config c = config(3000, 2048, 4096, 512, 4096,
                                 LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *s = open_seg(&p, &c);
    model m;
    model_init(&m, 3000);
    uint8_t batch[4096];
    int full = 0;
    for (int i = 0; i < 100 && !full; i++) {
        size_t n = make_batch_ts(batch, sizeof batch, 5, 100 + i);
        int64_t pos, next;
        int rc = lk_segment_append(s, batch, n, m.next_offset, &pos, &next);
        if (rc == LK_ERR_SEGMENT_FULL) {
            full = 1;
            CHECK(m.len + n > 2048);
        } else {
            CHECK_EQ(rc, LK_OK);
            model_add(&m, batch, n, m.next_offset);
        }
    }
    CHECK(full);
    verify(s, &m);
    /* A batch that fills the capacity exactly still fits. */
    lk_records_in in;
    memset(&in, 0, sizeof in);
    int32_t vlen[1];
    uint8_t value[2048];
    memset(value, 7, sizeof value);
    in.count = 1;
    in.values = value;
    in.value_lengths = vlen;
    for (int32_t v = 0; v < 2000; v++) {
        vlen[0] = v;
        in.values_size = (size_t)v;
        size_t n;
        lk_batch_params bp = {0, 0, 0, 5, -1, -1, -1};
        REQUIRE_OK(lk_batch_encode(&bp, &in, batch, sizeof batch, &n, NULL));
        if (m.len + n == 2048) {
            append_set(s, &m, batch, n, m.next_offset);
            break;
        }
        if (m.len + n > 2048)
            break;
    }
    verify(s, &m);
    close_seg(s);

    /* Index capacity: 2 offset entries with interval 0 means the 4th batch is refused. */
    unlink(p.log);
    unlink(p.index);
    unlink(p.time);
    c = config(3000, 1 << 20, 16, 4096, 0, LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    s = open_seg(&p, &c);
    model_free(&m);
    model_init(&m, 3000);
    for (int i = 0; i < 3; i++) {
        size_t n = make_batch_ts(batch, sizeof batch, 2, 10 + i);
        append_set(s, &m, batch, n, m.next_offset);
    }
    size_t n = make_batch_ts(batch, sizeof batch, 2, 20);
    int64_t pos, next;
    CHECK_EQ(lk_segment_append(s, batch, n, m.next_offset, &pos, &next), LK_ERR_SEGMENT_FULL);
    verify(s, &m);
    REQUIRE_OK(lk_segment_seal(s));
    close_seg(s);
    model_free(&m);
}

static void test_truncate(void)
{
    seg_paths p = paths_for("00000000000000004000");
    for (int trial = 0; trial < 14; trial++) {
        unlink(p.log);
        unlink(p.index);
        unlink(p.time);
        lk_segment_config c = config(4000, 1 << 20, 4096, 4096, (uint32_t)rnd_below(300),
                                     LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
        lk_segment *s = open_seg(&p, &c);
        model m;
        model_init(&m, 4000);
        int64_t ts = 5000;
        append_random(s, &m, 80, &ts);
        int64_t target;
        switch (trial) {
        case 0: target = 4000; break;
        case 1: target = 3000; break;
        case 2: target = m.next_offset; break;
        case 3: target = m.next_offset - 1; break;
        case 4: target = m.b[40].base; break;
        case 5: target = m.b[40].last; break;
        default: target = 4000 + (int64_t)rnd_below((uint32_t)(m.next_offset - 4000)); break;
        }
        int64_t next_before = m.next_offset;
        REQUIRE_OK(lk_segment_truncate_to_offset(s, target));
        model_truncate(&m, target);
        verify(s, &m);
        if (target < next_before) /* a real truncation also trims the file */
            CHECK_EQ(file_size(p.log), (int64_t)m.len);
        /* The truncated index equals a rebuilt one (offset entries exactly). */
        lk_segment_info a, b;
        REQUIRE_OK(lk_segment_get_info(s, &a));
        size_t n1, n2;
        uint8_t *before = read_entries(p.index, 8, &n1);
        REQUIRE_OK(lk_segment_rebuild_indexes(s));
        REQUIRE_OK(lk_segment_get_info(s, &b));
        uint8_t *after = read_entries(p.index, 8, &n2);
        CHECK_EQ(a.index_entries, b.index_entries);
        CHECK(before && after && memcmp(before, after, (size_t)a.index_entries * 8) == 0);
        free(before);
        free(after);
        append_random(s, &m, 20, &ts);
        verify(s, &m);
        close_seg(s);
        lk_segment_config ro = config(4000, 0, 0, 0, 0, 0);
        s = open_seg(&p, &ro);
        verify(s, &m);
        close_seg(s);
        model_free(&m);
    }
}

static void test_seal_and_release(void)
{
    seg_paths p = paths_for("00000000000000005000");
    lk_segment_config c = config(5000, 1 << 20, 4096, 4096, 100,
                                 LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *s = open_seg(&p, &c);
    model m;
    model_init(&m, 5000);
    int64_t ts = 10;
    append_random(s, &m, 50, &ts);
    REQUIRE_OK(lk_segment_seal(s));
    REQUIRE_OK(lk_segment_seal(s));
    lk_segment_info info;
    REQUIRE_OK(lk_segment_get_info(s, &info));
    CHECK_EQ(info.writable, 0);
    CHECK_EQ(info.flushed_size, (int64_t)m.len);
    CHECK_EQ(file_size(p.log), (int64_t)m.len);
    CHECK_EQ(file_size(p.index), info.index_entries * 8);
    CHECK_EQ(file_size(p.time), info.time_index_entries * 12);
    uint8_t batch[4096];
    size_t n = make_batch_ts(batch, sizeof batch, 1, 1);
    int64_t pos, next;
    CHECK_EQ(lk_segment_append(s, batch, n, m.next_offset, &pos, &next), LK_ERR_CLOSED);
    CHECK_EQ(lk_segment_truncate_to_offset(s, 5000), LK_ERR_CLOSED);
    CHECK_EQ(lk_segment_recover(s, 0, NULL), LK_ERR_CLOSED);
    REQUIRE_OK(lk_segment_flush(s));
    verify(s, &m);
    REQUIRE_OK(lk_segment_rebuild_indexes(s)); /* sealed: rewritten through write(2) */
    verify(s, &m);
    REQUIRE_OK(lk_segment_seal(s));

    CHECK(memcmp(lk_segment_data(s), m.shadow, m.len) == 0);
    close_seg(s);

    /* A writable segment closed without sealing first is sealed by close; read-only
     * segments map exactly the file. */
    lk_segment_config rw = config(5000, 1 << 20, 4096, 4096, 100, LK_SEGMENT_WRITABLE);
    s = open_seg(&p, &rw);
    append_random(s, &m, 5, &ts);
    CHECK_EQ(lk_segment_map_length(s), 1 << 20);
    close_seg(s);
    CHECK_EQ(file_size(p.log), (int64_t)m.len);
    lk_segment_config ro = config(5000, 0, 0, 0, 100, 0);
    s = open_seg(&p, &ro);
    CHECK_EQ(lk_segment_map_length(s), (int64_t)m.len);
    CHECK(memcmp(lk_segment_data(s), m.shadow, m.len) == 0);
    close_seg(s);
    model_free(&m);
}

/* max_batch_size limits appends, never what is stored: lowering it must not make
 * recovery drop larger batches written before. */
static void test_lowered_max_batch_size(void)
{
    seg_paths p = paths_for("00000000000000006000");
    lk_segment_config c = config(6000, 1 << 20, 4096, 4096, 100,
                                 LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *s = open_seg(&p, &c);
    model m;
    model_init(&m, 6000);
    int64_t ts = 77;
    append_random(s, &m, 40, &ts); /* batches up to ~700 bytes */
    close_seg(s);
    lk_segment_config rw = config(6000, 1 << 20, 4096, 4096, 100, LK_SEGMENT_WRITABLE);
    rw.max_batch_size = 100;
    s = open_seg(&p, &rw);
    verify(s, &m);
    lk_scan_result r;
    REQUIRE_OK(lk_segment_recover(s, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, &r));
    CHECK_EQ(r.valid_bytes, (int64_t)m.len);
    verify(s, &m);
    uint8_t batch[4096];
    size_t n = make_batch(batch, sizeof batch, 5, ts, 40);
    int64_t pos, next;
    if (n > 100)
        CHECK_EQ(lk_segment_append(s, batch, n, m.next_offset, &pos, &next), LK_ERR_BAD_LENGTH);
    n = make_batch_ts(batch, sizeof batch, 1, ts);
    CHECK(n <= 100);
    append_set(s, &m, batch, n, m.next_offset);
    verify(s, &m);
    REQUIRE_OK(lk_segment_rebuild_indexes(s));
    verify(s, &m);
    close_seg(s);
    lk_segment_config ro = config(6000, 0, 0, 0, 100, 0);
    ro.max_batch_size = 100;
    s = open_seg(&p, &ro);
    verify(s, &m);
    close_seg(s);
    model_free(&m);
}

static void test_edges(void)
{
    seg_paths p = paths_for("00000000000000000007");
    lk_segment_config c = config(0, 1 << 20, 4096, 4096, 0, LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *s = NULL;

    /* Arguments. */
    CHECK_EQ(lk_segment_open(NULL, NULL, NULL, &c, &s), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_open(p.log, NULL, NULL, NULL, &s), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_open(p.log, NULL, NULL, &c, NULL), LK_ERR_ARGUMENT);
    lk_segment_config bad = c;
    bad.flags = LK_SEGMENT_CREATE;
    CHECK_EQ(lk_segment_open(p.log, NULL, NULL, &bad, &s), LK_ERR_ARGUMENT);
    bad = c;
    bad.flags = 8 | LK_SEGMENT_WRITABLE;
    CHECK_EQ(lk_segment_open(p.log, NULL, NULL, &bad, &s), LK_ERR_ARGUMENT);
    bad = c;
    bad.grow_step = 0;
    CHECK_EQ(lk_segment_open(p.log, NULL, NULL, &bad, &s), LK_ERR_ARGUMENT);
    bad = c;
    bad.index_capacity = 4;
    CHECK_EQ(lk_segment_open(p.log, p.index, NULL, &bad, &s), LK_ERR_ARGUMENT);
    bad = c;
    bad.base_offset = -1;
    CHECK_EQ(lk_segment_open(p.log, NULL, NULL, &bad, &s), LK_ERR_ARGUMENT);
    CHECK(s == NULL);
    lk_segment_config ro = config(0, 0, 0, 0, 0, 0);
    CHECK_EQ(lk_segment_open(p.log, NULL, NULL, &ro, &s), LK_ERR_IO);
    CHECK_EQ(errno, ENOENT);
    CHECK_EQ(lk_segment_get_info(NULL, NULL), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_flush(NULL), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_segment_close(NULL), LK_ERR_ARGUMENT);
    CHECK(lk_segment_data(NULL) == NULL);
    CHECK_EQ(lk_segment_map_length(NULL), 0);

    /* Empty segments. */
    s = open_seg(&p, &c);
    model m;
    model_init(&m, 0);
    verify(s, &m);
    int64_t pos, base;
    CHECK_EQ(lk_segment_find_timestamp(s, 0, &pos, &base), LK_ERR_NOT_FOUND);
    REQUIRE_OK(lk_segment_truncate_to_offset(s, 0));
    close_seg(s);
    CHECK_EQ(file_size(p.log), 0);
    s = open_seg(&p, &ro);
    verify(s, &m);
    CHECK(lk_segment_data(s) == NULL);
    CHECK_EQ(lk_segment_map_length(s), 0);
    close_seg(s);

    /* Timestamp 0 at relative offset 0 (an all-zero time entry is never written), and
     * equal timestamps. */
    lk_segment_config rw = config(0, 1 << 20, 4096, 4096, 0, LK_SEGMENT_WRITABLE);
    s = open_seg(&p, &rw);
    uint8_t batch[4096];
    int64_t stamps[] = {0, 0, 0, 5, 5, 3, 9, 9, -1, 12};
    for (size_t i = 0; i < sizeof stamps / sizeof *stamps; i++) {
        size_t n = make_batch_ts(batch, sizeof batch, 1, stamps[i]);
        append_set(s, &m, batch, n, m.next_offset);
    }
    verify(s, &m);
    close_seg(s);
    s = open_seg(&p, &rw);
    verify(s, &m);
    close_seg(s);
    s = open_seg(&p, &ro);
    verify(s, &m);
    close_seg(s);
    model_free(&m);

    /* Relative offsets must fit int32. */
    unlink(p.log);
    unlink(p.index);
    unlink(p.time);
    s = open_seg(&p, &c);
    model_init(&m, 0);
    size_t n2 = make_batch_ts(batch, sizeof batch, 2, 1);
    CHECK_EQ(lk_segment_append(s, batch, n2, INT32_MAX, &pos, &base), LK_ERR_OFFSET_ORDER);
    size_t n1 = make_batch_ts(batch, sizeof batch, 1, 1);
    append_set(s, &m, batch, n1, (int64_t)INT32_MAX - 1);
    append_set(s, &m, batch, n1, INT32_MAX);
    CHECK_EQ(lk_segment_append(s, batch, n1, (int64_t)INT32_MAX + 1, &pos, &base),
             LK_ERR_OFFSET_ORDER);
    int64_t probe = INT32_MAX;
    CHECK_EQ(lk_segment_find_offset(s, probe, &pos, &base), LK_OK);
    CHECK_EQ(pos, m.b[1].position);
    CHECK_EQ(lk_segment_find_offset(s, 5, &pos, &base), LK_OK);
    CHECK_EQ(pos, 0);
    close_seg(s);
    model_free(&m);
}

/* ---- lk_log_scan and the index functions on hostile input ---- */

static void test_scan_fuzz(void)
{
    /* A valid log of 40 batches, by concatenation. */
    uint8_t *log = malloc(1 << 16);
    size_t len = 0, starts[41];
    int64_t offset = 100;
    for (int i = 0; i < 40; i++) {
        starts[i] = len;
        size_t n = make_batch(log + len, (1 << 16) - len, 1 + (int32_t)rnd_below(6), 1000 + i, 12);
        lk_store_be64(log + len, (uint64_t)offset);
        offset += (int64_t)lk_load_be32(log + len + 23) + 1;
        len += n;
    }
    starts[40] = len;
    lk_scan_result r;
    REQUIRE_OK(lk_log_scan(log, len, 0, 100, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, &r));
    CHECK_EQ(r.stop_reason, LK_SCAN_END);
    CHECK_EQ(r.valid_bytes, (int64_t)len);
    CHECK_EQ(r.batches, 40);
    CHECK_EQ(r.next_offset, offset);
    CHECK_EQ(r.first_offset, 100);
    /* LK_SCAN_DENSE: the log is dense from 100; from 99 its first batch leaves a gap, and
     * a baseOffset moved forward (the CRC does not cover it) ends the prefix there. */
    REQUIRE_OK(lk_log_scan(log, len, 0, 100, 0, LK_VALIDATE_CRC | LK_SCAN_DENSE, &r));
    CHECK_EQ(r.stop_reason, LK_SCAN_END);
    CHECK_EQ(r.batches, 40);
    REQUIRE_OK(lk_log_scan(log, len, 0, 99, 0, LK_VALIDATE_CRC | LK_SCAN_DENSE, &r));
    CHECK_EQ(r.stop_reason, LK_SCAN_OFFSET);
    CHECK_EQ(r.valid_bytes, 0);
    uint64_t saved = lk_load_be64(log + starts[20]);
    lk_store_be64(log + starts[20], saved + 1000);
    REQUIRE_OK(lk_log_scan(log, len, 0, 100, 0, LK_VALIDATE_CRC | LK_SCAN_DENSE, &r));
    CHECK_EQ(r.stop_reason, LK_SCAN_OFFSET);
    CHECK_EQ(r.valid_bytes, (int64_t)starts[20]);
    CHECK_EQ(r.batches, 20);
    REQUIRE_OK(lk_log_scan(log, len, 0, 100, 0, LK_VALIDATE_CRC, &r));
    CHECK_EQ(r.valid_bytes, (int64_t)starts[21]); /* without it, the next batch stops it */
    lk_store_be64(log + starts[20], saved);
    REQUIRE_OK(lk_log_scan(log, len, starts[3], 0, 0, LK_VALIDATE_CRC, &r));
    CHECK_EQ(r.batches, 37);
    REQUIRE_OK(lk_log_scan(log, len, 0, 101, 0, LK_VALIDATE_CRC, &r));
    CHECK_EQ(r.stop_reason, LK_SCAN_OFFSET);
    CHECK_EQ(r.valid_bytes, 0);
    CHECK_EQ(r.next_offset, 101);
    REQUIRE_OK(lk_log_scan(log, len, 0, 0, 100, LK_VALIDATE_CRC, &r));
    CHECK_EQ(r.stop_reason, LK_SCAN_CORRUPT); /* a batch over max_batch_size */
    CHECK_EQ(r.stop_error.code, LK_ERR_BAD_LENGTH);
    CHECK_EQ(lk_log_scan(log, len, len + 1, 0, 0, 0, &r), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_log_scan(NULL, 5, 0, 0, 0, 0, &r), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_log_scan(log, len, 0, 0, 0, 0, NULL), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_log_scan(log, len, 0, 0, 0, 64, &r), LK_ERR_ARGUMENT);
    REQUIRE_OK(lk_log_scan(NULL, 0, 0, 7, 0, 0, &r));
    CHECK_EQ(r.stop_reason, LK_SCAN_END);
    CHECK_EQ(r.next_offset, 7);

    /* Every prefix length: the valid prefix is the last boundary at or before it. */
    for (size_t l = 0; l <= len; l++) {
        uint8_t *copy = malloc(l ? l : 1);
        memcpy(copy, log, l);
        REQUIRE_OK(lk_log_scan(copy, l, 0, 0, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, &r));
        size_t k = 0;
        while (k < 40 && starts[k + 1] <= l)
            k++;
        CHECK_EQ(r.valid_bytes, (int64_t)starts[k]);
        int zeros = 1; /* a torn piece made only of zero bytes reads as ZEROS */
        for (size_t i = starts[k]; i < l; i++)
            zeros &= copy[i] == 0;
        CHECK_EQ(r.stop_reason, starts[k] == l ? LK_SCAN_END : zeros ? LK_SCAN_ZEROS : LK_SCAN_TORN);
        free(copy);
    }

    /* Single-byte mutations. */
    uint8_t *copy = malloc(len);
    for (int it = 0; it < 4000; it++) {
        memcpy(copy, log, len);
        size_t at = rnd_below((uint32_t)len);
        uint8_t flip = (uint8_t)(1u << rnd_below(8));
        copy[at] ^= flip;
        int flags = (int)rnd_below(8);
        REQUIRE_OK(lk_log_scan(copy, len, 0, 0, 0, flags, &r));
        CHECK(r.valid_bytes >= 0 && r.valid_bytes <= (int64_t)len);
        CHECK(r.stop_reason >= LK_SCAN_END && r.stop_reason <= LK_SCAN_OFFSET);
        size_t k = 0;
        while (starts[k + 1] <= at)
            k++;
        size_t in_batch = at - starts[k];
        if (flags & LK_VALIDATE_CRC) {
            /* Anything from the CRC field on is covered: batch k cannot survive. */
            if (in_batch >= 17)
                CHECK(r.valid_bytes <= (int64_t)starts[k]);
        }
        /* batchLength: a new length is caught by the CRC or by the record walk. */
        if ((flags & (LK_VALIDATE_CRC | LK_VALIDATE_RECORDS)) && in_batch >= 8 && in_batch < 12)
            CHECK(r.valid_bytes <= (int64_t)starts[k + 1]);
    }
    free(copy);

    /* Random garbage, some of it dressed as a batch header. */
    for (int it = 0; it < 4000; it++) {
        size_t l = rnd_below(400);
        uint8_t *g = malloc(l ? l : 1);
        for (size_t i = 0; i < l; i++)
            g[i] = (uint8_t)(rnd_below(3) ? rnd() : 0);
        if (l >= 61 && rnd_below(2)) {
            lk_store_be32(g + 8, (uint32_t)(49 + rnd_below((uint32_t)l)));
            g[16] = 2;
        }
        REQUIRE_OK(lk_log_scan(g, l, rnd_below((uint32_t)l + 1), (int64_t)rnd() - 100,
                               rnd_below(2) ? 0 : rnd_below(500), (int)rnd_below(8), &r));
        CHECK(r.valid_bytes <= (int64_t)l);

        /* Index functions on the same garbage. */
        int64_t slot, t;
        int32_t rel, pos;
        REQUIRE_OK(lk_offset_index_lookup(g, l / 8, (int32_t)rnd(), &slot, &rel, &pos));
        CHECK(slot >= -1 && slot < (int64_t)(l / 8));
        REQUIRE_OK(lk_time_index_lookup(g, l / 12, (int64_t)rnd() << 20, &slot, &t, &rel));
        CHECK(slot >= -1 && slot < (int64_t)(l / 12));
        CHECK(lk_offset_index_valid_entries(g, l / 8, rnd()) <= l / 8);
        CHECK(lk_time_index_valid_entries(g, l / 12, (int32_t)rnd()) <= l / 12);
        free(g);
    }
    CHECK_EQ(lk_offset_index_lookup(NULL, 1, 0, NULL, NULL, NULL), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_time_index_lookup(NULL, 1, 0, NULL, NULL, NULL), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_offset_index_lookup(NULL, 0, 0, NULL, NULL, NULL), LK_OK);
    CHECK_EQ(lk_offset_index_valid_entries(NULL, 3, 100), 0);

    /* Known answers for the index functions. */
    uint8_t oi[4 * 8], ti[4 * 12];
    int32_t rels[4] = {3, 10, 11, 40}, poss[4] = {100, 300, 350, 900};
    int64_t stamps[4] = {50, 70, 70, 90};
    for (int i = 0; i < 4; i++) {
        lk_store_be32(oi + i * 8, (uint32_t)rels[i]);
        lk_store_be32(oi + i * 8 + 4, (uint32_t)poss[i]);
        lk_store_be64(ti + i * 12, (uint64_t)stamps[i]);
        lk_store_be32(ti + i * 12 + 8, (uint32_t)rels[i]);
    }
    int64_t slot, t;
    int32_t rel, pos;
    REQUIRE_OK(lk_offset_index_lookup(oi, 4, 2, &slot, &rel, &pos));
    CHECK(slot == -1 && pos == 0);
    REQUIRE_OK(lk_offset_index_lookup(oi, 4, 10, &slot, &rel, &pos));
    CHECK(slot == 1 && rel == 10 && pos == 300);
    REQUIRE_OK(lk_offset_index_lookup(oi, 4, 39, &slot, &rel, &pos));
    CHECK(slot == 2 && rel == 11 && pos == 350);
    REQUIRE_OK(lk_offset_index_lookup(oi, 4, INT32_MAX, &slot, &rel, &pos));
    CHECK(slot == 3 && pos == 900);
    REQUIRE_OK(lk_time_index_lookup(ti, 4, 49, &slot, &t, &rel));
    CHECK(slot == -1);
    REQUIRE_OK(lk_time_index_lookup(ti, 4, 75, &slot, &t, &rel));
    CHECK(slot == 1 && t == 70 && rel == 10); /* first of the equal timestamps */
    REQUIRE_OK(lk_time_index_lookup(ti, 4, 1000, &slot, &t, &rel));
    CHECK(slot == 3 && rel == 40);
    CHECK_EQ(lk_offset_index_valid_entries(oi, 4, 1000), 4);
    CHECK_EQ(lk_offset_index_valid_entries(oi, 4, 900), 3);
    CHECK_EQ(lk_time_index_valid_entries(ti, 4, 40), 4);
    CHECK_EQ(lk_time_index_valid_entries(ti, 4, 39), 3);
    CHECK_EQ(lk_time_index_valid_entries(ti, 4, -1), 0);
    memset(oi + 16, 0, 16);
    CHECK_EQ(lk_offset_index_valid_entries(oi, 4, 1000), 2);
    free(log);
}

/* ---- a full file system (a 1 MiB tmpfs; skipped without the right to mount) ---- */

static void test_no_space(void)
{
    char mnt[300];
    snprintf(mnt, sizeof mnt, "%s/tmpfs", dir);
    if (mkdir(mnt, 0700) != 0)
        return;
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") != 0) {
        printf("test_segment: ENOSPC test skipped (mount: %s)\n", strerror(errno));
        rmdir(mnt);
        return;
    }
    seg_paths p;
    snprintf(p.log, sizeof p.log, "%s/0.log", mnt);
    snprintf(p.index, sizeof p.index, "%s/0.index", mnt);
    snprintf(p.time, sizeof p.time, "%s/0.timeindex", mnt);
    lk_segment_config c = config(0, 4 << 20, 64 * 1024, 64 * 1024, 4096,
                                 LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE);
    lk_segment *s = open_seg(&p, &c);
    model m;
    model_init(&m, 0);
    static uint8_t set[64 * 1024];
    int rc = LK_OK;
    for (int i = 0; i < 1000 && rc == LK_OK; i++) {
        size_t len = 0;
        for (int k = 0; k < 10; k++)
            len += make_batch(set + len, sizeof set - len, 40, 1000 + i, 40);
        int64_t pos, next;
        rc = lk_segment_append(s, set, len, m.next_offset, &pos, &next);
        if (rc == LK_OK)
            model_add(&m, set, len, m.next_offset);
    }
    CHECK_EQ(rc, LK_ERR_NO_SPACE);
    CHECK(errno == ENOSPC);
    CHECK(m.len > 256 * 1024);
    verify(s, &m);
    REQUIRE_OK(lk_segment_flush(s));
    close_seg(s);
    lk_segment_config rw = config(0, 4 << 20, 64 * 1024, 64 * 1024, 4096, LK_SEGMENT_WRITABLE);
    s = open_seg(&p, &rw);
    lk_scan_result r;
    REQUIRE_OK(lk_segment_recover(s, LK_VALIDATE_CRC, &r));
    CHECK_EQ(r.valid_bytes, (int64_t)m.len);
    verify(s, &m);
    close_seg(s);
    model_free(&m);
    if (umount2(mnt, 0) != 0)
        umount2(mnt, MNT_DETACH);
    rmdir(mnt);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/lk_test_segment_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_scan_fuzz();
    test_append_find_reopen();
    test_recovery();
    test_crash_copy();
    test_indexes();
    test_full();
    test_truncate();
    test_seal_and_release();
    test_lowered_max_batch_size();
    test_edges();
    test_no_space();
    remove_dir_contents(dir);
    rmdir(dir);
    return check_summary("test_segment");
}
