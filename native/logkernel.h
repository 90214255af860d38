/*
 * logkernel.h - the contract of logkernel's native core.
 *
 * This header is the only interface between the C core and Python. cffi reads it
 * directly (native/ffi_build.py strips the preprocessor lines), so everything between
 * the guard lines stays inside the subset of C that cffi parses: no macros, no
 * inline functions, no bit-fields.
 *
 * Conventions that hold for every function below:
 *   - All multi-byte integers inside Kafka structures are big-endian on disk and on
 *     the wire; the structs here hold them in host order.
 *   - Every function that can fail returns an lk_status (0 on success, a negative
 *     code otherwise). No input, however malformed, makes a function read or write
 *     outside the buffers it was given; lengths are checked before they are used and
 *     arithmetic on untrusted lengths is done in 64 bits.
 *   - Buffers passed in are borrowed for the duration of the call only; nothing keeps
 *     a pointer to them after returning, except where a function says otherwise.
 *   - Where a function takes an lk_error *err, it may be NULL. On failure it is filled
 *     with the code, the byte position (relative to the buffer given) where the
 *     problem was found, the index of the record involved (or -1), and a static
 *     English sentence naming what was wrong. The string is never freed.
 *   - LK_ERR_IO leaves errno as the failing system call set it (cffi: ffi.errno).
 */
#ifndef LOGKERNEL_H
#define LOGKERNEL_H

#include <stddef.h>
#include <stdint.h>

/* ----------------------------------------------------------------------------
 * Status codes. Stable: Python maps them to exceptions in logkernel/_binding.py.
 * ------------------------------------------------------------------------- */
enum lk_status {
    LK_OK = 0,
    LK_ERR_ARGUMENT = -1,         /* a caller bug: NULL pointer, negative count, bad flag */
    LK_ERR_TRUNCATED = -2,        /* the input ends before the structure it starts does */
    LK_ERR_BAD_LENGTH = -3,       /* a batch length field is out of range */
    LK_ERR_BAD_MAGIC = -4,        /* magic byte is not 2 (only RecordBatch v2 is supported) */
    LK_ERR_CRC = -5,              /* stored CRC-32C does not match the bytes */
    LK_ERR_CORRUPT_RECORD = -6,   /* a record inside a batch is malformed (varint, length, delta, count) */
    LK_ERR_BUFFER_TOO_SMALL = -7, /* the output buffer cannot hold the result; nothing useful written */
    LK_ERR_UNSUPPORTED = -8,      /* e.g. a CRC implementation this CPU lacks */
    LK_ERR_IO = -9,               /* a system call failed; errno says which way */
    LK_ERR_NO_SPACE = -10,        /* the file system is full (ENOSPC/EDQUOT); nothing was appended */
    LK_ERR_SEGMENT_FULL = -11,    /* the append does not fit this segment's capacity; roll */
    LK_ERR_NOT_FOUND = -12,       /* the offset or timestamp lies beyond this segment */
    LK_ERR_NO_MEMORY = -13,
    LK_ERR_OFFSET_ORDER = -14,    /* offsets would go backwards or leave the segment's int32 range */
    LK_ERR_INDEX_CORRUPT = -15,   /* an index file is not a valid prefix of entries; rebuild it */
    LK_ERR_CLOSED = -16,          /* the segment handle was sealed read-only or closed */
    LK_ERR_NEEDS_RECOVERY = -17   /* the segment holds unrecognised bytes after its last
                                     batch: call lk_segment_recover before writing */
};

/* Returns a static English name for a status code ("LK_ERR_CRC: ..."); never NULL. */
const char *lk_status_message(int status);

typedef struct {
    int code;            /* an lk_status */
    int64_t position;    /* byte offset, relative to the buffer passed in, where it was found */
    int32_t record_index;/* index of the record involved, or -1 for batch-level problems */
    const char *what;    /* static sentence; never NULL after a failure */
} lk_error;

/* ----------------------------------------------------------------------------
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by RecordBatch v2.
 *
 * The crc argument is the CRC of the data seen so far (0 to start), so calls can be
 * chained: lk_crc32c(lk_crc32c(0, a, n), b, m) == lk_crc32c(0, a || b, n + m).
 * Known answer: lk_crc32c(0, "123456789", 9) == 0xE3069283.
 * ------------------------------------------------------------------------- */
enum lk_crc32c_impl {
    LK_CRC32C_TABLE = 0,      /* portable slicing-by-8 tables; every CPU */
    LK_CRC32C_SSE42 = 1,      /* x86 SSE4.2 crc32 instruction, three interleaved streams */
    LK_CRC32C_VPCLMUL = 2,    /* x86 VPCLMULQDQ carry-less-multiply folding (AVX2 ymm registers) */
    LK_CRC32C_AVX512 = 3,     /* reserved for zmm folding: not built (no machine here to test
                                 it on); always unavailable. The ymm path runs on AVX-512 CPUs */
    LK_CRC32C_IMPL_COUNT = 4
};

/* The fastest implementation this CPU supports, chosen once by CPUID. O(n). */
uint32_t lk_crc32c(uint32_t crc, const uint8_t *data, size_t len);

/* Computes with one named implementation. Returns LK_ERR_UNSUPPORTED if the CPU (or
 * the build) lacks it, LK_ERR_ARGUMENT for an unknown impl or NULL data with len > 0. */
int lk_crc32c_with(int impl, uint32_t crc, const uint8_t *data, size_t len, uint32_t *out);

/* 1 if the implementation can run on this CPU, else 0. */
int lk_crc32c_impl_available(int impl);

/* The implementation lk_crc32c dispatches to, and a short name for any impl. */
int lk_crc32c_selected_impl(void);
const char *lk_crc32c_impl_name(int impl);

/* ----------------------------------------------------------------------------
 * Partitioning: the hash of Kafka's default partitioner.
 * ------------------------------------------------------------------------- */

/* Kafka's Utils.murmur2 (the Java client's MurmurHash2 variant: seed 0x9747b28c,
 * m = 0x5bd1e995, r = 24, the trailing 1-3 bytes folded in before the final mixing),
 * returning the same signed 32-bit value the Java method returns. The default
 * partitioner's choice for a keyed record is (lk_murmur2(key) & 0x7fffffff) % partitions.
 * O(len); no allocation, cannot fail. data is borrowed for the call; it may be NULL only
 * with len 0. There is no error return: a negative len, or NULL data, hashes as the
 * empty input (logkernel's wrapper always passes the length of a bytes object).
 * Known answers (Kafka's UtilsTest): "21" -> -973932308, "foobar" -> -790332482. */
int32_t lk_murmur2(const char *data, int32_t len);

/* ----------------------------------------------------------------------------
 * RecordBatch v2.
 *
 *   off size field                  off size field
 *     0   8  baseOffset              27   8  baseTimestamp
 *     8   4  batchLength (= size-12) 35   8  maxTimestamp
 *    12   4  partitionLeaderEpoch    43   8  producerId
 *    16   1  magic (2)               51   2  producerEpoch
 *    17   4  crc (CRC-32C of 21..end)53   4  baseSequence
 *    21   2  attributes              57   4  recordsCount
 *    23   4  lastOffsetDelta         61   -  records (maybe compressed)
 *
 * attributes: bits 0-2 compression (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd),
 * bit 3 timestamp type (1 = LogAppendTime), bit 4 transactional, bit 5 control,
 * bit 6 delete horizon set (baseTimestamp then holds the horizon).
 *
 * Record: length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
 *         keyLength varint (-1 null) | key | valueLength varint (-1 null) | value |
 *         headerCount varint | { keyLength varint | key | valueLength varint | value }*
 * Varints are zig-zag LEB128 (protobuf sint32/sint64).
 * ------------------------------------------------------------------------- */
enum lk_batch_constants {
    LK_BATCH_HEADER_SIZE = 61,    /* RECORD_BATCH_OVERHEAD */
    LK_LOG_OVERHEAD = 12,         /* baseOffset + batchLength, not counted in batchLength */
    LK_RECORD_MAX_OVERHEAD = 21,  /* 5 length + 1 attributes + 10 ts delta + 5 offset delta */
    LK_ATTR_COMPRESSION_MASK = 7,
    LK_ATTR_LOG_APPEND_TIME = 8,
    LK_ATTR_TRANSACTIONAL = 16,
    LK_ATTR_CONTROL = 32,
    LK_ATTR_DELETE_HORIZON = 64,
    LK_CONTROL_ABORT = 0,
    LK_CONTROL_COMMIT = 1,
    LK_CONTROL_BATCH_SIZE = 78    /* 61 header + 17-byte record (4-byte key, 6-byte value) */
};

typedef struct {
    int64_t base_offset;
    int32_t batch_length;
    int32_t partition_leader_epoch;
    int8_t magic;
    uint32_t crc;
    int16_t attributes;
    int32_t last_offset_delta;
    int64_t base_timestamp;
    int64_t max_timestamp;
    int64_t producer_id;
    int16_t producer_epoch;
    int32_t base_sequence;
    int32_t record_count;
} lk_batch_header;

/* Reads the 61-byte header of the batch at buf. Checks only that the header and the
 * whole batch (batchLength + 12) fit in len, that batchLength >= 49 and <= max_batch_size
 * - 12 (max_batch_size 0 means no limit but INT32_MAX), and that magic is 2.
 * Does not check the CRC. O(1).
 * Errors: TRUNCATED, BAD_LENGTH, BAD_MAGIC, ARGUMENT. */
int lk_batch_parse_header(const uint8_t *buf, size_t len, uint32_t max_batch_size,
                          lk_batch_header *out, lk_error *err);

/* Validation depth for lk_batch_validate. */
enum lk_validate_flags {
    LK_VALIDATE_CRC = 1,       /* check the CRC-32C */
    LK_VALIDATE_RECORDS = 2,   /* walk every record of an uncompressed batch */
    LK_VALIDATE_CONTIGUOUS = 4, /* with RECORDS: offset deltas must be exactly 0..count-1,
                                  as a producer sends them (compacted batches have gaps) */
    LK_SCAN_DENSE = 8          /* lk_log_scan and lk_segment_recover only: each batch must
                                  start exactly where the one before it ended (the first at
                                  min_offset). A log never compacted has no gaps, and a
                                  batch's baseOffset is not covered by its CRC: without
                                  this, a damaged baseOffset that jumps forward is taken
                                  as a gap, and the records served at the wrong offsets */
};

/* Validates the batch at the start of buf: the header checks above, then, as flags
 * ask, the CRC and (uncompressed batches only) every record: varint bounds, record
 * lengths that end exactly where the next record starts, offset deltas strictly
 * increasing up to lastOffsetDelta (a compacted batch may end below it; with
 * LK_VALIDATE_CONTIGUOUS exactly at it), exactly recordsCount records, nothing
 * left over. Control batches must hold exactly one record. O(batch size).
 * out may be NULL. Errors: TRUNCATED, BAD_LENGTH, BAD_MAGIC, CRC, CORRUPT_RECORD. */
int lk_batch_validate(const uint8_t *buf, size_t len, uint32_t max_batch_size, int flags,
                      lk_batch_header *out, lk_error *err);

/* Where one decoded record lives. Positions are byte offsets relative to the start of
 * the records buffer that was decoded; nothing is copied. A length of -1 means null. */
typedef struct {
    int64_t timestamp_delta;
    int32_t offset_delta;
    int32_t key_pos;
    int32_t key_len;
    int32_t value_pos;
    int32_t value_len;
    int32_t headers_pos;    /* first byte after the headerCount varint */
    int32_t headers_count;
    int32_t headers_len;    /* bytes of all headers of this record */
    int8_t attributes;
} lk_record_span;

/* Decodes a records section (the bytes after the 61-byte header of an uncompressed
 * batch, or the decompressed payload of a compressed one) holding exactly
 * expected_count records, checking everything LK_VALIDATE_RECORDS checks except the
 * lastOffsetDelta match (pass expected_last_offset_delta, or -1 to skip it).
 * Writes expected_count spans to out (capacity out_capacity). O(len).
 * Errors: CORRUPT_RECORD, BUFFER_TOO_SMALL (out_capacity < expected_count), ARGUMENT. */
int lk_records_decode(const uint8_t *records, size_t len, int32_t expected_count,
                      int32_t expected_last_offset_delta,
                      lk_record_span *out, size_t out_capacity, lk_error *err);

/* Validates the batch at buf (header + CRC) and, if uncompressed, decodes its records
 * into out; spans are relative to buf (so key_pos >= 61). For a compressed batch it
 * returns LK_OK with *decoded = 0 after the CRC check: decompress buf[61:] and call
 * lk_records_decode. *decoded is the number of spans written. O(batch size). */
int lk_batch_decode(const uint8_t *buf, size_t len, uint32_t max_batch_size,
                    lk_batch_header *header, lk_record_span *out, size_t out_capacity,
                    int32_t *decoded, lk_error *err);

/* Out-parameters of lk_batch_decode in one allocation (one ffi.new per call instead of
 * two, on the hottest path the Python side has). */
typedef struct {
    int32_t decoded;
    lk_error err;
} lk_decode_scratch;

/* Decodes the headers of one record: headers_count pairs in buf[0:len). Spans are
 * relative to buf. Writes headers_count entries (key_len never -1). Errors: CORRUPT_RECORD,
 * BUFFER_TOO_SMALL. */
typedef struct {
    int32_t key_pos;
    int32_t key_len;
    int32_t value_pos;
    int32_t value_len;
} lk_header_span;

int lk_headers_decode(const uint8_t *buf, size_t len, int32_t headers_count,
                      lk_header_span *out, size_t out_capacity, lk_error *err);

/* Columns of records to encode. Every pointer is borrowed for the call.
 *   keys/values: the non-null keys (values) concatenated in record order.
 *   key_lengths/value_lengths: one per record; -1 marks null. A NULL array means
 *     every key (value) is null.
 *   timestamps: one per record, or NULL: every record gets base_timestamp.
 *   offset_deltas: one per record, strictly increasing from >= 0, or NULL: 0..count-1.
 *   header_counts: one per record, or NULL: no headers anywhere.
 *   header_lengths: two per header in record order (key length >= 0, value length
 *     or -1 for null); header_data the header keys and values concatenated likewise.
 * Lengths are checked against the *_size fields before any byte is read. */
typedef struct {
    int32_t count;
    const uint8_t *keys;
    size_t keys_size;
    const int32_t *key_lengths;
    const uint8_t *values;
    size_t values_size;
    const int32_t *value_lengths;
    const int64_t *timestamps;
    const int32_t *offset_deltas;
    const int32_t *header_counts;
    const int32_t *header_lengths;
    size_t header_lengths_count;
    const uint8_t *header_data;
    size_t header_data_size;
} lk_records_in;

/* Batch-level fields for encoding. record_count, last_offset_delta, maxTimestamp,
 * batchLength and crc are computed. attributes is written as given (its compression
 * bits must describe what the caller did to the records section). */
typedef struct {
    int64_t base_offset;
    int32_t partition_leader_epoch;
    int16_t attributes;
    int64_t base_timestamp;   /* used when records carry no timestamps, and as the delta base */
    int64_t producer_id;      /* -1 when not idempotent */
    int16_t producer_epoch;   /* -1 when not idempotent */
    int32_t base_sequence;    /* -1 when not idempotent */
} lk_batch_params;

/* Upper bound of the bytes lk_batch_encode writes for these records (61 + records). */
int64_t lk_batch_encoded_bound(const lk_records_in *records);

/* Encodes a complete uncompressed batch (header, records, CRC) into out.
 * base_timestamp in the header is params->base_timestamp when timestamps is NULL,
 * otherwise the first record's timestamp; maxTimestamp is the largest record timestamp.
 * *out_len receives the batch size. O(total bytes).
 * Errors: ARGUMENT (count < 1 or > 2^31-1, lengths that do not add up, offset deltas not
 * increasing), BUFFER_TOO_SMALL. Nothing past *out_len is written. */
int lk_batch_encode(const lk_batch_params *params, const lk_records_in *records,
                    uint8_t *out, size_t out_capacity, size_t *out_len, lk_error *err);

/* Encodes only the records section (for callers that compress it afterwards). */
int lk_records_encode(const lk_records_in *records, int64_t base_timestamp,
                      uint8_t *out, size_t out_capacity, size_t *out_len, lk_error *err);

/* Frames an already-encoded (possibly compressed) records section as a batch: writes
 * the 61-byte header followed by a copy of the section, then the CRC. The caller gives
 * the values it computed while encoding: count, last offset delta, base and max
 * timestamps (params->base_timestamp is the header's baseTimestamp). */
int lk_batch_frame(const lk_batch_params *params, int32_t record_count,
                   int32_t last_offset_delta, int64_t max_timestamp,
                   const uint8_t *records, size_t records_len,
                   uint8_t *out, size_t out_capacity, size_t *out_len, lk_error *err);

/* Encodes a control batch (attributes: control + transactional) holding one end-txn
 * marker: key = version 0 | type, value = version 0 | coordinator_epoch. The batch is
 * LK_CONTROL_BATCH_SIZE (78) bytes long. Errors: ARGUMENT, BUFFER_TOO_SMALL. */
int lk_control_batch_encode(const lk_batch_params *params, int16_t control_type,
                            int32_t coordinator_epoch, int64_t timestamp,
                            uint8_t *out, size_t out_capacity, size_t *out_len, lk_error *err);

/* Parses a control record's key (and value, for ABORT/COMMIT markers). Unknown types
 * are returned as read (callers ignore them, as Kafka does); *coordinator_epoch is -1
 * when the type carries no end-txn value. Errors: CORRUPT_RECORD. */
int lk_control_record_parse(const uint8_t *key, int32_t key_len, const uint8_t *value,
                            int32_t value_len, int16_t *control_type,
                            int32_t *coordinator_epoch, lk_error *err);

/* Rewrites the CRC of a batch after the caller changed CRC-covered fields (e.g. the
 * max timestamp for LogAppendTime). Validates lengths first. */
int lk_batch_update_crc(uint8_t *buf, size_t len, lk_error *err);

/* ----------------------------------------------------------------------------
 * Columnar decoding: the records of a run of batches, written into caller-owned
 * columns (one array per field), for consumers that read many records per call.
 * ------------------------------------------------------------------------- */

/* Output columns. Row i describes the i-th record written; positions are byte offsets
 * (int32) relative to the buffer given to lk_decode_columns, lengths are -1 for null.
 * Every pointer must hold `capacity` elements (or be NULL when capacity is 0). The caller
 * owns the arrays; lk_decode_columns writes only rows below capacity, and rows from
 * result->records on are scratch (a rejected batch's rows may have been written there). */
typedef struct {
    int64_t *offsets;        /* absolute offset: baseOffset + offsetDelta */
    int64_t *timestamps;     /* baseTimestamp + timestampDelta; maxTimestamp for a
                                LogAppendTime batch */
    int32_t *key_pos;
    int32_t *key_len;
    int32_t *value_pos;
    int32_t *value_len;
    int32_t *headers_pos;    /* first byte after the headerCount varint */
    int32_t *headers_len;    /* bytes of all headers of the record */
    int32_t *headers_count;
    size_t capacity;         /* rows each array holds */
} lk_columns;

/* Bytes per row when the nine columns share one block (see lk_columns_layout): two
 * int64 columns and seven int32 columns, 16 + 28. The int64 columns come first, so every
 * column of a block aligned to 8 is aligned for its type whatever the capacity. */
enum lk_columns_constants {
    LK_COLUMNS_ROW_BYTES = 44
};

/* Why lk_decode_columns stopped. position and next_offset say where to go on. */
enum lk_columns_stop {
    LK_COLUMNS_END = 0,        /* the buffer was consumed exactly, ending on a batch boundary */
    LK_COLUMNS_FULL = 1,       /* capacity rows are written and the batch at position has
                                  records the columns had no room for (or, judged from its
                                  header, may have): call again with buf + position and
                                  min_offset = next_offset, which may lie inside that batch */
    LK_COLUMNS_COMPRESSED = 2, /* the batch at position is compressed (CRC checked, if asked):
                                  decompress it, decode it, then continue after it */
    LK_COLUMNS_LIMIT = 3,      /* the batch at position holds offsets >= max_offset; its
                                  records below max_offset are written */
    LK_COLUMNS_TORN = 4,       /* the buffer ends inside the batch at position (a read cut at a
                                  byte limit): not an error */
    LK_COLUMNS_CORRUPT = 5     /* the batch at position failed validation; see the return code */
};

typedef struct {
    int64_t records;     /* rows written */
    int64_t position;    /* where decoding stopped, relative to buf: len for END, else the
                            start of the batch named by stop */
    int64_t next_offset; /* the offset to read next: min_offset, raised past every record
                            written and every batch consumed (control batches included); for
                            LIMIT at least max_offset */
    int32_t stop;        /* an lk_columns_stop */
} lk_columns_result;

/* Decodes the records of consecutive batches from buf[0], in order, into out.
 *
 * Each batch is validated before any of its rows count: the header checks of
 * lk_batch_parse_header (no batch size limit but INT32_MAX), the CRC when flags has
 * LK_VALIDATE_CRC, then (uncompressed batches) every record, as lk_batch_decode does
 * (LK_VALIDATE_RECORDS is implied; LK_VALIDATE_CONTIGUOUS is honoured). A batch's last
 * offset must not overflow int64 and its lastOffsetDelta must be >= 0. Offsets are not
 * compared across batches.
 *
 * Rows: records with offset < min_offset are skipped; a record with offset >= max_offset
 * (exclusive; INT64_MAX for no limit) is not written, and a batch whose last offset is >=
 * max_offset (and >= min_offset) ends decoding with LIMIT. Control batches write no rows,
 * but their offsets advance next_offset. A compressed batch entirely below min_offset is
 * skipped (CRC checked, records not), one entirely at or above max_offset is a LIMIT, any
 * other stops decoding with COMPRESSED (an empty compressed batch is skipped like an
 * uncompressed one). FULL: a record in [min_offset, max_offset) found no free row, or
 * the columns were already full at a batch whose header says it holds records reaching
 * into that range (an uncompressed data batch with room for a record after its header; it
 * is not validated then). Without such a
 * batch, full columns do not stop decoding: control batches, batches below min_offset, a
 * LIMIT, a COMPRESSED, a TORN or a CORRUPT batch are still found.
 *
 * Returns LK_OK for every stop but CORRUPT. For CORRUPT it returns the validator's code
 * (BAD_LENGTH, BAD_MAGIC, CRC, CORRUPT_RECORD) and fills *err with a position relative to
 * buf; the rows of batches before the bad one stay in the columns and result->records
 * counts them (rows of the bad batch are not counted), so a caller can hand out the good
 * prefix and report the error afterwards.
 * Errors: ARGUMENT (buf NULL with len > 0, len > INT32_MAX: positions are int32, out or
 * result NULL, a NULL column with capacity > 0, unknown flags); *result is then zeroed
 * but for next_offset = min_offset.
 * O(bytes decoded): one CRC pass and one record walk per batch (native/tests/test_columns
 * --bench measures it). buf and the columns are borrowed for the call, nothing is kept and
 * nothing is allocated; buf is only read. */
int lk_decode_columns(const uint8_t *buf, size_t len, int64_t min_offset, int64_t max_offset,
                      int flags, lk_columns *out, lk_columns_result *result, lk_error *err);

/* Points the nine columns of *out into one caller-owned block of capacity *
 * LK_COLUMNS_ROW_BYTES bytes, 8-byte aligned: offsets, timestamps, then key_pos, key_len,
 * value_pos, value_len, headers_pos, headers_len, headers_count, each capacity rows long,
 * in that order; sets out->capacity (capacity 0: every pointer NULL). One call instead of
 * nine pointer casts for callers that pay per field set (Python). The block stays the
 * caller's; nothing is kept. O(1). Errors: ARGUMENT (NULL out, NULL block with capacity
 * > 0, a block not 8-byte aligned, capacity past SIZE_MAX / LK_COLUMNS_ROW_BYTES). */
int lk_columns_layout(lk_columns *out, void *block, size_t capacity);

/* The most rows lk_decode_columns could write for buf (no min/max offset, unlimited
 * capacity): recordsCount summed over the whole uncompressed data batches at its start,
 * each count capped at what its records section can hold (7 bytes a record), stopping
 * at the first header that does not parse. Lets a caller size the columns exactly
 * before decoding. A walk over batch headers only (no CRC, no records): O(batches).
 * Returns 0 for NULL buf. */
int64_t lk_columns_bound(const uint8_t *buf, size_t len);

/* lk_decode_columns' out-parameters in one allocation (one ffi.new per thread rather
 * than three per call on the consumer's hot path). */
typedef struct {
    lk_columns columns;
    lk_columns_result result;
    lk_error err;
} lk_columns_scratch;

/* ----------------------------------------------------------------------------
 * Log scan: walk a buffer of consecutive batches (a segment, or a produce request's
 * record set) and find where the valid prefix ends.
 * ------------------------------------------------------------------------- */
enum lk_scan_stop {
    LK_SCAN_END = 0,        /* reached the end of the buffer exactly on a batch boundary */
    LK_SCAN_ZEROS = 1,      /* the rest of the buffer is zero bytes (preallocated tail) */
    LK_SCAN_TORN = 2,       /* the last batch is cut short by the end of the buffer */
    LK_SCAN_CORRUPT = 3,    /* a batch fails validation (length, magic, CRC, records) */
    LK_SCAN_OFFSET = 4      /* a batch's base offset goes backwards */
};

typedef struct {
    int64_t valid_bytes;        /* end of the valid prefix (relative to the buffer) */
    int64_t batches;            /* complete valid batches in the prefix */
    int64_t records;            /* sum of their recordsCount */
    int64_t first_offset;       /* base offset of the first valid batch, -1 if none */
    int64_t next_offset;        /* last offset of the last valid batch + 1, or min_offset */
    int64_t max_timestamp;      /* largest maxTimestamp, -1 if none */
    int64_t offset_of_max_timestamp; /* last offset of the batch that carried it */
    int32_t stop_reason;        /* an lk_scan_stop */
    lk_error stop_error;        /* why the batch at valid_bytes was rejected; code is
                                   LK_OK for END and ZEROS */
} lk_scan_result;

/* Scans buf[start:len). A batch is accepted if lk_batch_validate(flags) accepts it
 * and its base offset >= the previous batch's next offset (and >= min_offset); with
 * LK_SCAN_DENSE, equal to it. Never
 * fails on bad data: bad data only ends the prefix. O(bytes scanned).
 * Errors: ARGUMENT only. */
int lk_log_scan(const uint8_t *buf, size_t len, size_t start, int64_t min_offset,
                uint32_t max_batch_size, int flags, lk_scan_result *out);

/* ----------------------------------------------------------------------------
 * Sparse indexes, byte for byte Kafka's:
 *   .index      8-byte entries: relativeOffset int32 BE | position int32 BE
 *   .timeindex 12-byte entries: timestamp int64 BE | relativeOffset int32 BE
 * Both are sorted; lookups are binary searches, O(log entries).
 * ------------------------------------------------------------------------- */

/* Greatest entry with relativeOffset <= target_relative. *slot is its index, or -1 if
 * every entry is larger (or there are none): start from position 0. */
int lk_offset_index_lookup(const uint8_t *index, size_t entries, int32_t target_relative,
                           int64_t *slot, int32_t *relative_offset, int32_t *position);

/* Greatest entry with timestamp <= target. *slot = -1 when none. */
int lk_time_index_lookup(const uint8_t *index, size_t entries, int64_t target,
                         int64_t *slot, int64_t *timestamp, int32_t *relative_offset);

/* Length of the longest valid prefix of an index: offsets strictly increasing (the
 * first entry may be 0), positions increasing and < log_size; for the time index
 * timestamps non-decreasing and offsets non-decreasing. Trailing zero entries of a
 * preallocated file end the prefix. O(entries). */
size_t lk_offset_index_valid_entries(const uint8_t *index, size_t entries, int64_t log_size);
size_t lk_time_index_valid_entries(const uint8_t *index, size_t entries, int32_t max_relative);

/* ----------------------------------------------------------------------------
 * Segments: one .log file with its .index and .timeindex, memory mapped.
 *
 * A writable segment reserves log_capacity bytes of address space once and maps the
 * file across all of it; the file itself grows with fallocate in steps of grow_step
 * bytes, so an append never remaps, pointers from lk_segment_data stay valid until
 * the map is released, and a full disk is an LK_ERR_NO_SPACE from fallocate instead
 * of a SIGBUS on a page fault. Bytes past the logical size are zero until written.
 * ------------------------------------------------------------------------- */
typedef struct lk_segment lk_segment;

enum lk_segment_flags {
    LK_SEGMENT_WRITABLE = 1,     /* open for appends (create files that do not exist) */
    LK_SEGMENT_CREATE = 2,       /* the files must not exist yet */
    LK_SEGMENT_RESET_INDEXES = 4 /* writable only: empty both index files at open (after
                                    LK_ERR_INDEX_CORRUPT); then recover or rebuild */
};

typedef struct {
    int64_t base_offset;
    uint64_t log_capacity;         /* writable: most bytes the .log may hold (>= segment.bytes + one max batch) */
    uint64_t index_capacity;       /* writable: bytes reserved for .index (Kafka: segment.index.bytes) */
    uint64_t grow_step;            /* writable: fallocate step for the .log, e.g. 8 MiB */
    uint32_t index_interval_bytes; /* add an index entry after this many bytes (Kafka: 4096) */
    uint32_t max_batch_size;       /* largest accepted batch (0: INT32_MAX) */
    int32_t flags;                 /* lk_segment_flags */
} lk_segment_config;

typedef struct {
    int64_t base_offset;
    int64_t size;                  /* logical bytes of valid batches */
    int64_t flushed_size;          /* bytes known durable (msync + fdatasync done) */
    int64_t next_offset;           /* last offset + 1; base_offset when empty */
    int64_t max_timestamp;         /* -1 when empty */
    int64_t offset_of_max_timestamp;
    int64_t index_entries;
    int64_t time_index_entries;
    int64_t log_capacity;
    int32_t writable;
    int32_t needs_recovery;        /* open found bytes after the last batch that are not a
                                      batch (nor zeros): call lk_segment_recover */
} lk_segment_info;

/* Opens the segment. index_path/time_index_path may be NULL for no index of that
 * kind. Open does not validate the log (lk_segment_recover does): it derives the next
 * offset and max timestamp from a header walk starting at the last index entry. The
 * logical size is the .log file size, less a tail of zero bytes after the last batch
 * (fallocate's, left by a crash); other bytes after the last batch set needs_recovery.
 * A writable open checks each index file is a valid prefix of entries followed only by
 * zeros; entries pointing past the log are zeroed. A read-only segment maps its indexes
 * on first use (a lookup, or open itself when it must check the last time entry) and
 * uses their valid prefix. The .index and .timeindex live in the .log's directory: a
 * handle that created any of the files fsyncs that directory at its first flush.
 * Errors: ARGUMENT, IO (errno), NO_SPACE, NO_MEMORY, INDEX_CORRUPT (an index file is not
 * an index: reopen with LK_SEGMENT_RESET_INDEXES, then recover or rebuild). The handle
 * is written only on success. */
int lk_segment_open(const char *log_path, const char *index_path, const char *time_index_path,
                    const lk_segment_config *config, lk_segment **out);

/* Appends a record set (one or more complete, already validated batches) at the
 * tail, giving the batches consecutive offsets from base_offset (each batch's
 * baseOffset field is patched in the segment; the caller's buffer is not changed).
 * Adds index entries per index_interval_bytes. *position = where it was written,
 * *next_offset = last offset written + 1. O(len).
 * max_batch_size limits appends only, never batches already stored.
 * Errors: ARGUMENT, BAD_LENGTH/TRUNCATED/BAD_MAGIC (not a whole record set), OFFSET_ORDER
 * (base_offset < next offset, or relative offsets past int32), SEGMENT_FULL (roll;
 * nothing written), NO_SPACE / IO (nothing appended: the logical size is unchanged),
 * CLOSED (sealed), NEEDS_RECOVERY (open found unrecognised bytes after the last batch). */
int lk_segment_append(lk_segment *seg, const uint8_t *record_set, size_t len,
                      int64_t base_offset, int64_t *position, int64_t *next_offset);

/* Appends one record as a new batch, encoded straight into the map at the tail (no
 * intermediate buffer): the producer's per-record path. The batch is RecordBatch v2 with
 * baseOffset = offset, one record (offsetDelta 0, timestampDelta 0), baseTimestamp =
 * maxTimestamp = timestamp, producerId -1, producerEpoch -1, baseSequence -1, the given
 * partition_leader_epoch and attributes, and its CRC. The bytes are exactly what
 * lk_batch_encode writes for this record with those params, and the index entries and
 * segment state are exactly what lk_segment_append of those bytes at offset would make.
 *
 * key/value: NULL with length -1 is null (any pointer with -1 is null); the pointer may be
 * NULL with length 0. headers: the encoded headers section of the record, without its
 * count: headers_count times { keyLength varint >= 0 | key | valueLength varint >= -1 |
 * value }, exactly headers_len bytes (NULL, 0, 0 for none). attributes may hold only
 * LK_ATTR_LOG_APPEND_TIME (no compression, and no transactional, control or delete-horizon
 * bits: those need producer ids or a control record this call does not write).
 * All pointers are borrowed for the call.
 *
 * Returns the segment's new size, i.e. the end of the batch written (> 0; the batch
 * starts at the size before the call), or a negative lk_status, checked
 * in this order: ARGUMENT (seg NULL; a length below -1 or a NULL pointer with a positive
 * length; negative headers_count or headers_len; a headers section that does not hold
 * exactly headers_count headers; attributes other than above), CLOSED, NEEDS_RECOVERY,
 * OFFSET_ORDER (offset < next offset), SEGMENT_FULL (the batch would pass the log
 * capacity), BAD_LENGTH (the batch is larger than the segment's max_batch_size, or than
 * INT32_MAX), OFFSET_ORDER (offset more than INT32_MAX past the segment's base offset),
 * SEGMENT_FULL (an index is full), NO_SPACE / IO (errno set). On any failure no byte of
 * the batch is written and the segment's state is unchanged (a failed fallocate may leave
 * the file longer, with zeros past the logical size, as for lk_segment_append).
 * O(record size): one CRC pass over the batch; no system call unless the file must grow
 * (one fallocate per grow_step bytes), but the first write to each new 4 KiB page of the
 * map is a page fault, which costs more than the encoding for small records
 * (native/tests/test_append_record --bench measures both).
 * Not durable until lk_segment_flush. */
int64_t lk_segment_append_record(lk_segment *seg, int64_t offset, int64_t timestamp,
                                 int16_t attributes, int32_t partition_leader_epoch,
                                 const char *key, int32_t key_len, const char *value,
                                 int32_t value_len, const char *headers, int32_t headers_count,
                                 int32_t headers_len);

/* lk_segment_append_record for an idempotent producer's record: the batch carries
 * producer_id (>= 0), producer_epoch (>= 0) and base_sequence (>= 0), and attributes may
 * also have LK_ATTR_TRANSACTIONAL. Checking the sequence is the caller's (the partition's
 * producer state). Same results, same costs; ARGUMENT also for producer fields out of
 * range (and lk_segment_append_record refuses LK_ATTR_TRANSACTIONAL). */
int64_t lk_segment_append_producer_record(lk_segment *seg, int64_t offset, int64_t timestamp,
                                          int16_t attributes, int32_t partition_leader_epoch,
                                          int64_t producer_id, int16_t producer_epoch,
                                          int32_t base_sequence, const char *key,
                                          int32_t key_len, const char *value, int32_t value_len,
                                          const char *headers, int32_t headers_count,
                                          int32_t headers_len);

/* Makes everything appended so far durable: msync of the dirty range of the log and
 * indexes, then fdatasync, in the order log, time index, offset index; the first flush
 * after this handle created a file also fsyncs the directory. O(dirty bytes).
 * Errors: IO. */
int lk_segment_flush(lk_segment *seg);

/* Re-validates every batch from position 0 (CRC and header; records as flags say),
 * truncates the logical size and the file to the valid prefix, rebuilds both indexes
 * from scratch. The result says what was dropped and why. O(segment size). Call it after
 * any unclean shutdown: open trusts the indexes, as Kafka does after a clean one.
 * Errors: IO, NO_SPACE, NO_MEMORY, CLOSED. */
int lk_segment_recover(lk_segment *seg, int flags, lk_scan_result *out);

/* Rebuilds both indexes from the log without validating CRCs (for a missing or
 * corrupt index on a segment below the recovery point). Works on read-only and sealed
 * handles too (the files are rewritten with write(2) and fdatasync).
 * Errors: IO, NO_SPACE, NO_MEMORY. */
int lk_segment_rebuild_indexes(lk_segment *seg);

/* Trims the .log and index files to their logical sizes, flushes, and makes the handle
 * read-only (further appends give LK_ERR_CLOSED). Idempotent. */
int lk_segment_seal(lk_segment *seg);

/* Truncates the segment (and its file) to the batches with offsets < offset (drops whole
 * batches), and the indexes with them.
 * Errors: IO, CLOSED, NEEDS_RECOVERY, and header errors (TRUNCATED, BAD_LENGTH,
 * OFFSET_ORDER) when the log before the cut is damaged: recover first. */
int lk_segment_truncate_to_offset(lk_segment *seg, int64_t offset);

/* Position of the first batch whose last offset >= target, for reads. *base_offset
 * is that batch's base offset. O(log index) + a scan of at most index_interval_bytes
 * of batch headers. Errors: NOT_FOUND (target >= next offset), ARGUMENT (target < base),
 * IO / NO_MEMORY (mapping a read-only segment's index on first use), header errors on
 * an unrecovered damaged log. */
int lk_segment_find_offset(lk_segment *seg, int64_t target, int64_t *position,
                           int64_t *base_offset);

/* Position of the first batch whose maxTimestamp >= target and that batch's base
 * offset. Errors: NOT_FOUND (no such batch in this segment). */
int lk_segment_find_timestamp(lk_segment *seg, int64_t target, int64_t *position,
                              int64_t *base_offset);

/* State of the segment. */
int lk_segment_get_info(const lk_segment *seg, lk_segment_info *out);

/* The mapped .log bytes. Read only below the current lk_segment_info.size, and only while
 * nothing can shrink the file: recovery, truncation and seal cut it to the logical size,
 * and a page past the end of the file faults (SIGBUS) when touched. The pointer stays
 * valid until lk_segment_close. Callers serialise reads with
 * the calls that shrink the file; logkernel's Python side copies out under that rule. */
const uint8_t *lk_segment_data(const lk_segment *seg);

/* Size in bytes of the address range the .log map covers. */
uint64_t lk_segment_map_length(const lk_segment *seg);

/* Closes the files, releases the maps and frees the handle. A writable segment is
 * sealed first (trimmed, not flushed: call lk_segment_flush when durability is wanted).
 * Pointers from lk_segment_data are invalid afterwards. Errors: IO (the handle is freed
 * all the same). */
int lk_segment_close(lk_segment *seg);

/* ----------------------------------------------------------------------------
 * Transactions: which batches aborted transactions wrote, and dropping them from a read
 * (native/txn.c).
 *
 * A transaction's data batches are transactional (attribute bit 4) and carry its
 * producer's id; a control batch holding one COMMIT or ABORT marker ends it. An aborted
 * transaction is known by the triple below (Kafka's AbortedTxn, as the .txnindex and
 * FetchResponse give it): every transactional data batch of producer_id whose base offset
 * lies in [first_offset, last_offset] is aborted, last_offset being the ABORT marker's
 * offset. Control batches are never aborted data, and neither is a batch that is not
 * transactional. So the rule needs no state: each batch is judged on its own header.
 * ------------------------------------------------------------------------- */
typedef struct lk_aborted_txn {
    int64_t producer_id;
    int64_t first_offset;
    int64_t last_offset;   /* the ABORT marker's offset */
} lk_aborted_txn;

/* Checks a list of aborted transactions as the functions below take it: sorted by
 * (producer_id, first_offset), each with first_offset <= last_offset, and one producer's
 * transactions apart (each first_offset above the producer's previous last_offset: a
 * producer has one transaction open at a time). logkernel/_binding.py sorts and merges
 * the lists it is given into this shape. O(count).
 * Returns LK_OK, or LK_ERR_ARGUMENT (also for NULL with count > 0). */
int lk_aborted_txns_check(const lk_aborted_txn *aborted, size_t count);

/* 1 if the batch with this header is aborted data: a transactional data batch (not
 * control) with a producer id, whose base offset lies in one of the producer's aborted
 * transactions; else 0. aborted must pass lk_aborted_txns_check (not checked here: this
 * is the per-batch test of the loops below). O(log count); O(1) for a batch that is not
 * transactional or an empty list. */
int lk_batch_aborted(const lk_batch_header *header, const lk_aborted_txn *aborted,
                     size_t count);

/* Removes every aborted batch (lk_batch_aborted) from the consecutive batches at buf, in
 * place: the batches kept move down, in order and unchanged, so buf[0:result) holds them;
 * bytes of buf past the result are left over. For reads with isolation_level =
 * read_committed, before their records are decoded.
 *
 * Damaged input is never an error here and is never lost: the walk stops at the first
 * batch whose header does not parse (lk_batch_parse_header: a torn tail, a bad length or
 * magic), and at the first aborted-looking batch whose CRC does not match (its header
 * fields may be garbage); that batch and everything after it are kept as they are, for
 * the caller's validation to report. A batch is dropped only when its CRC is good.
 * Batches kept are not validated (the caller's decoding does that).
 *
 * Returns the new length (0..len), or LK_ERR_ARGUMENT (buf NULL with len > 0, len past
 * INT64_MAX, aborted failing lk_aborted_txns_check) with buf untouched.
 * O(1) when count is 0; else a walk over batch headers (O(batches)), a binary search per
 * transactional data batch, a CRC pass over each batch dropped, and one move of the
 * bytes after the first batch dropped. Nothing is allocated; buf is borrowed. */
int64_t lk_drop_aborted(uint8_t *buf, size_t len, const lk_aborted_txn *aborted,
                        size_t count);

/* ----------------------------------------------------------------------------
 * Log cleaner (compaction): XXH64, the offset map, and the cleaner's passes over whole
 * batches: the map pass records the latest offset of every key in the dirty section; the
 * producer pass the last data batch of every producer id; the filter pass copies batches
 * keeping only records no later record of the same key supersedes (native/cleaner.c).
 *
 * Transactions, as Kafka's LogCleaner treats them: the caller never cleans at or past the
 * last stable offset (its stop_offset and map_end stay below it); aborted transactional
 * batches (lk_batch_aborted, with the aborted transactions of the range) put no key in the
 * map and lose every record in the filter pass, whatever their keys; control batches
 * (markers) are kept; and the last data batch of each producer id in the range cleaned is
 * kept even when it loses every record, as a header without records (recordsCount 0, the
 * same lastOffsetDelta and producer fields), so that producer state can be rebuilt from
 * the log.
 * ------------------------------------------------------------------------- */

/* XXH64 of data[0:len) under seed (xxHash's 64-bit hash). O(len); cannot fail. */
uint64_t lk_xxh64(const uint8_t *data, size_t len, uint64_t seed);

enum lk_offset_map_constants {
    LK_OFFSET_MAP_ENTRY_BYTES = 24  /* 128 bits of key hash + the offset */
};

/* Key hash -> latest offset, in caller-owned memory (nothing is allocated). Linear
 * probing. The table starts small and doubles into unused memory beside it, so a map of
 * few keys stays in cache; once it cannot double it fills to the load factor. At most
 * about two thirds of the memory holds the table then, unless it was sized whole at
 * init. No removal, only clear. */
typedef struct {
    uint8_t *memory;        /* the caller's memory, 8-byte aligned */
    uint64_t memory_slots;  /* bytes / 24 */
    double load_factor;
    uint8_t *slots;         /* the table: somewhere in memory */
    uint64_t capacity;      /* its slots */
    uint64_t limit;         /* keys it takes before growing (or being full) */
    uint64_t entries;       /* keys in it */
    uint64_t lookups;       /* gets, for statistics */
    uint64_t grown;         /* doublings */
} lk_offset_map;

/* Points the map at memory (bytes long) with a table sized for initial_keys (the whole
 * memory when that is past a third of it), zeroed here. Errors: ARGUMENT (NULL map,
 * memory not 8-byte aligned, load_factor not in (0, 1]). */
int lk_offset_map_init(lk_offset_map *map, void *memory, size_t bytes, double load_factor,
                       size_t initial_keys);

/* Empties the map (zeroes its slots if any are used). O(capacity). */
void lk_offset_map_clear(lk_offset_map *map);

/* Records offset as the latest of key. Errors: BUFFER_TOO_SMALL (the map is full and the
 * key is new: nothing changed), ARGUMENT. */
int lk_offset_map_put(lk_offset_map *map, const uint8_t *key, size_t key_len, int64_t offset);

/* The latest offset recorded for key, or -1. */
int64_t lk_offset_map_get(lk_offset_map *map, const uint8_t *key, size_t key_len);

/* Why a pass stopped before the end of its buffer. */
enum lk_clean_stop {
    LK_CLEAN_END = 0,        /* every whole batch was consumed; a batch cut by the end of
                                the buffer starts at position (read on from there) */
    LK_CLEAN_COMPRESSED = 1, /* the data batch at position is compressed: decompress it into
                                an equivalent uncompressed batch, pass that, go on after it */
    LK_CLEAN_FULL = 2,       /* map pass: the map is full (next_offset is the first offset not
                                recorded); filter pass: the output has no room for the batch
                                at position */
    LK_CLEAN_LIMIT = 3       /* map pass: the batch at position reaches stop_offset */
};

typedef struct {
    int64_t position;    /* where the pass stopped, relative to buf (a batch start) */
    int64_t next_offset; /* the first offset not yet examined */
    int64_t records;     /* keyed records recorded; added to, never reset */
    int64_t last_offset; /* last offset of the last batch seen (-1 at first): each batch
                            must start above it, across calls */
    int32_t stop;        /* an lk_clean_stop */
} lk_map_result;

/* Map pass over consecutive batches at buf: every keyed record with offset in
 * [from_offset, stop_offset) is recorded as its key's latest. Control batches, aborted
 * batches (lk_batch_aborted with aborted[0:aborted_count), which must pass
 * lk_aborted_txns_check; NULL, 0 for none) and keyless records are skipped; an aborted
 * batch is skipped even when compressed (it is never a COMPRESSED stop). Each batch's header is checked and its offsets must lie above the
 * last offset of the batch before it (a damaged header would otherwise put keys at wrong
 * offsets: CORRUPT_RECORD); each batch whose records it reads (not those wholly below
 * from_offset) has its CRC checked and its records walked.
 * Returns LK_OK for every stop; a bad batch returns the validator's code (CRC,
 * CORRUPT_RECORD, BAD_LENGTH, BAD_MAGIC) with err->position relative to buf. The caller
 * zeroes *result once per pass. O(bytes). */
int lk_cleaner_map(lk_offset_map *map, const uint8_t *buf, size_t len, int64_t from_offset,
                   int64_t stop_offset, const lk_aborted_txn *aborted, size_t aborted_count,
                   lk_map_result *result, lk_error *err);

/* Producer pass over consecutive batches at buf: for every data batch (not control) with a
 * producer id (>= 0), records in producers the last offset of the batch (baseOffset +
 * lastOffsetDelta) as the latest of the key "the producer id as 8 big-endian bytes"; so
 * after a pass over a range, each producer id maps to the last offset of its last data
 * batch there (params->producers of the filter pass). Batch headers only: no CRC, no
 * records (the filter pass checks those). Stops: END, as for the map pass (a batch cut by
 * the end of buf starts at position); FULL (producers is full and the batch at position
 * has a new producer id: give it more memory and walk the range again).
 * result->records counts the batches recorded, next_offset is the last offset + 1 of the
 * last batch walked, and last_offset is as for the map pass (each batch must start above
 * it). The caller zeroes *result once per pass, with last_offset = -1.
 * Errors: BAD_LENGTH, BAD_MAGIC (a header that does not parse), CORRUPT_RECORD (offsets
 * out of range, or not above the batch before), ARGUMENT; err->position is relative to
 * buf. O(batches). */
int lk_cleaner_producers(lk_offset_map *producers, const uint8_t *buf, size_t len,
                         lk_map_result *result, lk_error *err);

typedef struct {
    int64_t now_ms;          /* tombstones in a batch whose delete horizon is <= this go */
    int64_t new_horizon_ms;  /* stamped on batches that keep tombstones and have no horizon:
                                now + delete.retention.ms */
    int64_t map_end;         /* the first offset the map pass did not record: records at or
                                past it are kept as they are (the map knows nothing of their
                                keys' older records, so nothing of theirs may go yet), and
                                so is every batch whose base offset is at or past it */
    const lk_aborted_txn *aborted; /* aborted transactions of the range (as lk_aborted_txns_check
                                wants them): batches below map_end they wrote lose every
                                record. NULL with aborted_count 0: none */
    size_t aborted_count;
    lk_offset_map *producers;/* the producer pass's map of the whole range cleaned (every
                                batch the filter pass reads, and may be more): a data batch
                                below map_end with a producer id that is its producer's last
                                is kept, as a header without records if it loses them all,
                                and an empty one that is not its producer's last goes.
                                NULL: no producer state is kept (empty batches are copied,
                                batches left empty go) */
} lk_clean_params;

typedef struct {
    int64_t position;           /* input consumed (whole batches) */
    int64_t written;            /* output bytes written by this call */
    int32_t stop;               /* END, COMPRESSED or FULL */
    /* Totals, added to by every call (the caller zeroes them once per cleaning): */
    int64_t batches_read;
    int64_t batches_kept;
    int64_t records_read;
    int64_t records_kept;
    int64_t tombstones_dropped;
    int64_t keyless_dropped;
    int64_t next_horizon_ms;    /* earliest delete horizon of a kept batch holding
                                   tombstones; the caller starts it at INT64_MAX */
    int64_t last_offset;        /* as in lk_map_result; the caller starts it at -1 */
    int64_t aborted_dropped;    /* records of aborted transactions removed */
    int64_t empty_batches_kept; /* producers' last batches kept without records (written
                                   empty here, or copied empty) */
} lk_clean_result;

/* Filter pass: copies the batches at in to out, each keeping the records whose key has no
 * later offset in the map, minus tombstones whose batch's delete horizon has passed, minus
 * keyless records; every record at or past params->map_end is kept whatever it is. A
 * batch left empty is dropped; one unchanged is copied byte for byte; any other is
 * rewritten with the same base offset, lastOffsetDelta and producer fields, the largest
 * kept timestamp as max timestamp (LogAppendTime batches keep theirs), a base timestamp
 * that is the delete horizon (attribute bit 6) when it keeps tombstones below map_end
 * or else its first kept record's timestamp, and a new CRC. Control batches are copied.
 *
 * Transactions (batches whose base offset is below map_end): an aborted batch
 * (params->aborted) loses every record, compressed or not (never a COMPRESSED stop). With
 * params->producers, a data batch with a producer id whose last offset is the one the
 * map holds for its producer is the producer's last: left empty, it is written as a
 * header without records: the same header but recordsCount 0, batchLength 49, no
 * compression or delete-horizon bits, baseTimestamp -1 and a new CRC (Kafka's
 * writeEmptyHeader); an empty batch that is not its producer's last is dropped. Other
 * empty batches are copied.
 *
 * keep is scratch of one byte per record of the largest batch.
 * Errors: as lk_cleaner_map, and ARGUMENT when params->aborted fails
 * lk_aborted_txns_check; BUFFER_TOO_SMALL when the first batch does not fit out
 * (size + 10 bytes a record) or keep. O(bytes). */
int lk_cleaner_filter(lk_offset_map *map, const uint8_t *in, size_t in_len,
                      const lk_clean_params *params, uint8_t *out, size_t out_capacity,
                      uint8_t *keep, size_t keep_capacity, lk_clean_result *result,
                      lk_error *err);

/* For appends to compacted topics, which must carry keys: the first data record without
 * a key among the batches at buf (headers parsed, records walked, CRC not checked).
 * *position is the batch's start and *record_index the record's index in it, or -1, -1
 * when every record has a key; *record_index is -2 when the batch at *position is
 * compressed (decompress it and ask again). Errors: as lk_batch_parse_header,
 * CORRUPT_RECORD. */
int lk_records_first_keyless(const uint8_t *buf, size_t len, int64_t *position,
                             int32_t *record_index, lk_error *err);

#endif /* LOGKERNEL_H */
