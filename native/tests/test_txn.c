/*
 * test_txn.c - C tests of aborted transactions (native/txn.c): lk_aborted_txns_check,
 * lk_batch_aborted and lk_drop_aborted.
 *
 *   1. The list check: order by (producer, first offset), first <= last, one producer's
 *      transactions apart; NULL; what is accepted (equal first offsets of different
 *      producers, adjacent transactions, negative and extreme offsets).
 *   2. lk_batch_aborted on headers: both ends of a transaction, the offsets around them,
 *      other producers, control, non-transactional and producer-less batches, against a
 *      brute-force search over many random lists.
 *   3. lk_drop_aborted on random logs (several producers, transactions committed and
 *      aborted, markers, non-transactional and idempotent batches, empty and
 *      compressed-flagged batches, offset gaps) against a model: the output is exactly
 *      the concatenation of the batches the model keeps, byte for byte; an empty list
 *      and a list matching nothing leave the buffer untouched.
 *   4. Damage: every cut of small logs, flipped bytes (CRC fixed or not), hostile
 *      lengths, magic and attributes, garbage: the output is what an independent walk
 *      says (kept batches in order, then the rest from the first batch that does not
 *      parse, or the first aborted-looking one with a bad CRC, unchanged); each input sits
 *      in an allocation of exactly its length (ASan reports any read past it).
 *   5. Arguments: NULL buffer, a bad list (the buffer untouched), len 0.
 *
 * With --bench, measures lk_drop_aborted over 64 MiB of single-record and 100-record
 * batches: with an empty list; with a list but no transactional batch ("plain"); with
 * transactional batches none of which is aborted; with half of them aborted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logkernel.h"

#include "check.h"
#include "support.h"

enum {
    OFF_LENGTH = 8,
    OFF_MAGIC = 16,
    OFF_CRC = 17,
    OFF_ATTRS = 21,
    OFF_LAST_DELTA = 23,
    OFF_PRODUCER = 43,
    OFF_COUNT = 57,
    HDR = LK_BATCH_HEADER_SIZE
};


static uint8_t *exact_copy(const uint8_t *src, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    if (n)
        memcpy(p, src, n);
    return p;
}

/* ------------------------------------------------------------------------------------
 * 1. The list check
 * --------------------------------------------------------------------------------- */
static void test_check(void)
{
    const lk_aborted_txn ok[] = {{-5, 0, 0},  {1, 0, 3},  {1, 4, 9},   {1, 10, 10},
                                 {2, 0, 3},   {3, -7, -1}, {4, INT64_MIN, INT64_MAX}};
    CHECK_EQ(lk_aborted_txns_check(ok, sizeof ok / sizeof ok[0]), LK_OK);
    CHECK_EQ(lk_aborted_txns_check(NULL, 0), LK_OK);
    CHECK_EQ(lk_aborted_txns_check(ok, 0), LK_OK);
    CHECK_EQ(lk_aborted_txns_check(NULL, 1), LK_ERR_ARGUMENT);
    const lk_aborted_txn one_reversed[] = {{1, 5, 4}};
    CHECK_EQ(lk_aborted_txns_check(one_reversed, 1), LK_ERR_ARGUMENT);
    const lk_aborted_txn producers_unsorted[] = {{2, 0, 3}, {1, 10, 20}};
    CHECK_EQ(lk_aborted_txns_check(producers_unsorted, 2), LK_ERR_ARGUMENT);
    const lk_aborted_txn firsts_unsorted[] = {{1, 10, 20}, {1, 0, 3}};
    CHECK_EQ(lk_aborted_txns_check(firsts_unsorted, 2), LK_ERR_ARGUMENT);
    const lk_aborted_txn overlapping[] = {{1, 0, 10}, {1, 10, 20}};
    CHECK_EQ(lk_aborted_txns_check(overlapping, 2), LK_ERR_ARGUMENT);
    const lk_aborted_txn nested[] = {{1, 0, 30}, {1, 10, 20}};
    CHECK_EQ(lk_aborted_txns_check(nested, 2), LK_ERR_ARGUMENT);
    const lk_aborted_txn same_first[] = {{1, 0, 3}, {1, 0, 3}};
    CHECK_EQ(lk_aborted_txns_check(same_first, 2), LK_ERR_ARGUMENT);
    const lk_aborted_txn late_bad[] = {{1, 0, 3}, {2, 0, 3}, {3, 9, 8}};
    CHECK_EQ(lk_aborted_txns_check(late_bad, 3), LK_ERR_ARGUMENT);
    const lk_aborted_txn other_producers_overlap[] = {{1, 0, 10}, {2, 5, 6}, {3, 0, 100}};
    CHECK_EQ(lk_aborted_txns_check(other_producers_overlap, 3), LK_OK);
}

/* ------------------------------------------------------------------------------------
 * 2. lk_batch_aborted
 * --------------------------------------------------------------------------------- */
static lk_batch_header header_of(int64_t producer_id, int64_t base, int16_t attrs)
{
    lk_batch_header h;
    memset(&h, 0, sizeof h);
    h.base_offset = base;
    h.attributes = attrs;
    h.producer_id = producer_id;
    h.magic = 2;
    return h;
}

static int brute_aborted(const lk_aborted_txn *a, size_t n, const lk_batch_header *h)
{
    if ((h->attributes & (LK_ATTR_TRANSACTIONAL | LK_ATTR_CONTROL)) != LK_ATTR_TRANSACTIONAL
        || h->producer_id < 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (a[i].producer_id == h->producer_id && a[i].first_offset <= h->base_offset
            && h->base_offset <= a[i].last_offset)
            return 1;
    return 0;
}

/* A random valid list: producers 0..producers-1, each with transactions apart. */
static size_t random_list(lk_aborted_txn *out, size_t cap, int producers, int64_t span)
{
    size_t n = 0;
    for (int p = 0; p < producers && n < cap; p++) {
        int64_t at = (int64_t)rnd_below(8);
        while (n < cap && rnd_below(3)) {
            int64_t first = at + (int64_t)rnd_below(6);
            int64_t last = first + (int64_t)rnd_below(10);
            if (last >= span)
                break;
            out[n++] = (lk_aborted_txn){p, first, last};
            at = last + 1;
        }
    }
    return n;
}

static void test_batch_aborted(void)
{
    const lk_aborted_txn a[] = {{7, 10, 20}, {7, 30, 30}, {9, 0, 100}, {12, 15, 16}};
    const size_t n = sizeof a / sizeof a[0];
    const int16_t T = LK_ATTR_TRANSACTIONAL;
    lk_batch_header h;
    h = header_of(7, 9, T);
    CHECK_EQ(lk_batch_aborted(&h, a, n), 0);
    h = header_of(7, 10, T);
    CHECK_EQ(lk_batch_aborted(&h, a, n), 1);
    h = header_of(7, 20, T);
    CHECK_EQ(lk_batch_aborted(&h, a, n), 1);
    h = header_of(7, 21, T);
    CHECK_EQ(lk_batch_aborted(&h, a, n), 0);
    h = header_of(7, 29, T);
    CHECK_EQ(lk_batch_aborted(&h, a, n), 0);
    h = header_of(7, 30, T);
    CHECK_EQ(lk_batch_aborted(&h, a, n), 1);
    h = header_of(7, 31, T);
    CHECK_EQ(lk_batch_aborted(&h, a, n), 0);
    h = header_of(8, 15, T); /* no transaction of its own */
    CHECK_EQ(lk_batch_aborted(&h, a, n), 0);
    h = header_of(12, 15, T | 2); /* compressed: the flag does not matter */
    CHECK_EQ(lk_batch_aborted(&h, a, n), 1);
    h = header_of(12, 17, T);
    CHECK_EQ(lk_batch_aborted(&h, a, n), 0);
    h = header_of(13, 15, T); /* past the last producer */
    CHECK_EQ(lk_batch_aborted(&h, a, n), 0);
    h = header_of(1, 15, T); /* before the first producer */
    CHECK_EQ(lk_batch_aborted(&h, a, n), 0);
    h = header_of(9, 50, T | LK_ATTR_CONTROL); /* the marker itself */
    CHECK_EQ(lk_batch_aborted(&h, a, n), 0);
    h = header_of(9, 50, 0); /* not transactional */
    CHECK_EQ(lk_batch_aborted(&h, a, n), 0);
    h = header_of(9, 50, T | LK_ATTR_LOG_APPEND_TIME | LK_ATTR_DELETE_HORIZON);
    CHECK_EQ(lk_batch_aborted(&h, a, n), 1);
    const lk_aborted_txn neg[] = {{-1, 0, 100}};
    h = header_of(-1, 50, T); /* no producer id */
    CHECK_EQ(lk_batch_aborted(&h, neg, 1), 0);
    h = header_of(9, 50, T);
    CHECK_EQ(lk_batch_aborted(&h, a, 0), 0);
    CHECK_EQ(lk_batch_aborted(&h, NULL, 0), 0);
    CHECK_EQ(lk_batch_aborted(NULL, a, n), 0);

    /* Against brute force. */
    static lk_aborted_txn list[200];
    for (int round = 0; round < 3000; round++) {
        size_t len = random_list(list, 1 + rnd_below(200), 1 + (int)rnd_below(8), 200);
        REQUIRE_OK(lk_aborted_txns_check(list, len));
        for (int q = 0; q < 60; q++) {
            int16_t attrs = (int16_t)(rnd_below(5) ? T : rnd_below(64));
            h = header_of((int64_t)rnd_below(10) - 1, (int64_t)rnd_below(220) - 10, attrs);
            CHECK_EQ(lk_batch_aborted(&h, list, len), brute_aborted(list, len, &h));
        }
    }
}

/* ------------------------------------------------------------------------------------
 * 3. Random logs and the model
 * --------------------------------------------------------------------------------- */
enum { MAX_BATCHES = 160, LOG_CAP = 1 << 17, MAX_TXNS = 128, PRODUCERS = 5 };

typedef struct {
    size_t pos, size;
    int64_t base;
    int16_t attrs;
    int64_t producer_id;
} tbatch;

typedef struct {
    uint8_t buf[LOG_CAP];
    size_t len;
    tbatch b[MAX_BATCHES];
    int nb;
    lk_aborted_txn aborted[MAX_TXNS]; /* unsorted as generated */
    size_t naborted;
    int64_t end;                      /* next offset */
} tlog;

static size_t encode_data(tlog *L, int64_t base, int64_t pid, int16_t attrs, int count,
                          int gapped)
{
    uint8_t keys[64 * 4], values[64 * 16];
    int32_t klen[64], vlen[64], deltas[64];
    size_t kp = 0, vp = 0;
    int32_t d = 0;
    for (int i = 0; i < count; i++) {
        klen[i] = rnd_below(5) ? 1 + (int32_t)rnd_below(4) : -1;
        vlen[i] = rnd_below(6) ? (int32_t)rnd_below(16) : -1;
        for (int32_t j = 0; j < klen[i]; j++)
            keys[kp++] = (uint8_t)('a' + rnd_below(3));
        for (int32_t j = 0; j < vlen[i]; j++)
            values[vp++] = (uint8_t)rnd();
        deltas[i] = d;
        d += gapped ? 1 + (int32_t)rnd_below(3) : 1;
    }
    lk_records_in r;
    memset(&r, 0, sizeof r);
    r.count = count;
    r.keys = keys;
    r.keys_size = kp;
    r.key_lengths = klen;
    r.values = values;
    r.values_size = vp;
    r.value_lengths = vlen;
    r.offset_deltas = deltas;
    lk_batch_params p = {base, (int32_t)rnd_below(5), attrs, 1700000000000LL + base, pid,
                         (int16_t)(pid >= 0 ? 1 : -1), pid >= 0 ? (int32_t)rnd_below(100) : -1};
    size_t len = 0;
    REQUIRE_OK(lk_batch_encode(&p, &r, L->buf + L->len, LOG_CAP - L->len, &len, NULL));
    if (attrs & LK_ATTR_COMPRESSION_MASK) /* flag only: the walk never looks inside */
        REQUIRE_OK(lk_batch_update_crc(L->buf + L->len, len, NULL));
    return len;
}

static void added(tlog *L, size_t size)
{
    tbatch *b = &L->b[L->nb++];
    const uint8_t *p = L->buf + L->len;
    b->pos = L->len;
    b->size = size;
    b->base = (int64_t)get64(p);
    b->attrs = (int16_t)get16(p + OFF_ATTRS);
    b->producer_id = (int64_t)get64(p + OFF_PRODUCER);
    L->len += size;
    L->end = b->base + (int32_t)get32(p + OFF_LAST_DELTA) + 1;
    if (rnd_below(5) == 0)
        L->end += (int64_t)rnd_below(4); /* a gap, as compaction leaves */
}

/* A log of interleaved producers: each runs transactions (1-4 transactional batches, then
 * a COMMIT or ABORT marker; aborted ones are listed) between idempotent and plain
 * batches, empty batches and compressed-flagged ones. */
static void gen_tlog(tlog *L, int nbatches)
{
    L->len = 0;
    L->nb = 0;
    L->naborted = 0;
    L->end = rnd_below(50);
    int64_t open_first[PRODUCERS];
    int left[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) {
        open_first[p] = -1;
        left[p] = 0;
    }
    while (L->nb < nbatches && L->nb < MAX_BATCHES - PRODUCERS && L->len + 8192 < LOG_CAP) {
        int p = (int)rnd_below(PRODUCERS);
        int64_t pid = 100 + p;
        uint32_t k = rnd_below(100);
        int16_t compressed = rnd_below(6) == 0 ? (int16_t)(1 + rnd_below(4)) : 0;
        size_t size = 0;
        if (open_first[p] >= 0 && left[p] == 0) {
            int abort = rnd_below(2);
            lk_batch_params bp = {L->end, 0, 0, 0, pid, 1, -1};
            REQUIRE_OK(lk_control_batch_encode(&bp, abort ? LK_CONTROL_ABORT : LK_CONTROL_COMMIT,
                                               3, 1700000000000LL, L->buf + L->len,
                                               LOG_CAP - L->len, &size, NULL));
            if (abort && L->naborted < MAX_TXNS)
                L->aborted[L->naborted++] = (lk_aborted_txn){pid, open_first[p], L->end};
            open_first[p] = -1;
        } else if (open_first[p] >= 0 || k < 35) {
            if (open_first[p] < 0) {
                open_first[p] = L->end;
                left[p] = 1 + (int)rnd_below(4);
            }
            left[p]--;
            size = encode_data(L, L->end, pid, (int16_t)(LK_ATTR_TRANSACTIONAL | compressed),
                               1 + (int)rnd_below(5), rnd_below(4) == 0);
        } else if (k < 45) {
            lk_batch_params bp = {L->end, 0, (int16_t)(rnd_below(2) ? LK_ATTR_TRANSACTIONAL : 0),
                                  -1, rnd_below(2) ? pid : -1, 1, 0};
            REQUIRE_OK(lk_batch_frame(&bp, 0, (int32_t)rnd_below(3), 1700000000000LL, NULL, 0,
                                      L->buf + L->len, LOG_CAP - L->len, &size, NULL));
        } else if (k < 75) {
            size = encode_data(L, L->end, pid, compressed, 1 + (int)rnd_below(5), 0);
        } else {
            size = encode_data(L, L->end, -1, compressed, 1 + (int)rnd_below(5), 0);
        }
        added(L, size);
    }
    /* Now and then, a listed transaction that wrote nothing here, or one still open that a
     * caller lists anyway: the rule judges batches by the list alone. */
    if (rnd_below(4) == 0 && L->naborted < MAX_TXNS)
        L->aborted[L->naborted++] = (lk_aborted_txn){100 + (int64_t)rnd_below(PRODUCERS + 1),
                                                     L->end + 5, L->end + 9};
}

/* The list sorted by (producer, first offset) as lk_aborted_txns_check wants it. */
static int by_producer_first(const void *x, const void *y)
{
    const lk_aborted_txn *a = x, *b = y;
    if (a->producer_id != b->producer_id)
        return a->producer_id < b->producer_id ? -1 : 1;
    return a->first_offset < b->first_offset ? -1 : a->first_offset > b->first_offset;
}

static size_t sorted_list(const tlog *L, lk_aborted_txn *out)
{
    memcpy(out, L->aborted, L->naborted * sizeof *out);
    qsort(out, L->naborted, sizeof *out, by_producer_first);
    return L->naborted;
}

static int model_aborted(const tlog *L, const tbatch *b)
{
    if ((b->attrs & (LK_ATTR_TRANSACTIONAL | LK_ATTR_CONTROL)) != LK_ATTR_TRANSACTIONAL
        || b->producer_id < 0)
        return 0;
    for (size_t i = 0; i < L->naborted; i++)
        if (L->aborted[i].producer_id == b->producer_id && L->aborted[i].first_offset <= b->base
            && b->base <= L->aborted[i].last_offset)
            return 1;
    return 0;
}

static void test_model(int rounds)
{
    static tlog L;
    static uint8_t want[LOG_CAP];
    static lk_aborted_txn list[MAX_TXNS];
    long dropped_total = 0, kept_total = 0;
    for (int round = 0; round < rounds; round++) {
        gen_tlog(&L, 1 + (int)rnd_below(rnd_below(4) ? 30 : 150));
        size_t n = sorted_list(&L, list);
        REQUIRE_OK(lk_aborted_txns_check(list, n));
        size_t wl = 0;
        for (int i = 0; i < L.nb; i++) {
            if (model_aborted(&L, &L.b[i])) {
                dropped_total++;
                continue;
            }
            kept_total++;
            memcpy(want + wl, L.buf + L.b[i].pos, L.b[i].size);
            wl += L.b[i].size;
        }
        uint8_t *buf = exact_copy(L.buf, L.len);
        CHECK_EQ(lk_drop_aborted(buf, L.len, list, n), wl);
        CHECK(memcmp(buf, want, wl) == 0);
        /* Idempotent: nothing aborted is left to drop. */
        CHECK_EQ(lk_drop_aborted(buf, wl, list, n), wl);
        CHECK(memcmp(buf, want, wl) == 0);
        free(buf);

        /* No list, or a list of other producers: the buffer is untouched. */
        buf = exact_copy(L.buf, L.len);
        CHECK_EQ(lk_drop_aborted(buf, L.len, NULL, 0), L.len);
        const lk_aborted_txn others[] = {{0, 0, INT64_MAX}, {99, 0, INT64_MAX}, {1000, 0, 5}};
        CHECK_EQ(lk_drop_aborted(buf, L.len, others, 3), L.len);
        CHECK(memcmp(buf, L.buf, L.len) == 0);
        free(buf);

        /* Batch by batch, and split at every batch boundary: the same result. */
        size_t at = L.nb ? L.b[rnd_below((uint32_t)L.nb)].pos : 0;
        buf = exact_copy(L.buf, L.len);
        int64_t first = lk_drop_aborted(buf, at, list, n);
        int64_t second = lk_drop_aborted(buf + at, L.len - at, list, n);
        CHECK(first >= 0 && second >= 0 && (size_t)(first + second) == wl);
        if (first >= 0 && second >= 0) {
            memmove(buf + first, buf + at, (size_t)second);
            CHECK(memcmp(buf, want, wl) == 0);
        }
        free(buf);
    }
    CHECK(dropped_total > rounds / 2 && kept_total > rounds);
}

/* ------------------------------------------------------------------------------------
 * 4. Damaged input
 * --------------------------------------------------------------------------------- */

/* The rule on damaged bytes, by an independent walk: batches whose header parses are
 * judged on it; a batch that would be dropped must have a good CRC; the walk stops at the
 * first header that does not parse (length < 49 or past the end, magic not 2, fewer than
 * 61 bytes left) or at an aborted-looking batch with a bad CRC, keeping the rest. */
static size_t reference_drop(const uint8_t *in, size_t len, const lk_aborted_txn *list, size_t n,
                             uint8_t *out, long *stopped_on_crc)
{
    size_t pos = 0, w = 0;
    while (len - pos >= HDR) {
        const uint8_t *b = in + pos;
        int64_t length = (int32_t)get32(b + OFF_LENGTH);
        if (length < HDR - 12 || (uint64_t)length + 12 > len - pos || b[OFF_MAGIC] != 2)
            break;
        size_t size = (size_t)length + 12;
        lk_batch_header h = header_of((int64_t)get64(b + OFF_PRODUCER), (int64_t)get64(b),
                                      (int16_t)get16(b + OFF_ATTRS));
        if (brute_aborted(list, n, &h)) {
            if (lk_crc32c(0, b + OFF_ATTRS, size - OFF_ATTRS) != get32(b + OFF_CRC)) {
                ++*stopped_on_crc;
                break;
            }
        } else {
            memcpy(out + w, b, size);
            w += size;
        }
        pos += size;
    }
    memcpy(out + w, in + pos, len - pos);
    return w + (len - pos);
}

static void fix_crc(uint8_t *b, size_t avail)
{
    if (avail >= HDR)
        (void)lk_batch_update_crc(b, avail, NULL);
}

static size_t damage(uint8_t *buf, size_t len, const tlog *L)
{
    if (len == 0 || L->nb == 0)
        return len;
    const tbatch *b = &L->b[rnd_below((uint32_t)L->nb)];
    size_t bp = b->pos < len ? b->pos : 0;
    size_t avail = len - bp;
    int fix = rnd_below(2);
    switch (rnd_below(8)) {
    case 0: /* bytes anywhere */
        for (int k = 1 + (int)rnd_below(4); k > 0; k--)
            buf[rnd_below((uint32_t)len)] ^= (uint8_t)(1 + rnd_below(255));
        break;
    case 1: /* cut */
        len = rnd_below((uint32_t)len + 1);
        break;
    case 2: { /* batchLength */
        if (avail < 12)
            break;
        const uint32_t v[] = {0, 48, 49, 50, get32(buf + bp + OFF_LENGTH) + 1,
                              get32(buf + bp + OFF_LENGTH) - 1, (uint32_t)(avail - 12),
                              (uint32_t)(avail - 11), 0x7fffffffu, 0x80000000u, rnd()};
        set32(buf + bp + OFF_LENGTH, v[rnd_below(sizeof v / sizeof v[0])]);
        break;
    }
    case 3: /* magic */
        if (avail > OFF_MAGIC)
            buf[bp + OFF_MAGIC] = (uint8_t)rnd_below(4);
        break;
    case 4: /* attributes: transactional and control bits come and go */
        if (avail >= HDR) {
            uint16_t a = get16(buf + bp + OFF_ATTRS);
            set16(buf + bp + OFF_ATTRS, (uint16_t)(a ^ (rnd_below(2) ? LK_ATTR_TRANSACTIONAL
                                                                       : LK_ATTR_CONTROL)));
            if (fix)
                fix_crc(buf + bp, avail);
        }
        break;
    case 5: /* producer id */
        if (avail >= HDR) {
            set64(buf + bp + OFF_PRODUCER, (uint64_t)(int64_t)(rnd_below(PRODUCERS + 2) + 99));
            if (fix)
                fix_crc(buf + bp, avail);
        }
        break;
    case 6: /* base offset (not covered by the CRC) */
        if (avail >= 8)
            set64(buf + bp, rnd_below(2) ? (uint64_t)rnd_below(400) : ((uint64_t)rnd() << 32 | rnd()));
        break;
    default: /* a byte in the records, CRC fixed or not */
        if (avail > HDR) {
            buf[bp + HDR + rnd_below((uint32_t)(avail - HDR))] ^= 0x5a;
            if (fix)
                fix_crc(buf + bp, avail);
        }
        break;
    }
    return len;
}

static void run_damaged(const uint8_t *src, size_t len, const lk_aborted_txn *list, size_t n,
                        long *stopped_on_crc)
{
    static uint8_t want[LOG_CAP * 2];
    size_t wl = reference_drop(src, len, list, n, want, stopped_on_crc);
    uint8_t *buf = exact_copy(src, len);
    int64_t got = lk_drop_aborted(buf, len, list, n);
    CHECK_EQ(got, wl);
    if (got == (int64_t)wl)
        CHECK(memcmp(buf, want, wl) == 0);
    free(buf);
}

static void test_damage(int logs, int mutations)
{
    static tlog L;
    static uint8_t work[LOG_CAP];
    static lk_aborted_txn list[MAX_TXNS];
    long stopped_on_crc = 0, runs = 0;
    for (int l = 0; l < logs; l++) {
        gen_tlog(&L, 1 + (int)rnd_below(20));
        size_t n = sorted_list(&L, list);
        for (int k = 0; k < mutations; k++) {
            memcpy(work, L.buf, L.len);
            size_t len = damage(work, L.len, &L);
            if (rnd_below(3) == 0)
                len = damage(work, len, &L);
            run_damaged(work, len, list, n, &stopped_on_crc);
            runs++;
        }
        if (L.len <= 1500 && l % 4 == 0) {
            for (size_t cut = 0; cut <= L.len; cut++, runs++)
                run_damaged(L.buf, cut, list, n, &stopped_on_crc);
        }
    }
    /* Garbage shaped like batches: plausible lengths and magic, transactional bits and
     * listed producer ids, CRCs good or not. */
    const lk_aborted_txn g[] = {{100, 0, 500}, {101, 0, 500}, {102, 40, 41}};
    for (int k = 0; k < logs * 4; k++, runs++) {
        size_t len = rnd_below(900), pos = 0;
        for (size_t i = 0; i < len; i++)
            work[i] = (uint8_t)rnd();
        while (pos + HDR <= len && rnd_below(4)) {
            size_t size = HDR + rnd_below((uint32_t)(len - pos - HDR) + 1);
            set32(work + pos + OFF_LENGTH, (uint32_t)(size - 12));
            work[pos + OFF_MAGIC] = 2;
            set64(work + pos, rnd_below(600));
            set16(work + pos + OFF_ATTRS, (uint16_t)(rnd_below(3) ? LK_ATTR_TRANSACTIONAL : rnd()));
            set64(work + pos + OFF_PRODUCER, (uint64_t)(99 + rnd_below(5)));
            if (rnd_below(2))
                (void)lk_batch_update_crc(work + pos, size, NULL);
            pos += size;
        }
        run_damaged(work, len, g, 3, &stopped_on_crc);
    }
    CHECK(stopped_on_crc > 0 && runs > logs * mutations);
    if (getenv("TEST_TXN_VERBOSE"))
        printf("damage: %ld runs, %ld stopped at an aborted-looking batch with a bad CRC\n",
               runs, stopped_on_crc);
}

/* ------------------------------------------------------------------------------------
 * 5. Arguments and small cases
 * --------------------------------------------------------------------------------- */
static void test_arguments(void)
{
    static tlog L;
    const lk_aborted_txn a[] = {{1, 0, 10}};
    const lk_aborted_txn bad[] = {{1, 5, 10}, {1, 0, 3}};
    CHECK_EQ(lk_drop_aborted(NULL, 5, a, 1), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_drop_aborted(NULL, 0, a, 1), 0);
    CHECK_EQ(lk_drop_aborted(NULL, 0, NULL, 0), 0);
    uint8_t small[3] = {1, 2, 3};
    CHECK_EQ(lk_drop_aborted(small, 3, a, 1), 3);
    CHECK_EQ(lk_drop_aborted(small, 3, NULL, 1), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_drop_aborted(small, (size_t)INT64_MAX + 1, a, 1), LK_ERR_ARGUMENT);

    /* A bad list is refused before anything moves. */
    L.len = 0;
    L.nb = 0;
    L.end = 0;
    added(&L, encode_data(&L, 0, 1, LK_ATTR_TRANSACTIONAL, 2, 0));
    added(&L, encode_data(&L, L.end, 2, 0, 1, 0));
    uint8_t *buf = exact_copy(L.buf, L.len);
    CHECK_EQ(lk_drop_aborted(buf, L.len, bad, 2), LK_ERR_ARGUMENT);
    CHECK(memcmp(buf, L.buf, L.len) == 0);
    /* The aborted batch goes, the other moves down whole. */
    CHECK_EQ(lk_drop_aborted(buf, L.len, a, 1), L.b[1].size);
    CHECK(memcmp(buf, L.buf + L.b[1].pos, L.b[1].size) == 0);
    free(buf);

    /* An aborted batch with a bad CRC stops the walk there; the one before still goes. */
    L.len = 0;
    L.nb = 0;
    L.end = 0;
    added(&L, encode_data(&L, 0, 1, LK_ATTR_TRANSACTIONAL, 1, 0));
    added(&L, encode_data(&L, L.end, 1, LK_ATTR_TRANSACTIONAL, 1, 0));
    added(&L, encode_data(&L, L.end, 1, LK_ATTR_TRANSACTIONAL, 1, 0));
    buf = exact_copy(L.buf, L.len);
    buf[L.b[1].pos + L.b[1].size - 1] ^= 1;
    size_t rest = L.len - L.b[1].pos;
    CHECK_EQ(lk_drop_aborted(buf, L.len, a, 1), rest);
    CHECK(memcmp(buf + L.b[1].size - 1, L.buf + L.b[1].pos + L.b[1].size - 1, 1) != 0);
    CHECK(memcmp(buf + L.b[1].size, L.buf + L.b[2].pos, L.b[2].size) == 0);
    free(buf);

    /* A torn last batch stays, after the batches before it were dropped. */
    buf = exact_copy(L.buf, L.len - 5);
    CHECK_EQ(lk_drop_aborted(buf, L.len - 5, a, 1), L.b[2].size - 5);
    CHECK(memcmp(buf, L.buf + L.b[2].pos, L.b[2].size - 5) == 0);
    free(buf);

    /* The transaction's ends are inclusive: first offset and the marker's offset. */
    const lk_aborted_txn edge[] = {{1, L.b[1].base, L.b[1].base}};
    buf = exact_copy(L.buf, L.len);
    CHECK_EQ(lk_drop_aborted(buf, L.len, edge, 1), L.len - L.b[1].size);
    free(buf);
}

/* ------------------------------------------------------------------------------------
 * Speed
 * --------------------------------------------------------------------------------- */
static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void bench(int per_batch, const char *what)
{
    enum { BYTES = 64 << 20 };
    uint8_t *log = malloc(BYTES), *work = malloc(BYTES);
    static uint8_t values[100 * 100], keys[100 * 8];
    int32_t vlen[100], klen[100];
    for (int i = 0; i < per_batch; i++) {
        vlen[i] = 100;
        klen[i] = 8;
    }
    lk_records_in r;
    memset(&r, 0, sizeof r);
    r.count = per_batch;
    r.keys = keys;
    r.keys_size = (size_t)per_batch * 8;
    r.key_lengths = klen;
    r.values = values;
    r.values_size = (size_t)per_batch * 100;
    r.value_lengths = vlen;
    int transactional = strcmp(what, "plain") != 0;
    size_t len = 0;
    int64_t off = 0, batches = 0;
    static lk_aborted_txn list[1 << 16];
    size_t n = 0;
    for (;;) {
        size_t size = 0;
        int64_t pid = transactional ? batches % 64 : -1;
        lk_batch_params p = {off, 0, (int16_t)(transactional ? LK_ATTR_TRANSACTIONAL : 0), 0, pid,
                             0, 0};
        if (lk_batch_encode(&p, &r, log + len, BYTES - len, &size, NULL) != LK_OK)
            break;
        /* Half the transactions (of one batch each) aborted. */
        if (strcmp(what, "half aborted") == 0 && batches % 2 == 0 && n < sizeof list / sizeof list[0])
            list[n++] = (lk_aborted_txn){pid, off, off + per_batch};
        len += size;
        off += per_batch + 1;
        batches++;
    }
    qsort(list, n, sizeof list[0], by_producer_first);
    if (strcmp(what, "plain") == 0 || strcmp(what, "none aborted") == 0) {
        list[0] = (lk_aborted_txn){9999, 0, INT64_MAX}; /* a producer with no batch here */
        n = 1;
    }
    int reps = 20;
    double best = 1e9;
    for (int k = 0; k < reps; k++) {
        memcpy(work, log, len);
        double t = seconds_now();
        int64_t got = lk_drop_aborted(work, len, list, n);
        t = seconds_now() - t;
        if (got < 0)
            printf("error %lld\n", (long long)got);
        if (t < best)
            best = t;
    }
    printf("%-14s %3d records a batch: %6.1f ns a batch, %7.2f GB/s (%lld batches, %zu aborted "
           "transactions)\n", what, per_batch, best * 1e9 / (double)batches,
           (double)len / best / 1e9, (long long)batches, n);
    free(log);
    free(work);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        for (int per = 1; per <= 100; per *= 100) {
            bench(per, "empty list");
            bench(per, "plain");
            bench(per, "none aborted");
            bench(per, "half aborted");
        }
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "usage: %s [--bench]\n", argv[0]);
        return 2;
    }
    rng_state = 0x7A4E5C0DEULL;
    test_check();
    test_batch_aborted();
    test_arguments();
    test_model(20000);
    test_damage(5000, 100);
    return check_summary("test_txn");
}
