/*
 * segment.c - log scan, sparse index search, and the memory-mapped segment (one .log
 * with its .index and .timeindex).
 *
 * FILES (byte for byte Kafka's; every integer big-endian)
 *
 *   <base>.log        consecutive RecordBatch v2 batches (layout in logkernel.h), from
 *                     position 0; nothing else. A writable file may be longer than the
 *                     logical size: the extra bytes were allocated by fallocate and are 0.
 *
 *   <base>.index      8-byte entries           <base>.timeindex  12-byte entries
 *     off size field                              off size field
 *       0   4  relativeOffset int32                 0   8  timestamp int64
 *       4   4  position int32                       8   4  relativeOffset int32
 *
 *   relativeOffset = offset - base_offset. An offset entry (r, p) says "the batch that
 *   starts at byte p of the .log has last offset base + r". A time entry (t, r) says
 *   "t is the largest maxTimestamp of the batches up to the one whose last offset is
 *   base + r, and that batch is the first to carry it". An all-zero entry is never
 *   written (see invariants 4 and 5), so zeros after the entries end the prefix: a
 *   crash that leaves allocated-but-unwritten index bytes leaves a valid prefix.
 *
 * THE INDEX RULE (Kafka's LogSegment.recover; LogSegment.append does the same per
 * record set, we do it per batch everywhere so that appends and rebuilds agree)
 *
 *   For each batch B at position P, in order:
 *     1. if B.maxTimestamp > max_so_far: max_so_far = B.maxTimestamp,
 *        offset_of_max = B.lastOffset;
 *     2. if P - (position of the last entry, 0 if none) > index_interval_bytes and
 *        P <= INT32_MAX: append offset entry (B.lastOffset - base, P), then append time
 *        entry (max_so_far, offset_of_max - base) if max_so_far > the last time
 *        entry's timestamp (-1 if none) and the entry is not all zero bytes.
 *   recover, rebuild_indexes and seal then append the final (max_so_far, offset_of_max)
 *   time entry under the same condition (Kafka does this at recovery and at roll).
 *   The first batch never gets an entry (0 > interval is false), so no offset entry has
 *   position 0 and the all-zero offset entry cannot be a real one.
 *
 * WHY LOOKUPS ARE CORRECT
 *
 *   find_offset(T): take the greatest entry (r, p) with base + r <= T. Every batch before
 *   p has last offset < (the last offset of the batch at p) = base + r <= T, so none of
 *   them holds T or anything after it; walking headers forward from p to the first
 *   batch with last offset >= T finds exactly the batch Kafka's translateOffset finds.
 *   With no such entry the walk starts at 0. (The walk costs one header read per batch,
 *   at most about index_interval_bytes of batches, plus the batch at p.)
 *   An entry written by Kafka's older record-set rule ((largest offset of the set,
 *   position of the set)) also satisfies "every batch before p has last < base + r";
 *   that is the property the walk relies on, and the one lk_segment_check asserts.
 *
 *   find_timestamp(T): take the greatest time entry (t, r) with t <= T (the first of
 *   equal timestamps). Every batch before the one holding base + r has maxTimestamp < t
 *   <= T (that batch was the first to reach t), so the first batch with maxTimestamp
 *   >= T is that batch or a later one; start at the offset-index position for base + r
 *   and walk forward. Dropping any index entry only moves the start earlier, never past
 *   the answer, which is why a valid prefix of an index is always safe to use.
 *
 * INVARIANTS (numbered; lk_segment_check asserts them under LK_DEBUG after every call
 * that changes a segment). Open does not walk the whole log (that is recover's job), so
 * for a segment opened over existing bytes and not yet recovered, 2, 4 and 5 are only
 * asserted when the log's headers walk cleanly from 0 to size.
 *
 *   1. 0 <= flushed_size <= size <= file_size; a writable segment's file_size <= the
 *      length of its .log map; a sealed segment's file_size == size.
 *   2. .log[0, size) is a whole number of batches whose headers parse, base offsets
 *      never below the previous batch's last offset + 1 (nor below base_offset), last
 *      offsets within base_offset + [0, INT32_MAX]; next_offset is the last batch's
 *      last offset + 1 (base_offset when empty); max_timestamp is the largest
 *      maxTimestamp (-1 when none is larger) and offset_of_max_timestamp the last
 *      offset of the first batch carrying it.
 *   3. .log bytes [size, file_size) are zero (so a crash leaves a tail lk_log_scan calls
 *      ZEROS, never stale batches a later scan could take for data).
 *   4. Offset entries: positions > 0 and strictly increasing, each the start of a batch
 *      in [0, size); relative offsets strictly increasing; for entry (r, p) every batch
 *      before p has last offset < base + r, and base + r < next_offset.
 *   5. Time entries: timestamps and relative offsets non-decreasing; base + r <
 *      next_offset; every batch before the one holding base + r has maxTimestamp < t;
 *      t <= max_timestamp; last_time_entry_ts is the last entry's t (-1 if none).
 *   6. For a mapped writable index: entries * entry_size <= file_size <= map length,
 *      entries <= capacity, and the index bytes [entries * entry_size, file_size) are
 *      zero.
 *   7. last_entry_position is -1 or the start of a batch in [0, size), and >= the
 *      position of the last offset entry.
 *
 * OPEN AND RECOVERY
 *
 *   Open does not validate the log (recover does, from 0, with CRCs). It derives
 *   next_offset and the max timestamp from a header walk that starts at the last
 *   offset-index entry when a batch really starts there, with the last time-index entry
 *   standing in for the batches before it when the batch holding its offset carries
 *   that timestamp; otherwise the walk starts at 0. A tail of zero bytes after the last
 *   batch (fallocate's, left by a crash) is not counted in the logical size. A writable
 *   open checks each index is a valid prefix followed only by zero bytes and fails with
 *   LK_ERR_INDEX_CORRUPT otherwise (nothing kept open, no file removed: reopen with
 *   LK_SEGMENT_RESET_INDEXES, which empties both index files, then recover or rebuild); entries that are well formed but
 *   describe bytes past the log (index written back, log pages lost) are zeroed. A
 *   read-only open maps its indexes on first lookup and uses their valid prefix; a
 *   lookup checks that a batch starts where an entry points before trusting it.
 *
 * DURABILITY AND SPACE
 *
 *   The .log of a writable segment is mapped MAP_SHARED once across log_capacity bytes
 *   (or the file size if larger); the file grows by posix_fallocate in grow_step steps
 *   ahead of the bytes written, so a full disk is LK_ERR_NO_SPACE from fallocate, not a
 *   SIGBUS in memcpy (a step the disk cannot give is retried as just the pages the append
 *   needs, so the disk really fills before appends are refused). Index files grow the same way in INDEX_GROW_STEP steps rather than
 *   being preallocated to segment.index.bytes like Kafka's: Kafka's preallocation is a
 *   sparse setLength (no blocks reserved, so a full disk faults), while a real
 *   fallocate of 10 MiB + 15 MiB per active segment would reserve 25 MiB of disk for
 *   every partition, most of it never used. A 4 KiB step costs one fallocate per 512
 *   offset entries (2 MiB of log at the default interval).
 *   flush is msync(MS_SYNC) of the dirty page range then fdatasync, per file.
 *
 * Not thread-safe: one thread mutates a segment at a time; readers may read
 * lk_segment_data()[0, size) concurrently with appends past size.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

enum {
    OFFSET_ENTRY_SIZE = 8,
    TIME_ENTRY_SIZE = 12,
    /* Index files grow in 4 KiB fallocate steps: one page, 512 offset entries. Larger
     * steps save syscalls nobody notices (one per ~2 MiB of log) and reserve disk that
     * thousands of idle partitions would never use. */
    INDEX_GROW_STEP = 4096,
    /* The time index holds at most one entry per offset entry (the rule above) plus the
     * final entry of a recover/rebuild plus the final entry of seal; its capacity is
     * index_capacity / 8 + 2 entries so that it never fills before the offset index. */
    TIME_INDEX_SPARE_ENTRIES = 2,
    VALIDATE_ALL = LK_VALIDATE_CRC | LK_VALIDATE_RECORDS | LK_VALIDATE_CONTIGUOUS,
    SCAN_FLAGS_ALL = VALIDATE_ALL | LK_SCAN_DENSE,
    SEGMENT_FLAGS_ALL = LK_SEGMENT_WRITABLE | LK_SEGMENT_CREATE | LK_SEGMENT_RESET_INDEXES,
    /* max_batch_size limits what appends accept, never what is already stored: a topic's
     * limit may be lowered after larger batches were written, and recovery must not take
     * them for corruption. Walks over the segment's own bytes use no limit (INT32_MAX). */
    STORED_BATCH_LIMIT = 0
};

#ifdef LK_DEBUG
enum { SEGMENT_DEBUG = 1 };
#else
enum { SEGMENT_DEBUG = 0 };
#endif

/* ------------------------------------------------------------------------------------
 * Small helpers
 * --------------------------------------------------------------------------------- */

static int all_zero(const uint8_t *p, size_t n)
{
    if (n == 0)
        return 1;
    return p[0] == 0 && memcmp(p, p + 1, n - 1) == 0;
}

static int32_t offset_entry_relative(const uint8_t *index, size_t i)
{
    return (int32_t)lk_load_be32(index + i * OFFSET_ENTRY_SIZE);
}

static int32_t offset_entry_position(const uint8_t *index, size_t i)
{
    return (int32_t)lk_load_be32(index + i * OFFSET_ENTRY_SIZE + 4);
}

static int64_t time_entry_timestamp(const uint8_t *index, size_t i)
{
    return (int64_t)lk_load_be64(index + i * TIME_ENTRY_SIZE);
}

static int32_t time_entry_relative(const uint8_t *index, size_t i)
{
    return (int32_t)lk_load_be32(index + i * TIME_ENTRY_SIZE + 8);
}

static void offset_entry_store(uint8_t *p, int32_t relative, int32_t position)
{
    lk_store_be32(p, (uint32_t)relative);
    lk_store_be32(p + 4, (uint32_t)position);
}

static void time_entry_store(uint8_t *p, int64_t timestamp, int32_t relative)
{
    lk_store_be64(p, (uint64_t)timestamp);
    lk_store_be32(p + 8, (uint32_t)relative);
}

/* LK_ERR_IO with errno set to e. */
static int io_error(int e)
{
    errno = e;
    return LK_ERR_IO;
}

/* Whether errno value e says the file system (or the user's quota) is full. */
static int is_no_space(int e)
{
#ifdef EDQUOT
    if (e == EDQUOT)
        return 1;
#endif
    return e == ENOSPC;
}

/* An error from a call that allocates disk space (fallocate, write, or creating a file,
 * which needs an inode and room in the directory): a full file system is NO_SPACE. */
static int space_error(int e)
{
    errno = e;
    return is_no_space(e) ? LK_ERR_NO_SPACE : LK_ERR_IO;
}

static int map_error(int e)
{
    errno = e;
    return e == ENOMEM ? LK_ERR_NO_MEMORY : LK_ERR_IO;
}

static int truncate_file(int fd, int64_t length)
{
    int rc;
    do
        rc = ftruncate(fd, (off_t)length);
    while (rc != 0 && errno == EINTR);
    return rc == 0 ? LK_OK : io_error(errno);
}

static int sync_file(int fd)
{
    int rc;
    do
        rc = fdatasync(fd);
    while (rc != 0 && errno == EINTR);
    return rc == 0 ? LK_OK : io_error(errno);
}

/* ------------------------------------------------------------------------------------
 * Log scan
 * --------------------------------------------------------------------------------- */

static void scan_stop(lk_scan_result *out, int reason, int code, int64_t position,
                      int32_t record_index, const char *what)
{
    out->stop_reason = reason;
    out->stop_error.code = code;
    out->stop_error.position = position;
    out->stop_error.record_index = record_index;
    out->stop_error.what = what;
}

int lk_log_scan(const uint8_t *buf, size_t len, size_t start, int64_t min_offset,
                uint32_t max_batch_size, int flags, lk_scan_result *out)
{
    if (!out || (!buf && len) || start > len || (flags & ~SCAN_FLAGS_ALL))
        return LK_ERR_ARGUMENT;
    int dense = (flags & LK_SCAN_DENSE) != 0;
    flags &= VALIDATE_ALL;
    out->valid_bytes = (int64_t)start;
    out->batches = 0;
    out->records = 0;
    out->first_offset = -1;
    out->next_offset = min_offset;
    out->max_timestamp = -1;
    out->offset_of_max_timestamp = -1;
    scan_stop(out, LK_SCAN_END, LK_OK, (int64_t)start, -1,
              "the buffer ends on a batch boundary");

    size_t pos = start;
    int64_t expected = min_offset;
    while (pos < len) {
        size_t remaining = len - pos;
        lk_batch_header h;
        lk_error e = {LK_OK, 0, -1, NULL};
        int rc = lk_batch_validate(buf + pos, remaining, max_batch_size, flags, &h, &e);
        if (rc != LK_OK) {
            if (all_zero(buf + pos, remaining)) {
                scan_stop(out, LK_SCAN_ZEROS, LK_OK, (int64_t)pos, -1,
                          "the rest of the buffer is zero bytes (an allocated, unwritten tail)");
            } else {
                scan_stop(out, rc == LK_ERR_TRUNCATED ? LK_SCAN_TORN : LK_SCAN_CORRUPT, rc,
                          (int64_t)pos + e.position, e.record_index,
                          e.what ? e.what : "the batch failed validation");
            }
            return LK_OK;
        }
        if (h.last_offset_delta < 0) {
            scan_stop(out, LK_SCAN_OFFSET, LK_ERR_OFFSET_ORDER,
                      (int64_t)pos + LK_OFF_LAST_OFFSET_DELTA, -1,
                      "lastOffsetDelta is negative: the batch's offsets go backwards");
            return LK_OK;
        }
        if (h.base_offset < expected) {
            scan_stop(out, LK_SCAN_OFFSET, LK_ERR_OFFSET_ORDER, (int64_t)pos, -1,
                      "baseOffset is below the previous batch's last offset + 1 (or the "
                      "minimum offset): offsets go backwards");
            return LK_OK;
        }
        if (dense && h.base_offset != expected) {
            scan_stop(out, LK_SCAN_OFFSET, LK_ERR_OFFSET_ORDER, (int64_t)pos, -1,
                      "baseOffset is past the previous batch's last offset + 1 in a log that "
                      "has no gaps: a damaged baseOffset (the CRC does not cover it)");
            return LK_OK;
        }
        if (h.base_offset > INT64_MAX - 1 - h.last_offset_delta) {
            scan_stop(out, LK_SCAN_OFFSET, LK_ERR_OFFSET_ORDER, (int64_t)pos, -1,
                      "the batch's last offset overflows int64");
            return LK_OK;
        }
        int64_t last = h.base_offset + h.last_offset_delta;
        if (out->batches == 0)
            out->first_offset = h.base_offset;
        out->batches++;
        out->records += h.record_count;
        out->next_offset = last + 1;
        if (h.max_timestamp > out->max_timestamp) {
            out->max_timestamp = h.max_timestamp;
            out->offset_of_max_timestamp = last;
        }
        expected = last + 1;
        pos += (size_t)h.batch_length + LK_LOG_OVERHEAD;
        out->valid_bytes = (int64_t)pos;
        out->stop_error.position = (int64_t)pos;
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------------------
 * Sparse indexes
 * --------------------------------------------------------------------------------- */

int lk_offset_index_lookup(const uint8_t *index, size_t entries, int32_t target_relative,
                           int64_t *slot, int32_t *relative_offset, int32_t *position)
{
    if ((!index && entries) || entries > SIZE_MAX / OFFSET_ENTRY_SIZE)
        return LK_ERR_ARGUMENT;
    /* lo = number of leading entries with relativeOffset <= target. */
    size_t lo = 0, hi = entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (offset_entry_relative(index, mid) <= target_relative)
            lo = mid + 1;
        else
            hi = mid;
    }
    int64_t s = (int64_t)lo - 1;
    if (slot)
        *slot = s;
    if (relative_offset)
        *relative_offset = s < 0 ? 0 : offset_entry_relative(index, (size_t)s);
    if (position)
        *position = s < 0 ? 0 : offset_entry_position(index, (size_t)s);
    return LK_OK;
}

int lk_time_index_lookup(const uint8_t *index, size_t entries, int64_t target,
                         int64_t *slot, int64_t *timestamp, int32_t *relative_offset)
{
    if ((!index && entries) || entries > SIZE_MAX / TIME_ENTRY_SIZE)
        return LK_ERR_ARGUMENT;
    size_t lo = 0, hi = entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (time_entry_timestamp(index, mid) <= target)
            lo = mid + 1;
        else
            hi = mid;
    }
    int64_t s = (int64_t)lo - 1;
    if (s >= 0) {
        /* Of several entries with the same timestamp take the first: only it is sure to
         * precede every batch that carries the timestamp. */
        int64_t t = time_entry_timestamp(index, (size_t)s);
        size_t a = 0, b = (size_t)s;
        while (a < b) {
            size_t mid = a + (b - a) / 2;
            if (time_entry_timestamp(index, mid) < t)
                a = mid + 1;
            else
                b = mid;
        }
        s = (int64_t)a;
    }
    if (slot)
        *slot = s;
    if (timestamp)
        *timestamp = s < 0 ? -1 : time_entry_timestamp(index, (size_t)s);
    if (relative_offset)
        *relative_offset = s < 0 ? 0 : time_entry_relative(index, (size_t)s);
    return LK_OK;
}

size_t lk_offset_index_valid_entries(const uint8_t *index, size_t entries, int64_t log_size)
{
    if (!index || entries > SIZE_MAX / OFFSET_ENTRY_SIZE)
        return 0;
    int64_t previous_relative = -1, previous_position = 0;
    size_t i;
    for (i = 0; i < entries; i++) {
        int64_t r = offset_entry_relative(index, i);
        int64_t p = offset_entry_position(index, i);
        /* p > previous_position (starting at 0) also rejects the all-zero entry. */
        if (r <= previous_relative || p <= previous_position || p >= log_size)
            break;
        previous_relative = r;
        previous_position = p;
    }
    return i;
}

size_t lk_time_index_valid_entries(const uint8_t *index, size_t entries, int32_t max_relative)
{
    if (!index || entries > SIZE_MAX / TIME_ENTRY_SIZE)
        return 0;
    int64_t previous_timestamp = INT64_MIN;
    int32_t previous_relative = 0;
    size_t i;
    for (i = 0; i < entries; i++) {
        int64_t t = time_entry_timestamp(index, i);
        int32_t r = time_entry_relative(index, i);
        if ((t == 0 && r == 0) || t < previous_timestamp || r < previous_relative ||
            r > max_relative)
            break;
        previous_timestamp = t;
        previous_relative = r;
    }
    return i;
}

/* ------------------------------------------------------------------------------------
 * The segment
 * --------------------------------------------------------------------------------- */

typedef struct {
    char *path;              /* copy; NULL: the segment has no index of this kind */
    int fd;                  /* -1: not open (no path, or a missing file of a read-only segment) */
    int fd_writable;
    int created;             /* this open created the file (unlinked if the open fails) */
    uint8_t *map;            /* NULL until mapped (read-only segments map lazily) */
    uint64_t map_length;
    int64_t file_size;
    int64_t entries;         /* valid entries; before a lazy load: file_size / entry_size */
    int64_t capacity;        /* entries the map can hold (writable) */
    int64_t flushed_entries;
    int loaded;              /* entries validated and map usable */
    int map_writable;        /* map is PROT_WRITE over capacity entries (writable segment) */
    int dirty;               /* changed since the last fdatasync */
    uint32_t entry_size;
} index_file;

struct lk_segment {
    int log_fd;
    int log_created;
    uint8_t *log_map;
    uint64_t log_map_length;
    int64_t log_capacity;        /* bytes appends may fill */
    int64_t file_size;           /* bytes the .log file holds */
    int64_t size;                /* logical bytes */
    int64_t flushed_size;
    int log_dirty;
    int64_t base_offset;
    int64_t next_offset;
    int64_t max_timestamp;
    int64_t offset_of_max_timestamp;
    int64_t last_entry_position; /* the last index-rule entry point, -1: none */
    int64_t last_time_entry_ts;  /* timestamp of the last time entry, -1: none */
    uint64_t grow_step;
    uint32_t index_interval_bytes;
    uint32_t max_batch_size;
    int writable;                /* opened with LK_SEGMENT_WRITABLE */
    int sealed;                  /* no more appends */
    int needs_recovery;          /* open found bytes after the last batch that are not 0 */
    int unverified;              /* opened over existing bytes that no walk from 0 has checked */
    long page_size;
    int dir_fd;                  /* >= 0 when this open created a file: the directory (opened
                                    at open, so a later rename of it does not matter) is
                                    fsynced by the next flush, then closed */
    index_file offset_index;
    index_file time_index;
};

static int lk_segment_check(const lk_segment *seg);

static void debug_check(const lk_segment *seg, const char *after)
{
    if (!SEGMENT_DEBUG)
        return;
    int broken = lk_segment_check(seg);
    if (broken) {
        fprintf(stderr, "logkernel: segment invariant %d broken after %s\n", broken, after);
        abort();
    }
}

/* The header of the batch at pos, accepted only if it parses within [pos, limit), its
 * lastOffsetDelta is >= 0, its base offset is >= expected, and its last offset is
 * within the segment's int32 relative range. */
static int batch_at(const lk_segment *seg, int64_t pos, int64_t limit, int64_t expected,
                    lk_batch_header *h, int64_t *last)
{
    if (pos < 0 || pos >= limit || !seg->log_map)
        return LK_ERR_TRUNCATED;
    int rc = lk_batch_parse_header(seg->log_map + pos, (size_t)(limit - pos),
                                   STORED_BATCH_LIMIT, h, NULL);
    if (rc != LK_OK)
        return rc;
    if (h->last_offset_delta < 0 || h->base_offset < expected ||
        h->base_offset < seg->base_offset ||
        h->base_offset - seg->base_offset > (int64_t)INT32_MAX - h->last_offset_delta)
        return LK_ERR_OFFSET_ORDER;
    *last = h->base_offset + h->last_offset_delta;
    return LK_OK;
}

static int64_t batch_size(const lk_batch_header *h)
{
    return (int64_t)h->batch_length + LK_LOG_OVERHEAD;
}

/* Aggregates of a header walk over part of the log. */
typedef struct {
    int64_t end;              /* first byte not accepted */
    int64_t batches;
    int64_t records;
    int64_t first_offset;
    int64_t next_offset;
    int64_t max_timestamp;
    int64_t offset_of_max_timestamp;
    int stop_code;            /* LK_OK when the walk reached its limit */
} log_walk;

/* Walks batch headers (no CRC) over [from, limit). */
static void walk_log(const lk_segment *seg, int64_t from, int64_t limit, log_walk *w)
{
    w->end = from;
    w->batches = 0;
    w->records = 0;
    w->first_offset = -1;
    w->next_offset = seg->base_offset;
    w->max_timestamp = -1;
    w->offset_of_max_timestamp = -1;
    w->stop_code = LK_OK;
    int64_t pos = from, expected = seg->base_offset;
    while (pos < limit) {
        lk_batch_header h;
        int64_t last;
        int rc = batch_at(seg, pos, limit, expected, &h, &last);
        if (rc != LK_OK) {
            w->stop_code = rc;
            break;
        }
        if (w->batches == 0)
            w->first_offset = h.base_offset;
        w->batches++;
        w->records += h.record_count;
        if (h.max_timestamp > w->max_timestamp) {
            w->max_timestamp = h.max_timestamp;
            w->offset_of_max_timestamp = last;
        }
        expected = w->next_offset = last + 1;
        pos += batch_size(&h);
        w->end = pos;
    }
}

/* ---- the index rule ---- */

typedef struct {
    int64_t last_entry_position;
    int64_t max_timestamp;
    int64_t offset_of_max;
    int64_t last_time_ts;
} index_cursor;

static int time_entry_due(const lk_segment *seg, const index_cursor *c)
{
    return c->max_timestamp > c->last_time_ts &&
           !(c->max_timestamp == 0 && c->offset_of_max == seg->base_offset);
}

/* Accounts for the batch at pos (last offset `last`, maxTimestamp `max_ts`). Returns 1 if
 * an entry point falls due there (and moves the cursor's entry position to pos). Whether
 * a time entry goes with it is time_entry_due(); the caller updates last_time_ts when it
 * writes one. */
static int index_rule(const lk_segment *seg, index_cursor *c, int64_t pos, int64_t last,
                      int64_t max_ts)
{
    if (max_ts > c->max_timestamp) {
        c->max_timestamp = max_ts;
        c->offset_of_max = last;
    }
    int64_t since = pos - (c->last_entry_position >= 0 ? c->last_entry_position : 0);
    if (since <= (int64_t)seg->index_interval_bytes || pos > INT32_MAX)
        return 0;
    c->last_entry_position = pos;
    return 1;
}

static index_cursor segment_cursor(const lk_segment *seg)
{
    index_cursor c = {seg->last_entry_position, seg->max_timestamp,
                      seg->offset_of_max_timestamp, seg->last_time_entry_ts};
    return c;
}

/* Grows a file from *file_size to `to` bytes with posix_fallocate; 0 or the errno. A
 * failure gives back what it allocated on the way: ext4 keeps the part of the range it
 * could allocate (and extends the file), so one log's failed 8 MiB step would hold all
 * the space left, and every other file (its indexes, other partitions, checkpoints)
 * would find none. If the space cannot be given back, *file_size says the file is
 * longer (invariant 3 holds: the bytes are zeros). */
static int grow_file(int fd, int64_t *file_size, int64_t to, uint64_t map_length)
{
    int rc;
    do
        rc = posix_fallocate(fd, (off_t)*file_size, (off_t)(to - *file_size));
    while (rc == EINTR);
    if (rc == 0) {
        *file_size = to;
        return 0;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size > *file_size && truncate_file(fd, *file_size) != LK_OK &&
        (uint64_t)st.st_size <= map_length)
        *file_size = st.st_size;
    return rc;
}

/* Makes the writable index file hold at least `entries` entries (fallocate). */
static int index_reserve(index_file *ix, int64_t entries)
{
    int64_t need = entries * (int64_t)ix->entry_size;
    if (need <= ix->file_size)
        return LK_OK;
    int64_t limit = (int64_t)ix->map_length;
    int64_t target = (need + INDEX_GROW_STEP - 1) / INDEX_GROW_STEP * INDEX_GROW_STEP;
    if (target > limit)
        target = limit;
    if (target < need)
        return LK_ERR_SEGMENT_FULL;
    int rc = grow_file(ix->fd, &ix->file_size, target, ix->map_length);
    if (rc != 0)
        return space_error(rc);
    ix->dirty = 1;
    return LK_OK;
}

static int index_usable_for_writes(const index_file *ix)
{
    return ix->fd >= 0 && ix->map && ix->loaded && ix->map_writable;
}

/* Writes the entries into a writable index (room reserved by the caller). */
static void put_offset_entry(lk_segment *seg, int64_t last, int64_t pos)
{
    index_file *ix = &seg->offset_index;
    if (!index_usable_for_writes(ix) || ix->entries >= ix->capacity)
        return;
    offset_entry_store(ix->map + ix->entries * OFFSET_ENTRY_SIZE,
                       (int32_t)(last - seg->base_offset), (int32_t)pos);
    ix->entries++;
    ix->dirty = 1;
}

static void put_time_entry(lk_segment *seg, int64_t timestamp, int64_t offset)
{
    index_file *ix = &seg->time_index;
    if (!index_usable_for_writes(ix) || ix->entries >= ix->capacity)
        return;
    time_entry_store(ix->map + ix->entries * TIME_ENTRY_SIZE, timestamp,
                     (int32_t)(offset - seg->base_offset));
    ix->entries++;
    ix->dirty = 1;
}

/* ---- lazy index loading (read-only and rebuilt-while-sealed segments) ---- */

static int index_load(lk_segment *seg, index_file *ix)
{
    if (ix->loaded)
        return LK_OK;
    if (ix->fd < 0) {
        ix->entries = 0;
        ix->loaded = 1;
        return LK_OK;
    }
    struct stat st;
    if (fstat(ix->fd, &st) != 0)
        return io_error(errno);
    int64_t n = st.st_size / ix->entry_size;
    ix->file_size = st.st_size;
    if (n > 0) {
        if ((uint64_t)n * ix->entry_size > SIZE_MAX)
            return LK_ERR_NO_MEMORY;
        void *m = mmap(NULL, (size_t)n * ix->entry_size, PROT_READ, MAP_SHARED, ix->fd, 0);
        if (m == MAP_FAILED)
            return map_error(errno);
        ix->map = m;
        ix->map_length = (uint64_t)n * ix->entry_size;
    }
    if (ix == &seg->offset_index)
        ix->entries = (int64_t)lk_offset_index_valid_entries(ix->map, (size_t)n, seg->size);
    else
        ix->entries = (int64_t)lk_time_index_valid_entries(
            ix->map, (size_t)n, (int32_t)(seg->next_offset - 1 - seg->base_offset));
    ix->capacity = ix->entries;
    ix->loaded = 1;
    return LK_OK;
}

/* ---- lookups ---- */

/* A position to start walking from for target offset (an absolute offset >= base):
 * the offset index entry's position after a cheap check that a batch starts there
 * whose base offset is not past the entry's offset; 0 otherwise. */
static int start_for_offset(lk_segment *seg, int64_t target, int64_t *start)
{
    *start = 0;
    index_file *ix = &seg->offset_index;
    int rc = index_load(seg, ix);
    if (rc != LK_OK)
        return rc;
    if (ix->entries <= 0)
        return LK_OK;
    int64_t rel = target - seg->base_offset;
    if (rel > INT32_MAX)
        rel = INT32_MAX;
    int64_t slot;
    int32_t r, p;
    lk_offset_index_lookup(ix->map, (size_t)ix->entries, (int32_t)rel, &slot, &r, &p);
    if (slot < 0 || p <= 0 || p >= seg->size)
        return LK_OK;
    lk_batch_header h;
    if (lk_batch_parse_header(seg->log_map + p, (size_t)(seg->size - p), STORED_BATCH_LIMIT,
                              &h, NULL) == LK_OK &&
        h.base_offset <= seg->base_offset + r)
        *start = p;
    return LK_OK;
}

/* Walks from `from` to the first batch whose last offset >= target (mode 0) or whose
 * maxTimestamp >= target (mode 1). */
static int walk_to(const lk_segment *seg, int64_t from, int mode, int64_t target,
                   int64_t *position, int64_t *base_offset)
{
    int64_t pos = from;
    while (pos < seg->size) {
        lk_batch_header h;
        int rc = lk_batch_parse_header(seg->log_map + pos, (size_t)(seg->size - pos),
                                       STORED_BATCH_LIMIT, &h, NULL);
        if (rc != LK_OK)
            return rc;
        int64_t delta = h.last_offset_delta > 0 ? h.last_offset_delta : 0;
        int hit = mode == 0 ? h.base_offset >= target - delta : h.max_timestamp >= target;
        if (hit) {
            if (position)
                *position = pos;
            if (base_offset)
                *base_offset = h.base_offset;
            return LK_OK;
        }
        pos += batch_size(&h);
    }
    return LK_ERR_NOT_FOUND;
}

int lk_segment_find_offset(lk_segment *seg, int64_t target, int64_t *position,
                           int64_t *base_offset)
{
    if (!seg)
        return LK_ERR_ARGUMENT;
    if (target < seg->base_offset)
        return LK_ERR_ARGUMENT;
    if (target >= seg->next_offset)
        return LK_ERR_NOT_FOUND;
    int64_t start;
    int rc = start_for_offset(seg, target, &start);
    if (rc != LK_OK)
        return rc;
    rc = walk_to(seg, start, 0, target, position, base_offset);
    if (rc != LK_OK && start > 0) /* an index entry that misled us: start over */
        rc = walk_to(seg, 0, 0, target, position, base_offset);
    return rc;
}

int lk_segment_find_timestamp(lk_segment *seg, int64_t target, int64_t *position,
                              int64_t *base_offset)
{
    if (!seg)
        return LK_ERR_ARGUMENT;
    if (seg->size == 0 || target > seg->max_timestamp)
        return LK_ERR_NOT_FOUND;
    index_file *tx = &seg->time_index;
    int rc = index_load(seg, tx);
    if (rc != LK_OK)
        return rc;
    int64_t start = 0;
    if (tx->entries > 0) {
        int64_t slot, t;
        int32_t r;
        lk_time_index_lookup(tx->map, (size_t)tx->entries, target, &slot, &t, &r);
        if (slot >= 0) {
            rc = start_for_offset(seg, seg->base_offset + r, &start);
            if (rc != LK_OK)
                return rc;
        }
    }
    rc = walk_to(seg, start, 1, target, position, base_offset);
    if (rc != LK_OK && start > 0)
        rc = walk_to(seg, 0, 1, target, position, base_offset);
    return rc;
}

/* ---- open ---- */

static int open_file(const char *path, int writable, int exclusive, int *created)
{
    *created = 0;
    if (!writable)
        return open(path, O_RDONLY | O_CLOEXEC);
    if (!exclusive) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT)
            return fd;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0)
        *created = 1;
    return fd;
}

static int index_close(index_file *ix, int unlink_created)
{
    int rc = LK_OK;
    if (ix->map && munmap(ix->map, (size_t)ix->map_length) != 0)
        rc = io_error(errno);
    ix->map = NULL;
    if (ix->fd >= 0 && close(ix->fd) != 0 && rc == LK_OK)
        rc = io_error(errno);
    ix->fd = -1;
    if (unlink_created && ix->created && ix->path)
        unlink(ix->path);
    free(ix->path);
    ix->path = NULL;
    return rc;
}

/* Frees everything, maps included. Returns the first error. */
static int segment_free(lk_segment *seg, const char *log_path_to_unlink)
{
    int rc = LK_OK, saved = 0, r;
    if (seg->log_map && munmap(seg->log_map, (size_t)seg->log_map_length) != 0) {
        rc = LK_ERR_IO;
        saved = errno;
    }
    r = index_close(&seg->offset_index, log_path_to_unlink != NULL);
    if (r != LK_OK && rc == LK_OK) {
        rc = r;
        saved = errno;
    }
    r = index_close(&seg->time_index, log_path_to_unlink != NULL);
    if (r != LK_OK && rc == LK_OK) {
        rc = r;
        saved = errno;
    }
    if (seg->log_fd >= 0 && close(seg->log_fd) != 0 && rc == LK_OK) {
        rc = LK_ERR_IO;
        saved = errno;
    }
    if (log_path_to_unlink && seg->log_created)
        unlink(log_path_to_unlink);
    if (seg->dir_fd >= 0)
        close(seg->dir_fd);
    free(seg);
    if (rc != LK_OK)
        errno = saved;
    return rc;
}

static int open_index_writable(index_file *ix, int exclusive, int reset, int64_t capacity_entries)
{
    ix->fd = open_file(ix->path, 1, exclusive, &ix->created);
    if (ix->fd < 0)
        return space_error(errno); /* creating it needs an inode: ENOSPC when none is left */
    ix->fd_writable = 1;
    if (reset && ftruncate(ix->fd, 0) != 0)
        return io_error(errno);
    struct stat st;
    if (fstat(ix->fd, &st) != 0)
        return io_error(errno);
    ix->file_size = st.st_size;
    int64_t file_entries = st.st_size / ix->entry_size;
    ix->capacity = capacity_entries > file_entries ? capacity_entries : file_entries;
    uint64_t length = (uint64_t)ix->capacity * ix->entry_size;
    if (length < (uint64_t)st.st_size)
        length = (uint64_t)st.st_size;
    if (length > SIZE_MAX)
        return LK_ERR_NO_MEMORY;
    void *m = mmap(NULL, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED, ix->fd, 0);
    if (m == MAP_FAILED)
        return map_error(errno);
    ix->map = m;
    ix->map_length = length;
    ix->loaded = 1;
    ix->map_writable = 1;
    return LK_OK;
}

/* Reads the last whole entry of an index file without mapping it. */
static int read_last_entry(const index_file *ix, uint8_t *entry)
{
    if (ix->fd < 0 || ix->file_size < (int64_t)ix->entry_size)
        return 0;
    off_t at = (off_t)((ix->file_size / ix->entry_size - 1) * ix->entry_size);
    ssize_t n;
    do
        n = pread(ix->fd, entry, ix->entry_size, at);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)ix->entry_size;
}

/* Whether the batch holding offset base + relative carries maxTimestamp == timestamp, as
 * a time entry says. Found from `start` (a batch boundary) when the offset is at or
 * after the batch there, else through the offset index (mapped on demand). */
static int time_entry_checks_out(lk_segment *seg, int64_t start, int64_t timestamp,
                                 int32_t relative)
{
    int64_t target = seg->base_offset + relative, from = start, pos = 0;
    lk_batch_header h;
    if (lk_batch_parse_header(seg->log_map + start, (size_t)(seg->size - start),
                              STORED_BATCH_LIMIT, &h, NULL) != LK_OK)
        return 0;
    if (h.base_offset > target && start_for_offset(seg, target, &from) != LK_OK)
        return 0; /* start_for_offset maps a read-only segment's index on demand */
    if (walk_to(seg, from, 0, target, &pos, NULL) != LK_OK)
        return 0;
    return lk_batch_parse_header(seg->log_map + pos, (size_t)(seg->size - pos),
                                 STORED_BATCH_LIMIT, &h, NULL) == LK_OK &&
           h.max_timestamp == timestamp;
}

/* Sets next_offset, max_timestamp, offset_of_max_timestamp (and, when the bytes after the
 * last batch are all zero, the logical size) from a header walk. The walk starts at the
 * last offset-index entry when that entry checks out, and the last time-index entry
 * stands in for the batches before it; otherwise it starts at 0. O(batches walked). */
static void derive_state(lk_segment *seg, int have_hint, int32_t hint_relative,
                         int32_t hint_position, int have_time_hint, int64_t time_ts,
                         int32_t time_relative)
{
    int64_t start = 0;
    lk_batch_header h;
    int64_t last;
    if (have_hint && hint_position > 0 && hint_relative >= 0 && hint_position < seg->size &&
        batch_at(seg, hint_position, seg->size, seg->base_offset, &h, &last) == LK_OK &&
        h.base_offset <= seg->base_offset + hint_relative)
        start = hint_position;
    log_walk w;
    walk_log(seg, start, seg->size, &w);
    if (start > 0) {
        int usable = w.next_offset - 1 >= seg->base_offset + hint_relative && have_time_hint &&
                     time_relative >= 0 &&
                     (int64_t)time_relative <= w.next_offset - 1 - seg->base_offset &&
                     time_entry_checks_out(seg, start, time_ts, time_relative);
        if (usable) {
            if (time_ts >= w.max_timestamp) {
                w.max_timestamp = time_ts;
                w.offset_of_max_timestamp = seg->base_offset + time_relative;
            }
        } else {
            walk_log(seg, 0, seg->size, &w);
        }
    }
    seg->next_offset = w.next_offset;
    seg->max_timestamp = w.max_timestamp;
    seg->offset_of_max_timestamp = w.offset_of_max_timestamp;
    if (w.end < seg->size) {
        if (all_zero(seg->log_map + w.end, (size_t)(seg->size - w.end)))
            seg->size = w.end;
        else
            seg->needs_recovery = 1;
    }
}

static int open_segment_files(lk_segment *seg, const char *log_path, const lk_segment_config *c)
{
    int writable = (c->flags & LK_SEGMENT_WRITABLE) != 0;
    int exclusive = (c->flags & LK_SEGMENT_CREATE) != 0;
    struct stat st;
    seg->log_fd = open_file(log_path, writable, exclusive, &seg->log_created);
    if (seg->log_fd < 0)
        return space_error(errno); /* creating it needs an inode: ENOSPC when none is left */
    if (fstat(seg->log_fd, &st) != 0)
        return io_error(errno);
    if (!S_ISREG(st.st_mode))
        return io_error(EINVAL);
    seg->file_size = seg->size = st.st_size;
    if (writable) {
        seg->log_capacity = (int64_t)c->log_capacity;
        uint64_t length = c->log_capacity > (uint64_t)st.st_size ? c->log_capacity
                                                                 : (uint64_t)st.st_size;
        if (length > SIZE_MAX)
            return LK_ERR_NO_MEMORY;
        void *m = mmap(NULL, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED,
                       seg->log_fd, 0);
        if (m == MAP_FAILED)
            return map_error(errno);
        seg->log_map = m;
        seg->log_map_length = length;
    } else {
        seg->log_capacity = st.st_size;
        if (st.st_size > 0) {
            if ((uint64_t)st.st_size > SIZE_MAX)
                return LK_ERR_NO_MEMORY;
            void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, seg->log_fd, 0);
            if (m == MAP_FAILED)
                return map_error(errno);
            seg->log_map = m;
            seg->log_map_length = (uint64_t)st.st_size;
        }
    }

    index_file *ox = &seg->offset_index, *tx = &seg->time_index;
    if (writable) {
        int64_t entries = (int64_t)(c->index_capacity / OFFSET_ENTRY_SIZE);
        int rc;
        int reset = (c->flags & LK_SEGMENT_RESET_INDEXES) != 0;
        if (ox->path && (rc = open_index_writable(ox, exclusive, reset, entries)) != LK_OK)
            return rc;
        if (tx->path && (rc = open_index_writable(tx, exclusive, reset,
                                                  entries + TIME_INDEX_SPARE_ENTRIES)) != LK_OK)
            return rc;
        return LK_OK;
    }
    index_file *both[2] = {ox, tx};
    for (int i = 0; i < 2; i++) {
        index_file *ix = both[i];
        if (!ix->path)
            continue;
        ix->fd = open(ix->path, O_RDONLY | O_CLOEXEC);
        if (ix->fd < 0) {
            if (errno != ENOENT)
                return io_error(errno);
            continue; /* a missing index: lookups walk from 0 until it is rebuilt */
        }
        if (fstat(ix->fd, &st) != 0)
            return io_error(errno);
        ix->file_size = st.st_size;
        ix->entries = st.st_size / ix->entry_size;
    }
    return LK_OK;
}

/* Writable open: checks both indexes are a valid prefix followed by zero bytes. */
static int check_writable_indexes(lk_segment *seg)
{
    index_file *ox = &seg->offset_index, *tx = &seg->time_index;
    if (ox->map) {
        size_t n = (size_t)(ox->file_size / OFFSET_ENTRY_SIZE);
        /* Structure only here; entries past the log are trimmed after derive_state. */
        size_t v = lk_offset_index_valid_entries(ox->map, n, INT64_MAX);
        if (!all_zero(ox->map + v * OFFSET_ENTRY_SIZE,
                      (size_t)ox->file_size - v * OFFSET_ENTRY_SIZE))
            return LK_ERR_INDEX_CORRUPT;
        ox->entries = (int64_t)v;
    }
    if (tx->map) {
        size_t n = (size_t)(tx->file_size / TIME_ENTRY_SIZE);
        size_t v = lk_time_index_valid_entries(tx->map, n, INT32_MAX);
        if (!all_zero(tx->map + v * TIME_ENTRY_SIZE, (size_t)tx->file_size - v * TIME_ENTRY_SIZE))
            return LK_ERR_INDEX_CORRUPT;
        tx->entries = (int64_t)v;
    }
    return LK_OK;
}

/* Writable open, after derive_state: entries that point past the log, or time entries
 * above its max timestamp (an index written back before the log pages it describes,
 * then a crash) are zeroed; the last remaining offset entry must point at a batch.
 * lk_segment_recover rebuilds both indexes anyway; this keeps a segment opened after a
 * crash usable for lookups until then. */
static int trim_writable_indexes(lk_segment *seg)
{
    index_file *ox = &seg->offset_index, *tx = &seg->time_index;
    if (ox->map) {
        size_t v = lk_offset_index_valid_entries(ox->map, (size_t)ox->entries, seg->size);
        memset(ox->map + v * OFFSET_ENTRY_SIZE, 0,
               (size_t)(ox->entries - (int64_t)v) * OFFSET_ENTRY_SIZE);
        if ((int64_t)v != ox->entries)
            ox->dirty = 1;
        ox->entries = (int64_t)v;
        if (v > 0 && !seg->needs_recovery) {
            int32_t r = offset_entry_relative(ox->map, v - 1);
            int32_t p = offset_entry_position(ox->map, v - 1);
            lk_batch_header h;
            int64_t last;
            if (batch_at(seg, p, seg->size, seg->base_offset, &h, &last) != LK_OK ||
                h.base_offset > seg->base_offset + r || seg->base_offset + r >= seg->next_offset)
                return LK_ERR_INDEX_CORRUPT;
        }
        seg->last_entry_position = v > 0 ? offset_entry_position(ox->map, v - 1) : -1;
    }
    if (tx->map) {
        int64_t max_relative = seg->next_offset - 1 - seg->base_offset;
        size_t v = lk_time_index_valid_entries(tx->map, (size_t)tx->entries, (int32_t)max_relative);
        /* Entries above the log's real max describe batches a crash tore. */
        while (v > 0 && time_entry_timestamp(tx->map, v - 1) > seg->max_timestamp)
            v--;
        memset(tx->map + v * TIME_ENTRY_SIZE, 0,
               (size_t)(tx->entries - (int64_t)v) * TIME_ENTRY_SIZE);
        if ((int64_t)v != tx->entries)
            tx->dirty = 1;
        tx->entries = (int64_t)v;
        seg->last_time_entry_ts = v > 0 ? time_entry_timestamp(tx->map, v - 1) : -1;
    }
    return LK_OK;
}

static int check_config(const lk_segment_config *c)
{
    if ((c->flags & ~SEGMENT_FLAGS_ALL) ||
        ((c->flags & (LK_SEGMENT_CREATE | LK_SEGMENT_RESET_INDEXES)) &&
         !(c->flags & LK_SEGMENT_WRITABLE)))
        return LK_ERR_ARGUMENT;
    if (c->base_offset < 0 || c->base_offset > INT64_MAX - INT32_MAX - 1)
        return LK_ERR_ARGUMENT;
    if (c->flags & LK_SEGMENT_WRITABLE) {
        if (c->log_capacity == 0 || c->log_capacity > (uint64_t)INT64_MAX / 2 || c->grow_step == 0)
            return LK_ERR_ARGUMENT;
        if (c->index_capacity > (uint64_t)INT64_MAX / 4)
            return LK_ERR_ARGUMENT;
    }
    return LK_OK;
}

int lk_segment_open(const char *log_path, const char *index_path, const char *time_index_path,
                    const lk_segment_config *config, lk_segment **out)
{
    if (!log_path || !config || !out)
        return LK_ERR_ARGUMENT;
    int rc = check_config(config);
    if (rc != LK_OK)
        return rc;
    int writable = (config->flags & LK_SEGMENT_WRITABLE) != 0;
    if (writable && (index_path || time_index_path) && config->index_capacity < OFFSET_ENTRY_SIZE)
        return LK_ERR_ARGUMENT;

    lk_segment *seg = calloc(1, sizeof *seg);
    if (!seg)
        return LK_ERR_NO_MEMORY;
    seg->log_fd = -1;
    seg->dir_fd = -1;
    seg->offset_index.fd = seg->time_index.fd = -1;
    seg->offset_index.entry_size = OFFSET_ENTRY_SIZE;
    seg->time_index.entry_size = TIME_ENTRY_SIZE;
    seg->base_offset = seg->next_offset = config->base_offset;
    seg->max_timestamp = seg->offset_of_max_timestamp = -1;
    seg->last_entry_position = -1;
    seg->last_time_entry_ts = -1;
    seg->grow_step = config->grow_step;
    seg->index_interval_bytes = config->index_interval_bytes;
    seg->max_batch_size = config->max_batch_size;
    seg->writable = writable;
    seg->page_size = sysconf(_SC_PAGESIZE);
    if (seg->page_size <= 0)
        seg->page_size = 4096;
    if ((index_path && !(seg->offset_index.path = strdup(index_path))) ||
        (time_index_path && !(seg->time_index.path = strdup(time_index_path)))) {
        segment_free(seg, NULL);
        return LK_ERR_NO_MEMORY;
    }

    rc = open_segment_files(seg, log_path, config);
    if (rc == LK_OK && writable)
        rc = check_writable_indexes(seg);
    if (rc == LK_OK) {
        index_file *ox = &seg->offset_index, *tx = &seg->time_index;
        int have_hint = 0, have_time = 0;
        int32_t hr = 0, hp = 0, tr = 0;
        int64_t tt = -1;
        if (writable) {
            if (ox->map && ox->entries > 0) {
                have_hint = 1;
                hr = offset_entry_relative(ox->map, (size_t)ox->entries - 1);
                hp = offset_entry_position(ox->map, (size_t)ox->entries - 1);
            }
            if (tx->map && tx->entries > 0) {
                have_time = 1;
                tt = time_entry_timestamp(tx->map, (size_t)tx->entries - 1);
                tr = time_entry_relative(tx->map, (size_t)tx->entries - 1);
            }
        } else {
            uint8_t e[TIME_ENTRY_SIZE];
            if (read_last_entry(ox, e)) {
                have_hint = 1;
                hr = (int32_t)lk_load_be32(e);
                hp = (int32_t)lk_load_be32(e + 4);
            }
            if (read_last_entry(tx, e)) {
                have_time = 1;
                tt = (int64_t)lk_load_be64(e);
                tr = (int32_t)lk_load_be32(e + 8);
            }
        }
        derive_state(seg, have_hint, hr, hp, have_time, tt, tr);
        seg->unverified = seg->size > 0;
        if (writable)
            rc = trim_writable_indexes(seg);
    }
    if (rc == LK_OK && (seg->log_created || seg->offset_index.created ||
                        seg->time_index.created)) {
        /* The index files live beside the .log (Kafka's layout, and the contract's), so
         * one directory. */
        const char *slash = strrchr(log_path, '/');
        size_t n = slash ? (size_t)(slash - log_path) : 0;
        char *dir = n ? strndup(log_path, n) : strdup(slash ? "/" : ".");
        if (!dir) {
            rc = LK_ERR_NO_MEMORY;
        } else {
            seg->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (seg->dir_fd < 0)
                rc = io_error(errno);
            free(dir);
        }
    }
    if (rc != LK_OK) {
        int saved = errno;
        segment_free(seg, log_path);
        errno = saved;
        return rc;
    }
    *out = seg;
    debug_check(seg, "lk_segment_open");
    return LK_OK;
}

/* ---- append ----
 *
 * lk_segment_append (a caller's record set) and lk_segment_append_record (one record
 * encoded here) share every step but how the bytes get into the map:
 *   1. append_admissible: the checks that need no bytes (closed, recovery, offset order,
 *      log capacity);
 *   2. plan_batch, per batch: offsets within the segment's int32 range, and the index
 *      rule run on a copy of the segment's cursor, counting the entries it will add;
 *   3. append_reserve: room in both indexes (SEGMENT_FULL), then file space (NO_SPACE);
 *   4. the bytes are written at the tail, then plan_batch runs again on a fresh plan and
 *      writes the entries (for a record set, over the copy in the map, so a caller
 *      changing its buffer meanwhile is caught);
 *   5. append_commit: size, next offset, max timestamp and cursor, all at once.
 * Nothing before step 4 changes the segment but the file's allocated length (zeros past
 * the logical size, which invariant 3 allows). */

typedef struct {
    int64_t offset_entries;
    int64_t time_entries;
    int64_t next_offset;
    index_cursor cursor;
} append_plan;

static int append_admissible(const lk_segment *seg, int64_t base_offset, uint64_t len)
{
    if (!seg->writable || seg->sealed)
        return LK_ERR_CLOSED;
    if (seg->needs_recovery)
        return LK_ERR_NEEDS_RECOVERY; /* writing after unrecognised bytes would be lost */
    if (base_offset < seg->next_offset)
        return LK_ERR_OFFSET_ORDER;
    if (seg->size > seg->log_capacity || len > (uint64_t)(seg->log_capacity - seg->size))
        return LK_ERR_SEGMENT_FULL;
    return LK_OK;
}

static void plan_start(const lk_segment *seg, append_plan *plan)
{
    plan->offset_entries = plan->time_entries = 0;
    plan->next_offset = seg->next_offset;
    plan->cursor = segment_cursor(seg);
}

/* The batch that will sit at position `at` with offsets offset .. offset +
 * last_offset_delta: checks the range, runs the index rule, and (write) puts the entries
 * due into the indexes, whose room append_reserve made. */
static int plan_batch(lk_segment *seg, append_plan *plan, int64_t at, int64_t offset,
                      int32_t last_offset_delta, int64_t max_timestamp, int write)
{
    if (last_offset_delta < 0 ||
        offset - seg->base_offset > (int64_t)INT32_MAX - last_offset_delta)
        return LK_ERR_OFFSET_ORDER;
    int64_t last = offset + last_offset_delta;
    index_cursor *c = &plan->cursor;
    if (index_rule(seg, c, at, last, max_timestamp)) {
        plan->offset_entries++;
        if (write)
            put_offset_entry(seg, last, at);
        if (time_entry_due(seg, c)) {
            plan->time_entries++;
            if (write)
                put_time_entry(seg, c->max_timestamp, c->offset_of_max);
            c->last_time_ts = c->max_timestamp;
        }
    }
    plan->next_offset = last + 1;
    return LK_OK;
}

/* Walks the batches of a record set as they will sit in the segment: consecutive
 * offsets from base_offset, positions from the current size. With patch == NULL it only
 * plans; with patch (the copy in the map) it also writes base offsets and index entries. */
static int append_walk(lk_segment *seg, const uint8_t *set, uint8_t *patch, size_t len,
                       int64_t base_offset, append_plan *plan)
{
    plan_start(seg, plan);
    int64_t offset = base_offset;
    size_t pos = 0;
    while (pos < len) {
        lk_batch_header h;
        int rc = lk_batch_parse_header(set + pos, len - pos, seg->max_batch_size, &h, NULL);
        if (rc != LK_OK)
            return rc;
        if (patch)
            lk_store_be64(patch + pos + LK_OFF_BASE_OFFSET, (uint64_t)offset);
        rc = plan_batch(seg, plan, seg->size + (int64_t)pos, offset, h.last_offset_delta,
                        h.max_timestamp, patch != NULL);
        if (rc != LK_OK)
            return rc;
        offset = plan->next_offset;
        pos += (size_t)batch_size(&h);
    }
    return LK_OK;
}

/* Makes the .log file at least `need` bytes long, in grow_step steps. When the file
 * system cannot give a whole step, it asks for just the pages `need` takes: the step
 * saves system calls, it is no quota, and refusing a 1 KiB record while megabytes are
 * free would call a disk full that is not (df would show the space). */
static int log_reserve(lk_segment *seg, int64_t need)
{
    if (need <= seg->file_size)
        return LK_OK;
    int64_t limit = (int64_t)seg->log_map_length;
    int64_t target = limit;
    if (seg->grow_step < (uint64_t)limit) {
        int64_t step = (int64_t)seg->grow_step;
        target = (need + step - 1) / step * step;
        if (target > limit)
            target = limit;
    }
    int rc = grow_file(seg->log_fd, &seg->file_size, target, seg->log_map_length);
    int64_t pages = (need + seg->page_size - 1) / seg->page_size * seg->page_size;
    if (pages > limit)
        pages = limit;
    if (is_no_space(rc) && pages < target && need > seg->file_size)
        rc = grow_file(seg->log_fd, &seg->file_size, pages, seg->log_map_length);
    return rc == 0 || need <= seg->file_size ? LK_OK : space_error(rc);
}

/* Room for len more log bytes and the plan's index entries. */
static int append_reserve(lk_segment *seg, int64_t len, const append_plan *plan)
{
    index_file *ox = &seg->offset_index, *tx = &seg->time_index;
    int ox_on = index_usable_for_writes(ox), tx_on = index_usable_for_writes(tx);
    if ((ox_on && plan->offset_entries > ox->capacity - ox->entries) ||
        (tx_on && plan->time_entries > tx->capacity - tx->entries))
        return LK_ERR_SEGMENT_FULL;
    int rc;
    if ((rc = log_reserve(seg, seg->size + len)) != LK_OK)
        return rc;
    if (ox_on && plan->offset_entries &&
        (rc = index_reserve(ox, ox->entries + plan->offset_entries)) != LK_OK)
        return rc;
    if (tx_on && plan->time_entries &&
        (rc = index_reserve(tx, tx->entries + plan->time_entries)) != LK_OK)
        return rc;
    return LK_OK;
}

static void append_commit(lk_segment *seg, int64_t len, const append_plan *plan)
{
    seg->size += len;
    seg->next_offset = plan->next_offset;
    seg->max_timestamp = plan->cursor.max_timestamp;
    seg->offset_of_max_timestamp = plan->cursor.offset_of_max;
    seg->last_entry_position = plan->cursor.last_entry_position;
    seg->last_time_entry_ts = plan->cursor.last_time_ts;
    seg->log_dirty = 1;
}

int lk_segment_append(lk_segment *seg, const uint8_t *record_set, size_t len,
                      int64_t base_offset, int64_t *position, int64_t *next_offset)
{
    if (!seg || !record_set || len == 0)
        return LK_ERR_ARGUMENT;
    int rc = append_admissible(seg, base_offset, (uint64_t)len);
    if (rc != LK_OK)
        return rc;
    append_plan plan;
    if ((rc = append_walk(seg, record_set, NULL, len, base_offset, &plan)) != LK_OK)
        return rc;
    if ((rc = append_reserve(seg, (int64_t)len, &plan)) != LK_OK)
        return rc;

    int64_t at = seg->size;
    uint8_t *copy = seg->log_map + at;
    memcpy(copy, record_set, len);
    index_file *ox = &seg->offset_index, *tx = &seg->time_index;
    int64_t ox_before = ox->entries, tx_before = tx->entries;
    append_plan applied;
    rc = append_walk(seg, copy, copy, len, base_offset, &applied);
    if (rc != LK_OK || applied.offset_entries != plan.offset_entries ||
        applied.time_entries != plan.time_entries || applied.next_offset != plan.next_offset) {
        /* The caller's buffer changed under us: take everything back. */
        memset(copy, 0, len);
        if (index_usable_for_writes(ox)) {
            memset(ox->map + ox_before * OFFSET_ENTRY_SIZE, 0,
                   (size_t)(ox->entries - ox_before) * OFFSET_ENTRY_SIZE);
            ox->entries = ox_before;
        }
        if (index_usable_for_writes(tx)) {
            memset(tx->map + tx_before * TIME_ENTRY_SIZE, 0,
                   (size_t)(tx->entries - tx_before) * TIME_ENTRY_SIZE);
            tx->entries = tx_before;
        }
        return LK_ERR_ARGUMENT;
    }
    append_commit(seg, (int64_t)len, &applied);
    if (position)
        *position = at;
    if (next_offset)
        *next_offset = seg->next_offset;
    debug_check(seg, "lk_segment_append");
    return LK_OK;
}

static int64_t append_one(lk_segment *seg, const lk_one_record *record);

int64_t lk_segment_append_record(lk_segment *seg, int64_t offset, int64_t timestamp,
                                 int16_t attributes, int32_t partition_leader_epoch,
                                 const char *key, int32_t key_len, const char *value,
                                 int32_t value_len, const char *headers, int32_t headers_count,
                                 int32_t headers_len)
{
    lk_one_record r = {offset, timestamp, attributes, partition_leader_epoch,
                       (const uint8_t *)key, key_len, (const uint8_t *)value, value_len,
                       (const uint8_t *)headers, headers_count, headers_len, -1, -1, -1};
    return append_one(seg, &r);
}

int64_t lk_segment_append_producer_record(lk_segment *seg, int64_t offset, int64_t timestamp,
                                          int16_t attributes, int32_t partition_leader_epoch,
                                          int64_t producer_id, int16_t producer_epoch,
                                          int32_t base_sequence, const char *key,
                                          int32_t key_len, const char *value, int32_t value_len,
                                          const char *headers, int32_t headers_count,
                                          int32_t headers_len)
{
    if (producer_id < 0)
        return LK_ERR_ARGUMENT;
    lk_one_record r = {offset, timestamp, attributes, partition_leader_epoch,
                       (const uint8_t *)key, key_len, (const uint8_t *)value, value_len,
                       (const uint8_t *)headers, headers_count, headers_len, producer_id,
                       producer_epoch, base_sequence};
    return append_one(seg, &r);
}

static int64_t append_one(lk_segment *seg, const lk_one_record *record)
{
    if (!seg)
        return LK_ERR_ARGUMENT;
    const lk_one_record r = *record;
    int64_t offset = r.offset, timestamp = r.timestamp;
    int64_t size = lk_one_record_batch_size(&r);
    if (size < 0)
        return size;
    int rc = append_admissible(seg, offset, (uint64_t)size);
    if (rc != LK_OK)
        return rc;
    int64_t limit = seg->max_batch_size ? (int64_t)seg->max_batch_size : (int64_t)INT32_MAX;
    if (size > limit)
        return LK_ERR_BAD_LENGTH; /* what lk_batch_parse_header says of these bytes */
    append_plan plan;
    plan_start(seg, &plan);
    int64_t at = seg->size;
    if ((rc = plan_batch(seg, &plan, at, offset, 0, timestamp, 0)) != LK_OK)
        return rc;
    if ((rc = append_reserve(seg, size, &plan)) != LK_OK)
        return rc;

    lk_one_record_batch_write(&r, size, seg->log_map + at);
    plan_start(seg, &plan);
    plan_batch(seg, &plan, at, offset, 0, timestamp, 1);
    append_commit(seg, size, &plan);
    debug_check(seg, "lk_segment_append_record");
    return at + size;
}

/* ---- flush ---- */

static int flush_file(const lk_segment *seg, uint8_t *writable_map, int64_t from, int64_t to,
                      int fd)
{
    if (writable_map && to > from) {
        int64_t start = from / seg->page_size * seg->page_size;
        if (msync(writable_map + start, (size_t)(to - start), MS_SYNC) != 0)
            return io_error(errno);
    }
    return sync_file(fd);
}

static int flush_index(const lk_segment *seg, index_file *ix)
{
    if (ix->fd < 0 || (!ix->dirty && ix->flushed_entries >= ix->entries))
        return LK_OK;
    int64_t from = ix->flushed_entries < ix->entries ? ix->flushed_entries : ix->entries;
    int rc = flush_file(seg, index_usable_for_writes(ix) ? ix->map : NULL, from * ix->entry_size,
                        ix->entries * ix->entry_size, ix->fd);
    if (rc != LK_OK)
        return rc;
    ix->flushed_entries = ix->entries;
    ix->dirty = 0;
    return LK_OK;
}

static int flush_all(lk_segment *seg)
{
    if (seg->log_dirty || seg->flushed_size < seg->size) {
        int rc = flush_file(seg, seg->writable ? seg->log_map : NULL, seg->flushed_size,
                            seg->size, seg->log_fd);
        if (rc != LK_OK)
            return rc;
        seg->flushed_size = seg->size;
        seg->log_dirty = 0;
    }
    /* The time index before the offset index, so a crash between these two syncs leaves
     * time entries a shorter offset index does not contradict. This orders only our
     * syncs, not the kernel's background writeback of mapped pages: after any unclean
     * shutdown the indexes are rebuilt by lk_segment_recover regardless. */
    int rc = flush_index(seg, &seg->time_index);
    if (rc == LK_OK)
        rc = flush_index(seg, &seg->offset_index);
    if (rc == LK_OK && seg->dir_fd >= 0) {
        /* New files: their directory entries must be durable too, once. */
        rc = sync_file(seg->dir_fd);
        if (rc == LK_OK) {
            close(seg->dir_fd);
            seg->dir_fd = -1;
        }
    }
    return rc;
}

int lk_segment_flush(lk_segment *seg)
{
    if (!seg)
        return LK_ERR_ARGUMENT;
    int rc = flush_all(seg);
    debug_check(seg, "lk_segment_flush");
    return rc;
}

/* ---- index rebuild ---- */

typedef struct {
    uint8_t *bytes;
    size_t count;
    size_t capacity;
    size_t limit;        /* most entries to keep */
    uint32_t entry_size;
} entry_list;

static int entry_list_push(entry_list *l, const uint8_t *entry)
{
    if (l->count >= l->limit)
        return 0;
    if (l->count == l->capacity) {
        size_t cap = l->capacity ? l->capacity * 2 : 256;
        if (cap > SIZE_MAX / l->entry_size)
            return -1;
        uint8_t *b = realloc(l->bytes, cap * l->entry_size);
        if (!b)
            return -1;
        l->bytes = b;
        l->capacity = cap;
    }
    memcpy(l->bytes + l->count * l->entry_size, entry, l->entry_size);
    l->count++;
    return 1;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    off_t at = 0;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, at);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return space_error(errno);
        }
        p += w;
        n -= (size_t)w;
        at += w;
    }
    return LK_OK;
}

/* Replaces the index of a read-only or sealed segment with `list` through write(2):
 * truncate to 0, write, fdatasync (a crash in between leaves a shorter valid prefix).
 * The index is then mapped again, lazily, on its next lookup. */
static int install_by_write(index_file *ix, const entry_list *list)
{
    if (!ix->path)
        return LK_OK;
    int fd = ix->fd;
    if (fd < 0 || !ix->fd_writable) {
        fd = open(ix->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return io_error(errno);
    }
    if (ix->map) {
        munmap(ix->map, (size_t)ix->map_length);
        ix->map = NULL;
        ix->map_length = 0;
    }
    ix->loaded = 0;
    ix->map_writable = 0;
    if (fd != ix->fd) {
        if (ix->fd >= 0)
            close(ix->fd);
        ix->fd = fd;
        ix->fd_writable = 1;
    }
    ix->entries = 0;
    ix->file_size = 0;
    int rc = truncate_file(fd, 0);
    if (rc == LK_OK)
        rc = write_all(fd, list->bytes, list->count * list->entry_size);
    if (rc == LK_OK)
        rc = sync_file(fd);
    if (rc != LK_OK)
        return rc;
    ix->file_size = (int64_t)(list->count * list->entry_size);
    ix->entries = ix->capacity = ix->flushed_entries = (int64_t)list->count;
    ix->dirty = 0;
    return LK_OK;
}

/* Replaces a writable index's entries with `list` in its map. Room is reserved first,
 * so on failure the old entries are untouched. */
static int install_in_map(index_file *ix, const entry_list *list)
{
    int64_t n = (int64_t)list->count;
    if (list->count)
        memcpy(ix->map, list->bytes, list->count * list->entry_size);
    if (ix->entries > n)
        memset(ix->map + n * ix->entry_size, 0, (size_t)(ix->entries - n) * ix->entry_size);
    ix->entries = n;
    ix->flushed_entries = 0;
    ix->dirty = 1;
    return LK_OK;
}

/* Rebuilds both indexes from the batches in [0, limit) by the index rule, plus the
 * final time entry; *w gets the walk's aggregates (the walk stops early at a batch it
 * cannot accept, e.g. one whose offsets leave the int32 range). O(batches). */
static int build_indexes(lk_segment *seg, int64_t limit, log_walk *w)
{
    index_file *ox = &seg->offset_index, *tx = &seg->time_index;
    int in_map = seg->writable && !seg->sealed;
    entry_list offsets = {NULL, 0, 0, SIZE_MAX, OFFSET_ENTRY_SIZE};
    entry_list times = {NULL, 0, 0, SIZE_MAX, TIME_ENTRY_SIZE};
    /* Writable: at most what the map holds; no index of a kind: collect nothing. */
    if (in_map)
        offsets.limit = index_usable_for_writes(ox) ? (size_t)ox->capacity : 0;
    if (in_map)
        times.limit = index_usable_for_writes(tx) ? (size_t)tx->capacity : 0;
    if (!ox->path)
        offsets.limit = 0;
    if (!tx->path)
        times.limit = 0;

    index_cursor c = {-1, -1, -1, -1};
    w->end = 0;
    w->batches = w->records = 0;
    w->first_offset = -1;
    w->next_offset = seg->base_offset;
    w->max_timestamp = w->offset_of_max_timestamp = -1;
    w->stop_code = LK_OK;
    int64_t pos = 0, expected = seg->base_offset;
    int oom = 0;
    uint8_t entry[TIME_ENTRY_SIZE];
    while (pos < limit && !oom) {
        lk_batch_header h;
        int64_t last;
        int rc = batch_at(seg, pos, limit, expected, &h, &last);
        if (rc != LK_OK) {
            w->stop_code = rc;
            break;
        }
        if (w->batches == 0)
            w->first_offset = h.base_offset;
        w->batches++;
        w->records += h.record_count;
        expected = w->next_offset = last + 1;
        if (index_rule(seg, &c, pos, last, h.max_timestamp)) {
            offset_entry_store(entry, (int32_t)(last - seg->base_offset), (int32_t)pos);
            oom |= entry_list_push(&offsets, entry) < 0;
            if (time_entry_due(seg, &c)) {
                time_entry_store(entry, c.max_timestamp,
                                 (int32_t)(c.offset_of_max - seg->base_offset));
                int pushed = entry_list_push(&times, entry);
                oom |= pushed < 0;
                if (pushed > 0)
                    c.last_time_ts = c.max_timestamp;
            }
        }
        pos += batch_size(&h);
        w->end = pos;
    }
    w->max_timestamp = c.max_timestamp;
    w->offset_of_max_timestamp = c.offset_of_max;
    if (!oom && time_entry_due(seg, &c)) {
        time_entry_store(entry, c.max_timestamp, (int32_t)(c.offset_of_max - seg->base_offset));
        int pushed = entry_list_push(&times, entry);
        oom |= pushed < 0;
        if (pushed > 0)
            c.last_time_ts = c.max_timestamp;
    }

    int rc = oom ? LK_ERR_NO_MEMORY : LK_OK;
    if (rc == LK_OK && in_map) {
        if (index_usable_for_writes(ox))
            rc = index_reserve(ox, (int64_t)offsets.count);
        if (rc == LK_OK && index_usable_for_writes(tx))
            rc = index_reserve(tx, (int64_t)times.count);
        if (rc == LK_OK) {
            if (index_usable_for_writes(ox))
                install_in_map(ox, &offsets);
            if (index_usable_for_writes(tx))
                install_in_map(tx, &times);
            seg->last_entry_position = c.last_entry_position;
            seg->last_time_entry_ts = c.last_time_ts;
        }
    } else if (rc == LK_OK) {
        rc = install_by_write(ox, &offsets);
        if (rc == LK_OK)
            rc = install_by_write(tx, &times);
    }
    int saved = errno;
    free(offsets.bytes);
    free(times.bytes);
    errno = saved;
    return rc;
}

int lk_segment_rebuild_indexes(lk_segment *seg)
{
    if (!seg)
        return LK_ERR_ARGUMENT;
    log_walk w;
    int rc = build_indexes(seg, seg->size, &w);
    debug_check(seg, "lk_segment_rebuild_indexes");
    return rc;
}

/* ---- recover ---- */

/* Cuts the log to new_size (<= size): the file first, then the state, so a failed
 * ftruncate changes nothing. Pages past the new end vanish from the map: only bytes below
 * the logical size may ever be read through it (see lk_segment_data). */
static int shrink_log(lk_segment *seg, int64_t new_size)
{
    if (seg->file_size != new_size) {
        int rc = truncate_file(seg->log_fd, new_size);
        if (rc != LK_OK)
            return rc;
        seg->file_size = new_size;
    }
    seg->size = new_size;
    if (seg->flushed_size > new_size)
        seg->flushed_size = new_size;
    seg->log_dirty = 1;
    return LK_OK;
}

int lk_segment_recover(lk_segment *seg, int flags, lk_scan_result *out)
{
    if (!seg || (flags & ~SCAN_FLAGS_ALL))
        return LK_ERR_ARGUMENT;
    if (!seg->writable || seg->sealed)
        return LK_ERR_CLOSED;
    lk_scan_result scan;
    lk_log_scan(seg->log_map, (size_t)seg->file_size, 0, seg->base_offset, STORED_BATCH_LIMIT,
                flags | LK_VALIDATE_CRC, &scan);
    log_walk w;
    int rc = build_indexes(seg, scan.valid_bytes, &w);
    if (rc != LK_OK)
        return rc;
    if (w.end < scan.valid_bytes) {
        /* lk_log_scan accepted it, but its offsets do not fit this segment's int32
         * relative offsets: cut there. */
        scan.valid_bytes = w.end;
        scan.batches = w.batches;
        scan.records = w.records;
        scan.first_offset = w.first_offset;
        scan.next_offset = w.next_offset;
        scan.max_timestamp = w.max_timestamp;
        scan.offset_of_max_timestamp = w.offset_of_max_timestamp;
        scan_stop(&scan, LK_SCAN_OFFSET, LK_ERR_OFFSET_ORDER, w.end, -1,
                  "the batch's last offset is more than 2^31-1 past the segment's base offset");
    }
    if ((rc = shrink_log(seg, scan.valid_bytes)) != LK_OK)
        return rc;
    seg->next_offset = w.next_offset;
    seg->max_timestamp = w.max_timestamp;
    seg->offset_of_max_timestamp = w.offset_of_max_timestamp;
    seg->needs_recovery = 0;
    seg->unverified = 0;
    if (out)
        *out = scan;
    debug_check(seg, "lk_segment_recover");
    return LK_OK;
}

/* ---- seal, truncate ---- */

/* Appends the final time entry and trims the files to their logical sizes; no flush. */
static int seal_files(lk_segment *seg)
{
    index_file *ox = &seg->offset_index, *tx = &seg->time_index;
    index_cursor c = segment_cursor(seg);
    if (time_entry_due(seg, &c) && index_usable_for_writes(tx) && tx->entries < tx->capacity &&
        index_reserve(tx, tx->entries + 1) == LK_OK) {
        /* Optional (a hint for readers): skipped when the disk is full. */
        put_time_entry(seg, c.max_timestamp, c.offset_of_max);
        seg->last_time_entry_ts = c.max_timestamp;
    }
    int rc;
    if (seg->file_size != seg->size && (rc = shrink_log(seg, seg->size)) != LK_OK)
        return rc;
    index_file *both[2] = {ox, tx};
    for (int i = 0; i < 2; i++) {
        index_file *ix = both[i];
        int64_t bytes = ix->entries * (int64_t)ix->entry_size;
        if (!index_usable_for_writes(ix) || ix->file_size == bytes)
            continue;
        if ((rc = truncate_file(ix->fd, bytes)) != LK_OK)
            return rc;
        ix->file_size = bytes;
        ix->dirty = 1;
    }
    seg->sealed = 1;
    return LK_OK;
}

int lk_segment_seal(lk_segment *seg)
{
    if (!seg)
        return LK_ERR_ARGUMENT;
    if (!seg->writable)
        return LK_OK;
    int rc = seg->sealed ? LK_OK : seal_files(seg);
    if (rc == LK_OK)
        rc = flush_all(seg);
    debug_check(seg, "lk_segment_seal");
    return rc;
}

int lk_segment_truncate_to_offset(lk_segment *seg, int64_t offset)
{
    if (!seg)
        return LK_ERR_ARGUMENT;
    if (!seg->writable || seg->sealed)
        return LK_ERR_CLOSED;
    if (seg->needs_recovery)
        return LK_ERR_NEEDS_RECOVERY;
    if (offset >= seg->next_offset)
        return LK_OK;
    int64_t new_size = 0;
    int rc;
    if (offset > seg->base_offset &&
        (rc = lk_segment_find_offset(seg, offset, &new_size, NULL)) != LK_OK)
        return rc;
    log_walk w;
    walk_log(seg, 0, new_size, &w);
    if (w.stop_code != LK_OK)
        return w.stop_code; /* the log is broken before the cut: recover first */
    if ((rc = shrink_log(seg, new_size)) != LK_OK)
        return rc;
    seg->next_offset = w.next_offset;
    seg->max_timestamp = w.max_timestamp;
    seg->offset_of_max_timestamp = w.offset_of_max_timestamp;
    seg->needs_recovery = 0;
    seg->unverified = 0;

    int64_t max_relative = w.next_offset - 1 - seg->base_offset;
    index_file *ox = &seg->offset_index, *tx = &seg->time_index;
    if (index_usable_for_writes(ox)) {
        while (ox->entries > 0 &&
               (offset_entry_position(ox->map, (size_t)ox->entries - 1) >= new_size ||
                offset_entry_relative(ox->map, (size_t)ox->entries - 1) > max_relative)) {
            ox->entries--;
            memset(ox->map + ox->entries * OFFSET_ENTRY_SIZE, 0, OFFSET_ENTRY_SIZE);
            ox->dirty = 1;
        }
        if (ox->flushed_entries > ox->entries)
            ox->flushed_entries = ox->entries;
        seg->last_entry_position =
            ox->entries ? offset_entry_position(ox->map, (size_t)ox->entries - 1) : -1;
    } else if (seg->last_entry_position >= new_size) {
        seg->last_entry_position = -1;
    }
    if (index_usable_for_writes(tx)) {
        while (tx->entries > 0 &&
               time_entry_relative(tx->map, (size_t)tx->entries - 1) > max_relative) {
            tx->entries--;
            memset(tx->map + tx->entries * TIME_ENTRY_SIZE, 0, TIME_ENTRY_SIZE);
            tx->dirty = 1;
        }
        if (tx->flushed_entries > tx->entries)
            tx->flushed_entries = tx->entries;
        seg->last_time_entry_ts =
            tx->entries ? time_entry_timestamp(tx->map, (size_t)tx->entries - 1) : -1;
    } else {
        seg->last_time_entry_ts = -1;
    }
    debug_check(seg, "lk_segment_truncate_to_offset");
    return LK_OK;
}

/* ---- accessors, close ---- */

int lk_segment_get_info(const lk_segment *seg, lk_segment_info *out)
{
    if (!seg || !out)
        return LK_ERR_ARGUMENT;
    out->base_offset = seg->base_offset;
    out->size = seg->size;
    out->flushed_size = seg->flushed_size;
    out->next_offset = seg->next_offset;
    out->max_timestamp = seg->max_timestamp;
    out->offset_of_max_timestamp = seg->offset_of_max_timestamp;
    out->index_entries = seg->offset_index.path ? seg->offset_index.entries : 0;
    out->time_index_entries = seg->time_index.path ? seg->time_index.entries : 0;
    out->log_capacity = seg->log_capacity;
    out->writable = seg->writable && !seg->sealed;
    out->needs_recovery = seg->needs_recovery;
    return LK_OK;
}

const uint8_t *lk_segment_data(const lk_segment *seg)
{
    return seg ? seg->log_map : NULL;
}

uint64_t lk_segment_map_length(const lk_segment *seg)
{
    return seg ? seg->log_map_length : 0;
}

int lk_segment_close(lk_segment *seg)
{
    if (!seg)
        return LK_ERR_ARGUMENT;
    int rc = LK_OK, saved = 0;
    if (seg->writable && !seg->sealed) {
        rc = seal_files(seg);
        saved = errno;
        if (rc == LK_OK)
            debug_check(seg, "lk_segment_close");
    }
    int r = segment_free(seg, NULL);
    if (rc != LK_OK) {
        errno = saved;
        return rc;
    }
    return r;
}

/* ------------------------------------------------------------------------------------
 * The debug checker: the invariants at the top of this file. Returns 0 or the number
 * of the first invariant found broken. O(segment size).
 * --------------------------------------------------------------------------------- */

static int lk_segment_check(const lk_segment *seg)
{
    const index_file *ox = &seg->offset_index, *tx = &seg->time_index;
    /* 1 */
    if (seg->flushed_size < 0 || seg->flushed_size > seg->size || seg->size > seg->file_size)
        return 1;
    if (seg->writable && (uint64_t)seg->file_size > seg->log_map_length)
        return 1;
    if (seg->sealed && seg->file_size != seg->size)
        return 1;
    /* 3 */
    if (seg->writable &&
        !all_zero(seg->log_map + seg->size, (size_t)(seg->file_size - seg->size)))
        return 3;
    /* 6 */
    const index_file *both[2] = {ox, tx};
    for (int i = 0; i < 2; i++) {
        const index_file *ix = both[i];
        if (!seg->writable || !index_usable_for_writes(ix))
            continue;
        int64_t used = ix->entries * (int64_t)ix->entry_size;
        if (ix->entries < 0 || ix->entries > ix->capacity || used > ix->file_size ||
            (uint64_t)ix->file_size > ix->map_length)
            return 6;
        if (!all_zero(ix->map + used, (size_t)(ix->file_size - used)))
            return 6;
    }
    if (seg->needs_recovery)
        return 0;
    /* 2 */
    log_walk w;
    walk_log(seg, 0, seg->size, &w);
    if (seg->unverified && (w.stop_code != LK_OK || w.end != seg->size))
        return 0; /* a broken file opened as found: open does not walk it, recover will */
    if (w.stop_code != LK_OK || w.end != seg->size || w.next_offset != seg->next_offset ||
        w.max_timestamp != seg->max_timestamp ||
        w.offset_of_max_timestamp != seg->offset_of_max_timestamp)
        return 2;
    /* 4 and 7 */
    int64_t n = ox->loaded && ox->map ? ox->entries : 0;
    int64_t pos = 0, previous_last = seg->base_offset - 1, i = 0;
    int entry_point_seen = seg->last_entry_position < 0;
    while (pos < seg->size) {
        lk_batch_header h;
        int64_t last;
        if (batch_at(seg, pos, seg->size, seg->base_offset, &h, &last) != LK_OK)
            return 2;
        if (pos == seg->last_entry_position)
            entry_point_seen = 1;
        if (i < n) {
            int64_t p = offset_entry_position(ox->map, (size_t)i);
            int64_t r = offset_entry_relative(ox->map, (size_t)i);
            if (p < pos)
                return 4;
            if (p == pos) {
                if (pos == 0 || previous_last >= seg->base_offset + r ||
                    seg->base_offset + r >= seg->next_offset ||
                    (i > 0 && r <= offset_entry_relative(ox->map, (size_t)i - 1)))
                    return 4;
                i++;
            }
        }
        previous_last = last;
        pos += batch_size(&h);
    }
    if (i != n)
        return 4;
    if (seg->writable && !seg->sealed) {
        if (!entry_point_seen)
            return 7;
        if (n > 0 && seg->last_entry_position < offset_entry_position(ox->map, (size_t)n - 1))
            return 7;
    }
    /* 5 */
    n = tx->loaded && tx->map ? tx->entries : 0;
    pos = 0;
    int64_t prefix_max = INT64_MIN, t = -1;
    for (i = 0; i < n; i++) {
        t = time_entry_timestamp(tx->map, (size_t)i);
        int64_t r = time_entry_relative(tx->map, (size_t)i);
        if (i > 0 && (t < time_entry_timestamp(tx->map, (size_t)i - 1) ||
                      r < time_entry_relative(tx->map, (size_t)i - 1)))
            return 5;
        int64_t target = seg->base_offset + r;
        if (r < 0 || target >= seg->next_offset || t > seg->max_timestamp)
            return 5;
        for (;;) {
            lk_batch_header h;
            int64_t last;
            if (pos >= seg->size || batch_at(seg, pos, seg->size, seg->base_offset, &h, &last))
                return 5;
            if (last >= target)
                break;
            if (h.max_timestamp > prefix_max)
                prefix_max = h.max_timestamp;
            pos += batch_size(&h);
        }
        if (prefix_max >= t)
            return 5;
    }
    if (seg->writable && index_usable_for_writes(tx) && seg->last_time_entry_ts != (n ? t : -1))
        return 5;
    return 0;
}
