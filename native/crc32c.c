/*
 * crc32c.c - CRC-32C (Castagnoli), the checksum of Kafka's RecordBatch v2.
 *
 * One function, four implementations; the fastest this CPU can run is chosen once:
 *
 *   table       slicing-by-8 lookup tables. Any CPU, any byte order; the yardstick the
 *               others are tested against.
 *   sse42       the x86 crc32 instruction on three independent streams, their partial
 *               states merged with carry-less multiplies (needs SSE4.2 and PCLMULQDQ).
 *   vpclmulqdq  carry-less-multiply folding in ymm registers, the folded remainder turned
 *               into a CRC by the crc32 instruction; on inputs of 31 KiB and more, three
 *               crc32 streams run alongside the folding (needs AVX2, VPCLMULQDQ, PCLMULQDQ
 *               and SSE4.2).
 *   avx512      not built; see WHY THERE IS NO ZMM PATH at the end of this comment.
 *
 * All of it is arithmetic on polynomials over GF(2) (XOR is addition) modulo
 *
 *     P = x^32 + x^28 + x^27 + x^26 + x^25 + x^23 + x^22 + x^20 + x^19 + x^18 + x^14
 *            + x^13 + x^11 + x^10 + x^9 + x^8 + x^6 + 1
 *
 * BIT ORDER ("reflected"). CRC-32C feeds each byte least significant bit first, so the
 * message is a polynomial whose highest-degree coefficient is bit 0 of byte 0. A w-bit
 * word loaded little-endian holds the coefficients of x^(w-1) .. x^0 in bits 0 .. w-1:
 * bit j is the coefficient of x^(w-1-j). In this order multiplying by x is a right shift,
 * and P without its x^32 term is 0x82F63B78 (CRC32C_POLY).
 *
 * THE CRC STATE. The running state s (the caller's crc, inverted) after absorbing a
 * message M of n bits is
 *
 *     s' = (s * x^n + M * x^32) mod P                                             (1)
 *
 * which is linear in s and M. Two consequences used throughout:
 *   - Starting from state s is the same as starting from 0 with s XORed into the first
 *     32 bits of M, because s * x^n = (s * x^(n-32)) * x^32.
 *   - Pieces can be computed independently and added: the state after A || B is
 *     state(A) * x^|B| + (state of B from 0).
 * The x86 instruction crc32 (_mm_crc32_u64(s, d)) is exactly (1) for one 64-bit word d.
 *
 * CARRY-LESS MULTIPLY ADDS A FACTOR x. PCLMULQDQ multiplies two 64-bit operands as
 * polynomials. If a and b are reflected w-bit words for A and B, bit t of the (2w-1)-bit
 * product is the coefficient of x^(2w-2-t) in A * B, but a reflected 2w-bit word has
 * x^(2w-1-t) at bit t. So the product, read in the reflected convention, is A * B * x,
 * and every multiplier below is one power of x short of the shift it performs: to
 * multiply by x^n, use x^(n-1) mod P.
 *
 * All multipliers are computed at startup (crc32c_init) from xpow_mod(n) = x^n mod P, a
 * reflected 32-bit word, by square-and-multiply in software; nothing is pasted in. Where a
 * 32-bit word sits in a 64-bit operand matters: in bits 32..63, its coefficient of
 * x^(31-j) lands at bit 32+j, which a 64-bit word reads as x^(63-32-j) = x^(31-j), so it
 * stands for the polynomial itself; in bits 0..31 it stands for the polynomial times x^32.
 *
 * FOLDING (vpclmulqdq). Cut the message into 16-byte lanes. A lane V is two 64-bit halves,
 * V = F * x^64 + S, where F (the first 8 bytes, the low qword of the register) holds the
 * higher-degree coefficients and S the second 8 bytes. To carry V forward by D bits, onto
 * the lane D bits later in the message, any 128-bit value congruent to V * x^D will do:
 *
 *     V * x^D = F * x^(D+64) + S * x^D
 *            == clmul(F, x^(D+63) mod P) XOR clmul(S, x^(D-1) mod P)    (the extra x)
 *
 * with each multiplier in bits 32..63 of its qword. Each product has degree at most
 * 63 + 31 + 1 = 95, so the sum fits in a lane without reduction, and XORing it into the
 * data lane D bits later keeps the invariant
 *
 *     the accumulators, read as message bytes where they stand, are congruent mod P to the
 *     input consumed so far (with the incoming state XORed into its first 4 bytes).
 *
 * Lane layout: eight ymm accumulators hold one 256-byte block; accumulator i holds bytes
 * 32i .. 32i+31 of it, its lane 0 the first 16 and lane 1 the next 16. Each iteration
 * carries every lane one block (D = 2048 bits) forward onto the next block, so one
 * multiplier pair, broadcast to both lanes, serves all sixteen lanes. Afterwards
 * accumulator i is folded onto accumulator 7 (32 * (7 - i) bytes), whole 32-byte and
 * 16-byte pieces of what is left are folded in, and lane 0 is folded onto lane 1, leaving
 * one 128-bit value R that ends where the consumed input ends and is congruent to it.
 * Eight accumulators, not four: on the Zen 3 this was measured on, both run at the same
 * speed (the multiplier, one 256-bit VPCLMULQDQ every two cycles, is the limit), but a core
 * that issues one or two per cycle needs more than four multiply-XOR chains (about 6
 * cycles each) in flight to stay busy. That last part is reasoned, not measured here.
 *
 * FINAL REDUCTION. By (1) the state after the consumed input is input * x^32 mod P =
 * R * x^32 mod P, which two crc32 instructions starting from state 0 compute when fed R's
 * 16 bytes as data: the first gives F * x^32, the second F * x^96 + S * x^32 = R * x^32.
 * That is why the incoming state is XORed into the first four bytes of the first block
 * rather than passed to crc32 at the end. The fewer than 16 bytes left over then go
 * through crc32 from that state.
 *
 * THREE STREAMS (sse42). crc32 has a latency of 3 cycles and a throughput of one per cycle
 * on current cores, so a single stream runs at a third of the possible speed. Three
 * consecutive pieces of B bytes are run as independent streams a, b, c (a from the
 * incoming state, b and c from 0), and by linearity the state after all three is
 *
 *     sa * x^(16B) + sb * x^(8B) + sc                                  (exponents in bits)
 *
 * clmul of two 32-bit words in bits 0..31 gives their product times x as a 64-bit word, and
 * crc32 from state 0 multiplies a word by x^32 mod P. So with the multipliers x^(16B-33)
 * and x^(8B-33), crc32(0, clmul(sa, x^(16B-33)) XOR clmul(sb, x^(8B-33))) XOR sc is the
 * combined state: one multiply per stream and one crc32 per merge (skip_product and
 * reduce_product), no table-driven zero-extension operator needed.
 *
 * HYBRID (vpclmulqdq, inputs of at least one 31744-byte chunk). On Zen 3 folding alone
 * tops out near 8 bytes per cycle, about what three crc32 streams do, and the two use
 * different execution units. So one loop does both: it folds the first 64 x 256 bytes of
 * a chunk while three crc32 streams cover the remaining 3 x 64 x 80 bytes, and the four
 * partial states are merged as above (the folded part, reduced to a state, carried over
 * all three streams). Measured on a Zen 3 EPYC with 1 MiB: about 1.5x either alone.
 *
 * BOUNDS. No load reaches past data + len: every vector or word load is preceded by a
 * length check for its full width, and tails go byte by byte. len == 0 never reads data.
 *
 * DISPATCH. The first call of any public function runs crc32c_init under pthread_once: it
 * builds the tables and multipliers and picks the implementation with
 * __builtin_cpu_supports (whose "avx2" also requires the OS to save ymm state). Nothing
 * changes afterwards, so later calls read the choice without locking. No environment
 * override: lk_crc32c_with runs a named implementation for tests and benchmarks.
 *
 * WHY THERE IS NO ZMM PATH. An AVX-512 version would fold 4 zmm = 256 bytes per iteration
 * with exactly the same multipliers (one zmm = two of the ymm accumulators side by side).
 * It is not built because none of the machines this is developed and tested on can execute
 * AVX-512, and a CRC path that has never run is not one to ship in a storage engine. The
 * ymm path runs unchanged on AVX-512 CPUs: they lose some speed, never correctness.
 * lk_crc32c_impl_available(LK_CRC32C_AVX512) is 0 and lk_crc32c_with returns
 * LK_ERR_UNSUPPORTED for it.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "logkernel.h"

#if defined(__x86_64__) || defined(__i386__)
#define LK_CRC32C_X86 1
#include <immintrin.h>
#endif

/* P without its x^32 term, reflected (bit j is the coefficient of x^(31-j)). */
#define CRC32C_POLY 0x82F63B78u

typedef uint32_t (*crc32c_fn)(uint32_t crc, const uint8_t *data, size_t len);

/* a * x mod P: the x^31 coefficient (bit 0) overflows to x^32, which is P's low terms. */
static uint32_t times_x(uint32_t a)
{
    return (a >> 1) ^ ((a & 1u) ? CRC32C_POLY : 0u);
}

/* ---------------------------------------------------------------------------------------
 * table: slicing-by-8.
 *
 * crc_table[k][b] is the state reached from state 0 by the byte b followed by k zero
 * bytes. Eight bytes are then absorbed with eight independent lookups: the byte that has
 * seven more bytes after it in the word uses table 7, and so on down to table 0. 8 KiB of
 * tables; 16 tables would double that for little gain on cores that have crc32 anyway.
 * ------------------------------------------------------------------------------------ */
static uint32_t crc_table[8][256];

static void init_tables(void)
{
    for (uint32_t byte = 0; byte < 256; byte++) {
        uint32_t state = byte;
        for (int bit = 0; bit < 8; bit++)
            state = times_x(state);
        crc_table[0][byte] = state;
    }
    for (uint32_t byte = 0; byte < 256; byte++) {
        for (int k = 1; k < 8; k++) {
            uint32_t prev = crc_table[k - 1][byte];
            crc_table[k][byte] = (prev >> 8) ^ crc_table[0][prev & 0xFFu];
        }
    }
}

/* Little-endian load from bytes, so the table path is correct on big-endian hosts too;
 * compilers turn it into one load on little-endian ones. */
static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static uint32_t table_update(uint32_t state, const uint8_t *p, size_t len)
{
    while (len >= 8) {
        uint32_t first = state ^ load_le32(p);
        uint32_t second = load_le32(p + 4);
        state = crc_table[7][first & 0xFFu] ^ crc_table[6][(first >> 8) & 0xFFu] ^
                crc_table[5][(first >> 16) & 0xFFu] ^ crc_table[4][first >> 24] ^
                crc_table[3][second & 0xFFu] ^ crc_table[2][(second >> 8) & 0xFFu] ^
                crc_table[1][(second >> 16) & 0xFFu] ^ crc_table[0][second >> 24];
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        state = (state >> 8) ^ crc_table[0][(state ^ *p) & 0xFFu];
        p++;
        len--;
    }
    return state;
}

static uint32_t crc32c_table(uint32_t crc, const uint8_t *data, size_t len)
{
    return ~table_update(~crc, data, len);
}

#ifdef LK_CRC32C_X86
/* ---------------------------------------------------------------------------------------
 * Polynomial arithmetic mod P in software, for the multipliers. Runs once at startup,
 * never per byte.
 * ------------------------------------------------------------------------------------ */

/* x^0 and x^1 as reflected 32-bit words (x^k is bit 31-k). */
#define POLY_ONE 0x80000000u
#define POLY_X 0x40000000u

/* a * b mod P by Horner's rule over a's coefficients from x^31 (bit 0) down to x^0. */
static uint32_t multiply_mod(uint32_t a, uint32_t b)
{
    uint32_t product = 0;
    for (int bit = 0; bit < 32; bit++) {
        product = times_x(product);
        if ((a >> bit) & 1u)
            product ^= b;
    }
    return product;
}

/* x^n mod P by square-and-multiply: about 2 log2(n) multiplications. */
static uint32_t xpow_mod(uint64_t n)
{
    uint32_t result = POLY_ONE;
    uint32_t square = POLY_X; /* x^(2^k) for the bit of n being looked at */
    while (n != 0) {
        if (n & 1u)
            result = multiply_mod(result, square);
        square = multiply_mod(square, square);
        n >>= 1;
    }
    return result;
}

/* ---------------------------------------------------------------------------------------
 * Building blocks on the crc32 and pclmulqdq instructions.
 * ------------------------------------------------------------------------------------ */

/* One crc32 step over the 8 bytes at p (x86 is little-endian, so memcpy gives them in
 * message order). 32-bit x86 has no 64-bit crc32, but two 32-bit steps are the same. */
__attribute__((target("sse4.2"))) static inline uint32_t crc32_word(uint32_t state,
                                                                      const uint8_t *p)
{
#if defined(__x86_64__)
    uint64_t word;
    memcpy(&word, p, sizeof word);
    return (uint32_t)_mm_crc32_u64(state, word);
#else
    uint32_t first, second;
    memcpy(&first, p, sizeof first);
    memcpy(&second, p + 4, sizeof second);
    return _mm_crc32_u32(_mm_crc32_u32(state, first), second);
#endif
}

/* The serial loop: whole words, then at most one 4-, one 2- and one 1-byte step. */
__attribute__((target("sse4.2"))) static inline uint32_t crc32_serial(uint32_t state,
                                                                        const uint8_t *p,
                                                                        size_t len)
{
    while (len >= 8) {
        state = crc32_word(state, p);
        p += 8;
        len -= 8;
    }
    if (len & 4) {
        uint32_t four;
        memcpy(&four, p, sizeof four);
        state = _mm_crc32_u32(state, four);
        p += 4;
    }
    if (len & 2) {
        uint16_t two;
        memcpy(&two, p, sizeof two);
        state = _mm_crc32_u16(state, two);
        p += 2;
    }
    if (len & 1)
        state = _mm_crc32_u8(state, *p);
    return state;
}

/* Multipliers that carry a CRC state over one, two or three following pieces of a given
 * size: x^(8 * n * piece_bytes - 33) mod P for n = 1, 2, 3 (the 33 = the x a carry-less
 * multiply adds + the x^32 of the crc32 reduction; see THREE STREAMS above). */
typedef struct {
    uint32_t over_one;
    uint32_t over_two;
    uint32_t over_three;
} skip_multipliers;

static skip_multipliers make_skip_multipliers(uint64_t piece_bytes)
{
    skip_multipliers k;
    k.over_one = xpow_mod(8 * 1 * piece_bytes - 33);
    k.over_two = xpow_mod(8 * 2 * piece_bytes - 33);
    k.over_three = xpow_mod(8 * 3 * piece_bytes - 33);
    return k;
}

/* state * multiplier as a 64-bit reflected word (the product times x). Products of several
 * states may be XORed together before the one reduce_product that finishes them. */
__attribute__((target("sse4.2,pclmul"))) static inline __m128i skip_product(uint32_t state,
                                                                             uint32_t multiplier)
{
    return _mm_clmulepi64_si128(_mm_cvtsi32_si128((int)state), _mm_cvtsi32_si128((int)multiplier),
                                0x00);
}

/* The low 64 bits of product times x^32 mod P, as a CRC state: crc32 from state 0. */
__attribute__((target("sse4.2"))) static inline uint32_t reduce_product(__m128i product)
{
    uint8_t bytes[16];
    _mm_storeu_si128((__m128i *)(void *)bytes, product);
    return crc32_word(0, bytes);
}

/* ---------------------------------------------------------------------------------------
 * sse42: the crc32 instruction on three streams, merged by carry-less multiplication.
 * ------------------------------------------------------------------------------------ */

/* Bytes per stream, largest first. Each size takes blocks of three streams while the input
 * holds one, leaving less than a block for the next. A merge costs about 15 cycles of
 * latency (multiply, crc32, XOR) against stream_bytes / 8 cycles of work per block: with
 * 4096-byte streams it is lost in the noise, 256-byte ones take inputs of 768 bytes up off
 * the serial loop (a third of the speed) at about 10% merge cost, and 64-byte ones still
 * beat the serial loop on what is left (measured on Zen 3: 192..767 bytes run 1.4-1.8x
 * faster with this tier than without). Multiples of 8. */
#define SSE42_TIERS 3
static const size_t sse42_stream_bytes[SSE42_TIERS] = {4096, 256, 64};
static skip_multipliers sse42_skip[SSE42_TIERS];

/* Runs as many blocks of three stream_bytes streams as fit, advancing *p and *len. */
__attribute__((target("sse4.2,pclmul"))) static inline uint32_t
crc32_three_streams(uint32_t state, const uint8_t **p, size_t *len, size_t stream_bytes,
                    const skip_multipliers *k)
{
    while (*len >= 3 * stream_bytes) {
        const uint8_t *a = *p;
        const uint8_t *b = a + stream_bytes;
        const uint8_t *c = b + stream_bytes;
        uint32_t state_a = state, state_b = 0, state_c = 0;
        for (size_t i = 0; i < stream_bytes; i += 8) {
            state_a = crc32_word(state_a, a + i);
            state_b = crc32_word(state_b, b + i);
            state_c = crc32_word(state_c, c + i);
        }
        /* state_a carried over streams b and c, state_b over c, plus state_c. */
        __m128i products = _mm_xor_si128(skip_product(state_a, k->over_two),
                                         skip_product(state_b, k->over_one));
        state = reduce_product(products) ^ state_c;
        *p += 3 * stream_bytes;
        *len -= 3 * stream_bytes;
    }
    return state;
}

__attribute__((target("sse4.2,pclmul"))) static uint32_t sse42_update(uint32_t state,
                                                                     const uint8_t *p,
                                                                     size_t len)
{
    for (int tier = 0; tier < SSE42_TIERS; tier++)
        state = crc32_three_streams(state, &p, &len, sse42_stream_bytes[tier], &sse42_skip[tier]);
    return crc32_serial(state, p, len);
}

static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *data, size_t len)
{
    return ~sse42_update(~crc, data, len);
}

/* ---------------------------------------------------------------------------------------
 * vpclmulqdq: folding in ymm registers, alongside three crc32 streams on large inputs.
 * ------------------------------------------------------------------------------------ */

/* Bytes folded per loop iteration: 8 ymm accumulators of 32 bytes (why 8 and not 4: see
 * FOLDING above). The 8 accumulators, the multiplier and a load use 10 of the 16 ymm
 * registers, so nothing spills. */
#define FOLD_BLOCK 256u

/* Shortest input that is folded: one ymm. Measured on Zen 3, folding beats the sse42 code
 * by 1.3-1.4x from 32 to 191 bytes despite its fixed cost (the fold-down and the final
 * reduction), and matches it from 192 bytes, where sse42 starts using three streams. */
#define VPCLMUL_MIN_LEN 32u

/* The hybrid chunk: HYBRID_ITERATIONS loop iterations, each folding one FOLD_BLOCK and
 * advancing each of three crc32 streams by HYBRID_STREAM_WORDS words. 10 words (80 bytes)
 * per stream against 256 folded bytes balances the two engines on Zen 3 (8 to 14 measured;
 * 10-12 best). 64 iterations make a 31744-byte chunk, long enough that the per-chunk cost
 * (fold-down, reduction, merge, refilling both pipelines) is a few percent; 16 or 32 were
 * measurably slower, 128 no faster, and inputs shorter than a chunk only fold. */
#define HYBRID_ITERATIONS 64u
#define HYBRID_STREAM_WORDS 10u
#define HYBRID_STREAM_BYTES (HYBRID_ITERATIONS * HYBRID_STREAM_WORDS * 8u)
#define HYBRID_VECTOR_BYTES (HYBRID_ITERATIONS * FOLD_BLOCK)
#define HYBRID_CHUNK_BYTES (HYBRID_VECTOR_BYTES + 3u * HYBRID_STREAM_BYTES)

static skip_multipliers hybrid_skip;

/* Fold multipliers by distance in 16-byte lanes (index 0 unused): for a distance of D bits,
 * first_half = x^(D+63) mod P (multiplies the first 8 bytes of a lane) and second_half =
 * x^(D-1) mod P (the second 8), each in bits 32..63 of its qword (see FOLDING above). */
typedef struct {
    uint64_t first_half;
    uint64_t second_half;
} fold_multipliers;

#define FOLD_MAX_LANES (FOLD_BLOCK / 16u)
static fold_multipliers fold_by_lanes[FOLD_MAX_LANES + 1];

static fold_multipliers make_fold_multipliers(uint64_t distance_bytes)
{
    uint64_t bits = 8 * distance_bytes;
    fold_multipliers k;
    k.first_half = (uint64_t)xpow_mod(bits + 63) << 32;
    k.second_half = (uint64_t)xpow_mod(bits - 1) << 32;
    return k;
}

/* The multipliers for a distance, in every 128-bit lane: low qword first_half. */
__attribute__((target("avx2"))) static inline __m256i fold_multipliers_ymm(size_t distance_bytes)
{
    const fold_multipliers *k = &fold_by_lanes[distance_bytes / 16];
    return _mm256_set_epi64x((long long)k->second_half, (long long)k->first_half,
                             (long long)k->second_half, (long long)k->first_half);
}

__attribute__((target("sse4.2"))) static inline __m128i fold_multipliers_xmm(size_t distance_bytes)
{
    const fold_multipliers *k = &fold_by_lanes[distance_bytes / 16];
    return _mm_set_epi64x((long long)k->second_half, (long long)k->first_half);
}

/* Carries every lane of acc forward by the distance k was made for and adds the data
 * found there: first half (low qword) times k's low qword, second half times its high. */
__attribute__((target("avx2,vpclmulqdq"))) static inline __m256i fold_ymm(__m256i acc, __m256i k,
                                                                           __m256i data)
{
    __m256i first = _mm256_clmulepi64_epi128(acc, k, 0x00);
    __m256i second = _mm256_clmulepi64_epi128(acc, k, 0x11);
    return _mm256_xor_si256(_mm256_xor_si256(first, second), data);
}

__attribute__((target("sse4.2,pclmul"))) static inline __m128i fold_xmm(__m128i acc, __m128i k,
                                                                         __m128i data)
{
    __m128i first = _mm_clmulepi64_si128(acc, k, 0x00);
    __m128i second = _mm_clmulepi64_si128(acc, k, 0x11);
    return _mm_xor_si128(_mm_xor_si128(first, second), data);
}

__attribute__((target("avx2"))) static inline __m256i load_ymm(const uint8_t *p)
{
    return _mm256_loadu_si256((const __m256i *)(const void *)p);
}

/* What fold_blocks leaves: one ymm congruent to the folded bytes (ending where they end),
 * and the three stream states. */
typedef struct {
    __m256i folded;
    uint32_t stream_a, stream_b, stream_c;
} fold_result;

/* Folds `blocks` (>= 1) FOLD_BLOCKs at p, with state XORed into the first 4 bytes, down to
 * one ymm. If words > 0, three crc32 streams from state 0 run in the same loop over
 * blocks * words words each, at streams, streams + blocks * words * 8 and twice that; with
 * words == 0 streams is never read (pass p). Always inlined with a constant words, so the
 * stream loop either unrolls completely or vanishes. */
__attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2"))) static inline fold_result
fold_blocks(uint32_t state, const uint8_t *p, size_t blocks, const uint8_t *streams,
            size_t words)
{
    const size_t stream_bytes = blocks * words * 8;
    const uint8_t *a = streams;
    const uint8_t *b = streams + stream_bytes;
    const uint8_t *c = streams + 2 * stream_bytes;
    fold_result r = {_mm256_setzero_si256(), 0, 0, 0};

    /* Accumulator i holds bytes 32i .. 32i+31 of the current block; lanes are carried a
     * whole block (FOLD_BLOCK bytes) forward per iteration. */
    __m256i acc0 = _mm256_xor_si256(load_ymm(p + 0 * 32),
                                    _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, (int)state));
    __m256i acc1 = load_ymm(p + 1 * 32);
    __m256i acc2 = load_ymm(p + 2 * 32);
    __m256i acc3 = load_ymm(p + 3 * 32);
    __m256i acc4 = load_ymm(p + 4 * 32);
    __m256i acc5 = load_ymm(p + 5 * 32);
    __m256i acc6 = load_ymm(p + 6 * 32);
    __m256i acc7 = load_ymm(p + 7 * 32);
    const __m256i k_block = fold_multipliers_ymm(FOLD_BLOCK);
    /* Each pass advances the streams by one block's share, then folds the next block in,
     * if there is one. */
    for (size_t block = 1;; block++) {
#pragma GCC unroll 16
        for (size_t w = 0; w < words; w++) {
            r.stream_a = crc32_word(r.stream_a, a + 8 * w);
            r.stream_b = crc32_word(r.stream_b, b + 8 * w);
            r.stream_c = crc32_word(r.stream_c, c + 8 * w);
        }
        a += 8 * words;
        b += 8 * words;
        c += 8 * words;
        if (block == blocks)
            break;
        p += FOLD_BLOCK;
        acc0 = fold_ymm(acc0, k_block, load_ymm(p + 0 * 32));
        acc1 = fold_ymm(acc1, k_block, load_ymm(p + 1 * 32));
        acc2 = fold_ymm(acc2, k_block, load_ymm(p + 2 * 32));
        acc3 = fold_ymm(acc3, k_block, load_ymm(p + 3 * 32));
        acc4 = fold_ymm(acc4, k_block, load_ymm(p + 4 * 32));
        acc5 = fold_ymm(acc5, k_block, load_ymm(p + 5 * 32));
        acc6 = fold_ymm(acc6, k_block, load_ymm(p + 6 * 32));
        acc7 = fold_ymm(acc7, k_block, load_ymm(p + 7 * 32));
    }

    /* Accumulator i is 32 * (7 - i) bytes before accumulator 7. The multiplies are
     * independent of each other; only the XORs into the running sum are chained. */
    __m256i folded = acc7;
    folded = fold_ymm(acc6, fold_multipliers_ymm(1 * 32), folded);
    folded = fold_ymm(acc5, fold_multipliers_ymm(2 * 32), folded);
    folded = fold_ymm(acc4, fold_multipliers_ymm(3 * 32), folded);
    folded = fold_ymm(acc3, fold_multipliers_ymm(4 * 32), folded);
    folded = fold_ymm(acc2, fold_multipliers_ymm(5 * 32), folded);
    folded = fold_ymm(acc1, fold_multipliers_ymm(6 * 32), folded);
    folded = fold_ymm(acc0, fold_multipliers_ymm(7 * 32), folded);
    r.folded = folded;
    return r;
}

/* The CRC state after everything folded into lanes (first 16 bytes, then 16 more): fold
 * the first onto the second, then the final reduction (two crc32 steps from state 0). */
__attribute__((target("sse4.2,pclmul"))) static inline uint32_t reduce_lanes(__m128i first,
                                                                               __m128i second)
{
    __m128i lane = fold_xmm(first, fold_multipliers_xmm(16), second);
    uint8_t bytes[16];
    _mm_storeu_si128((__m128i *)(void *)bytes, lane);
    return crc32_word(crc32_word(0, bytes), bytes + 8);
}

/* One hybrid chunk (HYBRID_CHUNK_BYTES at p): the vector part first, then streams a, b, c.
 * The vector part starts from the incoming state, the streams from 0, so the state after
 * the chunk is vector carried over three streams + a over two + b over one + c. */
__attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2"))) static inline uint32_t
hybrid_chunk(uint32_t state, const uint8_t *p)
{
    fold_result r = fold_blocks(state, p, HYBRID_ITERATIONS, p + HYBRID_VECTOR_BYTES,
                                HYBRID_STREAM_WORDS);
    uint32_t vector_state = reduce_lanes(_mm256_castsi256_si128(r.folded),
                                         _mm256_extracti128_si256(r.folded, 1));
    __m128i products = _mm_xor_si128(skip_product(vector_state, hybrid_skip.over_three),
                                     skip_product(r.stream_a, hybrid_skip.over_two));
    products = _mm_xor_si128(products, skip_product(r.stream_b, hybrid_skip.over_one));
    return reduce_product(products) ^ r.stream_c;
}

__attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2"))) static uint32_t
vpclmul_update(uint32_t state, const uint8_t *p, size_t len)
{
    while (len >= HYBRID_CHUNK_BYTES) {
        state = hybrid_chunk(state, p);
        p += HYBRID_CHUNK_BYTES;
        len -= HYBRID_CHUNK_BYTES;
    }
    if (len < VPCLMUL_MIN_LEN)
        return sse42_update(state, p, len);

    __m256i folded;
    if (len >= FOLD_BLOCK) {
        size_t blocks = len / FOLD_BLOCK;
        folded = fold_blocks(state, p, blocks, p, 0).folded;
        p += blocks * FOLD_BLOCK;
        len -= blocks * FOLD_BLOCK;
    } else {
        /* Too short for a block: start from one ymm, state in its first 4 bytes. */
        folded = _mm256_xor_si256(load_ymm(p), _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, (int)state));
        p += 32;
        len -= 32;
    }

    /* Fewer than 256 bytes left: carry the 32 folded bytes over each whole 32-byte piece. */
    const __m256i k_32 = fold_multipliers_ymm(32);
    while (len >= 32) {
        folded = fold_ymm(folded, k_32, load_ymm(p));
        p += 32;
        len -= 32;
    }
    __m128i first = _mm256_castsi256_si128(folded);
    __m128i second = _mm256_extracti128_si256(folded, 1);
    if (len >= 16) {
        /* A 16-byte piece: the first lane moves 32 bytes onto it, the second stays. The
         * two lanes again cover the last 32 bytes consumed. */
        __m128i data = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i last = fold_xmm(first, fold_multipliers_xmm(32), data);
        first = second;
        second = last;
        p += 16;
        len -= 16;
    }
    return crc32_serial(reduce_lanes(first, second), p, len);
}

static uint32_t crc32c_vpclmul(uint32_t crc, const uint8_t *data, size_t len)
{
    return ~vpclmul_update(~crc, data, len);
}
#endif /* LK_CRC32C_X86 */

/* ---------------------------------------------------------------------------------------
 * Dispatch.
 * ------------------------------------------------------------------------------------ */

/* Written once by crc32c_init (under pthread_once, which orders it before every reader);
 * read-only afterwards. A NULL entry is an implementation this CPU or build lacks. */
static crc32c_fn impl_fn[LK_CRC32C_IMPL_COUNT];
static int selected_impl = LK_CRC32C_TABLE;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
    init_tables();
    impl_fn[LK_CRC32C_TABLE] = crc32c_table;
    selected_impl = LK_CRC32C_TABLE;

#ifdef LK_CRC32C_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul")) {
        for (int tier = 0; tier < SSE42_TIERS; tier++)
            sse42_skip[tier] = make_skip_multipliers(sse42_stream_bytes[tier]);
        impl_fn[LK_CRC32C_SSE42] = crc32c_sse42;
        selected_impl = LK_CRC32C_SSE42;

        /* "avx2" is reported only when the OS saves ymm state (XCR0), which the
         * vpclmulqdq bit alone does not promise. */
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq")) {
            for (size_t lanes = 1; lanes <= FOLD_MAX_LANES; lanes++)
                fold_by_lanes[lanes] = make_fold_multipliers(16 * lanes);
            hybrid_skip = make_skip_multipliers(HYBRID_STREAM_BYTES);
            impl_fn[LK_CRC32C_VPCLMUL] = crc32c_vpclmul;
            selected_impl = LK_CRC32C_VPCLMUL;
        }
    }
    /* LK_CRC32C_AVX512 stays NULL: see WHY THERE IS NO ZMM PATH at the top. */
#endif
}

static void ensure_init(void)
{
    /* pthread_once fails only for an invalid control block, which a static one is not. */
    (void)pthread_once(&init_once, crc32c_init);
}

uint32_t lk_crc32c(uint32_t crc, const uint8_t *data, size_t len)
{
    /* NULL with a length is a caller bug this function cannot report; reading nothing is
     * the only answer that stays inside the buffers given (lk_crc32c_with reports it). */
    if (len == 0 || data == NULL)
        return crc;
    ensure_init();
    return impl_fn[selected_impl](crc, data, len);
}

int lk_crc32c_with(int impl, uint32_t crc, const uint8_t *data, size_t len, uint32_t *out)
{
    if (impl < 0 || impl >= LK_CRC32C_IMPL_COUNT || out == NULL || (data == NULL && len > 0))
        return LK_ERR_ARGUMENT;
    ensure_init();
    if (impl_fn[impl] == NULL)
        return LK_ERR_UNSUPPORTED;
    *out = len == 0 ? crc : impl_fn[impl](crc, data, len);
    return LK_OK;
}

int lk_crc32c_impl_available(int impl)
{
    if (impl < 0 || impl >= LK_CRC32C_IMPL_COUNT)
        return 0;
    ensure_init();
    return impl_fn[impl] != NULL;
}

int lk_crc32c_selected_impl(void)
{
    ensure_init();
    return selected_impl;
}

const char *lk_crc32c_impl_name(int impl)
{
    switch (impl) {
    case LK_CRC32C_TABLE:
        return "table";
    case LK_CRC32C_SSE42:
        return "sse42";
    case LK_CRC32C_VPCLMUL:
        return "vpclmulqdq";
    case LK_CRC32C_AVX512:
        return "avx512";
    default:
        return "unknown";
    }
}
