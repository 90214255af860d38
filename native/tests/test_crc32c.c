/*
 * test_crc32c.c - checks every CRC-32C implementation against known answers and against
 * each other; with --bench, measures each one.
 *
 * Build and run from the repository root:
 *   gcc -O2 -Wall -Wextra -Werror -std=c11 -Inative native/crc32c.c native/tests/test_crc32c.c \
 *       -o /tmp/test_crc32c && /tmp/test_crc32c && /tmp/test_crc32c --bench
 * and the same with -fsanitize=address,undefined -g. Exit status 0 means every check passed.
 *
 * What is checked:
 *   1. Known answers: "123456789" and the four 32-byte vectors of RFC 3720 (iSCSI), B.4.
 *   2. A bit-at-a-time reference, written independently of the library's tables, agrees
 *      with the table implementation (so the table is a trustworthy yardstick).
 *   3. Every available implementation, and the dispatched lk_crc32c, equals the table
 *      implementation for every length 0..2048 at every start alignment 0..63 and several
 *      initial crc values. Each input is copied so that it ends exactly at the end of its
 *      own heap block: under AddressSanitizer any load past data + len is reported.
 *   4. Lengths around every size where the code changes path (three-stream blocks,
 *      folding blocks, hybrid chunks), random lengths up to 200 KB, and 1 MiB and
 *      1 MiB + 13 random buffers.
 *   5. Chaining: crc(crc(a), b) == crc(a || b) at many split points, mixing implementations.
 *   6. The argument contract of lk_crc32c_with and the names.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logkernel.h"

static long checks_passed;
static long checks_failed;

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (cond) {                                                                          \
            checks_passed++;                                                                 \
        } else {                                                                             \
            checks_failed++;                                                                 \
            if (checks_failed <= 20) {                                                       \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                         \
                fprintf(stderr, __VA_ARGS__);                                                \
                fputc('\n', stderr);                                                         \
            }                                                                                \
        }                                                                                    \
    } while (0)

/* xorshift64*: a fixed seed so a failure reproduces. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Du;
}

static void fill_random(uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(rng_next() >> 56);
}

/* The definition itself: one bit at a time, least significant bit of each byte first. */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ ((crc & 1u) ? 0x82F63B78u : 0u);
    }
    return ~crc;
}

static uint32_t crc_with(int impl, uint32_t crc, const uint8_t *p, size_t len)
{
    uint32_t out = 0;
    int status = lk_crc32c_with(impl, crc, p, len, &out);
    if (status != LK_OK) {
        fprintf(stderr, "lk_crc32c_with(%s) returned %d\n", lk_crc32c_impl_name(impl), status);
        exit(2);
    }
    return out;
}

static int available[LK_CRC32C_IMPL_COUNT];

static const uint32_t initial_crcs[] = {0u, 0xFFFFFFFFu, 0xE3069283u, 0x12345678u};
#define INITIAL_CRC_COUNT (sizeof initial_crcs / sizeof initial_crcs[0])

/* Compares every available implementation and lk_crc32c with the table on one input. */
static void compare_all(const uint8_t *p, size_t len, uint32_t crc, const char *what)
{
    uint32_t expected = crc_with(LK_CRC32C_TABLE, crc, p, len);
    for (int impl = 0; impl < LK_CRC32C_IMPL_COUNT; impl++) {
        if (!available[impl] || impl == LK_CRC32C_TABLE)
            continue;
        uint32_t got = crc_with(impl, crc, p, len);
        CHECK(got == expected, "%s: %s len=%zu align=%u crc=%08x: got %08x, table %08x", what,
              lk_crc32c_impl_name(impl), len, (unsigned)((uintptr_t)p & 63u), crc, got,
              expected);
    }
    uint32_t dispatched = lk_crc32c(crc, p, len);
    CHECK(dispatched == expected, "%s: lk_crc32c len=%zu crc=%08x: got %08x, table %08x", what,
          len, crc, dispatched, expected);
}

static void test_known_answers(void)
{
    static const struct {
        const char *name;
        uint8_t bytes[32];
        size_t len;
        uint32_t crc;
    } vectors[] = {
        {"123456789", {'1', '2', '3', '4', '5', '6', '7', '8', '9'}, 9, 0xE3069283u},
        {"32 x 0x00", {0}, 32, 0x8A9136AAu},
        {"32 x 0xFF", {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                       0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                       0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
         32, 0x62A8AB43u},
        {"0x00..0x1F", {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                        16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31},
         32, 0x46DD794Eu},
        {"0x1F..0x00", {31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                        15, 14, 13, 12, 11, 10, 9,  8,  7,  6,  5,  4,  3,  2,  1,  0},
         32, 0x113FDB5Cu},
    };
    for (size_t v = 0; v < sizeof vectors / sizeof vectors[0]; v++) {
        const uint8_t *p = vectors[v].bytes;
        size_t len = vectors[v].len;
        uint32_t want = vectors[v].crc;
        CHECK(crc32c_bitwise(0, p, len) == want, "bitwise reference on %s", vectors[v].name);
        CHECK(lk_crc32c(0, p, len) == want, "lk_crc32c(%s) = %08x, want %08x", vectors[v].name,
              lk_crc32c(0, p, len), want);
        for (int impl = 0; impl < LK_CRC32C_IMPL_COUNT; impl++) {
            if (!available[impl])
                continue;
            uint32_t got = crc_with(impl, 0, p, len);
            CHECK(got == want, "%s(%s) = %08x, want %08x", lk_crc32c_impl_name(impl),
                  vectors[v].name, got, want);
        }
    }
}

static void test_table_against_bitwise(const uint8_t *random, size_t random_len)
{
    for (size_t len = 0; len <= 1024 && len <= random_len; len++) {
        for (size_t c = 0; c < INITIAL_CRC_COUNT; c++) {
            uint32_t want = crc32c_bitwise(initial_crcs[c], random, len);
            uint32_t got = crc_with(LK_CRC32C_TABLE, initial_crcs[c], random, len);
            CHECK(got == want, "table len=%zu crc=%08x: got %08x, bitwise %08x", len,
                  initial_crcs[c], got, want);
        }
    }
}

/* Copies len bytes of random into a heap block of exactly align + len bytes at offset
 * align (64-byte aligned block), so the input ends where the block ends, and compares. */
static void compare_exact_copy(const uint8_t *random, size_t len, size_t align, uint32_t crc,
                               const char *what)
{
    void *block = NULL;
    size_t size = align + len;
    if (posix_memalign(&block, 64, size == 0 ? 1 : size) != 0) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    uint8_t *p = (uint8_t *)block + align;
    memcpy(p, random, len);
    compare_all(p, len, crc, what);
    free(block);
}

/* Every length 0..2048 at every alignment 0..63, input ending exactly at its block's end. */
static void test_lengths_and_alignments(const uint8_t *random)
{
    enum { MAX_LEN = 2048, MAX_ALIGN = 63 };
    for (size_t align = 0; align <= MAX_ALIGN; align++)
        for (size_t len = 0; len <= MAX_LEN; len++)
            for (size_t c = 0; c < INITIAL_CRC_COUNT; c++)
                compare_exact_copy(random + align, len, align, initial_crcs[c], "lengths");
}

static void test_block_boundaries(const uint8_t *random, size_t random_len)
{
    /* Sizes where the code changes path, as crc32c.c stands: folding starts at 32 bytes
     * and works in 256-byte blocks, the hybrid in 31744-byte chunks; sse42 runs three
     * streams in blocks of 3 x 64, 3 x 256 and 3 x 4096 bytes. Probe around multiples. */
    static const size_t bases[] = {32, 192, 256, 768, 3 * 4096, 31744};
    for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
        for (size_t mult = 1; mult <= 3; mult++) {
            for (long delta = -17; delta <= 17; delta++) {
                long len = (long)(bases[b] * mult) + delta;
                if (len < 0 || (size_t)len > random_len)
                    continue;
                compare_exact_copy(random, (size_t)len, (size_t)(delta & 7),
                                   initial_crcs[(size_t)(delta + 17) % INITIAL_CRC_COUNT],
                                   "boundaries");
            }
        }
    }
    for (int i = 0; i < 200; i++) {
        size_t len = (size_t)(rng_next() % 200000u);
        if (len > random_len)
            len = random_len;
        compare_exact_copy(random, len, (size_t)(rng_next() & 63u), (uint32_t)rng_next(),
                           "random lengths");
    }
}

static void test_large(const uint8_t *random, size_t random_len)
{
    static const size_t sizes[] = {1u << 20, (1u << 20) + 13};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        if (sizes[s] > random_len)
            continue;
        for (size_t align = 0; align < 64; align += 21)
            for (size_t c = 0; c < INITIAL_CRC_COUNT; c++)
                compare_exact_copy(random, sizes[s], align, initial_crcs[c], "large");
    }
}

/* crc(crc(a), b) == crc(a || b), with the two halves computed by any pair of
 * implementations, at split points near every small size and block boundary. */
static void test_chaining(const uint8_t *random)
{
    enum { LEN = 5000 };
    uint32_t whole = crc_with(LK_CRC32C_TABLE, 0, random, LEN);
    for (size_t split = 0; split <= LEN; split += (split < 80 ? 1 : 37)) {
        for (int first = 0; first < LK_CRC32C_IMPL_COUNT; first++) {
            if (!available[first])
                continue;
            for (int second = 0; second < LK_CRC32C_IMPL_COUNT; second++) {
                if (!available[second])
                    continue;
                uint32_t head = crc_with(first, 0, random, split);
                uint32_t got = crc_with(second, head, random + split, LEN - split);
                CHECK(got == whole, "chain %s|%s split=%zu: got %08x, want %08x",
                      lk_crc32c_impl_name(first), lk_crc32c_impl_name(second), split, got,
                      whole);
            }
        }
        uint32_t dispatched = lk_crc32c(lk_crc32c(0, random, split), random + split, LEN - split);
        CHECK(dispatched == whole, "chain lk_crc32c split=%zu", split);
    }
    /* Long inputs, so chained states also enter the hybrid chunks mid-stream. */
    enum { LONG_LEN = 3 * 31744 + 100 };
    static const size_t long_splits[] = {1, 13, 31744, 31745, 40000, 2 * 31744 - 5};
    uint32_t long_whole = crc_with(LK_CRC32C_TABLE, 0, random, LONG_LEN);
    for (size_t i = 0; i < sizeof long_splits / sizeof long_splits[0]; i++) {
        size_t split = long_splits[i];
        for (int impl = 0; impl < LK_CRC32C_IMPL_COUNT; impl++) {
            if (!available[impl])
                continue;
            uint32_t head = crc_with(impl, 0, random, split);
            uint32_t got = crc_with(impl, head, random + split, LONG_LEN - split);
            CHECK(got == long_whole, "long chain %s split=%zu: got %08x, want %08x",
                  lk_crc32c_impl_name(impl), split, got, long_whole);
        }
    }

    /* Three pieces, as the batch code does (header bytes, then records). */
    uint32_t three = lk_crc32c(0, random, 21);
    three = lk_crc32c(three, random + 21, 40);
    three = lk_crc32c(three, random + 61, LEN - 61);
    CHECK(three == whole, "three-piece chain");
}

static void test_contract(void)
{
    static const uint8_t digits[] = "123456789";
    uint32_t out = 0xDEADBEEFu;

    CHECK(lk_crc32c_impl_available(LK_CRC32C_TABLE) == 1, "table always available");
    CHECK(lk_crc32c_impl_available(-1) == 0, "impl -1 unavailable");
    CHECK(lk_crc32c_impl_available(LK_CRC32C_IMPL_COUNT) == 0, "impl COUNT unavailable");
    int selected = lk_crc32c_selected_impl();
    CHECK(selected >= 0 && selected < LK_CRC32C_IMPL_COUNT && available[selected],
          "selected impl %d is available", selected);

    CHECK(lk_crc32c_with(-1, 0, digits, 9, &out) == LK_ERR_ARGUMENT, "impl -1 is ARGUMENT");
    CHECK(lk_crc32c_with(LK_CRC32C_IMPL_COUNT, 0, digits, 9, &out) == LK_ERR_ARGUMENT,
          "impl COUNT is ARGUMENT");
    for (int impl = 0; impl < LK_CRC32C_IMPL_COUNT; impl++) {
        CHECK(lk_crc32c_with(impl, 0, NULL, 1, &out) == LK_ERR_ARGUMENT,
              "%s: NULL data with len > 0 is ARGUMENT", lk_crc32c_impl_name(impl));
        int status = lk_crc32c_with(impl, 0x1234u, NULL, 0, &out);
        if (available[impl]) {
            CHECK(status == LK_OK && out == 0x1234u, "%s: NULL data, len 0 returns crc",
                  lk_crc32c_impl_name(impl));
        } else {
            CHECK(status == LK_ERR_UNSUPPORTED, "%s: unavailable is UNSUPPORTED (got %d)",
                  lk_crc32c_impl_name(impl), status);
        }
    }
    CHECK(lk_crc32c(0x1234u, NULL, 0) == 0x1234u, "lk_crc32c NULL, 0 returns crc");
    CHECK(lk_crc32c(0x1234u, digits, 0) == 0x1234u, "lk_crc32c len 0 returns crc");

    static const char *const names[] = {"table", "sse42", "vpclmulqdq", "avx512"};
    for (int impl = 0; impl < LK_CRC32C_IMPL_COUNT; impl++)
        CHECK(strcmp(lk_crc32c_impl_name(impl), names[impl]) == 0, "name of %d", impl);
    CHECK(strcmp(lk_crc32c_impl_name(-1), "unknown") == 0, "name of -1");
    CHECK(strcmp(lk_crc32c_impl_name(LK_CRC32C_IMPL_COUNT), "unknown") == 0, "name of COUNT");
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Throughput in GB/s (10^9 bytes per second) of one implementation on len bytes: the best
 * of BENCH_RUNS runs of about 8 MB each. Best rather than mean because on a shared (virtual)
 * machine the noise only ever slows a run down; short runs give more chances at a quiet
 * moment while still being long enough (a few ms) for the clock to resolve. */
#define BENCH_RUNS 50
static double bench_one(int impl, const uint8_t *p, size_t len)
{
    enum { RUNS = BENCH_RUNS };
    size_t reps = (size_t)(8e6 / (double)len) + 1;
    volatile uint32_t sink = 0;
    double best = 0.0;
    for (int run = 0; run < RUNS; run++) {
        uint32_t crc = 0;
        double start = now_seconds();
        for (size_t r = 0; r < reps; r++)
            crc = crc_with(impl, crc, p, len);
        double elapsed = now_seconds() - start;
        sink = crc;
        double gbps = (double)len * (double)reps / elapsed / 1e9;
        if (gbps > best)
            best = gbps;
    }
    (void)sink;
    return best;
}

static int run_bench(void)
{
    static const size_t sizes[] = {64, 256, 1024, 4096, 65536, 1u << 20};
    enum { SIZE_COUNT = sizeof sizes / sizeof sizes[0] };
    uint8_t *buffer = NULL;
    if (posix_memalign((void **)&buffer, 64, 1u << 20) != 0)
        return 2;
    fill_random(buffer, 1u << 20);

    printf("crc32c throughput, GB/s (best of %d runs; selected: %s)\n", BENCH_RUNS,
           lk_crc32c_impl_name(lk_crc32c_selected_impl()));
    printf("%-12s", "impl");
    for (int s = 0; s < SIZE_COUNT; s++) {
        if (sizes[s] >= 1024)
            printf(" %9zuK", sizes[s] / 1024);
        else
            printf(" %9zuB", sizes[s]);
    }
    printf("\n");
    for (int impl = 0; impl < LK_CRC32C_IMPL_COUNT; impl++) {
        printf("%-12s", lk_crc32c_impl_name(impl));
        for (int s = 0; s < SIZE_COUNT; s++) {
            if (available[impl])
                printf(" %10.2f", bench_one(impl, buffer, sizes[s]));
            else
                printf(" %10s", "n/a");
        }
        printf("\n");
    }
    free(buffer);
    return 0;
}

int main(int argc, char **argv)
{
    for (int impl = 0; impl < LK_CRC32C_IMPL_COUNT; impl++)
        available[impl] = lk_crc32c_impl_available(impl);

    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return run_bench();
    if (argc > 1) {
        fprintf(stderr, "usage: %s [--bench]\n", argv[0]);
        return 2;
    }

    size_t random_len = (1u << 20) + 64;
    uint8_t *random = malloc(random_len);
    if (random == NULL)
        return 2;
    fill_random(random, random_len);

    test_contract();
    test_known_answers();
    test_table_against_bitwise(random, random_len);
    test_lengths_and_alignments(random);
    test_block_boundaries(random, random_len);
    test_large(random, random_len);
    test_chaining(random);
    free(random);

    if (checks_failed != 0) {
        printf("test_crc32c: %ld of %ld checks FAILED\n", checks_failed,
               checks_failed + checks_passed);
        return 1;
    }
    printf("test_crc32c: %ld checks passed (implementations:", checks_passed);
    for (int impl = 0; impl < LK_CRC32C_IMPL_COUNT; impl++)
        if (available[impl])
            printf(" %s", lk_crc32c_impl_name(impl));
    printf("; selected %s)\n", lk_crc32c_impl_name(lk_crc32c_selected_impl()));
    return 0;
}
