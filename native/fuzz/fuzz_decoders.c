/*
 * fuzz_decoders.c - a fuzz target for the C code that reads untrusted bytes.
 *
 * What reaches the C core from outside: a produce request's record set (validated by
 * lk_batch_validate / lk_batch_decode before it is stored), segment files after a crash or
 * a disk error (lk_log_scan, lk_segment_open/recover, the index checks), a read being
 * decoded (lk_decode_columns, lk_records_decode, lk_headers_decode, control records), a
 * read_committed read (lk_drop_aborted), and the cleaner's passes over stored batches
 * (lk_cleaner_producers, lk_cleaner_map, lk_cleaner_filter, lk_records_first_keyless).
 * LLVMFuzzerTestOneInput runs every one of them on the input and checks their answers:
 *
 *   - against the contract in logkernel.h: results inside the buffer, counts inside the
 *     capacity given, error positions inside the input, END meaning the whole buffer;
 *   - against each other: a stricter validation never accepts what a looser one refuses;
 *     a batch lk_batch_validate accepts decodes, with every span inside the batch and
 *     every record's headers decodable; a log scan's valid prefix is made of batches the
 *     validator accepts; the columns of a fully valid log hold exactly its data records;
 *     lk_drop_aborted is idempotent and leaves a buffer untouched with an empty list; the
 *     cleaner's filter writes only batches that validate; a recovered segment is the
 *     scan's valid prefix and takes an append.
 *
 * Parameters that are not bytes (offsets, capacities, flags, the aborted transactions)
 * are derived from the input (its CRC and its own batch headers), so an input always
 * means the same run. A disagreement prints what failed and aborts; memory errors and
 * undefined behaviour are the sanitizers' to report.
 *
 * Built with any compiler as a libFuzzer target (clang -fsanitize=fuzzer), or with gcc
 * and native/fuzz/driver.c, a standalone mutation driver: `make fuzz-native`, and a short
 * run in `make test-asan`.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "logkernel.h"

#include "fuzz.h"

#define FUZZ_CHECK(cond, what)                                                               \
    do {                                                                                     \
        if (!(cond))                                                                         \
            fuzz_fail(__LINE__, #cond, what);                                                \
    } while (0)

static void fuzz_fail(int line, const char *cond, const char *what)
{
    fprintf(stderr, "native/fuzz/fuzz_decoders.c:%d: %s: %s does not hold\n", line, what, cond);
    abort();
}

int fuzz_segments = 1;

/* The most bytes of an input any decoder sees: larger inputs are cut (libFuzzer passes
 * inputs of any size; 1 MiB holds every seed and keeps one input's run short). */
enum { MAX_INPUT = 1 << 20, MAX_BATCHES = 64, MAX_PRODUCERS = 8 };

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void *exact(const uint8_t *src, size_t n)
{
    /* Each decoder gets its input in an allocation of exactly its length: ASan then
     * reports a read even one byte past it. */
    uint8_t *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "fuzz_decoders: out of memory\n");
        abort();
    }
    if (n)
        memcpy(p, src, n);
    return p;
}

static void *zalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "fuzz_decoders: out of memory\n");
        abort();
    }
    return p;
}

/* The knobs: pseudo-random numbers from the input's CRC (xorshift), so parameters vary
 * with the input but are the same every time it is run. */
static uint64_t knob_state;

static uint64_t knob(void)
{
    knob_state ^= knob_state << 13;
    knob_state ^= knob_state >> 7;
    knob_state ^= knob_state << 17;
    return knob_state;
}

static int64_t add_saturating(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

static int64_t pick_offset(int64_t near)
{
    switch (knob() % 6) {
    case 0:
        return INT64_MIN;
    case 1:
        return INT64_MAX;
    case 2:
        return 0;
    default:
        return add_saturating(near, (int64_t)(knob() % 64) - 16);
    }
}

/* The headers of the consecutive batches that parse at the start of buf. */
typedef struct {
    lk_batch_header h[MAX_BATCHES];
    size_t start[MAX_BATCHES];
    size_t count;
    size_t end; /* where the walk stopped */
} batch_walk;

static void walk_batches(const uint8_t *buf, size_t len, batch_walk *w)
{
    w->count = 0;
    w->end = 0;
    while (w->count < MAX_BATCHES &&
           lk_batch_parse_header(buf + w->end, len - w->end, 0, &w->h[w->count], NULL) == LK_OK) {
        w->start[w->count] = w->end;
        w->end += (size_t)w->h[w->count].batch_length + LK_LOG_OVERHEAD;
        w->count++;
    }
}

static void check_error(int rc, const lk_error *err, size_t len, const char *what)
{
    if (rc == LK_OK)
        return;
    FUZZ_CHECK(err->code == rc, what);
    FUZZ_CHECK(err->what != NULL, what);
    FUZZ_CHECK(err->position >= 0 && (uint64_t)err->position <= len, what);
}

/* ---- one batch: header, validation depths, decoding, records, headers, control ---- */

static void check_one_batch(const uint8_t *buf, size_t len)
{
    lk_batch_header h, hv;
    lk_error err;
    int parsed = lk_batch_parse_header(buf, len, 0, &h, &err);
    check_error(parsed, &err, len, "lk_batch_parse_header's error");
    if (parsed == LK_OK) {
        FUZZ_CHECK(h.magic == 2 && h.batch_length >= 49, "a parsed header");
        FUZZ_CHECK((uint64_t)h.batch_length + LK_LOG_OVERHEAD <= len, "a parsed header");
    }
    /* A small size limit refuses what the unlimited parse accepts only by BAD_LENGTH. */
    uint32_t limit = (uint32_t)(knob() % 4096);
    int limited = lk_batch_parse_header(buf, len, limit, &hv, &err);
    FUZZ_CHECK(limited == LK_OK ? parsed == LK_OK : (parsed != LK_OK || limited == LK_ERR_BAD_LENGTH),
               "a size limit");

    int plain = lk_batch_validate(buf, len, 0, 0, &hv, &err);
    int crc = lk_batch_validate(buf, len, 0, LK_VALIDATE_CRC, &hv, &err);
    check_error(crc, &err, len, "lk_batch_validate's error");
    int records = lk_batch_validate(buf, len, 0, LK_VALIDATE_RECORDS, &hv, &err);
    int full = lk_batch_validate(buf, len, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, &hv, &err);
    check_error(full, &err, len, "lk_batch_validate's error");
    int contiguous = lk_batch_validate(buf, len, 0,
                                       LK_VALIDATE_CRC | LK_VALIDATE_RECORDS | LK_VALIDATE_CONTIGUOUS,
                                       &hv, &err);
    FUZZ_CHECK(plain != LK_OK || parsed == LK_OK, "validation accepting a header that does not parse");
    FUZZ_CHECK(crc != LK_OK || plain == LK_OK, "a stricter validation accepting more");
    FUZZ_CHECK(full != LK_OK || (crc == LK_OK && records == LK_OK), "a stricter validation accepting more");
    FUZZ_CHECK(contiguous != LK_OK || full == LK_OK, "a stricter validation accepting more");
    if (parsed != LK_OK)
        return;

    size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
    int compressed = (h.attributes & LK_ATTR_COMPRESSION_MASK) != 0;
    size_t capacity = h.record_count > 0 ? (size_t)h.record_count : 1;
    if (capacity > len)
        capacity = len; /* a valid batch has fewer records than bytes */
    lk_record_span *spans = zalloc(capacity * sizeof *spans);
    int32_t decoded = -1;
    int rc = lk_batch_decode(buf, len, 0, &hv, spans, capacity, &decoded, &err);
    check_error(rc, &err, len, "lk_batch_decode's error");
    if (full == LK_OK && (compressed || (size_t)h.record_count <= capacity))
        FUZZ_CHECK(rc == LK_OK, "lk_batch_decode refusing a batch lk_batch_validate accepts");
    if (rc == LK_OK && compressed)
        FUZZ_CHECK(decoded == 0, "lk_batch_decode of a compressed batch");
    if (rc == LK_OK && !compressed) {
        FUZZ_CHECK(crc == LK_OK, "lk_batch_decode accepting a bad CRC");
        FUZZ_CHECK(decoded == h.record_count, "lk_batch_decode's count");
        lk_header_span *hs = NULL;
        for (int32_t i = 0; i < decoded; i++) {
            const lk_record_span *r = &spans[i];
            FUZZ_CHECK(r->key_len >= -1 && r->value_len >= -1, "a record span");
            FUZZ_CHECK(r->key_len < 0 || (r->key_pos >= LK_BATCH_HEADER_SIZE &&
                                          (size_t)r->key_pos + (size_t)r->key_len <= size),
                       "a key inside its batch");
            FUZZ_CHECK(r->value_len < 0 || (r->value_pos >= LK_BATCH_HEADER_SIZE &&
                                            (size_t)r->value_pos + (size_t)r->value_len <= size),
                       "a value inside its batch");
            FUZZ_CHECK(r->headers_count >= 0 && r->headers_len >= 0 && r->headers_pos >= 0 &&
                           (size_t)r->headers_pos + (size_t)r->headers_len <= size,
                       "headers inside their batch");
            FUZZ_CHECK(r->offset_delta >= 0 && r->offset_delta <= h.last_offset_delta,
                       "an offset delta");
            if (r->headers_count > 0) {
                hs = realloc(hs, (size_t)r->headers_count * sizeof *hs);
                FUZZ_CHECK(hs != NULL, "memory");
                const uint8_t *at = buf + r->headers_pos;
                int hrc = lk_headers_decode(at, (size_t)r->headers_len, r->headers_count, hs,
                                            (size_t)r->headers_count, &err);
                FUZZ_CHECK(hrc == LK_OK, "the headers of a record lk_batch_decode accepted");
                for (int32_t j = 0; j < r->headers_count; j++)
                    FUZZ_CHECK(hs[j].key_len >= 0 && hs[j].value_len >= -1 &&
                                   (size_t)hs[j].key_pos + (size_t)hs[j].key_len <= (size_t)r->headers_len &&
                                   (hs[j].value_len < 0 ||
                                    (size_t)hs[j].value_pos + (size_t)hs[j].value_len <=
                                        (size_t)r->headers_len),
                               "a header inside its record");
            }
            if ((h.attributes & LK_ATTR_CONTROL) && r->key_len >= 0) {
                int16_t type;
                int32_t epoch;
                lk_control_record_parse(buf + r->key_pos, r->key_len,
                                        r->value_len >= 0 ? buf + r->value_pos : NULL, r->value_len,
                                        &type, &epoch, &err);
            }
        }
        free(hs);
    }
    /* The records section alone, as a decompressed payload would be decoded. */
    if (!compressed && size >= LK_BATCH_HEADER_SIZE && h.record_count >= 0) {
        size_t n = size - LK_BATCH_HEADER_SIZE;
        uint8_t *section = exact(buf + LK_BATCH_HEADER_SIZE, n);
        lk_record_span *again = zalloc(capacity * sizeof *again);
        int rrc = lk_records_decode(section, n, h.record_count, h.last_offset_delta, again,
                                    capacity, &err);
        /* Its position is not checked: a lastOffsetDelta mismatch is reported at the
         * header's field (byte 23), which is not in this buffer (reported, minor). */
        FUZZ_CHECK(rrc == LK_OK || (err.code == rrc && err.what), "lk_records_decode's error");
        if (rc == LK_OK) {
            FUZZ_CHECK(rrc == LK_OK, "lk_records_decode refusing what lk_batch_decode accepts");
            for (int32_t i = 0; i < decoded; i++)
                FUZZ_CHECK(again[i].offset_delta == spans[i].offset_delta &&
                               again[i].key_len == spans[i].key_len &&
                               again[i].value_len == spans[i].value_len &&
                               again[i].headers_count == spans[i].headers_count &&
                               (again[i].key_len < 0 ||
                                again[i].key_pos + LK_BATCH_HEADER_SIZE == spans[i].key_pos),
                           "lk_records_decode disagreeing with lk_batch_decode");
        }
        free(again);
        free(section);
    }
    free(spans);
}

/* ---- runs of batches: the log scan, the columns, the keyless check ---- */

static void check_scan(const uint8_t *buf, size_t len, const batch_walk *w)
{
    static const int flag_sets[] = {LK_VALIDATE_CRC, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS};
    int64_t min_offset = w->count ? pick_offset(w->h[0].base_offset) : pick_offset(0);
    for (size_t f = 0; f < sizeof flag_sets / sizeof flag_sets[0]; f++) {
        lk_scan_result s;
        FUZZ_CHECK(lk_log_scan(buf, len, 0, min_offset, 0, flag_sets[f], &s) == LK_OK, "lk_log_scan");
        FUZZ_CHECK(s.valid_bytes >= 0 && (uint64_t)s.valid_bytes <= len, "the scan's valid prefix");
        FUZZ_CHECK(s.stop_reason >= LK_SCAN_END && s.stop_reason <= LK_SCAN_OFFSET, "a stop reason");
        if (s.stop_reason == LK_SCAN_END)
            FUZZ_CHECK((uint64_t)s.valid_bytes == len, "END before the end");
        if (s.stop_reason == LK_SCAN_ZEROS)
            for (size_t i = (size_t)s.valid_bytes; i < len; i++)
                FUZZ_CHECK(buf[i] == 0, "ZEROS with a byte that is not");
        /* The prefix is made of batches the validator accepts, as many as it says. */
        size_t pos = 0;
        int64_t batches = 0, records = 0;
        while (pos < (size_t)s.valid_bytes) {
            lk_batch_header h;
            FUZZ_CHECK(lk_batch_validate(buf + pos, (size_t)s.valid_bytes - pos, 0, flag_sets[f], &h,
                                         NULL) == LK_OK,
                       "a batch of the scan's valid prefix that does not validate");
            pos += (size_t)h.batch_length + LK_LOG_OVERHEAD;
            batches++;
            records += h.record_count;
        }
        FUZZ_CHECK(batches == s.batches && records == s.records, "the scan's counts");
        /* A scan from inside the buffer stays inside it (positions are the buffer's). */
        size_t start = len ? (size_t)(knob() % (len + 1)) : 0;
        FUZZ_CHECK(lk_log_scan(buf, len, start, INT64_MIN, 0, flag_sets[f], &s) == LK_OK, "lk_log_scan");
        FUZZ_CHECK((uint64_t)s.valid_bytes >= start && (uint64_t)s.valid_bytes <= len,
                   "a scan from a start");
    }
}

/* Decodes buf into columns: with offsets and a capacity from the knobs, or (unlimited) with
 * no offset bounds and columns sized by lk_columns_bound, where more can be checked. */
static void check_columns(const uint8_t *buf, size_t len, const batch_walk *w, int unlimited)
{
    int64_t bound = lk_columns_bound(buf, len);
    FUZZ_CHECK(bound >= 0 && (uint64_t)bound <= len / 7, "lk_columns_bound");
    int64_t min_offset = unlimited ? INT64_MIN : pick_offset(w->count ? w->h[0].base_offset : 0);
    int64_t max_offset = unlimited ? INT64_MAX : pick_offset(w->count ? add_saturating(w->h[0].base_offset, 8) : 8);
    size_t capacities[] = {0, 1, (size_t)(knob() % 16), (size_t)bound};
    size_t capacity = unlimited ? (size_t)bound : capacities[knob() % 4];
    int flags = knob() % 2 ? LK_VALIDATE_CRC : LK_VALIDATE_CRC | LK_VALIDATE_CONTIGUOUS;
    void *block = zalloc(capacity * LK_COLUMNS_ROW_BYTES + 8);
    lk_columns cols;
    FUZZ_CHECK(lk_columns_layout(&cols, capacity ? block : NULL, capacity) == LK_OK, "lk_columns_layout");
    lk_columns_result res;
    lk_error err;
    int rc = lk_decode_columns(buf, len, min_offset, max_offset, flags, &cols, &res, &err);
    check_error(rc, &err, len, "lk_decode_columns' error");
    FUZZ_CHECK((rc == LK_OK) == (res.stop != LK_COLUMNS_CORRUPT), "CORRUPT and the return code");
    FUZZ_CHECK(res.records >= 0 && (uint64_t)res.records <= capacity, "rows past the capacity");
    FUZZ_CHECK(res.position >= 0 && (uint64_t)res.position <= len, "the columns' position");
    FUZZ_CHECK(res.stop != LK_COLUMNS_END || (uint64_t)res.position == len, "END before the end");
    FUZZ_CHECK(res.next_offset >= min_offset || min_offset == INT64_MIN, "next_offset below min_offset");
    for (int64_t i = 0; i < res.records; i++) {
        FUZZ_CHECK(cols.offsets[i] >= min_offset && cols.offsets[i] < max_offset, "a row out of range");
        FUZZ_CHECK(cols.key_len[i] < 0 || (cols.key_pos[i] >= 0 &&
                                           (uint64_t)cols.key_pos[i] + (uint64_t)cols.key_len[i] <= len),
                   "a key outside the buffer");
        FUZZ_CHECK(cols.value_len[i] < 0 || (cols.value_pos[i] >= 0 &&
                                             (uint64_t)cols.value_pos[i] + (uint64_t)cols.value_len[i] <= len),
                   "a value outside the buffer");
        FUZZ_CHECK(cols.headers_pos[i] >= 0 && cols.headers_len[i] >= 0 && cols.headers_count[i] >= 0 &&
                       (uint64_t)cols.headers_pos[i] + (uint64_t)cols.headers_len[i] <= len,
                   "headers outside the buffer");
    }
    if (unlimited) {
        /* Columns sized by lk_columns_bound hold every row: FULL would send the caller
         * round again with the same room, for ever (it did, at a batch too short for its
         * recordsCount: d0b24ad). */
        FUZZ_CHECK(res.stop != LK_COLUMNS_FULL, "FULL with room for every row lk_columns_bound counts");
        /* A log the scan accepts whole, with no compressed batch, gives all its data records. */
        lk_scan_result s;
        lk_log_scan(buf, len, 0, INT64_MIN, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS |
                    (flags & LK_VALIDATE_CONTIGUOUS), &s);
        int64_t data_records = 0;
        int any_compressed = 0;
        for (size_t i = 0; i < w->count; i++) {
            if (w->h[i].attributes & LK_ATTR_COMPRESSION_MASK)
                any_compressed = 1;
            else if (!(w->h[i].attributes & LK_ATTR_CONTROL))
                data_records += w->h[i].record_count;
        }
        if (s.stop_reason == LK_SCAN_END && w->count < MAX_BATCHES && !any_compressed) {
            FUZZ_CHECK(rc == LK_OK && res.stop == LK_COLUMNS_END, "the columns of a valid log");
            FUZZ_CHECK(res.records == data_records, "the rows of a valid log");
        }
    }
    free(block);
}

static void check_keyless(const uint8_t *buf, size_t len)
{
    int64_t position = -3;
    int32_t index = -3;
    lk_error err;
    int rc = lk_records_first_keyless(buf, len, &position, &index, &err);
    check_error(rc, &err, len, "lk_records_first_keyless' error");
    if (rc == LK_OK)
        FUZZ_CHECK((position == -1 && index == -1) || (position >= 0 && (uint64_t)position < len &&
                                                       index >= -2),
                   "lk_records_first_keyless' answer");
}

/* ---- read_committed: lk_drop_aborted ---- */

/* Aborted transactions that match the input's own transactional batches: for up to
 * MAX_PRODUCERS producer ids, one or two ranges around their batches' base offsets. */
static size_t aborted_list(const batch_walk *w, lk_aborted_txn *out)
{
    int64_t producers[MAX_PRODUCERS];
    size_t n_producers = 0;
    for (size_t i = 0; i < w->count && n_producers < MAX_PRODUCERS; i++) {
        const lk_batch_header *h = &w->h[i];
        if (!(h->attributes & LK_ATTR_TRANSACTIONAL) || h->producer_id < 0)
            continue;
        size_t j = 0;
        while (j < n_producers && producers[j] != h->producer_id)
            j++;
        if (j == n_producers)
            producers[n_producers++] = h->producer_id;
    }
    /* Sorted by producer id, as lk_aborted_txns_check wants. */
    for (size_t i = 1; i < n_producers; i++)
        for (size_t j = i; j > 0 && producers[j - 1] > producers[j]; j--) {
            int64_t t = producers[j];
            producers[j] = producers[j - 1];
            producers[j - 1] = t;
        }
    size_t n = 0;
    for (size_t p = 0; p < n_producers; p++) {
        int64_t first = INT64_MAX;
        for (size_t i = 0; i < w->count; i++)
            if (w->h[i].producer_id == producers[p] && w->h[i].base_offset < first)
                first = w->h[i].base_offset;
        int64_t width = (int64_t)(knob() % 8);
        int64_t start = add_saturating(first, -(int64_t)(knob() % 3));
        int64_t end = add_saturating(start, width);
        out[n++] = (lk_aborted_txn){producers[p], start, end};
        if (knob() % 2 && end <= INT64_MAX - 20)
            out[n++] = (lk_aborted_txn){producers[p], end + 1 + (int64_t)(knob() % 4),
                                        end + 12 + (int64_t)(knob() % 8)};
    }
    return n;
}

static void check_drop_aborted(const uint8_t *buf, size_t len, const lk_aborted_txn *aborted,
                               size_t count)
{
    if (lk_aborted_txns_check(aborted, count) != LK_OK)
        return; /* the list is ours, and always valid; nothing to test otherwise */
    uint8_t *copy = exact(buf, len);
    int64_t kept = lk_drop_aborted(copy, len, aborted, count);
    FUZZ_CHECK(kept >= 0 && (uint64_t)kept <= len, "lk_drop_aborted's length");
    int64_t again = lk_drop_aborted(copy, (size_t)kept, aborted, count);
    FUZZ_CHECK(again == kept, "lk_drop_aborted dropping more the second time");
    memcpy(copy, buf, len);
    FUZZ_CHECK(lk_drop_aborted(copy, len, NULL, 0) == (int64_t)len && (len == 0 || memcmp(copy, buf, len) == 0),
               "lk_drop_aborted with no aborted transaction changing the buffer");
    free(copy);
}

/* ---- the cleaner's passes ---- */

static void check_cleaner(const uint8_t *buf, size_t len, const batch_walk *w,
                          const lk_aborted_txn *aborted, size_t aborted_count)
{
    /* Small maps, so that FULL stops happen too: 16 to 1024 slots. */
    size_t slots = (size_t)16 << (knob() % 7);
    void *map_memory = zalloc(slots * LK_OFFSET_MAP_ENTRY_BYTES);
    void *producer_memory = zalloc(slots * LK_OFFSET_MAP_ENTRY_BYTES);
    lk_offset_map map, producers;
    FUZZ_CHECK(lk_offset_map_init(&map, map_memory, slots * LK_OFFSET_MAP_ENTRY_BYTES, 0.75, 0) == LK_OK,
               "lk_offset_map_init");
    FUZZ_CHECK(lk_offset_map_init(&producers, producer_memory, slots * LK_OFFSET_MAP_ENTRY_BYTES, 0.9,
                                  0) == LK_OK,
               "lk_offset_map_init");
    lk_error err;
    lk_map_result pres = {0};
    pres.last_offset = -1;
    int rc = lk_cleaner_producers(&producers, buf, len, &pres, &err);
    check_error(rc, &err, len, "lk_cleaner_producers' error");
    FUZZ_CHECK(pres.position >= 0 && (uint64_t)pres.position <= len, "the producer pass' position");

    int64_t first = w->count ? w->h[0].base_offset : 0;
    lk_map_result mres = {0};
    mres.last_offset = -1;
    int64_t stop_offset = knob() % 2 ? INT64_MAX : pick_offset(add_saturating(first, 4));
    rc = lk_cleaner_map(&map, buf, len, pick_offset(first), stop_offset, aborted, aborted_count,
                        &mres, &err);
    check_error(rc, &err, len, "lk_cleaner_map's error");
    FUZZ_CHECK(mres.position >= 0 && (uint64_t)mres.position <= len, "the map pass' position");
    FUZZ_CHECK(mres.stop >= LK_CLEAN_END && mres.stop <= LK_CLEAN_LIMIT, "the map pass' stop");

    lk_clean_params params = {0};
    params.now_ms = (int64_t)(knob() % 2000000000000ull);
    params.new_horizon_ms = params.now_ms + 86400000;
    params.map_end = rc == LK_OK && knob() % 2 ? mres.next_offset : INT64_MAX;
    params.aborted = aborted_count ? aborted : NULL;
    params.aborted_count = aborted_count;
    params.producers = knob() % 2 ? &producers : NULL;
    size_t out_capacity = len * 2 + 1024;
    uint8_t *out = zalloc(out_capacity);
    size_t keep_capacity = len + 1;
    uint8_t *keep = zalloc(keep_capacity);
    lk_clean_result cres = {0};
    cres.next_horizon_ms = INT64_MAX;
    cres.last_offset = -1;
    rc = lk_cleaner_filter(&map, buf, len, &params, out, out_capacity, keep, keep_capacity, &cres, &err);
    check_error(rc, &err, len, "lk_cleaner_filter's error");
    FUZZ_CHECK(cres.position >= 0 && (uint64_t)cres.position <= len, "the filter's position");
    FUZZ_CHECK(cres.written >= 0 && (uint64_t)cres.written <= out_capacity, "the filter's output");
    FUZZ_CHECK(cres.records_kept <= cres.records_read && cres.batches_kept <= cres.batches_read,
               "the filter keeping more than it read");
    /* What the filter writes goes into a cleaned segment: every batch it wrote must
     * validate, if the batch it came from (the input batch with its base offset) did.
     * Damage in the input may be carried over (the filter checks CRCs, and walks records
     * only as far as it needs their keys), but must never be made. */
    size_t pos = 0;
    while (pos < (size_t)cres.written) {
        lk_batch_header h;
        int vrc = lk_batch_validate(out + pos, (size_t)cres.written - pos, 0, LK_VALIDATE_CRC, &h, &err);
        FUZZ_CHECK(vrc == LK_OK, "the cleaner writing a batch that does not validate");
        size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
        if (!(h.attributes & LK_ATTR_COMPRESSION_MASK) &&
            lk_batch_validate(out + pos, size, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, NULL, NULL) != LK_OK) {
            int damaged_before = 0;
            for (size_t i = 0; i < w->count; i++)
                if (w->h[i].base_offset == h.base_offset &&
                    lk_batch_validate(buf + w->start[i], len - w->start[i], 0,
                                      LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, NULL, NULL) != LK_OK)
                    damaged_before = 1;
            FUZZ_CHECK(damaged_before, "the cleaner writing records that do not validate");
        }
        pos += size;
    }
    free(keep);
    free(out);
    free(producer_memory);
    free(map_memory);
}

/* ---- indexes ---- */

static void check_indexes(const uint8_t *buf, size_t len)
{
    size_t entries = len / 8;
    int64_t log_size = (int64_t)(knob() % (len + 4096));
    size_t valid = lk_offset_index_valid_entries(buf, entries, log_size);
    FUZZ_CHECK(valid <= entries, "lk_offset_index_valid_entries");
    int64_t slot;
    int32_t relative, position;
    int32_t target = (int32_t)(knob() % 100000) - 10;
    if (lk_offset_index_lookup(buf, valid, target, &slot, &relative, &position) == LK_OK)
        FUZZ_CHECK(slot >= -1 && slot < (int64_t)valid && (slot < 0 || relative <= target),
                   "lk_offset_index_lookup");
    entries = len / 12;
    valid = lk_time_index_valid_entries(buf, entries, (int32_t)(knob() % 100000));
    FUZZ_CHECK(valid <= entries, "lk_time_index_valid_entries");
    int64_t timestamp;
    int64_t when = (int64_t)knob();
    if (lk_time_index_lookup(buf, valid, when, &slot, &timestamp, &relative) == LK_OK)
        FUZZ_CHECK(slot >= -1 && slot < (int64_t)valid && (slot < 0 || timestamp <= when),
                   "lk_time_index_lookup");
}

/* ---- a segment file holding the bytes: open, recovery, reads, an append ---- */

static char segment_dir[256];

static int write_file(const char *path, const uint8_t *data, size_t len)
{
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0)
        return -1;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    return close(fd);
}

static void check_segment(const uint8_t *buf, size_t len, const batch_walk *w)
{
    if (!segment_dir[0]) {
        /* $TMPDIR if it is usable, else /tmp; with neither, the segment checks are off. */
        const char *tmp = getenv("TMPDIR");
        snprintf(segment_dir, sizeof segment_dir, "%s/lk-fuzz-XXXXXX",
                 tmp && *tmp && strlen(tmp) < 200 ? tmp : "/tmp");
        if (!mkdtemp(segment_dir)) {
            snprintf(segment_dir, sizeof segment_dir, "/tmp/lk-fuzz-XXXXXX");
            if (!mkdtemp(segment_dir)) {
                fprintf(stderr, "fuzz_decoders: no scratch directory; segment checks are off\n");
                segment_dir[0] = 0;
                fuzz_segments = 0;
                return;
            }
        }
    }
    char log_path[320], index_path[320], time_path[320];
    snprintf(log_path, sizeof log_path, "%s/00000000000000000000.log", segment_dir);
    snprintf(index_path, sizeof index_path, "%s/00000000000000000000.index", segment_dir);
    snprintf(time_path, sizeof time_path, "%s/00000000000000000000.timeindex", segment_dir);
    unlink(index_path);
    unlink(time_path);
    if (write_file(log_path, buf, len) != 0)
        return;
    /* Sometimes the index files are garbage too: open must notice. */
    if (knob() % 4 == 0 && len >= 16) {
        write_file(index_path, buf + len / 2, (len / 2) & ~(size_t)7);
        write_file(time_path, buf, (len / 3 / 12) * 12);
    }
    int64_t base = w->count && knob() % 4 ? w->h[0].base_offset : (int64_t)(knob() % 8);
    lk_segment_config config = {.base_offset = base,
                                .log_capacity = len + (1 << 20),
                                .index_capacity = 1 << 16,
                                .grow_step = 4096,
                                .index_interval_bytes = (uint32_t)(1 + knob() % 4096),
                                .max_batch_size = 0,
                                .flags = 0};
    /* Read-only, before any recovery: lookups on damaged bytes must fail cleanly. */
    lk_segment *seg = NULL;
    if (lk_segment_open(log_path, index_path, time_path, &config, &seg) == LK_OK) {
        int64_t position, found;
        lk_segment_find_offset(seg, add_saturating(base, (int64_t)(knob() % 16)), &position, &found);
        lk_segment_find_timestamp(seg, (int64_t)(knob() % 4000000000000ull), &position, &found);
        lk_segment_close(seg);
    }
    config.flags = LK_SEGMENT_WRITABLE;
    int rc = lk_segment_open(log_path, index_path, time_path, &config, &seg);
    if (rc == LK_ERR_INDEX_CORRUPT) {
        config.flags |= LK_SEGMENT_RESET_INDEXES;
        rc = lk_segment_open(log_path, index_path, time_path, &config, &seg);
    }
    if (rc != LK_OK)
        return;
    int flags = knob() % 2 ? LK_VALIDATE_CRC : LK_VALIDATE_CRC | LK_VALIDATE_RECORDS;
    lk_scan_result recovered;
    rc = lk_segment_recover(seg, flags, &recovered);
    FUZZ_CHECK(rc == LK_OK, "lk_segment_recover");
    lk_segment_info info;
    lk_segment_get_info(seg, &info);
    lk_scan_result scan;
    lk_log_scan(buf, len, 0, base, 0, flags, &scan);
    FUZZ_CHECK(info.size == recovered.valid_bytes, "the recovered size");
    FUZZ_CHECK(info.size <= scan.valid_bytes, "recovery keeping more than the scan's valid prefix");
    FUZZ_CHECK(!info.needs_recovery, "a recovered segment needing recovery");
    FUZZ_CHECK(info.size == 0 || memcmp(lk_segment_data(seg), buf, (size_t)info.size) == 0,
               "recovery changing the bytes it kept");
    for (int i = 0; i < 4; i++) {
        int64_t position, found;
        uint64_t span = info.next_offset > base ? (uint64_t)info.next_offset - (uint64_t)base : 1;
        int64_t target = add_saturating(base, (int64_t)(knob() % span % INT64_MAX));
        rc = lk_segment_find_offset(seg, target, &position, &found);
        if (rc == LK_OK) {
            lk_batch_header h;
            FUZZ_CHECK(position >= 0 && position < info.size &&
                           lk_batch_parse_header(lk_segment_data(seg) + position,
                                                 (size_t)(info.size - position), 0, &h, NULL) == LK_OK,
                       "lk_segment_find_offset's position");
            FUZZ_CHECK(h.base_offset == found && h.base_offset + h.last_offset_delta >= target,
                       "lk_segment_find_offset's batch");
        }
        rc = lk_segment_find_timestamp(seg, (int64_t)(knob() % 4000000000000ull), &position, &found);
        if (rc == LK_OK)
            FUZZ_CHECK(position >= 0 && position < info.size, "lk_segment_find_timestamp");
    }
    /* A recovered segment takes appends at its next offset. */
    int64_t end = lk_segment_append_record(seg, info.next_offset, 1700000000000, 0, 0, "k", 1, "v",
                                           1, NULL, 0, 0);
    FUZZ_CHECK(end > info.size || end == LK_ERR_OFFSET_ORDER || end == LK_ERR_SEGMENT_FULL,
               "an append after recovery");
    if (knob() % 2)
        lk_segment_truncate_to_offset(seg, add_saturating(base, (int64_t)(knob() % 8)));
    lk_segment_close(seg);
}

/* ---- the target ---- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        size = MAX_INPUT;
    knob_state = ((uint64_t)lk_crc32c(0, data, size) << 32 | (uint64_t)size) ^ 0x9E3779B97F4A7C15ull;
    uint8_t *buf = exact(data, size);
    batch_walk *w = zalloc(sizeof *w);
    walk_batches(buf, size, w);

    check_one_batch(buf, size);
    for (size_t i = 1; i < w->count && i < 4; i++) /* the batches after the first, alone */
        check_one_batch(buf + w->start[i], size - w->start[i]);
    check_scan(buf, size, w);
    check_columns(buf, size, w, 0);
    check_columns(buf, size, w, 1);
    check_keyless(buf, size);
    lk_aborted_txn aborted[2 * MAX_PRODUCERS];
    size_t aborted_count = aborted_list(w, aborted);
    check_drop_aborted(buf, size, aborted, aborted_count);
    check_cleaner(buf, size, w, aborted, aborted_count);
    check_indexes(buf, size);
    if (fuzz_segments && knob() % 8 == 0) /* file I/O: one input in eight */
        check_segment(buf, size, w);
    for (size_t i = 0; i < size; i++)
        FUZZ_CHECK(buf[i] == data[i], "a decoder writing into its input");

    free(w);
    free(buf);
    return 0;
}

void fuzz_cleanup(void)
{
    if (!segment_dir[0])
        return;
    static const char *const names[] = {"00000000000000000000.log", "00000000000000000000.index",
                                        "00000000000000000000.timeindex"};
    char path[320];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", segment_dir, names[i]);
        unlink(path);
    }
    rmdir(segment_dir);
    segment_dir[0] = 0;
}
