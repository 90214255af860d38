/*
 * driver.c - a standalone mutation driver for fuzz_decoders.c, for machines without
 * libFuzzer (it needs clang; gcc has its sanitizers but no fuzzing engine).
 *
 *   fuzz_decoders [-n INPUTS] [-t SECONDS] [-s SEED] [-q] [-w DIR] [FILE...]
 *
 * With FILE arguments it runs each file once (a saved failure, or a libFuzzer corpus)
 * and exits; native/fuzz/regressions/ holds inputs that once failed (each named for what
 * it caught), which `make test-asan` replays. Otherwise it builds seed inputs with the codec itself (single batches of
 * every shape, transactional logs with markers, compacted and tombstoned batches, a
 * compressed-flagged batch, an empty producer header, zero and torn tails, index
 * entries), then runs mutants of them until INPUTS inputs (default 100,000) or SECONDS
 * (default 10) are done, whichever comes first. -w DIR writes the seeds there as files
 * (a starting corpus for libFuzzer) and exits. -q prints one line, not one per file.
 *
 * Mutations: bit flips; bytes and 2/4/8-byte fields set to edge values, anywhere or at a
 * batch header's fields; insertions, deletions, duplicated runs; truncation; zeros at the
 * tail; splices of two inputs; whole batches duplicated, swapped, or given a base offset
 * that goes backwards. After mutating, three times in four the CRC of every batch whose
 * header still parses is recomputed, so the damage reaches the record decoder instead of
 * stopping at the CRC check. A mutant whose first batch still validates joins the pool
 * of inputs to mutate (a cheap stand-in for coverage feedback: it keeps the inputs that
 * got past the checks).
 *
 * When an input fails (an oracle aborts, or a sanitizer reports), the driver writes it
 * to fuzz-decoders-failure.bin (in $FUZZ_FAILURE_DIR, else the current directory) and
 * says how to replay it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "logkernel.h"

#include "fuzz.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

/* Mutants grow by insertions, splices and zero tails; past 32 KiB they are cut: every
 * decoder's work is linear in the input, and bugs show on small inputs (1 MiB inputs
 * made the run four times slower and found nothing more). POOL_LEARNED: mutants kept. */
enum { MAX_MUTANT = 32 * 1024, POOL_LEARNED = 256, MAX_SEEDS = 32 };

typedef struct {
    uint8_t *data;
    size_t len;
} input;

static input seeds[MAX_SEEDS];
static size_t seed_count;
static input learned[POOL_LEARNED];
static size_t learned_count, learned_next;

/* ---- random numbers (xorshift64*) ---- */

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint64_t next(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

static size_t below(size_t n) { return n ? (size_t)(next() % n) : 0; }

/* ---- saving the input that failed ---- */

static const uint8_t *current;
static size_t current_len;
static char failure_path[512];

static void save_current(void)
{
    if (!current)
        return;
    /* Async-signal-safe calls only: this also runs from the SIGABRT handler. */
    int fd = open(failure_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd >= 0) {
        size_t done = 0;
        while (done < current_len) {
            ssize_t n = write(fd, current + done, current_len - done);
            if (n <= 0)
                break;
            done += (size_t)n;
        }
        close(fd);
        static const char note[] = "fuzz_decoders: the failing input is in ";
        ssize_t ignored = write(2, note, sizeof note - 1);
        ignored = write(2, failure_path, strlen(failure_path));
        ignored = write(2, " (replay it: fuzz_decoders FILE)\n", 33);
        (void)ignored;
    }
    current = NULL;
}

static void on_abort(int signum)
{
    save_current();
    signal(signum, SIG_DFL);
    raise(signum);
}

/* ---- seeds, built with the codec ---- */

static void add_seed(const uint8_t *data, size_t len)
{
    if (seed_count == MAX_SEEDS)
        return;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        abort();
    memcpy(copy, data, len);
    seeds[seed_count++] = (input){copy, len};
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* Appends one encoded batch to out (capacity cap) at *len: count records, keys "k<i mod
 * key_mod>" (every null_key_every-th null), values "value-<i>" (every
 * null_value_every-th null: a tombstone), headers_each headers per record. */
static void batch(uint8_t *out, size_t cap, size_t *len, int64_t base_offset, int16_t attributes,
                  int64_t producer_id, int count, int key_mod, int null_key_every,
                  int null_value_every, int headers_each)
{
    uint8_t keys[4096], values[8192], header_data[4096];
    int32_t key_lengths[256], value_lengths[256], header_counts[256], header_lengths[1024];
    size_t kn = 0, vn = 0, hn = 0, hl = 0;
    if (count > 256)
        count = 256;
    for (int i = 0; i < count; i++) {
        if (null_key_every && i % null_key_every == 0) {
            key_lengths[i] = -1;
        } else {
            key_lengths[i] = sprintf((char *)keys + kn, "k%d", i % key_mod);
            kn += (size_t)key_lengths[i];
        }
        if (null_value_every && i % null_value_every == 0) {
            value_lengths[i] = -1;
        } else {
            value_lengths[i] = sprintf((char *)values + vn, "value-%d", i);
            vn += (size_t)value_lengths[i];
        }
        header_counts[i] = headers_each;
        for (int j = 0; j < headers_each; j++) {
            header_lengths[hl++] = 1;
            header_data[hn++] = 'h';
            if (j % 2) {
                header_lengths[hl++] = -1;
            } else {
                header_lengths[hl++] = 2;
                header_data[hn++] = 'x';
                header_data[hn++] = (uint8_t)('0' + j);
            }
        }
    }
    lk_records_in records = {.count = count,
                             .keys = keys,
                             .keys_size = kn,
                             .key_lengths = key_lengths,
                             .values = values,
                             .values_size = vn,
                             .value_lengths = value_lengths,
                             .header_counts = headers_each ? header_counts : NULL,
                             .header_lengths = headers_each ? header_lengths : NULL,
                             .header_lengths_count = hl,
                             .header_data = header_data,
                             .header_data_size = hn};
    lk_batch_params params = {.base_offset = base_offset,
                              .attributes = attributes,
                              .base_timestamp = 1700000000000 + base_offset,
                              .producer_id = producer_id,
                              .producer_epoch = producer_id >= 0 ? 3 : -1,
                              .base_sequence = producer_id >= 0 ? (int32_t)base_offset : -1};
    size_t written = 0;
    if (lk_batch_encode(&params, &records, out + *len, cap - *len, &written, NULL) != LK_OK) {
        fprintf(stderr, "fuzz_decoders: a seed batch did not encode\n");
        abort();
    }
    *len += written;
}

static void marker(uint8_t *out, size_t cap, size_t *len, int64_t offset, int64_t producer_id,
                   int16_t type)
{
    lk_batch_params params = {.base_offset = offset, .producer_id = producer_id, .producer_epoch = 3,
                              .base_sequence = -1, .base_timestamp = 1700000000000};
    size_t written = 0;
    if (lk_control_batch_encode(&params, type, 5, 1700000000000 + offset, out + *len, cap - *len,
                                &written, NULL) != LK_OK) {
        fprintf(stderr, "fuzz_decoders: a seed marker did not encode\n");
        abort();
    }
    *len += written;
}

static void build_seeds(void)
{
    static uint8_t out[65536];
    size_t len;
    const int16_t txn = LK_ATTR_TRANSACTIONAL;

    len = 0; /* one record */
    batch(out, sizeof out, &len, 0, 0, -1, 1, 1, 0, 0, 0);
    add_seed(out, len);
    len = 0; /* null keys, null and empty values, headers with null values */
    batch(out, sizeof out, &len, 10, 0, -1, 5, 5, 2, 3, 2);
    add_seed(out, len);
    len = 0; /* a compacted topic's batch: repeated keys */
    batch(out, sizeof out, &len, 100, 0, -1, 100, 7, 0, 0, 0);
    add_seed(out, len);
    len = 0; /* tombstones under a delete horizon */
    batch(out, sizeof out, &len, 5, LK_ATTR_DELETE_HORIZON, -1, 6, 3, 0, 2, 0);
    add_seed(out, len);
    len = 0; /* LogAppendTime */
    batch(out, sizeof out, &len, 0, LK_ATTR_LOG_APPEND_TIME, -1, 3, 3, 0, 0, 1);
    add_seed(out, len);
    len = 0; /* transactions: two producers, an abort, a commit, idempotent and plain batches */
    batch(out, sizeof out, &len, 0, txn, 7, 2, 2, 0, 0, 0);
    batch(out, sizeof out, &len, 2, txn, 9, 2, 2, 0, 0, 0);
    batch(out, sizeof out, &len, 4, txn, 7, 2, 3, 0, 0, 1);
    marker(out, sizeof out, &len, 6, 7, LK_CONTROL_ABORT);
    marker(out, sizeof out, &len, 7, 9, LK_CONTROL_COMMIT);
    batch(out, sizeof out, &len, 8, 0, 11, 2, 2, 0, 0, 0);
    batch(out, sizeof out, &len, 10, 0, -1, 3, 2, 0, 0, 0);
    add_seed(out, len);
    /* the same log with zeros after it (a preallocated tail) and cut inside its last batch */
    memset(out + len, 0, 4096);
    add_seed(out, len + 4096);
    add_seed(out, len - 9);
    len = 0; /* a compressed-flagged batch (gzip bits, the section as it is: CRC valid) */
    batch(out, sizeof out, &len, 0, 0, -1, 4, 4, 0, 0, 0);
    out[21 + 1] |= 1;
    lk_batch_update_crc(out, len, NULL);
    batch(out, sizeof out, &len, 4, 0, -1, 1, 1, 0, 0, 0);
    add_seed(out, len);
    len = 0; /* a producer's last batch left empty by the cleaner (recordsCount 0), then data */
    batch(out, sizeof out, &len, 0, txn, 7, 3, 3, 0, 0, 0);
    put_be(out + 8, 49, 4);
    put_be(out + 57, 0, 4);
    len = 61;
    lk_batch_update_crc(out, len, NULL);
    marker(out, sizeof out, &len, 3, 7, LK_CONTROL_COMMIT);
    batch(out, sizeof out, &len, 4, 0, -1, 2, 2, 0, 0, 0);
    add_seed(out, len);
    len = 0; /* offset index entries (relative offset, position), then time index entries */
    for (int i = 0; i < 64; i++, len += 8) {
        put_be(out + len, (uint64_t)(i * 3), 4);
        put_be(out + len + 4, (uint64_t)(i * 100), 4);
    }
    add_seed(out, len);
    len = 0;
    for (int i = 0; i < 32; i++, len += 12) {
        put_be(out + len, (uint64_t)(1700000000000 + i * 10), 8);
        put_be(out + len + 8, (uint64_t)(i * 2), 4);
    }
    add_seed(out, len);
}

/* ---- mutations ---- */

static const uint64_t edges[] = {0,          1,          2,          0x7F,       0x80,
                                 0xFF,       0x7FFF,     0x8000,     0xFFFF,     0x7FFFFFFF,
                                 0x80000000, 0xFFFFFFFF, 48,         49,         61,
                                 0x7FFFFFFFFFFFFFFFull,     0x8000000000000000ull,
                                 0xFFFFFFFFFFFFFFFFull};
/* Batch header fields: offset and width. */
static const int fields[][2] = {{0, 8}, {8, 4}, {12, 4}, {16, 1}, {17, 4}, {21, 2}, {23, 4},
                                {27, 8}, {35, 8}, {43, 8}, {51, 2}, {53, 4}, {57, 4}};

static size_t batch_starts(const uint8_t *buf, size_t len, size_t *starts, size_t max)
{
    size_t n = 0, pos = 0;
    lk_batch_header h;
    while (n < max && lk_batch_parse_header(buf + pos, len - pos, 0, &h, NULL) == LK_OK) {
        starts[n++] = pos;
        pos += (size_t)h.batch_length + LK_LOG_OVERHEAD;
    }
    return n;
}

static void fix_crcs(uint8_t *buf, size_t len)
{
    size_t starts[256];
    size_t n = batch_starts(buf, len, starts, 256);
    for (size_t i = 0; i < n; i++)
        lk_batch_update_crc(buf + starts[i], len - starts[i], NULL);
}

static const input *pick(void)
{
    size_t total = seed_count + learned_count;
    size_t i = below(total);
    return i < seed_count ? &seeds[i] : &learned[i - seed_count];
}

/* One mutation of buf (length *len, capacity MAX_MUTANT). */
static void mutate(uint8_t *buf, size_t *len)
{
    size_t n = *len;
    size_t starts[64];
    switch (below(13)) {
    case 0: /* flip a bit */
        if (n)
            buf[below(n)] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* a byte to an edge value */
        if (n)
            buf[below(n)] = (uint8_t)edges[below(6)];
        break;
    case 2: { /* a 2, 4 or 8-byte field anywhere to an edge value */
        int width = 2 << below(3);
        if (n >= (size_t)width)
            put_be(buf + below(n - (size_t)width + 1), edges[below(sizeof edges / sizeof edges[0])], width);
        break;
    }
    case 3: { /* a batch header field to an edge value, or off by one */
        size_t b = batch_starts(buf, n, starts, 64);
        if (!b)
            break;
        size_t at = starts[below(b)];
        const int *f = fields[below(sizeof fields / sizeof fields[0])];
        if (at + (size_t)f[0] + (size_t)f[1] > n)
            break;
        uint64_t value = edges[below(sizeof edges / sizeof edges[0])];
        if (below(3) == 0) { /* the current value, plus or minus one */
            value = 0;
            for (int i = 0; i < f[1]; i++)
                value = value << 8 | buf[at + (size_t)f[0] + (size_t)i];
            value += below(2) ? 1 : (uint64_t)-1;
        }
        put_be(buf + at + f[0], value, f[1]);
        break;
    }
    case 4: { /* insert random bytes */
        size_t k = 1 + below(16), at = below(n + 1);
        if (n + k > MAX_MUTANT)
            break;
        memmove(buf + at + k, buf + at, n - at);
        for (size_t i = 0; i < k; i++)
            buf[at + i] = (uint8_t)next();
        *len = n + k;
        break;
    }
    case 5: { /* delete a run */
        if (!n)
            break;
        size_t at = below(n), k = 1 + below(32);
        if (k > n - at)
            k = n - at;
        memmove(buf + at, buf + at + k, n - at - k);
        *len = n - k;
        break;
    }
    case 6: { /* duplicate a run */
        if (!n)
            break;
        size_t at = below(n), k = 1 + below(64);
        if (k > n - at)
            k = n - at;
        if (n + k > MAX_MUTANT)
            break;
        memmove(buf + at + k, buf + at, n - at);
        *len = n + k;
        break;
    }
    case 7: /* truncate */
        *len = below(n + 1);
        break;
    case 8: { /* zeros at the tail (a preallocated file) */
        size_t k = 1 + below(4096);
        if (n + k <= MAX_MUTANT) {
            memset(buf + n, 0, k);
            *len = n + k;
        }
        break;
    }
    case 9: { /* splice: this input's head, another's tail */
        const input *other = pick();
        size_t head = below(n + 1), from = below(other->len + 1);
        size_t tail = other->len - from;
        if (head + tail > MAX_MUTANT)
            tail = MAX_MUTANT - head;
        memcpy(buf + head, other->data + from, tail);
        *len = head + tail;
        break;
    }
    case 10: { /* a whole batch duplicated at the end */
        size_t b = batch_starts(buf, n, starts, 64);
        if (!b)
            break;
        size_t i = below(b), end = i + 1 < b ? starts[i + 1] : n;
        size_t k = end - starts[i];
        if (n + k <= MAX_MUTANT) {
            memcpy(buf + n, buf + starts[i], k);
            *len = n + k;
        }
        break;
    }
    case 11: { /* two adjacent batches swapped (offsets then go backwards) */
        size_t b = batch_starts(buf, n, starts, 64);
        if (b < 3)
            break;
        size_t i = below(b - 2);
        size_t a_len = starts[i + 1] - starts[i], b_len = starts[i + 2] - starts[i + 1];
        uint8_t *tmp = malloc(a_len);
        if (!tmp)
            break;
        memcpy(tmp, buf + starts[i], a_len);
        memmove(buf + starts[i], buf + starts[i + 1], b_len);
        memcpy(buf + starts[i] + b_len, tmp, a_len);
        free(tmp);
        break;
    }
    default: { /* a base offset below the batch before it */
        size_t b = batch_starts(buf, n, starts, 64);
        if (b < 2)
            break;
        size_t i = 1 + below(b - 1);
        uint64_t previous = 0;
        for (int j = 0; j < 8; j++)
            previous = previous << 8 | buf[starts[i - 1] + (size_t)j];
        put_be(buf + starts[i], previous - below(3), 8);
        break;
    }
    }
}

static void learn(const uint8_t *buf, size_t len)
{
    if (lk_batch_validate(buf, len, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, NULL, NULL) != LK_OK)
        return;
    input *slot = &learned[learned_next];
    learned_next = (learned_next + 1) % POOL_LEARNED;
    if (learned_count < POOL_LEARNED)
        learned_count++;
    else
        free(slot->data);
    slot->data = malloc(len ? len : 1);
    if (!slot->data)
        abort();
    memcpy(slot->data, buf, len);
    slot->len = len;
}

/* ---- running ---- */

static int run_files(int argc, char **argv, int first, int quiet)
{
    for (int i = first; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            fprintf(stderr, "fuzz_decoders: cannot read %s: %s\n", argv[i], strerror(errno));
            return 2;
        }
        static uint8_t data[1 << 20];
        size_t n = fread(data, 1, sizeof data, f);
        fclose(f);
        current = data;
        current_len = n;
        LLVMFuzzerTestOneInput(data, n);
        current = NULL;
        if (!quiet)
            printf("fuzz_decoders: %s: %zu bytes, ok\n", argv[i], n);
    }
    if (quiet)
        printf("fuzz_decoders: %d inputs replayed, ok\n", argc - first);
    return 0;
}

static int write_seeds(const char *dir)
{
    mkdir(dir, 0700);
    for (size_t i = 0; i < seed_count; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/seed-%02zu", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(seeds[i].data, 1, seeds[i].len, f) != seeds[i].len) {
            fprintf(stderr, "fuzz_decoders: cannot write %s\n", path);
            return 2;
        }
        fclose(f);
    }
    printf("fuzz_decoders: %zu seeds written to %s\n", seed_count, dir);
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long long limit = 100000;
    double seconds = 10;
    uint64_t seed = (uint64_t)time(NULL);
    int quiet = 0, opt;
    const char *seed_dir = NULL;
    while ((opt = getopt(argc, argv, "n:t:s:w:q")) != -1) {
        switch (opt) {
        case 'n':
            limit = atoll(optarg);
            break;
        case 't':
            seconds = atof(optarg);
            break;
        case 's':
            seed = strtoull(optarg, NULL, 0);
            break;
        case 'w':
            seed_dir = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        default:
            fprintf(stderr, "usage: %s [-n INPUTS] [-t SECONDS] [-s SEED] [-q] [-w DIR] [FILE...]\n",
                    argv[0]);
            return 2;
        }
    }
    const char *dir = getenv("FUZZ_FAILURE_DIR");
    snprintf(failure_path, sizeof failure_path, "%s/fuzz-decoders-failure.bin", dir && *dir ? dir : ".");
    signal(SIGABRT, on_abort);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_set_death_callback(save_current);
#endif
    build_seeds();
    if (seed_dir)
        return write_seeds(seed_dir);
    if (optind < argc)
        return run_files(argc, argv, optind, quiet);

    rng ^= seed * 0x9E3779B97F4A7C15ull;
    static uint8_t buf[MAX_MUTANT];
    double start = now(), deadline = start + seconds;
    long long done = 0;
    for (size_t i = 0; i < seed_count; i++, done++) { /* every seed as it is, first */
        current = seeds[i].data;
        current_len = seeds[i].len;
        LLVMFuzzerTestOneInput(seeds[i].data, seeds[i].len);
    }
    while (done < limit && (done % 256 || now() < deadline)) {
        const input *from = pick();
        size_t len = from->len;
        memcpy(buf, from->data, len);
        for (size_t m = 1 + below(4) * below(3); m > 0; m--)
            mutate(buf, &len);
        if (below(4))
            fix_crcs(buf, len);
        current = buf;
        current_len = len;
        LLVMFuzzerTestOneInput(buf, len);
        learn(buf, len);
        done++;
    }
    current = NULL;
    fuzz_cleanup();
    if (!quiet)
        printf("fuzz_decoders: %lld inputs run in %.1f s (seed %llu; %zu seeds, %zu learned)\n", done,
               now() - start, (unsigned long long)seed, seed_count, learned_count);
    for (size_t i = 0; i < seed_count; i++)
        free(seeds[i].data);
    for (size_t i = 0; i < learned_count; i++)
        free(learned[i].data);
    return 0;
}
