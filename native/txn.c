/*
 * txn.c - aborted transactions: which batches they wrote, and dropping those batches from
 * a read for isolation_level = read_committed (contract in logkernel.h, "Transactions").
 *
 * Hand-written because it runs on every read_committed fetch, over every batch header of
 * the bytes read, and moves those bytes in place: a Python walk over batch headers
 * (struct.unpack_from of length, attributes and producer id) costs ~0.85 us a batch here,
 * which a consumer of single-record batches would pay per record; this walk costs ~35 ns
 * a batch, ~110 ns for a batch it drops (native/tests/test_txn --bench).
 *
 * The aborted list is sorted by (producer id, first offset) with one producer's
 * transactions apart, so "is this batch aborted" is one binary search for the producer's
 * last transaction starting at or below the batch's base offset, and needs no state
 * across batches (unlike Kafka's consumer, which tracks open aborted transactions until
 * their ABORT markers): any slice of a log can be judged, in any order.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"

int lk_aborted_txns_check(const lk_aborted_txn *aborted, size_t count)
{
    if (!aborted && count)
        return LK_ERR_ARGUMENT;
    for (size_t i = 0; i < count; i++) {
        const lk_aborted_txn *a = &aborted[i];
        if (a->first_offset > a->last_offset)
            return LK_ERR_ARGUMENT;
        if (i == 0)
            continue;
        const lk_aborted_txn *p = &aborted[i - 1];
        if (a->producer_id < p->producer_id)
            return LK_ERR_ARGUMENT;
        if (a->producer_id == p->producer_id && a->first_offset <= p->last_offset)
            return LK_ERR_ARGUMENT; /* out of order, or overlapping the one before */
    }
    return LK_OK;
}

/* The last transaction of producer_id with first_offset <= offset holds the offset if
 * any of the producer's does (they are apart and sorted). */
static int holds(const lk_aborted_txn *aborted, size_t count, int64_t producer_id,
                 int64_t offset)
{
    size_t lo = 0, hi = count; /* first entry past (producer_id, offset) */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const lk_aborted_txn *a = &aborted[mid];
        if (a->producer_id < producer_id
            || (a->producer_id == producer_id && a->first_offset <= offset))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return 0;
    const lk_aborted_txn *a = &aborted[lo - 1];
    return a->producer_id == producer_id && a->first_offset <= offset && offset <= a->last_offset;
}

int lk_batch_aborted(const lk_batch_header *header, const lk_aborted_txn *aborted,
                     size_t count)
{
    if (!header || count == 0 || !aborted)
        return 0;
    if ((header->attributes & (LK_ATTR_TRANSACTIONAL | LK_ATTR_CONTROL)) != LK_ATTR_TRANSACTIONAL
        || header->producer_id < 0)
        return 0;
    return holds(aborted, count, header->producer_id, header->base_offset);
}

int64_t lk_drop_aborted(uint8_t *buf, size_t len, const lk_aborted_txn *aborted,
                        size_t count)
{
    if ((!buf && len) || len > (size_t)INT64_MAX || lk_aborted_txns_check(aborted, count) != LK_OK)
        return LK_ERR_ARGUMENT;
    if (count == 0)
        return (int64_t)len;
    /* buf[0:written) is final; buf[run:pos) are kept batches not moved yet. */
    size_t pos = 0, run = 0, written = 0;
    while (len - pos >= LK_BATCH_HEADER_SIZE) {
        lk_batch_header h;
        if (lk_batch_parse_header(buf + pos, len - pos, 0, &h, NULL) != LK_OK)
            break; /* a torn or garbled batch: kept from here on, for the caller to report */
        size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
        if (!lk_batch_aborted(&h, aborted, count)) {
            pos += size;
            continue;
        }
        /* Dropped only if the header that says "aborted" is the producer's (CRC good). */
        if (lk_crc32c(0, buf + pos + LK_OFF_ATTRIBUTES, size - LK_OFF_ATTRIBUTES) != h.crc)
            break;
        if (run != written)
            memmove(buf + written, buf + run, pos - run);
        written += pos - run;
        pos += size;
        run = pos;
    }
    if (run != written)
        memmove(buf + written, buf + run, len - run);
    return (int64_t)(written + (len - run));
}
