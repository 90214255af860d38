/*
 * cleaner.c - the inner loops of log compaction: XXH64, the offset map, the map pass over
 * the dirty section and the filter pass that rewrites batches keeping the latest record
 * per key.
 *
 * Hand-written because these loops run once per record of every byte cleaned (the issue's
 * floor is 200 MB/s of 100-byte records: two million records a second, each hashed twice)
 * and no library offers them: the xxhash package hashes Python objects one call at a
 * time, and the record walk has to follow Kafka's record layout anyway.
 *
 * The offset map keeps, for every key seen, the offset of its latest record. A key is
 * known by 128 bits of hash (XXH64 under two seeds), so two keys are confused only with
 * probability ~n^2/2^129 per pass; Kafka keeps 16 bytes of MD5 for the same reason. With
 * the offset that makes 24 bytes a slot, as in Kafka. Slots are probed linearly from
 * the slot the first hash picks; entries are never removed, only cleared all at once.
 *
 * Transactions follow Kafka's LogCleaner (logkernel.h, "Log cleaner"): aborted batches
 * are judged per batch from the caller's aborted triples (txn.c), put nothing in the map
 * and keep nothing in the filter pass; markers are kept; and each producer's last data
 * batch in the range cleaned survives, as a bare header if it loses every record, which
 * the producer pass (a walk over batch headers) tells the filter pass.
 *
 * Markers are always kept, though Kafka drops one once no batch of its transaction is
 * left and its delete horizon has passed. Doing that here needs, per producer, whether
 * the open transaction kept a batch anywhere in the range (state across calls and
 * segments), a horizon stamped on markers, and the marker's .txnindex entry dropped in the
 * same swap (log/partition.py writes the .txnindex of a cleaned segment from the aborted
 * transactions it knows, whose markers it assumes are still there). A kept marker costs
 * 78 bytes per transaction; dropping one too early makes read_committed consumers skip
 * committed data, so it is left for when the .txnindex side can follow.
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------------------------
 * XXH64, as specified in xxHash's doc/xxhash_spec.md (checked against the xxhash
 * package in tests/test_cleaner_native.py).
 * --------------------------------------------------------------------------------- */
static const uint64_t P1 = 0x9E3779B185EBCA87ULL;
static const uint64_t P2 = 0xC2B2AE3D27D4EB4FULL;
static const uint64_t P3 = 0x165667B19E3779F9ULL;
static const uint64_t P4 = 0x85EBCA77C2B2AE63ULL;
static const uint64_t P5 = 0x27D4EB2F165667C5ULL;

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t load_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

/* Kafka's Java wraps timestamp arithmetic; so do we, without C's signed overflow. */
static inline int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }

static inline uint64_t xxh_round(uint64_t acc, uint64_t input)
{
    acc += input * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t v)
{
    acc ^= xxh_round(0, v);
    return acc * P1 + P4;
}

uint64_t lk_xxh64(const uint8_t *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data;
    const uint8_t *end = data + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        const uint8_t *limit = end - 32;
        do {
            v1 = xxh_round(v1, load_le64(p));
            v2 = xxh_round(v2, load_le64(p + 8));
            v3 = xxh_round(v3, load_le64(p + 16));
            v4 = xxh_round(v4, load_le64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        h = xxh_merge(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)len;
    while (end - p >= 8) {
        h ^= xxh_round(0, load_le64(p));
        h = rotl64(h, 27) * P1 + P4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)load_le32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * P5;
        h = rotl64(h, 11) * P1;
        p++;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

/* ------------------------------------------------------------------------------------
 * The offset map. A slot is three uint64: first hash, second hash, offset + 1 (0 marks
 * an empty slot, so zeroed memory is an empty map).
 * --------------------------------------------------------------------------------- */
#define SECOND_SEED 0x6c6f676b65726e6cULL /* any fixed seed other than 0 */

__extension__ typedef unsigned __int128 lk_u128;

/* Keys a table of cap slots takes at the load factor: always one slot fewer than it has,
 * so a probe for an absent key always meets an empty slot and ends. */
static uint64_t full_limit(const lk_offset_map *map, uint64_t cap)
{
    uint64_t limit = (uint64_t)((double)cap * map->load_factor);
    return cap == 0 ? 0 : limit < cap ? limit : cap - 1;
}

int lk_offset_map_init(lk_offset_map *map, void *memory, size_t bytes, double load_factor,
                       size_t initial_keys)
{
    if (!map || (!memory && bytes) || !(load_factor > 0.0 && load_factor <= 1.0))
        return LK_ERR_ARGUMENT;
    if ((uintptr_t)memory % 8)
        return LK_ERR_ARGUMENT;
    memset(map, 0, sizeof *map);
    map->memory = memory;
    map->memory_slots = bytes / LK_OFFSET_MAP_ENTRY_BYTES;
    map->load_factor = load_factor;
    map->slots = memory;
    /* Start with room for initial_keys at half load, so a map that stays small stays in
     * cache; grow_map doubles it as keys arrive. A start past a third of the memory could
     * not double beside itself: take all of it at once. */
    uint64_t want = map->memory_slots;
    if (initial_keys < map->memory_slots / 6) /* also keeps 2 * initial_keys from wrapping */
        want = (uint64_t)initial_keys * 2 + 64;
    if (want >= map->memory_slots / 3)
        want = map->memory_slots;
    map->capacity = want;
    map->limit = full_limit(map, map->capacity);
    if (map->capacity < map->memory_slots && map->capacity / 2 < map->limit)
        map->limit = map->capacity / 2; /* grow at half load while there is room to */
    if (map->capacity)
        memset(memory, 0, (size_t)map->capacity * LK_OFFSET_MAP_ENTRY_BYTES);
    return LK_OK;
}

void lk_offset_map_clear(lk_offset_map *map)
{
    if (map->entries)
        memset(map->slots, 0, (size_t)map->capacity * LK_OFFSET_MAP_ENTRY_BYTES);
    map->entries = 0;
}

/* The slot holding (h1, h2), or the empty slot where it would go. The home slot is the
 * high bits of h1 scaled to the capacity (no power-of-two rounding: every slot of the
 * memory is usable). */
static inline uint64_t *find_slot(lk_offset_map *map, uint64_t h1, uint64_t h2)
{
    uint64_t cap = map->capacity;
    uint64_t i = (uint64_t)(((lk_u128)h1 * cap) >> 64);
    uint64_t *slots = (uint64_t *)map->slots;
    for (;;) {
        uint64_t *s = slots + 3 * i;
        if (s[2] == 0 || (s[0] == h1 && s[1] == h2))
            return s;
        if (++i == cap)
            i = 0;
    }
}

/* Doubles the table into unused memory beside it (before it, or after it), moving every
 * entry. Returns 0 when there is no such room: the map is then full at its configured
 * load factor. Each key moves O(log(final size)) times at most: amortised O(1). */
static int grow_map(lk_offset_map *map)
{
    uint64_t *base = (uint64_t *)map->memory;
    uint64_t *old = (uint64_t *)map->slots;
    uint64_t old_cap = map->capacity;
    uint64_t start = (uint64_t)(old - base) / 3, end = start + old_cap;
    uint64_t new_cap = old_cap * 2;
    uint64_t *fresh;
    if (new_cap <= start)
        fresh = base;
    else if (end + new_cap <= map->memory_slots)
        fresh = base + 3 * end;
    else if (map->limit < full_limit(map, old_cap)) {
        map->limit = full_limit(map, old_cap);
        return 1; /* no room to double: fill this table to the load factor instead */
    } else
        return 0;
    memset(fresh, 0, (size_t)new_cap * LK_OFFSET_MAP_ENTRY_BYTES);
    map->slots = (uint8_t *)fresh;
    map->capacity = new_cap;
    map->limit = new_cap / 2 < full_limit(map, new_cap) ? new_cap / 2 : full_limit(map, new_cap);
    for (uint64_t i = 0; i < old_cap; i++) {
        const uint64_t *s = old + 3 * i;
        if (s[2] == 0)
            continue;
        uint64_t *d = find_slot(map, s[0], s[1]);
        d[0] = s[0];
        d[1] = s[1];
        d[2] = s[2];
    }
    map->grown++;
    return 1;
}

/* Starts loading the key's home slot (see lookahead below). */
static inline void prefetch_home(const lk_offset_map *map, uint64_t h1)
{
    uint64_t i = (uint64_t)(((lk_u128)h1 * map->capacity) >> 64);
    __builtin_prefetch(map->slots + 24 * i, 1, 1);
}

/* Returns 1 if put, 0 if the map is full and the key is new (nothing changed). */
static inline int map_put(lk_offset_map *map, const uint8_t *key, size_t len, int64_t offset)
{
    if (map->capacity == 0)
        return 0; /* a map over no memory is always full */
    uint64_t h1 = lk_xxh64(key, len, 0), h2 = lk_xxh64(key, len, SECOND_SEED);
    uint64_t *s = find_slot(map, h1, h2);
    if (s[2] == 0) {
        if (map->entries >= map->limit) {
            if (!grow_map(map))
                return 0;
            s = find_slot(map, h1, h2);
        }
        map->entries++;
        s[0] = h1;
        s[1] = h2;
    }
    s[2] = (uint64_t)offset + 1;
    return 1;
}

/* The latest offset recorded for the key, or -1. */
static inline int64_t map_get(lk_offset_map *map, const uint8_t *key, size_t len)
{
    if (map->entries == 0 || map->capacity == 0)
        return -1;
    uint64_t h1 = lk_xxh64(key, len, 0), h2 = lk_xxh64(key, len, SECOND_SEED);
    map->lookups++;
    return (int64_t)find_slot(map, h1, h2)[2] - 1;
}

int lk_offset_map_put(lk_offset_map *map, const uint8_t *key, size_t key_len, int64_t offset)
{
    if (!map || (!key && key_len) || offset < 0 || offset == INT64_MAX)
        return LK_ERR_ARGUMENT;
    if (map->capacity == 0)
        return LK_ERR_BUFFER_TOO_SMALL;
    return map_put(map, key, key_len, offset) ? LK_OK : LK_ERR_BUFFER_TOO_SMALL;
}

int64_t lk_offset_map_get(lk_offset_map *map, const uint8_t *key, size_t key_len)
{
    if (!map || (!key && key_len) || map->capacity == 0)
        return -1;
    return map_get(map, key, key_len);
}

/* ------------------------------------------------------------------------------------
 * Record walking. The passes below validate each batch's header and CRC first, then walk
 * its records with every length checked against the record's end and the record's end
 * checked against the batch's.
 * --------------------------------------------------------------------------------- */
typedef struct {
    const uint8_t *start; /* the record's length varint */
    const uint8_t *end;   /* one past the record */
    const uint8_t *rest;  /* its keyLength varint: key, value and headers run to end */
    uint8_t attributes;
    int64_t timestamp_delta;
    int32_t offset_delta;
    const uint8_t *key;   /* NULL for a null key */
    int32_t key_len;
    int32_t value_len;    /* < 0: null value (a tombstone) */
} record_view;

static inline int next_record(const uint8_t **pp, const uint8_t *end, record_view *r)
{
    const uint8_t *p = *pp;
    int32_t length;
    r->start = p;
    if (!read_varint(&p, end, &length) || length < 1 || length > end - p)
        return 0;
    const uint8_t *rend = p + length;
    r->end = rend;
    r->attributes = *p++;
    if (!read_varlong(&p, rend, &r->timestamp_delta) || !read_varint(&p, rend, &r->offset_delta))
        return 0;
    r->rest = p;
    if (!read_varint(&p, rend, &r->key_len))
        return 0;
    if (r->key_len >= 0) {
        if (r->key_len > rend - p)
            return 0;
        r->key = p;
        p += r->key_len;
    } else {
        r->key = NULL;
    }
    if (!read_varint(&p, rend, &r->value_len))
        return 0;
    if (r->value_len > 0 && r->value_len > rend - p)
        return 0;
    *pp = rend;
    return 1;
}

/* ------------------------------------------------------------------------------------
 * Prefetching. A map bigger than the cache costs a cache miss per record, and a batch may
 * hold one record: so a second walker runs LOOKAHEAD records ahead of each pass over the
 * same batches (the ones the pass reads records of), hashing each key and prefetching its
 * home slot; by the time the pass gets there the slot is in cache. The walker checks
 * bounds but not CRCs: on anything odd it stops, and the pass itself validates.
 * --------------------------------------------------------------------------------- */
enum { LOOKAHEAD = 16 };

typedef struct {
    const uint8_t *next_batch; /* NULL once stopped */
    const uint8_t *end;
    const uint8_t *p;          /* next record of the current batch */
    const uint8_t *batch_end;
    int32_t left;              /* records left in the current batch */
    int64_t from_offset;       /* batches ending below this are skipped (map pass) */
    const lk_aborted_txn *aborted; /* aborted batches starting below aborted_below are */
    size_t aborted_count;          /* skipped: the pass reads none of their records */
    int64_t aborted_below;
} lookahead;

static inline void lookahead_step(lookahead *la, const lk_offset_map *map)
{
    while (la->left == 0) {
        const uint8_t *b = la->next_batch;
        if (!b || la->end - b < LK_BATCH_HEADER_SIZE) {
            la->next_batch = NULL;
            return;
        }
        int64_t length = (int32_t)lk_load_be32(b + LK_OFF_LENGTH);
        if (length < LK_MIN_BATCH_LENGTH || length + LK_LOG_OVERHEAD > la->end - b) {
            la->next_batch = NULL;
            return;
        }
        const uint8_t *bend = b + length + LK_LOG_OVERHEAD;
        la->next_batch = bend;
        uint16_t attributes = lk_load_be16(b + LK_OFF_ATTRIBUTES);
        int32_t count = (int32_t)lk_load_be32(b + LK_OFF_RECORD_COUNT);
        int64_t last = wrap_add((int64_t)lk_load_be64(b + LK_OFF_BASE_OFFSET),
                                (int32_t)lk_load_be32(b + LK_OFF_LAST_OFFSET_DELTA));
        if ((attributes & (LK_ATTR_CONTROL | LK_ATTR_COMPRESSION_MASK)) || count <= 0
            || last < la->from_offset)
            continue; /* the pass reads no records there either */
        if (la->aborted_count && (attributes & LK_ATTR_TRANSACTIONAL)) {
            lk_batch_header h = {.base_offset = (int64_t)lk_load_be64(b + LK_OFF_BASE_OFFSET),
                                 .attributes = (int16_t)attributes,
                                 .producer_id = (int64_t)lk_load_be64(b + LK_OFF_PRODUCER_ID)};
            if (h.base_offset < la->aborted_below
                && lk_batch_aborted(&h, la->aborted, la->aborted_count))
                continue;
        }
        la->p = b + LK_BATCH_HEADER_SIZE;
        la->batch_end = bend;
        la->left = count;
    }
    record_view r;
    la->left--;
    if (!next_record(&la->p, la->batch_end, &r)) {
        la->left = 0; /* a malformed record: skip the rest of this batch */
        return;
    }
    if (r.key != NULL && map->capacity)
        prefetch_home(map, lk_xxh64(r.key, (size_t)r.key_len, 0));
}

static inline void lookahead_start(lookahead *la, const lk_offset_map *map, const uint8_t *buf,
                                   size_t len, int64_t from_offset,
                                   const lk_aborted_txn *aborted, size_t aborted_count,
                                   int64_t aborted_below)
{
    la->next_batch = buf;
    la->end = buf + len;
    la->p = la->batch_end = NULL;
    la->left = 0;
    la->from_offset = from_offset;
    la->aborted = aborted;
    la->aborted_count = aborted_count;
    la->aborted_below = aborted_below;
    for (int i = 0; i < LOOKAHEAD; i++)
        lookahead_step(la, map);
}

/* Validates the header and CRC of the batch at buf. Returns LK_OK, LK_ERR_TRUNCATED when
 * buf ends inside the batch (not an error for the passes: the caller reads on), or the
 * validator's error. */
static int batch_at(const uint8_t *buf, size_t len, lk_batch_header *h, lk_error *err)
{
    if (len < LK_BATCH_HEADER_SIZE)
        return LK_ERR_TRUNCATED;
    int rc = lk_batch_parse_header(buf, len, 0, h, err);
    if (rc != LK_OK)
        return rc;
    return lk_batch_validate(buf, len, 0, LK_VALIDATE_CRC, h, err);
}

/* A batch's offsets must be representable: base >= 0 and its last offset + 1 <= INT64_MAX. */
static inline int offsets_in_range(const lk_batch_header *h)
{
    return h->base_offset >= 0 && h->last_offset_delta >= 0
           && h->base_offset < INT64_MAX - h->last_offset_delta;
}

static int bad_offsets(lk_error *err, int64_t position)
{
    return lk_fail(err, LK_ERR_CORRUPT_RECORD, position, -1,
                   "a batch's offsets are negative or pass the largest offset");
}

static int out_of_order(lk_error *err, int64_t position)
{
    return lk_fail(err, LK_ERR_CORRUPT_RECORD, position, -1,
                   "a batch's base offset is not above the last offset of the batch before it");
}

static int corrupt(lk_error *err, int64_t position, int32_t index)
{
    return lk_fail(err, LK_ERR_CORRUPT_RECORD, position, index,
                   "a record is malformed, or the records do not fill the batch exactly");
}

static int bad_aborted(lk_error *err)
{
    return lk_fail(err, LK_ERR_ARGUMENT, 0, -1,
                   "the aborted transactions are not sorted by producer id and first offset, "
                   "or one producer's overlap");
}

/* The producer map's key for a producer id: its 8 bytes, big-endian. */
static inline void producer_key(uint8_t key[8], int64_t producer_id)
{
    lk_store_be64(key, (uint64_t)producer_id);
}

/* ------------------------------------------------------------------------------------
 * The map pass.
 * --------------------------------------------------------------------------------- */
int lk_cleaner_map(lk_offset_map *map, const uint8_t *buf, size_t len, int64_t from_offset,
                   int64_t stop_offset, const lk_aborted_txn *aborted, size_t aborted_count,
                   lk_map_result *result, lk_error *err)
{
    if (!map || !result || (!buf && len) || len > INT64_MAX)
        return LK_ERR_ARGUMENT;
    if (lk_aborted_txns_check(aborted, aborted_count) != LK_OK)
        return bad_aborted(err);
    result->stop = LK_CLEAN_END;
    result->next_offset = from_offset;
    lookahead ahead;
    lookahead_start(&ahead, map, buf, len, from_offset, aborted, aborted_count, INT64_MAX);
    size_t pos = 0;
    while (pos < len) {
        lk_batch_header h;
        const uint8_t *batch = buf + pos;
        if (len - pos < LK_BATCH_HEADER_SIZE)
            break;
        int rc = lk_batch_parse_header(batch, len - pos, 0, &h, err);
        if (rc == LK_ERR_TRUNCATED)
            break;
        if (rc == LK_OK && !offsets_in_range(&h)) {
            result->position = (int64_t)pos;
            return bad_offsets(err, (int64_t)pos);
        }
        int64_t next = rc == LK_OK ? h.base_offset + (int64_t)h.last_offset_delta + 1 : 0;
        size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
        if (rc == LK_OK && h.base_offset >= stop_offset) {
            result->stop = LK_CLEAN_LIMIT;
            result->position = (int64_t)pos;
            if (result->next_offset < stop_offset)
                result->next_offset = stop_offset;
            return LK_OK;
        }
        if (rc == LK_OK && h.base_offset <= result->last_offset) {
            result->position = (int64_t)pos;
            return out_of_order(err, (int64_t)pos);
        }
        if (rc == LK_OK && next <= from_offset) { /* below the dirty section: not read */
            result->last_offset = next - 1;
            pos += size;
            continue;
        }
        if (rc == LK_OK)
            rc = lk_batch_validate(batch, len - pos, 0, LK_VALIDATE_CRC, &h, err);
        if (rc != LK_OK) {
            if (err)
                err->position += (int64_t)pos;
            result->position = (int64_t)pos;
            return rc;
        }
        if ((h.attributes & LK_ATTR_CONTROL) || h.record_count == 0
            || lk_batch_aborted(&h, aborted, aborted_count)) {
            /* No keys: a marker, an empty batch, or an aborted transaction's records,
             * which must not supersede older records of their keys. */
            if (next > result->next_offset)
                result->next_offset = next < stop_offset ? next : stop_offset;
            result->last_offset = next - 1;
            pos += size;
            continue;
        }
        if (h.attributes & LK_ATTR_COMPRESSION_MASK) {
            result->stop = LK_CLEAN_COMPRESSED;
            result->position = (int64_t)pos;
            return LK_OK;
        }
        const uint8_t *p = batch + LK_BATCH_HEADER_SIZE, *bend = batch + size;
        for (int32_t i = 0; i < h.record_count; i++) {
            record_view r;
            if (!next_record(&p, bend, &r))
                return corrupt(err, (int64_t)(pos + (size_t)(r.start - batch)), i);
            lookahead_step(&ahead, map);
            if (r.offset_delta < 0 || r.offset_delta > h.last_offset_delta)
                return corrupt(err, (int64_t)(pos + (size_t)(r.start - batch)), i);
            int64_t offset = h.base_offset + r.offset_delta;
            if (offset >= stop_offset) {
                result->stop = LK_CLEAN_LIMIT;
                result->position = (int64_t)pos;
                result->next_offset = stop_offset;
                return LK_OK;
            }
            if (offset < from_offset || r.key == NULL)
                continue;
            if (!map_put(map, r.key, (size_t)r.key_len, offset)) {
                result->stop = LK_CLEAN_FULL;
                result->position = (int64_t)pos;
                result->next_offset = offset;
                return LK_OK;
            }
            result->records++;
        }
        if (p != bend)
            return corrupt(err, (int64_t)(pos + (size_t)(p - batch)), h.record_count);
        result->next_offset = next < stop_offset ? next : stop_offset;
        result->last_offset = next - 1;
        pos += size;
    }
    result->position = (int64_t)pos;
    return LK_OK;
}

/* ------------------------------------------------------------------------------------
 * The producer pass: the last data batch of every producer id, from batch headers alone.
 * --------------------------------------------------------------------------------- */
int lk_cleaner_producers(lk_offset_map *producers, const uint8_t *buf, size_t len,
                         lk_map_result *result, lk_error *err)
{
    if (!producers || !result || (!buf && len) || len > INT64_MAX)
        return LK_ERR_ARGUMENT;
    result->stop = LK_CLEAN_END;
    size_t pos = 0;
    while (len - pos >= LK_BATCH_HEADER_SIZE) {
        lk_batch_header h;
        int rc = lk_batch_parse_header(buf + pos, len - pos, 0, &h, err);
        if (rc == LK_ERR_TRUNCATED)
            break;
        result->position = (int64_t)pos;
        if (rc != LK_OK) {
            if (err)
                err->position += (int64_t)pos;
            return rc;
        }
        if (!offsets_in_range(&h))
            return bad_offsets(err, (int64_t)pos);
        if (h.base_offset <= result->last_offset)
            return out_of_order(err, (int64_t)pos);
        int64_t last = h.base_offset + (int64_t)h.last_offset_delta;
        if (!(h.attributes & LK_ATTR_CONTROL) && h.producer_id >= 0) {
            uint8_t key[8];
            producer_key(key, h.producer_id);
            if (!map_put(producers, key, sizeof key, last)) {
                result->stop = LK_CLEAN_FULL;
                return LK_OK;
            }
            result->records++;
        }
        result->last_offset = last;
        result->next_offset = last + 1;
        pos += (size_t)h.batch_length + LK_LOG_OVERHEAD;
    }
    result->position = (int64_t)pos;
    return LK_OK;
}

/* ------------------------------------------------------------------------------------
 * The filter pass.
 * --------------------------------------------------------------------------------- */

/* Writes the header of the batch at batch as a batch without records, Kafka's
 * writeEmptyHeader: the same offsets, producer fields, leader epoch, timestamp type,
 * transactional bit and maxTimestamp; no compression or delete horizon; baseTimestamp -1
 * (NO_TIMESTAMP); recordsCount 0. Returns its size, LK_BATCH_HEADER_SIZE. */
static size_t write_empty(const uint8_t *batch, uint8_t *out)
{
    memcpy(out, batch, LK_BATCH_HEADER_SIZE);
    uint16_t attributes = lk_load_be16(batch + LK_OFF_ATTRIBUTES);
    attributes &= (uint16_t)~(LK_ATTR_COMPRESSION_MASK | LK_ATTR_DELETE_HORIZON);
    lk_store_be32(out + LK_OFF_LENGTH, LK_MIN_BATCH_LENGTH);
    lk_store_be16(out + LK_OFF_ATTRIBUTES, attributes);
    lk_store_be64(out + LK_OFF_BASE_TIMESTAMP, UINT64_MAX); /* -1 */
    lk_store_be32(out + LK_OFF_RECORD_COUNT, 0);
    lk_batch_update_crc(out, LK_BATCH_HEADER_SIZE, NULL);
    return LK_BATCH_HEADER_SIZE;
}

/* 1 if the data batch h is its producer's last in the range the producer pass walked. */
static inline int producer_last(lk_offset_map *producers, const lk_batch_header *h)
{
    uint8_t key[8];
    producer_key(key, h->producer_id);
    return map_get(producers, key, sizeof key) == h->base_offset + (int64_t)h->last_offset_delta;
}

/* Writes the kept records of one uncompressed batch, re-encoded against new_base (their
 * timestamp deltas change when the base timestamp does), after a copy of its header;
 * then fixes the header. Returns the bytes written. out has room for
 * size + 10 * record_count bytes: a timestamp delta grows by at most 9 bytes (1 to 10),
 * and the record's length varint then by at most 1. */
static size_t write_kept(const uint8_t *batch, const lk_batch_header *h, const uint8_t *keep,
                         int32_t kept, int64_t new_base, int16_t attributes, uint8_t *out)
{
    memcpy(out, batch, LK_BATCH_HEADER_SIZE);
    uint8_t *w = out + LK_BATCH_HEADER_SIZE;
    const uint8_t *p = batch + LK_BATCH_HEADER_SIZE;
    const uint8_t *bend = batch + (size_t)h->batch_length + LK_LOG_OVERHEAD;
    int64_t max_timestamp = INT64_MIN;
    for (int32_t i = 0; i < h->record_count; i++) {
        record_view r;
        next_record(&p, bend, &r); /* the caller walked these records already */
        if (!keep[i])
            continue;
        int64_t timestamp = wrap_add(h->base_timestamp, r.timestamp_delta);
        if (timestamp > max_timestamp)
            max_timestamp = timestamp;
        if (new_base == h->base_timestamp) {
            size_t n = (size_t)(r.end - r.start);
            memcpy(w, r.start, n);
            w += n;
            continue;
        }
        int64_t delta = wrap_sub(timestamp, new_base);
        size_t rest = (size_t)(r.end - r.rest);
        int32_t body = (int32_t)(1 + (size_t)varlong_size(delta) + (size_t)varint_size(r.offset_delta)
                                 + rest);
        w = write_varint(w, body);
        *w++ = r.attributes;
        w = write_varlong(w, delta);
        w = write_varint(w, r.offset_delta);
        memcpy(w, r.rest, rest);
        w += rest;
    }
    size_t size = (size_t)(w - out);
    lk_store_be32(out + LK_OFF_LENGTH, (uint32_t)(size - LK_LOG_OVERHEAD));
    lk_store_be16(out + LK_OFF_ATTRIBUTES, (uint16_t)attributes);
    lk_store_be64(out + LK_OFF_BASE_TIMESTAMP, (uint64_t)new_base);
    /* As Kafka's rebuilt batch: the largest kept timestamp (CreateTime), so ListOffsets'
     * MAX_TIMESTAMP and the time index name a record that is still there. A LogAppendTime
     * batch keeps the append time, which all its records share. */
    if (!(attributes & LK_ATTR_LOG_APPEND_TIME))
        lk_store_be64(out + LK_OFF_MAX_TIMESTAMP, (uint64_t)max_timestamp);
    lk_store_be32(out + LK_OFF_RECORD_COUNT, (uint32_t)kept);
    lk_batch_update_crc(out, size, NULL);
    return size;
}

int lk_cleaner_filter(lk_offset_map *map, const uint8_t *in, size_t in_len,
                      const lk_clean_params *params, uint8_t *out, size_t out_capacity,
                      uint8_t *keep, size_t keep_capacity, lk_clean_result *result,
                      lk_error *err)
{
    if (!map || !params || !result || (!in && in_len) || (!out && out_capacity)
        || (!keep && keep_capacity) || in_len > INT64_MAX)
        return LK_ERR_ARGUMENT;
    if (lk_aborted_txns_check(params->aborted, params->aborted_count) != LK_OK)
        return bad_aborted(err);
    result->stop = LK_CLEAN_END;
    result->written = 0;
    lookahead ahead;
    lookahead_start(&ahead, map, in, in_len, INT64_MIN, params->aborted, params->aborted_count,
                    params->map_end);
    size_t pos = 0, written = 0;
    while (pos < in_len) {
        lk_batch_header h;
        const uint8_t *batch = in + pos;
        int rc = batch_at(batch, in_len - pos, &h, err);
        if (rc == LK_ERR_TRUNCATED)
            break;
        if (rc != LK_OK) {
            if (err)
                err->position += (int64_t)pos;
            result->position = (int64_t)pos;
            result->written = (int64_t)written;
            return rc;
        }
        size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
        if (!offsets_in_range(&h) || h.base_offset <= result->last_offset) {
            result->position = (int64_t)pos;
            result->written = (int64_t)written;
            return offsets_in_range(&h) ? out_of_order(err, (int64_t)pos)
                                        : bad_offsets(err, (int64_t)pos);
        }
        int compressed = (h.attributes & LK_ATTR_COMPRESSION_MASK) != 0;
        int control = (h.attributes & LK_ATTR_CONTROL) != 0;
        /* Transactions below map_end (past it everything stays as it is). */
        int below = h.base_offset < params->map_end;
        int aborted = below && lk_batch_aborted(&h, params->aborted, params->aborted_count);
        int producers = below && !control && params->producers && h.producer_id >= 0;
        if (compressed && !control && h.record_count > 0 && !aborted) {
            result->stop = LK_CLEAN_COMPRESSED;
            break;
        }
        /* What the batch may need: aborted ones need no keep and write a header at most. */
        uint64_t records = aborted || h.record_count < 0 ? 0 : (uint64_t)h.record_count;
        uint64_t worst = (uint64_t)size + 10u * records;
        if (worst > out_capacity - written || records > keep_capacity) {
            if (written == 0 && pos == 0)
                return lk_fail(err, LK_ERR_BUFFER_TOO_SMALL, 0, -1,
                               "the output or keep buffer cannot hold the first batch");
            result->stop = LK_CLEAN_FULL;
            break;
        }
        result->batches_read++;
        result->last_offset = h.base_offset + (int64_t)h.last_offset_delta;
        int last_of_producer = producers && producer_last(params->producers, &h);
        if (aborted) {
            int64_t count = h.record_count > 0 ? h.record_count : 0;
            result->records_read += count;
            result->aborted_dropped += count;
            if (last_of_producer) {
                written += write_empty(batch, out + written);
                result->batches_kept++;
                result->empty_batches_kept++;
            }
            pos += size;
            continue;
        }
        if (control || h.record_count == 0) {
            /* Markers stay as they are; so do empty batches, but for producers' older
             * ones (a producer's last batch is kept empty only while it is the last). */
            if (!control && producers && !last_of_producer) {
                pos += size;
                continue;
            }
            memcpy(out + written, batch, size);
            written += size;
            result->batches_kept++;
            result->empty_batches_kept += last_of_producer;
            pos += size;
            continue;
        }
        int has_horizon = (h.attributes & LK_ATTR_DELETE_HORIZON) != 0;
        int drop_tombstones = has_horizon && params->now_ms >= h.base_timestamp;
        const uint8_t *p = batch + LK_BATCH_HEADER_SIZE, *bend = batch + size;
        int32_t kept = 0;
        int tombstones_kept = 0;
        int64_t first_kept_timestamp = 0;
        for (int32_t i = 0; i < h.record_count; i++) {
            record_view r;
            if (!next_record(&p, bend, &r))
                return corrupt(err, (int64_t)(pos + (size_t)(r.start - batch)), i);
            lookahead_step(&ahead, map);
            if (r.offset_delta < 0 || r.offset_delta > h.last_offset_delta)
                return corrupt(err, (int64_t)(pos + (size_t)(r.start - batch)), i);
            keep[i] = 0;
            result->records_read++;
            /* Past the map's end the key's older records were not looked at: a record
             * there stays, and a tombstone there starts no horizon yet. */
            if (h.base_offset + r.offset_delta < params->map_end) {
                if (r.key == NULL) {
                    result->keyless_dropped++;
                    continue;
                }
                if (map_get(map, r.key, (size_t)r.key_len) > h.base_offset + r.offset_delta)
                    continue; /* a later record has this key */
                if (r.value_len < 0) {
                    if (drop_tombstones) {
                        result->tombstones_dropped++;
                        continue;
                    }
                    tombstones_kept = 1;
                }
            }
            if (kept == 0)
                first_kept_timestamp = wrap_add(h.base_timestamp, r.timestamp_delta);
            keep[i] = 1;
            kept++;
        }
        if (p != bend)
            return corrupt(err, (int64_t)(pos + (size_t)(p - batch)), h.record_count);
        result->records_kept += kept;
        if (kept == 0) {
            if (last_of_producer) { /* the producer's sequence state lives on in it */
                written += write_empty(batch, out + written);
                result->batches_kept++;
                result->empty_batches_kept++;
            }
            pos += size;
            continue;
        }
        result->batches_kept++;
        if (tombstones_kept) {
            int64_t horizon = has_horizon ? h.base_timestamp : params->new_horizon_ms;
            if (horizon < result->next_horizon_ms)
                result->next_horizon_ms = horizon;
        }
        if (kept == h.record_count && tombstones_kept == has_horizon) {
            memcpy(out + written, batch, size); /* nothing to change */
            written += size;
        } else {
            int16_t attributes = (int16_t)(h.attributes & ~LK_ATTR_DELETE_HORIZON);
            int64_t new_base = first_kept_timestamp;
            if (tombstones_kept) {
                attributes = (int16_t)(attributes | LK_ATTR_DELETE_HORIZON);
                new_base = has_horizon ? h.base_timestamp : params->new_horizon_ms;
            }
            written += write_kept(batch, &h, keep, kept, new_base, attributes, out + written);
        }
        pos += size;
    }
    result->position = (int64_t)pos;
    result->written = (int64_t)written;
    return LK_OK;
}

/* ------------------------------------------------------------------------------------
 * Keys on compacted topics.
 * --------------------------------------------------------------------------------- */
int lk_records_first_keyless(const uint8_t *buf, size_t len, int64_t *position,
                             int32_t *record_index, lk_error *err)
{
    if ((!buf && len) || !position || !record_index || len > INT64_MAX)
        return LK_ERR_ARGUMENT;
    *position = -1;
    *record_index = -1;
    size_t pos = 0;
    while (pos < len) {
        lk_batch_header h;
        const uint8_t *batch = buf + pos;
        int rc = lk_batch_parse_header(batch, len - pos, 0, &h, err);
        if (rc != LK_OK) {
            if (err)
                err->position += (int64_t)pos;
            return rc;
        }
        size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
        if (!(h.attributes & LK_ATTR_CONTROL) && h.record_count > 0) {
            if (h.attributes & LK_ATTR_COMPRESSION_MASK) {
                *position = (int64_t)pos;
                *record_index = -2; /* the caller decompresses and asks again */
                return LK_OK;
            }
            const uint8_t *p = batch + LK_BATCH_HEADER_SIZE, *bend = batch + size;
            for (int32_t i = 0; i < h.record_count; i++) {
                record_view r;
                if (!next_record(&p, bend, &r))
                    return corrupt(err, (int64_t)(pos + (size_t)(r.start - batch)), i);
                if (r.key == NULL) {
                    *position = (int64_t)pos;
                    *record_index = i;
                    return LK_OK;
                }
            }
        }
        pos += size;
    }
    return LK_OK;
}
