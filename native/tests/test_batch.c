/*
 * test_batch.c - C tests of the RecordBatch v2 codec (native/batch.c).
 *
 * Run by `make native-test` (strict build) and `make test-asan` (ASan + UBSan), where the
 * mutation loops below double as a fuzz target: any out-of-bounds read is a sanitizer
 * failure even when the result looks right.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logkernel.h"

#include "check.h"

/* xorshift64*: deterministic pseudo-random numbers for the mutation loops. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_random(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

/* Encodes `count` records with keys "k<i>", values of value_size bytes and one header on
 * every third record. Returns the batch length. */
static size_t build_batch(uint8_t *out, size_t cap, int32_t count, int32_t value_size)
{
    static uint8_t keys[1 << 16], values[1 << 20], header_data[1 << 16];
    static int32_t key_lengths[4096], value_lengths[4096], header_counts[4096],
        header_lengths[8192];
    static int64_t timestamps[4096];
    size_t kpos = 0, vpos = 0, hpos = 0, hl = 0;
    for (int32_t i = 0; i < count; i++) {
        int n = snprintf((char *)keys + kpos, 16, "k%d", (int)i);
        key_lengths[i] = n;
        kpos += (size_t)n;
        value_lengths[i] = (i % 7 == 6) ? -1 : value_size;
        for (int32_t j = 0; value_lengths[i] > 0 && j < value_size; j++)
            values[vpos++] = (uint8_t)(i + j);
        timestamps[i] = 1700000000000LL + i * 3 - (i % 5);
        header_counts[i] = (i % 3 == 0) ? 1 : 0;
        if (header_counts[i]) {
            memcpy(header_data + hpos, "trace", 5);
            memcpy(header_data + hpos + 5, "xyz", 3);
            hpos += 8;
            header_lengths[hl++] = 5;
            header_lengths[hl++] = 3;
        }
    }
    lk_records_in r;
    memset(&r, 0, sizeof r);
    r.count = count;
    r.keys = keys;
    r.keys_size = kpos;
    r.key_lengths = key_lengths;
    r.values = values;
    r.values_size = vpos;
    r.value_lengths = value_lengths;
    r.timestamps = timestamps;
    r.header_counts = header_counts;
    r.header_lengths = header_lengths;
    r.header_lengths_count = hl;
    r.header_data = header_data;
    r.header_data_size = hpos;
    lk_batch_params p = {42, 7, 0, 0, 1234, 5, 100};
    size_t len = 0;
    lk_error err;
    int rc = lk_batch_encode(&p, &r, out, cap, &len, &err);
    CHECK(rc == LK_OK);
    CHECK((int64_t)len <= lk_batch_encoded_bound(&r));
    return len;
}

static void test_known_vector(void)
{
    /* A one-record batch: null key, value "a", base offset 0, timestamps 0, no producer.
     * Bytes worked out by hand from the layout; CRC from the reference implementation. */
    uint8_t value = 'a';
    int32_t vlen = 1;
    int64_t ts = 0;
    lk_records_in r;
    memset(&r, 0, sizeof r);
    r.count = 1;
    r.values = &value;
    r.values_size = 1;
    r.value_lengths = &vlen;
    r.timestamps = &ts;
    lk_batch_params p = {0, -1, 0, 0, -1, -1, -1};
    uint8_t out[128];
    size_t len = 0;
    CHECK(lk_batch_encode(&p, &r, out, sizeof out, &len, NULL) == LK_OK);
    /* record: len=7 (varint 0x0E) attrs 0 tsΔ 0 offΔ 0 key -1 (0x01) vlen 1 (0x02) 'a' hdrs 0 */
    static const uint8_t record[] = {0x0E, 0x00, 0x00, 0x00, 0x01, 0x02, 'a', 0x00};
    CHECK(len == 61 + sizeof record);
    CHECK(memcmp(out + 61, record, sizeof record) == 0);
    CHECK(out[16] == 2);
    /* batchLength = 69 - 12 = 57 */
    CHECK(out[8] == 0 && out[9] == 0 && out[10] == 0 && out[11] == 57);
    lk_batch_header h;
    CHECK(lk_batch_validate(out, len, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, &h, NULL) == LK_OK);
    CHECK(h.record_count == 1 && h.last_offset_delta == 0 && h.producer_id == -1);
}

static void test_round_trip(void)
{
    static uint8_t buf[1 << 21];
    static lk_record_span spans[4096];
    for (int32_t count = 1; count <= 1000; count = count * 3 + 1) {
        size_t len = build_batch(buf, sizeof buf, count, 100);
        lk_batch_header h;
        int32_t decoded = 0;
        lk_error err;
        CHECK(lk_batch_decode(buf, len, 0, &h, spans, 4096, &decoded, &err) == LK_OK);
        CHECK(decoded == count);
        CHECK(h.base_offset == 42 && h.partition_leader_epoch == 7 && h.producer_id == 1234);
        CHECK(h.producer_epoch == 5 && h.base_sequence == 100 && h.record_count == count);
        CHECK(h.last_offset_delta == count - 1);
        CHECK(h.base_timestamp == 1700000000000LL);
        for (int32_t i = 0; i < count; i++) {
            char key[16];
            int n = snprintf(key, sizeof key, "k%d", (int)i);
            CHECK(spans[i].offset_delta == i);
            CHECK(spans[i].key_len == n && memcmp(buf + spans[i].key_pos, key, (size_t)n) == 0);
            CHECK(spans[i].value_len == ((i % 7 == 6) ? -1 : 100));
            CHECK(spans[i].timestamp_delta == i * 3 - (i % 5));
            CHECK(spans[i].headers_count == (i % 3 == 0 ? 1 : 0));
            if (spans[i].headers_count) {
                lk_header_span hs;
                CHECK(lk_headers_decode(buf + spans[i].headers_pos, (size_t)spans[i].headers_len,
                                        1, &hs, 1, NULL) == LK_OK);
                CHECK(hs.key_len == 5 && hs.value_len == 3);
                CHECK(memcmp(buf + spans[i].headers_pos + hs.key_pos, "trace", 5) == 0);
            }
        }
        CHECK(lk_batch_validate(buf, len, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS |
                                LK_VALIDATE_CONTIGUOUS, NULL, NULL) == LK_OK);
        /* Too small a max batch size is a length error. */
        CHECK(lk_batch_validate(buf, len, (uint32_t)len - 1, LK_VALIDATE_CRC, NULL, NULL) ==
              LK_ERR_BAD_LENGTH);
        /* A span array that is too small is refused before anything is written. */
        CHECK(lk_batch_decode(buf, len, 0, &h, spans, (size_t)count - 1, &decoded, NULL) ==
              LK_ERR_BUFFER_TOO_SMALL);
    }
}

static void test_truncations_rejected(void)
{
    static uint8_t buf[1 << 16];
    size_t len = build_batch(buf, sizeof buf, 20, 30);
    for (size_t cut = 0; cut < len; cut++) {
        int rc = lk_batch_validate(buf, cut, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, NULL, NULL);
        CHECK(rc == LK_ERR_TRUNCATED);
    }
}

static void test_mutations(void)
{
    static uint8_t good[1 << 16], bad[1 << 16];
    static lk_record_span spans[4096];
    size_t len = build_batch(good, sizeof good, 50, 20);
    int rejected = 0;
    for (int round = 0; round < 200000; round++) {
        memcpy(bad, good, len);
        int flips = 1 + (int)(next_random() % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t)(next_random() % len);
            bad[at] = (uint8_t)next_random();
        }
        size_t cut = (next_random() % 8 == 0) ? (size_t)(next_random() % (len + 1)) : len;
        int32_t decoded = 0;
        lk_batch_header h;
        int rc = lk_batch_decode(bad, cut, 0, &h, spans, 4096, &decoded, NULL);
        if (rc != LK_OK) {
            rejected++;
            continue;
        }
        /* Accepted: then it must be identical to the original in every CRC-covered byte,
         * or the batch must have come out with a genuinely matching CRC (vanishingly rare). */
        CHECK(memcmp(bad + 21, good + 21, len - 21) == 0 || h.crc == lk_crc32c(0, bad + 21, len - 21));
        /* every span stays inside the buffer */
        for (int32_t i = 0; i < decoded; i++) {
            CHECK(spans[i].key_pos >= 0 && spans[i].key_pos + (spans[i].key_len > 0 ? spans[i].key_len : 0) <= (int64_t)cut);
            CHECK(spans[i].value_pos >= 0 && spans[i].value_pos + (spans[i].value_len > 0 ? spans[i].value_len : 0) <= (int64_t)cut);
        }
    }
    CHECK(rejected > 150000);
    /* Records-level garbage with a correct CRC: mutate the records, then fix the CRC so the
     * record walker itself must catch (or accept) it without reading out of bounds. */
    for (int round = 0; round < 200000; round++) {
        memcpy(bad, good, len);
        size_t at = 61 + (size_t)(next_random() % (len - 61));
        bad[at] = (uint8_t)next_random();
        CHECK(lk_batch_update_crc(bad, len, NULL) == LK_OK);
        int32_t decoded = 0;
        lk_batch_header h;
        int rc = lk_batch_decode(bad, len, 0, &h, spans, 4096, &decoded, NULL);
        CHECK(rc == LK_OK || rc == LK_ERR_CORRUPT_RECORD);
        for (int32_t i = 0; rc == LK_OK && i < decoded; i++)
            CHECK(spans[i].value_pos + (spans[i].value_len > 0 ? spans[i].value_len : 0) <= (int64_t)len);
    }
    /* Pure garbage. */
    for (int round = 0; round < 100000; round++) {
        size_t n = (size_t)(next_random() % 300);
        for (size_t i = 0; i < n; i++)
            bad[i] = (uint8_t)next_random();
        if (n > 16 && next_random() % 2)
            bad[16] = 2;
        int32_t decoded;
        (void)lk_batch_decode(bad, n, 0, NULL, spans, 4096, &decoded, NULL);
        (void)lk_records_decode(bad, n, (int32_t)(next_random() % 50), -1, spans, 4096, NULL);
        lk_header_span hs[64];
        (void)lk_headers_decode(bad, n, (int32_t)(next_random() % 64), hs, 64, NULL);
    }
}

static void test_hostile_lengths(void)
{
    static uint8_t buf[1 << 16];
    static lk_record_span spans[16];
    size_t len = build_batch(buf, sizeof buf, 3, 10);
    lk_error err;
    /* recordsCount huge: refused before any span is written (lastOffsetDelta < count - 1) */
    buf[57] = 0x7f; buf[58] = 0xff; buf[59] = 0xff; buf[60] = 0xff;
    CHECK(lk_batch_update_crc(buf, len, NULL) == LK_OK);
    int32_t decoded;
    CHECK(lk_batch_decode(buf, len, 0, NULL, spans, 16, &decoded, &err) == LK_ERR_CORRUPT_RECORD);
    CHECK(lk_batch_validate(buf, len, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, NULL, &err) ==
          LK_ERR_CORRUPT_RECORD);
    /* batchLength negative / huge */
    len = build_batch(buf, sizeof buf, 3, 10);
    buf[8] = 0x80;
    CHECK(lk_batch_validate(buf, len, 0, LK_VALIDATE_CRC, NULL, &err) == LK_ERR_BAD_LENGTH);
    buf[8] = 0x7f;
    CHECK(lk_batch_validate(buf, len, 0, LK_VALIDATE_CRC, NULL, &err) == LK_ERR_TRUNCATED);
    /* wrong magic */
    len = build_batch(buf, sizeof buf, 3, 10);
    buf[16] = 1;
    CHECK(lk_batch_validate(buf, len, 0, LK_VALIDATE_CRC, NULL, &err) == LK_ERR_BAD_MAGIC);
    CHECK(err.position == 16);
    /* CRC */
    len = build_batch(buf, sizeof buf, 3, 10);
    buf[len - 1] ^= 1;
    CHECK(lk_batch_validate(buf, len, 0, LK_VALIDATE_CRC, NULL, &err) == LK_ERR_CRC);
    CHECK(err.what != NULL && err.position == 17);
    /* NULL arguments */
    CHECK(lk_batch_validate(NULL, 10, 0, 0, NULL, NULL) == LK_ERR_ARGUMENT);
    CHECK(lk_batch_encode(NULL, NULL, NULL, 0, NULL, NULL) == LK_ERR_ARGUMENT);
}

static void test_encode_arguments(void)
{
    uint8_t out[256];
    size_t len;
    int32_t klen[2] = {3, 5}; /* says 8 bytes of keys */
    lk_records_in r;
    memset(&r, 0, sizeof r);
    r.count = 2;
    r.keys = (const uint8_t *)"abcdefg";
    r.keys_size = 7;           /* ...but there are 7: refused, nothing read past 7 */
    r.key_lengths = klen;
    lk_batch_params p = {0, -1, 0, 0, -1, -1, -1};
    CHECK(lk_batch_encode(&p, &r, out, sizeof out, &len, NULL) == LK_ERR_ARGUMENT);
    r.keys_size = 8;
    r.keys = (const uint8_t *)"abcdefgh";
    CHECK(lk_batch_encode(&p, &r, out, sizeof out, &len, NULL) == LK_OK);
    CHECK(lk_batch_encode(&p, &r, out, 70, &len, NULL) == LK_ERR_BUFFER_TOO_SMALL);
    int32_t deltas[2] = {3, 3};
    r.offset_deltas = deltas;
    CHECK(lk_batch_encode(&p, &r, out, sizeof out, &len, NULL) == LK_ERR_ARGUMENT);
    deltas[1] = 9;
    CHECK(lk_batch_encode(&p, &r, out, sizeof out, &len, NULL) == LK_OK);
    lk_batch_header h;
    CHECK(lk_batch_validate(out, len, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, &h, NULL) == LK_OK);
    CHECK(h.last_offset_delta == 9);
    CHECK(lk_batch_validate(out, len, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS |
                            LK_VALIDATE_CONTIGUOUS, &h, NULL) == LK_ERR_CORRUPT_RECORD);
    r.count = 0;
    CHECK(lk_batch_encode(&p, &r, out, sizeof out, &len, NULL) == LK_ERR_ARGUMENT);
}

static void test_control(void)
{
    uint8_t out[LK_CONTROL_BATCH_SIZE];
    size_t len;
    lk_batch_params p = {100, 3, 0, 0, 77, 2, -1};
    CHECK(lk_control_batch_encode(&p, LK_CONTROL_COMMIT, 9, 1234, out, sizeof out, &len, NULL) == LK_OK);
    CHECK(len == LK_CONTROL_BATCH_SIZE);
    lk_batch_header h;
    lk_record_span s;
    int32_t decoded;
    CHECK(lk_batch_decode(out, len, 0, &h, &s, 1, &decoded, NULL) == LK_OK);
    CHECK((h.attributes & LK_ATTR_CONTROL) && (h.attributes & LK_ATTR_TRANSACTIONAL));
    CHECK(h.producer_id == 77 && h.producer_epoch == 2 && decoded == 1);
    int16_t type;
    int32_t epoch;
    CHECK(lk_control_record_parse(out + s.key_pos, s.key_len, out + s.value_pos, s.value_len,
                                  &type, &epoch, NULL) == LK_OK);
    CHECK(type == LK_CONTROL_COMMIT && epoch == 9);
    CHECK(lk_control_record_parse(out + s.key_pos, 3, NULL, -1, &type, &epoch, NULL) ==
          LK_ERR_CORRUPT_RECORD);
    CHECK(lk_control_batch_encode(&p, 5, 9, 1234, out, sizeof out, &len, NULL) == LK_ERR_ARGUMENT);
}

int main(void)
{
    test_known_vector();
    test_round_trip();
    test_truncations_rejected();
    test_mutations();
    test_hostile_lengths();
    test_encode_arguments();
    test_control();
    return check_summary("test_batch");
}
