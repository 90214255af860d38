/*
 * test_cleaner.c - C tests of the log cleaner (native/cleaner.c).
 *
 *   1. XXH64 against answers computed with the xxhash package (lengths 0..100 and past
 *      every 32/8/4-byte stripe boundary, seeds 0, 2^64-1 and others, unaligned starts,
 *      each input in an allocation that ends where it ends).
 *   2. The offset map: arguments, put/get/overwrite, growth inside the caller's memory
 *      (every key kept, the table always inside the memory, capacity <= memory / 24),
 *      fullness at the load factor (new keys refused, old ones still updated), clear.
 *   3. The map pass on batches built with lk_batch_encode: from_offset, stop_offset (at a
 *      batch and inside one), FULL, COMPRESSED, offsets not above the previous batch's
 *      (within a call and across calls), cuts, CRC/magic/length/record errors.
 *   4. The filter pass: fixed cases (what is kept, tombstones and delete horizons, byte
 *      for byte copies, FULL and BUFFER_TOO_SMALL), then random logs (data, control,
 *      empty, compressed-flag, delete-horizon and LogAppendTime batches, gapped offsets)
 *      checked against a model of compaction, driven through FULL, COMPRESSED and
 *      BUFFER_TOO_SMALL as logkernel's cleaner drives it, whatever the buffer sizes.
 *      Transactions: fixed cases (aborted batches, compressed or not, out of the map and
 *      the output; producers' last batches kept as bare headers; map_end; the producer
 *      pass; bad aborted lists), and in the model: batches of a few producer ids, some
 *      transactional, under random aborted lists, with and without the producer map; the
 *      producer pass against the model.
 *   5. Robustness: random logs mutated (flipped bytes, every cut of small logs, hostile
 *      lengths, counts, offsets, attributes and varints, the CRC fixed or not) through
 *      lk_cleaner_map, lk_cleaner_producers, lk_cleaner_filter (with and without aborted
 *      lists and producer maps) and lk_records_first_keyless. Under `make
 *      test-asan` this is the fuzz target: no access outside the buffers (out and keep
 *      are also followed by canaries), no hang (an alarm), only documented codes, every
 *      batch the filter writes is whole with a good CRC, and its records validate too
 *      whenever the input's did (the passes walk records, they do not validate them: a
 *      CRC-good batch with bad headers or offset deltas goes through as it came).
 *
 * 6. Regressions: checks of defects found while writing this test (an output overrun, maps
 *    of no slots, load factor 1.0 hanging, initial_keys wrapping, signed overflow on
 *    extreme offsets and timestamps), each in a child process with a time limit, and the
 *    mutation loop once more with inputs that reach them (the first loop skips extreme
 *    offsets and timestamps). The overflow checks bite only under UBSan (the -asan binary).
 *    TEST_CLEANER_VERBOSE=1 prints the loop's counts.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "logkernel.h"

#include "check.h"
#include "support.h"

/* Set in the regression child that runs the mutation loop unscreened. */
static int known_bugs_mode;

/* ------------------------------------------------------------------------------------
 * Bytes, varints, buffers
 * --------------------------------------------------------------------------------- */
enum {
    OFF_LENGTH = 8,
    OFF_EPOCH = 12,
    OFF_MAGIC = 16,
    OFF_CRC = 17,
    OFF_ATTRS = 21,
    OFF_LAST_DELTA = 23,
    OFF_BASE_TS = 27,
    OFF_MAX_TS = 35,
    OFF_PRODUCER = 43,
    OFF_COUNT = 57,
    HDR = LK_BATCH_HEADER_SIZE,
    CANARY = 64
};


static size_t size_at(const uint8_t *batch) { return (size_t)get32(batch + OFF_LENGTH) + LK_LOG_OVERHEAD; }

static uint8_t *put_varint(uint8_t *p, int32_t v)
{
    uint32_t z = ((uint32_t)v << 1) ^ (uint32_t)(v >> 31);
    while (z >= 0x80) {
        *p++ = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    *p++ = (uint8_t)z;
    return p;
}

/* Kafka's varint/varlong readers (at most 5 / 10 bytes); 0 when malformed or cut. */
static int get_varint(const uint8_t **pp, const uint8_t *end, int32_t *out)
{
    uint32_t v = 0;
    const uint8_t *p = *pp;
    for (int shift = 0; shift <= 28; shift += 7) {
        if (p >= end)
            return 0;
        uint8_t b = *p++;
        v |= (uint32_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int32_t)((v >> 1) ^ (0u - (v & 1)));
            *pp = p;
            return 1;
        }
    }
    return 0;
}

static int get_varlong(const uint8_t **pp, const uint8_t *end, int64_t *out)
{
    uint64_t v = 0;
    const uint8_t *p = *pp;
    for (int shift = 0; shift <= 63; shift += 7) {
        if (p >= end)
            return 0;
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)((v >> 1) ^ (0ull - (v & 1)));
            *pp = p;
            return 1;
        }
    }
    return 0;
}

static uint64_t rnd64(void) { return ((uint64_t)rnd() << 32) ^ rnd(); }

typedef struct {
    uint8_t *p;
    size_t len, cap;
} byte_buf;

static void bytes_append(byte_buf *b, const uint8_t *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

/* Bytes left after q (0 once a failed check has moved q past the end). */
static size_t left(size_t len, size_t q) { return q < len ? len - q : 0; }

/* An exact-size heap copy (ASan then catches any read past its end). */
static uint8_t *exact_copy(const uint8_t *src, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    if (n)
        memcpy(p, src, n);
    return p;
}

/* The batch at src (size bytes) with its compression bits cleared and its CRC redone: what
 * the Python cleaner hands back after decompressing (the records here are never really
 * compressed: only the attribute says so). */
static uint8_t *plain_copy(const uint8_t *src, size_t size)
{
    uint8_t *p = exact_copy(src, size);
    set16(p + OFF_ATTRS, (uint16_t)(get16(p + OFF_ATTRS) & ~LK_ATTR_COMPRESSION_MASK));
    (void)lk_batch_update_crc(p, size, NULL);
    return p;
}

static lk_map_result new_map_result(void)
{
    lk_map_result r;
    memset(&r, 0, sizeof r);
    r.last_offset = -1;
    return r;
}

static lk_clean_result new_clean_result(void)
{
    lk_clean_result r;
    memset(&r, 0, sizeof r);
    r.next_horizon_ms = INT64_MAX;
    r.last_offset = -1;
    return r;
}

/* ------------------------------------------------------------------------------------
 * 1. XXH64
 * --------------------------------------------------------------------------------- */
typedef struct {
    uint32_t len;
    uint64_t seed, hash;
} xxh_vector;

/* data[i] = (i * 167 + 13) & 0xff; hashes from Python's xxhash 4.1.0:
 * xxhash.xxh64_intdigest(bytes((i * 167 + 13) & 0xff for i in range(len)), seed). */
static const xxh_vector xxh_vectors[] = {
    {0, 0x0000000000000000ull, 0xef46db3751d8e999ull},
    {1, 0x0000000000000000ull, 0x2078e1ad38ad738bull},
    {2, 0x0000000000000000ull, 0xd9c7bf9d2ba6b544ull},
    {3, 0x0000000000000000ull, 0x634d95fc01a189cdull},
    {4, 0x0000000000000000ull, 0xeed340908a1ac6c6ull},
    {5, 0x0000000000000000ull, 0x342bd7a5f3e2edcdull},
    {6, 0x0000000000000000ull, 0x7d0c8682db81c3eaull},
    {7, 0x0000000000000000ull, 0x0da493621d6dc898ull},
    {8, 0x0000000000000000ull, 0x76f916c7bb523126ull},
    {9, 0x0000000000000000ull, 0x175d7bee83bd73b9ull},
    {10, 0x0000000000000000ull, 0xa8282d00af4ad47bull},
    {11, 0x0000000000000000ull, 0x8beae4d88d350b4bull},
    {12, 0x0000000000000000ull, 0xfb52f89a1dc449d2ull},
    {13, 0x0000000000000000ull, 0x7e1a468bdd27b4d8ull},
    {14, 0x0000000000000000ull, 0x6977612789023e44ull},
    {15, 0x0000000000000000ull, 0x4e1c333b057fb6a4ull},
    {16, 0x0000000000000000ull, 0x7bbeff67699312f6ull},
    {17, 0x0000000000000000ull, 0x5a63f300c4cb3d87ull},
    {18, 0x0000000000000000ull, 0x1ef4c1cba2f885efull},
    {19, 0x0000000000000000ull, 0xf9b88f522f15b79bull},
    {20, 0x0000000000000000ull, 0xb497ddde8ca2de89ull},
    {21, 0x0000000000000000ull, 0x83ad728c7ec3916cull},
    {22, 0x0000000000000000ull, 0x0badbd869953662eull},
    {23, 0x0000000000000000ull, 0x0884afd7d1fa0a16ull},
    {24, 0x0000000000000000ull, 0x864bf0f760184516ull},
    {25, 0x0000000000000000ull, 0xd9d6c74383174389ull},
    {26, 0x0000000000000000ull, 0xf9097890f9c579c1ull},
    {27, 0x0000000000000000ull, 0x061e9b25cddf387full},
    {28, 0x0000000000000000ull, 0x407a0d8e5df705fcull},
    {29, 0x0000000000000000ull, 0x05acf6da6e5ff4b5ull},
    {30, 0x0000000000000000ull, 0xc7d7b0aba49eea5full},
    {31, 0x0000000000000000ull, 0x65c5feb01da7464dull},
    {32, 0x0000000000000000ull, 0x7665c921c9bf2ec7ull},
    {33, 0x0000000000000000ull, 0xb5a9d9ef259ae821ull},
    {34, 0x0000000000000000ull, 0xae0425573ff47833ull},
    {35, 0x0000000000000000ull, 0xe0045f4586d4d91aull},
    {36, 0x0000000000000000ull, 0xde4c0f568d54d497ull},
    {37, 0x0000000000000000ull, 0xc60344dcc647a515ull},
    {38, 0x0000000000000000ull, 0xec2b43f049eb7ec7ull},
    {39, 0x0000000000000000ull, 0xe2148dbbc5ab4089ull},
    {40, 0x0000000000000000ull, 0xc94202b2b0886774ull},
    {41, 0x0000000000000000ull, 0x55f738550a208e0cull},
    {42, 0x0000000000000000ull, 0xd30b02916fdecddfull},
    {43, 0x0000000000000000ull, 0xddaad9373cd92518ull},
    {44, 0x0000000000000000ull, 0x99597b95f6740623ull},
    {45, 0x0000000000000000ull, 0x4e4237a872ced8e6ull},
    {46, 0x0000000000000000ull, 0x35bec731322dbf16ull},
    {47, 0x0000000000000000ull, 0xffb42101c210309eull},
    {48, 0x0000000000000000ull, 0x487555383052a6b8ull},
    {49, 0x0000000000000000ull, 0x0f72d661fe1af016ull},
    {50, 0x0000000000000000ull, 0xa933907c97a3093cull},
    {51, 0x0000000000000000ull, 0x11e2bf4d2c718b5dull},
    {52, 0x0000000000000000ull, 0x713dd26a80875bb8ull},
    {53, 0x0000000000000000ull, 0x1c12a4288b82e52cull},
    {54, 0x0000000000000000ull, 0xfcf7d79acc103487ull},
    {55, 0x0000000000000000ull, 0x6e297f430d2b50c5ull},
    {56, 0x0000000000000000ull, 0x6e8a76d67ce79b64ull},
    {57, 0x0000000000000000ull, 0x0c9629d011cf1646ull},
    {58, 0x0000000000000000ull, 0xf3a329277473d950ull},
    {59, 0x0000000000000000ull, 0x62753ff8371d1a48ull},
    {60, 0x0000000000000000ull, 0x99286364d889ad3full},
    {61, 0x0000000000000000ull, 0x529b3d71bc6ffee4ull},
    {62, 0x0000000000000000ull, 0x8cfcbe0a31be33ecull},
    {63, 0x0000000000000000ull, 0xb0289cd9324034f0ull},
    {64, 0x0000000000000000ull, 0xfff2525c99bf2005ull},
    {65, 0x0000000000000000ull, 0x01fbd6d6ac20fbafull},
    {66, 0x0000000000000000ull, 0x6913b8dad4feaf76ull},
    {67, 0x0000000000000000ull, 0xc0388bac4a10efdeull},
    {68, 0x0000000000000000ull, 0xdc03d10e29bd84acull},
    {69, 0x0000000000000000ull, 0xa9f06935f6bdd53cull},
    {70, 0x0000000000000000ull, 0x56791c162c3c9b17ull},
    {71, 0x0000000000000000ull, 0x7b9dc081227ff4c7ull},
    {72, 0x0000000000000000ull, 0xbc6d9006d4eabd2full},
    {73, 0x0000000000000000ull, 0x04101983ff94916full},
    {74, 0x0000000000000000ull, 0x7eb4e67c98a21be7ull},
    {75, 0x0000000000000000ull, 0x89de920e01749480ull},
    {76, 0x0000000000000000ull, 0xfccc631411863479ull},
    {77, 0x0000000000000000ull, 0x3645fa422afa9e50ull},
    {78, 0x0000000000000000ull, 0xb99ab40b6cfbe055ull},
    {79, 0x0000000000000000ull, 0x8714d70f32af1c73ull},
    {80, 0x0000000000000000ull, 0x19ad191119f792d8ull},
    {81, 0x0000000000000000ull, 0x71b5130865121b07ull},
    {82, 0x0000000000000000ull, 0x520cd9121f444edeull},
    {83, 0x0000000000000000ull, 0x5ce4abbb1076f828ull},
    {84, 0x0000000000000000ull, 0xfbda9b16a00a31b3ull},
    {85, 0x0000000000000000ull, 0xf240f75bff2610f7ull},
    {86, 0x0000000000000000ull, 0x037d7969ead3c862ull},
    {87, 0x0000000000000000ull, 0xe24ce2bad305ebf7ull},
    {88, 0x0000000000000000ull, 0xdab7207c1c2c7526ull},
    {89, 0x0000000000000000ull, 0x90f50da7e6675b72ull},
    {90, 0x0000000000000000ull, 0x36e34fdf7db1d9a6ull},
    {91, 0x0000000000000000ull, 0xd785ce1117327562ull},
    {92, 0x0000000000000000ull, 0xe15458511d9ba37cull},
    {93, 0x0000000000000000ull, 0x8b8cc322981c9a2full},
    {94, 0x0000000000000000ull, 0x747fb7e98fb2abd1ull},
    {95, 0x0000000000000000ull, 0x3b4ce2d430b0fde8ull},
    {96, 0x0000000000000000ull, 0xb4c91238bebc5148ull},
    {97, 0x0000000000000000ull, 0xa14094087ed98c00ull},
    {98, 0x0000000000000000ull, 0x489e62215e88770dull},
    {99, 0x0000000000000000ull, 0x928bffec6ffe35a4ull},
    {100, 0x0000000000000000ull, 0x74e502db362efd4cull},
    {127, 0x0000000000000000ull, 0x48b995c66a54ba1cull},
    {128, 0x0000000000000000ull, 0x048add5a12b8c247ull},
    {129, 0x0000000000000000ull, 0xfa5c536b0660d56cull},
    {255, 0x0000000000000000ull, 0xb75387e16b347906ull},
    {256, 0x0000000000000000ull, 0x177c0fa58a1b0ddbull},
    {257, 0x0000000000000000ull, 0xdefe72b94dc5fa23ull},
    {1000, 0x0000000000000000ull, 0x626443c8029d0542ull},
    {4099, 0x0000000000000000ull, 0x14d82cbc0385cc86ull},
    {0, 0xffffffffffffffffull, 0x298f4c84b24f5380ull},
    {1, 0xffffffffffffffffull, 0x6fbb6e732fff4cbcull},
    {2, 0xffffffffffffffffull, 0x516b4906554268a1ull},
    {3, 0xffffffffffffffffull, 0x3702e633f6264a01ull},
    {4, 0xffffffffffffffffull, 0x4ccf9dd03ef30dcaull},
    {5, 0xffffffffffffffffull, 0xc694fad2e25284d3ull},
    {6, 0xffffffffffffffffull, 0x09cb736aa4593bcdull},
    {7, 0xffffffffffffffffull, 0x8e6c33a6043d3defull},
    {8, 0xffffffffffffffffull, 0x0b87b1071c542f92ull},
    {9, 0xffffffffffffffffull, 0x7cc31e46d329a867ull},
    {10, 0xffffffffffffffffull, 0x2a8bf5bc625a02b6ull},
    {11, 0xffffffffffffffffull, 0x52b2bfb0302901caull},
    {12, 0xffffffffffffffffull, 0x1858b876a873633dull},
    {13, 0xffffffffffffffffull, 0x9a0d82fb875e074cull},
    {14, 0xffffffffffffffffull, 0xf929026ac6060169ull},
    {15, 0xffffffffffffffffull, 0x5b84e64ab5d2ca09ull},
    {16, 0xffffffffffffffffull, 0x3207bf3da9cc6a11ull},
    {17, 0xffffffffffffffffull, 0x3383ccca471f2908ull},
    {18, 0xffffffffffffffffull, 0x647c6c53bb694e23ull},
    {19, 0xffffffffffffffffull, 0xa8f0ed653ee8d1d8ull},
    {20, 0xffffffffffffffffull, 0x172452aedf401683ull},
    {21, 0xffffffffffffffffull, 0xfa64ce6fa2c30b28ull},
    {22, 0xffffffffffffffffull, 0xcc23f6b0aa340b40ull},
    {23, 0xffffffffffffffffull, 0xe4c2ac6b34bb29c1ull},
    {24, 0xffffffffffffffffull, 0x18755e7d11a56b48ull},
    {25, 0xffffffffffffffffull, 0xdd54837812049487ull},
    {26, 0xffffffffffffffffull, 0x89e4e49d30a41be1ull},
    {27, 0xffffffffffffffffull, 0x5eee8dbe194ac274ull},
    {28, 0xffffffffffffffffull, 0x79f82e12b5724f83ull},
    {29, 0xffffffffffffffffull, 0x9e7e043e80d9b3b6ull},
    {30, 0xffffffffffffffffull, 0xb2e57f9d1d58f282ull},
    {31, 0xffffffffffffffffull, 0x26410674da2508baull},
    {32, 0xffffffffffffffffull, 0x7c688ca0530c3a9full},
    {33, 0xffffffffffffffffull, 0xab869658eda7c134ull},
    {34, 0xffffffffffffffffull, 0x4bec76b06149ef5cull},
    {35, 0xffffffffffffffffull, 0x79abf668f46d56b6ull},
    {36, 0xffffffffffffffffull, 0xf7b18e4f9b63890bull},
    {37, 0xffffffffffffffffull, 0xac3f8407976294d2ull},
    {38, 0xffffffffffffffffull, 0x98fbb4c515331f28ull},
    {39, 0xffffffffffffffffull, 0x75ded9c76e1e86dfull},
    {40, 0xffffffffffffffffull, 0xeb4f8fd60eea9ec7ull},
    {41, 0xffffffffffffffffull, 0x385e143a5638290eull},
    {42, 0xffffffffffffffffull, 0xe833116900ee69a8ull},
    {43, 0xffffffffffffffffull, 0x67ce1f0ffa0931adull},
    {44, 0xffffffffffffffffull, 0xe0c251b2e130d00dull},
    {45, 0xffffffffffffffffull, 0x4d9ab23cf77b0181ull},
    {46, 0xffffffffffffffffull, 0x2d69a7607cdafd6full},
    {47, 0xffffffffffffffffull, 0xb0fc17aa8d6a10e0ull},
    {48, 0xffffffffffffffffull, 0x5a2ea2327c446944ull},
    {49, 0xffffffffffffffffull, 0x8c1d1536c18d6b85ull},
    {50, 0xffffffffffffffffull, 0x353c4b061e679d81ull},
    {51, 0xffffffffffffffffull, 0x1cb9583f845225c4ull},
    {52, 0xffffffffffffffffull, 0x19c1059aaa297e73ull},
    {53, 0xffffffffffffffffull, 0x4e08bf51cbd297e1ull},
    {54, 0xffffffffffffffffull, 0x0cbb40159d1e147full},
    {55, 0xffffffffffffffffull, 0x2015c7cef87dbe3dull},
    {56, 0xffffffffffffffffull, 0xf6da67eef1d99f08ull},
    {57, 0xffffffffffffffffull, 0xc0c98e171b76f7e4ull},
    {58, 0xffffffffffffffffull, 0x8af6eb9221b7f65aull},
    {59, 0xffffffffffffffffull, 0xbc8b6d5d8037cfb4ull},
    {60, 0xffffffffffffffffull, 0x24733942eea74c04ull},
    {61, 0xffffffffffffffffull, 0x8c6b44321ac3d126ull},
    {62, 0xffffffffffffffffull, 0xa4caa5855614f48cull},
    {63, 0xffffffffffffffffull, 0x9cc035f59d59dd37ull},
    {64, 0xffffffffffffffffull, 0x87adb19c1e411a30ull},
    {65, 0xffffffffffffffffull, 0xc5674c8af2048ef2ull},
    {66, 0xffffffffffffffffull, 0x12df95a6caceb4fbull},
    {67, 0xffffffffffffffffull, 0x2c66ba0b048116ffull},
    {68, 0xffffffffffffffffull, 0x6f0f0fee1b235dd1ull},
    {69, 0xffffffffffffffffull, 0xec3b20729c9b7e1full},
    {70, 0xffffffffffffffffull, 0xe2fa70909e458379ull},
    {71, 0xffffffffffffffffull, 0xac110adf2eda142bull},
    {72, 0xffffffffffffffffull, 0x18452a73c8f4d52bull},
    {73, 0xffffffffffffffffull, 0x51cdff60b6608cceull},
    {74, 0xffffffffffffffffull, 0x7d361deeaac75c66ull},
    {75, 0xffffffffffffffffull, 0x922b35fa5a5c21d4ull},
    {76, 0xffffffffffffffffull, 0x944a2b495a61f156ull},
    {77, 0xffffffffffffffffull, 0x0724569125ec72a9ull},
    {78, 0xffffffffffffffffull, 0x1483ee36e7d42ae1ull},
    {79, 0xffffffffffffffffull, 0xa92ab3b173691b56ull},
    {80, 0xffffffffffffffffull, 0x81abafca21faaff3ull},
    {81, 0xffffffffffffffffull, 0x9af609d4c6622920ull},
    {82, 0xffffffffffffffffull, 0x0bcab578f96027e8ull},
    {83, 0xffffffffffffffffull, 0xa3df6fbd1ea27537ull},
    {84, 0xffffffffffffffffull, 0xcbafadb5a7896494ull},
    {85, 0xffffffffffffffffull, 0xcca1b31acd112a33ull},
    {86, 0xffffffffffffffffull, 0x518b1bcfee643bd4ull},
    {87, 0xffffffffffffffffull, 0xf04c3d81807f2a55ull},
    {88, 0xffffffffffffffffull, 0xf837135104c2453bull},
    {89, 0xffffffffffffffffull, 0x8c1e5ba7063f51e0ull},
    {90, 0xffffffffffffffffull, 0xddf758040f911491ull},
    {91, 0xffffffffffffffffull, 0xcf3984af1ca46682ull},
    {92, 0xffffffffffffffffull, 0x77615eeb747429a4ull},
    {93, 0xffffffffffffffffull, 0xa506ac9e1692ec6bull},
    {94, 0xffffffffffffffffull, 0x736fb23e2cf71ad2ull},
    {95, 0xffffffffffffffffull, 0xbdae4f779c7079ddull},
    {96, 0xffffffffffffffffull, 0x83face163e34b7d9ull},
    {97, 0xffffffffffffffffull, 0xcb19ba3c0780b6a8ull},
    {98, 0xffffffffffffffffull, 0x3e0d8b79b34c24d4ull},
    {99, 0xffffffffffffffffull, 0xd1fec2cbac7732b7ull},
    {100, 0xffffffffffffffffull, 0xeab6929c4e9b92b2ull},
    {127, 0xffffffffffffffffull, 0x2fcb60877c511c72ull},
    {128, 0xffffffffffffffffull, 0x4d0e3c288cfbf2bfull},
    {129, 0xffffffffffffffffull, 0x0f63c524ab4e198full},
    {255, 0xffffffffffffffffull, 0xa8092c4cc317c064ull},
    {256, 0xffffffffffffffffull, 0xbdb294bb27fc4089ull},
    {257, 0xffffffffffffffffull, 0x2af103af1e16c09aull},
    {1000, 0xffffffffffffffffull, 0x41692b29ce725a4full},
    {4099, 0xffffffffffffffffull, 0x6fd218970d8d7e30ull},
    {0, 0x6c6f676b65726e6cull, 0x645f76a8838e1d70ull},
    {1, 0x6c6f676b65726e6cull, 0xa33e5a298f7f327bull},
    {2, 0x6c6f676b65726e6cull, 0x627c6c93fcd73bdaull},
    {3, 0x6c6f676b65726e6cull, 0x130e76922e65891cull},
    {4, 0x6c6f676b65726e6cull, 0x2a75464e5900db85ull},
    {5, 0x6c6f676b65726e6cull, 0x10e4902a09cd6fd2ull},
    {6, 0x6c6f676b65726e6cull, 0xa443565b1f225e4eull},
    {7, 0x6c6f676b65726e6cull, 0x4e5eaae616364f7eull},
    {8, 0x6c6f676b65726e6cull, 0x88f11a63c1639784ull},
    {9, 0x6c6f676b65726e6cull, 0xef5e03ecf3534771ull},
    {10, 0x6c6f676b65726e6cull, 0x3fc5354fa939ff46ull},
    {11, 0x6c6f676b65726e6cull, 0xec37ed80f6a3b2bbull},
    {12, 0x6c6f676b65726e6cull, 0x7228296c99be6c6bull},
    {13, 0x6c6f676b65726e6cull, 0xc0e32334c5c5d312ull},
    {14, 0x6c6f676b65726e6cull, 0x47a12b84659abfe3ull},
    {15, 0x6c6f676b65726e6cull, 0x026a2211b5d011d3ull},
    {16, 0x6c6f676b65726e6cull, 0xa5f4533c0ab57d16ull},
    {17, 0x6c6f676b65726e6cull, 0x9c3633d1b068a619ull},
    {18, 0x6c6f676b65726e6cull, 0xd4e219a24b8d8f16ull},
    {19, 0x6c6f676b65726e6cull, 0xe8766fd3ca839d89ull},
    {20, 0x6c6f676b65726e6cull, 0x9ba710546fb5a55eull},
    {21, 0x6c6f676b65726e6cull, 0x8efba7bb126ab441ull},
    {22, 0x6c6f676b65726e6cull, 0x1e700d53e531ac6full},
    {23, 0x6c6f676b65726e6cull, 0x55607816c0b13029ull},
    {24, 0x6c6f676b65726e6cull, 0x8ebb4fe1ba192e8dull},
    {25, 0x6c6f676b65726e6cull, 0x8de4c9857a5d6366ull},
    {26, 0x6c6f676b65726e6cull, 0x097615953a1a61e1ull},
    {27, 0x6c6f676b65726e6cull, 0xd3e50d92012f7f9dull},
    {28, 0x6c6f676b65726e6cull, 0x977a71d1b02b7347ull},
    {29, 0x6c6f676b65726e6cull, 0xec05cf17f09ed335ull},
    {30, 0x6c6f676b65726e6cull, 0xa09cf055d64a150bull},
    {31, 0x6c6f676b65726e6cull, 0xbd241af0326f06d7ull},
    {32, 0x6c6f676b65726e6cull, 0x6843fe6ed3bee160ull},
    {33, 0x6c6f676b65726e6cull, 0x5b7ecc9269acb88aull},
    {34, 0x6c6f676b65726e6cull, 0x56e1cdb0d6772c32ull},
    {35, 0x6c6f676b65726e6cull, 0x3b35f964c2ef6f59ull},
    {36, 0x6c6f676b65726e6cull, 0x6e4c736fca33c785ull},
    {37, 0x6c6f676b65726e6cull, 0x45d4dcf55e32da1bull},
    {38, 0x6c6f676b65726e6cull, 0x60d752467fd8b5f6ull},
    {39, 0x6c6f676b65726e6cull, 0xc1ade7128e964104ull},
    {40, 0x6c6f676b65726e6cull, 0x20a3c9ba329aeb89ull},
    {41, 0x6c6f676b65726e6cull, 0xc6e1f84858b5cd8bull},
    {42, 0x6c6f676b65726e6cull, 0xa3d23b6267986753ull},
    {43, 0x6c6f676b65726e6cull, 0x508abc3802b3a14dull},
    {44, 0x6c6f676b65726e6cull, 0xc0edb536f81eb8f6ull},
    {45, 0x6c6f676b65726e6cull, 0x89f23c2e7e528e31ull},
    {46, 0x6c6f676b65726e6cull, 0xf10f1b1d2ce9a753ull},
    {47, 0x6c6f676b65726e6cull, 0xf5166925adf90e63ull},
    {48, 0x6c6f676b65726e6cull, 0xa2ccdf0f0fc78593ull},
    {49, 0x6c6f676b65726e6cull, 0x4b2d4ebb667419b2ull},
    {50, 0x6c6f676b65726e6cull, 0x2376d6b09a736b3eull},
    {51, 0x6c6f676b65726e6cull, 0x761c2c1870764e41ull},
    {52, 0x6c6f676b65726e6cull, 0xc5e308eb927de196ull},
    {53, 0x6c6f676b65726e6cull, 0x0b11639540f78733ull},
    {54, 0x6c6f676b65726e6cull, 0x4190b82aace23279ull},
    {55, 0x6c6f676b65726e6cull, 0xc234631682fd8e07ull},
    {56, 0x6c6f676b65726e6cull, 0xf6f6efbf3afee7dcull},
    {57, 0x6c6f676b65726e6cull, 0xe226f2f2fd0890d5ull},
    {58, 0x6c6f676b65726e6cull, 0x02ae235e930a759bull},
    {59, 0x6c6f676b65726e6cull, 0x872b4670694df1ceull},
    {60, 0x6c6f676b65726e6cull, 0x3b4f90cfd690e6b3ull},
    {61, 0x6c6f676b65726e6cull, 0x8fe75851e7b112e7ull},
    {62, 0x6c6f676b65726e6cull, 0x5d3a917e176749c7ull},
    {63, 0x6c6f676b65726e6cull, 0x115a938dc4bd71ccull},
    {64, 0x6c6f676b65726e6cull, 0x4db75f5d21288fc7ull},
    {65, 0x6c6f676b65726e6cull, 0xe7ccb1bfb41d5ba5ull},
    {66, 0x6c6f676b65726e6cull, 0x428bd33c17d9e02cull},
    {67, 0x6c6f676b65726e6cull, 0x86f2a05c8920719bull},
    {68, 0x6c6f676b65726e6cull, 0x7525f2f2d67f874full},
    {69, 0x6c6f676b65726e6cull, 0xf62da97bee7c29deull},
    {70, 0x6c6f676b65726e6cull, 0x9d23e62108d23ae2ull},
    {71, 0x6c6f676b65726e6cull, 0xe54b54eaaeac2157ull},
    {72, 0x6c6f676b65726e6cull, 0x9a4df639eac21662ull},
    {73, 0x6c6f676b65726e6cull, 0x119bf595c26d55a2ull},
    {74, 0x6c6f676b65726e6cull, 0x82d354af17a080aaull},
    {75, 0x6c6f676b65726e6cull, 0x33b2d18dd00303f0ull},
    {76, 0x6c6f676b65726e6cull, 0x7062498d14e7ecb9ull},
    {77, 0x6c6f676b65726e6cull, 0xd6b3b1883eb0785full},
    {78, 0x6c6f676b65726e6cull, 0xd56d4e940f70a234ull},
    {79, 0x6c6f676b65726e6cull, 0x5b439f2099a0b702ull},
    {80, 0x6c6f676b65726e6cull, 0x25f7b8a28981ea53ull},
    {81, 0x6c6f676b65726e6cull, 0x5eba278063158400ull},
    {82, 0x6c6f676b65726e6cull, 0xe43aede6dd26fe5dull},
    {83, 0x6c6f676b65726e6cull, 0xe4826d74221795d2ull},
    {84, 0x6c6f676b65726e6cull, 0xb4b668cbc467fc60ull},
    {85, 0x6c6f676b65726e6cull, 0x07de5bd56e94339eull},
    {86, 0x6c6f676b65726e6cull, 0xd80e0c9652257ee5ull},
    {87, 0x6c6f676b65726e6cull, 0xf08e5b6ea74c81acull},
    {88, 0x6c6f676b65726e6cull, 0xe2a4f823008de5d8ull},
    {89, 0x6c6f676b65726e6cull, 0xf159eda0d076e9e5ull},
    {90, 0x6c6f676b65726e6cull, 0xe8865f8a57cb5168ull},
    {91, 0x6c6f676b65726e6cull, 0x0b01e4c1806cc6a1ull},
    {92, 0x6c6f676b65726e6cull, 0xdc0e9fa6343a2a44ull},
    {93, 0x6c6f676b65726e6cull, 0xc7aae6d3cdf4eb05ull},
    {94, 0x6c6f676b65726e6cull, 0x6275ed69f0afebb3ull},
    {95, 0x6c6f676b65726e6cull, 0xd61f23e45a931229ull},
    {96, 0x6c6f676b65726e6cull, 0xce7179fd7c3309b6ull},
    {97, 0x6c6f676b65726e6cull, 0xbe3b7b8c8c987b69ull},
    {98, 0x6c6f676b65726e6cull, 0xa30cb3f64fd786aeull},
    {99, 0x6c6f676b65726e6cull, 0x5d9eb6827bab3eb0ull},
    {100, 0x6c6f676b65726e6cull, 0x111ae998da678d85ull},
    {127, 0x6c6f676b65726e6cull, 0x21403601480e2c84ull},
    {128, 0x6c6f676b65726e6cull, 0x50593be9ac11c4f8ull},
    {129, 0x6c6f676b65726e6cull, 0x505f54df756ca9b1ull},
    {255, 0x6c6f676b65726e6cull, 0xb041dbb1d944dad9ull},
    {256, 0x6c6f676b65726e6cull, 0xcb7be73a096aa6b8ull},
    {257, 0x6c6f676b65726e6cull, 0x7013929fad99d35aull},
    {1000, 0x6c6f676b65726e6cull, 0xff2e6f566182384eull},
    {4099, 0x6c6f676b65726e6cull, 0x331244624579763dull},
    {0, 0x0000000000000001ull, 0xd5afba1336a3be4bull},
    {1, 0x0000000000000001ull, 0x877218c0886c3aa1ull},
    {2, 0x0000000000000001ull, 0x1eb301ebbd4b326dull},
    {3, 0x0000000000000001ull, 0x4f79f69195dddefeull},
    {4, 0x0000000000000001ull, 0x0ede86208f01287bull},
    {5, 0x0000000000000001ull, 0xfeb3b490f3029a80ull},
    {6, 0x0000000000000001ull, 0x3808a70f0d62daa6ull},
    {7, 0x0000000000000001ull, 0xd3f41c9d91005926ull},
    {8, 0x0000000000000001ull, 0x3f6e32036d62145eull},
    {9, 0x0000000000000001ull, 0x34410331fcf2d4a0ull},
    {11, 0x0000000000000001ull, 0x6c144116402e3fbbull},
    {12, 0x0000000000000001ull, 0xa6a564076991d60full},
    {13, 0x0000000000000001ull, 0x835991b2b1aaecbdull},
    {15, 0x0000000000000001ull, 0x9e50b8eadab60755ull},
    {16, 0x0000000000000001ull, 0xe7a0766a8c3b3e5full},
    {17, 0x0000000000000001ull, 0x899b85b7a09e43e5ull},
    {20, 0x0000000000000001ull, 0xea4945cece915d2cull},
    {23, 0x0000000000000001ull, 0x37f44b34aaf94cc9ull},
    {24, 0x0000000000000001ull, 0xa792d217a95b5c5aull},
    {25, 0x0000000000000001ull, 0x3ad0995bf9e1a70aull},
    {28, 0x0000000000000001ull, 0x399289aad39c501cull},
    {31, 0x0000000000000001ull, 0x7af1d5c3bf102c57ull},
    {32, 0x0000000000000001ull, 0x4d8c71d9fd9535cdull},
    {33, 0x0000000000000001ull, 0xfaa058ec508dbfe0ull},
    {35, 0x0000000000000001ull, 0xf5f3413738f679b9ull},
    {36, 0x0000000000000001ull, 0x4d2f7973b570f46dull},
    {39, 0x0000000000000001ull, 0x27d36fdf99c7adf5ull},
    {40, 0x0000000000000001ull, 0x014bd197e740602dull},
    {41, 0x0000000000000001ull, 0x7678578fc9f600d8ull},
    {44, 0x0000000000000001ull, 0x959fc63c8083a416ull},
    {47, 0x0000000000000001ull, 0xd738390f0872dbccull},
    {48, 0x0000000000000001ull, 0xde1b1e847956f6b4ull},
    {49, 0x0000000000000001ull, 0xa9e245730c1d523aull},
    {56, 0x0000000000000001ull, 0x18abe0552a84991cull},
    {63, 0x0000000000000001ull, 0x3f6650fbb316493aull},
    {64, 0x0000000000000001ull, 0xa1e8c8068065a557ull},
    {65, 0x0000000000000001ull, 0x3d758da18e2f1ce7ull},
    {71, 0x0000000000000001ull, 0x2168c31c5462721aull},
    {72, 0x0000000000000001ull, 0xaf0e37592d2e9213ull},
    {95, 0x0000000000000001ull, 0x128285b6f871b57cull},
    {96, 0x0000000000000001ull, 0x400c01c086324b58ull},
    {97, 0x0000000000000001ull, 0x1339bf6b92ac5ee2ull},
    {100, 0x0000000000000001ull, 0x0b0c977eb8a18330ull},
    {127, 0x0000000000000001ull, 0x82bda17b4bae91ecull},
    {128, 0x0000000000000001ull, 0xbe97fa72b967ed6bull},
    {129, 0x0000000000000001ull, 0x3e32c5f41d004a09ull},
    {255, 0x0000000000000001ull, 0xf42430fca1e20842ull},
    {256, 0x0000000000000001ull, 0x50fed7e07a3e96f9ull},
    {257, 0x0000000000000001ull, 0xa7cfbdca4a65b771ull},
    {1000, 0x0000000000000001ull, 0xc86828d1c94b3f0aull},
    {4099, 0x0000000000000001ull, 0xc35d78bc2c168ab9ull},
    {0, 0x9e3779b185ebca87ull, 0x6ec6d05f61c7e7a7ull},
    {1, 0x9e3779b185ebca87ull, 0xb601b1bec4b55220ull},
    {2, 0x9e3779b185ebca87ull, 0x60855ca994810237ull},
    {3, 0x9e3779b185ebca87ull, 0x7e33ffd3f6eecdd4ull},
    {4, 0x9e3779b185ebca87ull, 0x913ce24842fa69a6ull},
    {5, 0x9e3779b185ebca87ull, 0x0fb966947fcc0daaull},
    {6, 0x9e3779b185ebca87ull, 0xbc036a38c5f89853ull},
    {7, 0x9e3779b185ebca87ull, 0x8f177470925a20b2ull},
    {8, 0x9e3779b185ebca87ull, 0x8bbd4541b20ef43aull},
    {9, 0x9e3779b185ebca87ull, 0x7db7ecad7e940f66ull},
    {11, 0x9e3779b185ebca87ull, 0x5a85e5f849a49f11ull},
    {12, 0x9e3779b185ebca87ull, 0xc939fa86d874ad54ull},
    {13, 0x9e3779b185ebca87ull, 0x48db2d768d67e76dull},
    {15, 0x9e3779b185ebca87ull, 0x93e9c80d7acc4e9aull},
    {16, 0x9e3779b185ebca87ull, 0x3d8bccd9c621b25eull},
    {17, 0x9e3779b185ebca87ull, 0x38dec85d4fd0131eull},
    {20, 0x9e3779b185ebca87ull, 0x4fef2a6db5c8a5f9ull},
    {23, 0x9e3779b185ebca87ull, 0x63d4baf399b68994ull},
    {24, 0x9e3779b185ebca87ull, 0x2e1838181e91aa54ull},
    {25, 0x9e3779b185ebca87ull, 0x78721e211d3fb9e9ull},
    {28, 0x9e3779b185ebca87ull, 0xce489ad62476773eull},
    {31, 0x9e3779b185ebca87ull, 0x629ab907a4a5c258ull},
    {32, 0x9e3779b185ebca87ull, 0xc1e8448aca8ce154ull},
    {33, 0x9e3779b185ebca87ull, 0xaf7343248f397363ull},
    {35, 0x9e3779b185ebca87ull, 0x09bfecb45e312338ull},
    {36, 0x9e3779b185ebca87ull, 0xf903319bc125af5eull},
    {39, 0x9e3779b185ebca87ull, 0x6e4aa6dedf8f6782ull},
    {40, 0x9e3779b185ebca87ull, 0x067043c19e2617beull},
    {41, 0x9e3779b185ebca87ull, 0x5d69692f8d9f59a6ull},
    {44, 0x9e3779b185ebca87ull, 0xbc9bf829778a66daull},
    {47, 0x9e3779b185ebca87ull, 0x5d2f50442386f814ull},
    {48, 0x9e3779b185ebca87ull, 0x24d1646bb5ae4ff5ull},
    {49, 0x9e3779b185ebca87ull, 0xd9e2c182dcaaa875ull},
    {56, 0x9e3779b185ebca87ull, 0x27939a8eed9e15fdull},
    {63, 0x9e3779b185ebca87ull, 0xcc4a478cd9b82e7aull},
    {64, 0x9e3779b185ebca87ull, 0x113b1f113228b740ull},
    {65, 0x9e3779b185ebca87ull, 0x04f260d24e3f78b1ull},
    {71, 0x9e3779b185ebca87ull, 0xa06fddcd4129e5beull},
    {72, 0x9e3779b185ebca87ull, 0x202d6b7026a09e5bull},
    {95, 0x9e3779b185ebca87ull, 0x3f03b6a44a5dcf08ull},
    {96, 0x9e3779b185ebca87ull, 0x18e5a3e3059f7d7dull},
    {97, 0x9e3779b185ebca87ull, 0xa2bf04bdc466e475ull},
    {100, 0x9e3779b185ebca87ull, 0xb34b5973361ac2bbull},
    {127, 0x9e3779b185ebca87ull, 0x7911cbc236f71ec9ull},
    {128, 0x9e3779b185ebca87ull, 0xaf48cffd03b817e7ull},
    {129, 0x9e3779b185ebca87ull, 0xf087d1a1e5580f31ull},
    {255, 0x9e3779b185ebca87ull, 0x56428ed1b836dd5dull},
    {256, 0x9e3779b185ebca87ull, 0x5846ccc94eda58aeull},
    {257, 0x9e3779b185ebca87ull, 0xaf0f01f05d68af0dull},
    {1000, 0x9e3779b185ebca87ull, 0xe67a1af9abbf3ba6ull},
    {4099, 0x9e3779b185ebca87ull, 0x2f7030fe5f50615bull},
    {0, 0x8000000000000000ull, 0xcf2d67ffe44a40dfull},
    {1, 0x8000000000000000ull, 0x6639d3b0c5aee4f1ull},
    {2, 0x8000000000000000ull, 0xeb018715ee8516c7ull},
    {3, 0x8000000000000000ull, 0x90ea3ca53ef8fd76ull},
    {4, 0x8000000000000000ull, 0x5c6f4d346630d101ull},
    {5, 0x8000000000000000ull, 0xb8b128fe03d17f37ull},
    {6, 0x8000000000000000ull, 0x3729dd5bb6593c0dull},
    {7, 0x8000000000000000ull, 0xa9742b27acbc9ef8ull},
    {8, 0x8000000000000000ull, 0xdb5a72910cdc8873ull},
    {9, 0x8000000000000000ull, 0xa3a45b05483533fcull},
    {11, 0x8000000000000000ull, 0xd0aa98e69c93fe63ull},
    {12, 0x8000000000000000ull, 0x8e0637aacceec739ull},
    {13, 0x8000000000000000ull, 0x7392364f627915fdull},
    {15, 0x8000000000000000ull, 0x935292ca23715c9full},
    {16, 0x8000000000000000ull, 0xfc4437cf2e2693b9ull},
    {17, 0x8000000000000000ull, 0xf5b0e7730d4ce322ull},
    {20, 0x8000000000000000ull, 0x9e9d840f14972ce3ull},
    {23, 0x8000000000000000ull, 0xcc85903a3012837bull},
    {24, 0x8000000000000000ull, 0x4843890df34d6672ull},
    {25, 0x8000000000000000ull, 0xd9f4d47cebb0002aull},
    {28, 0x8000000000000000ull, 0xf70aeb52f1761108ull},
    {31, 0x8000000000000000ull, 0x041b0bd588828659ull},
    {32, 0x8000000000000000ull, 0x8e34dbc59ffcf4e3ull},
    {33, 0x8000000000000000ull, 0xbec2aaa6f6e53248ull},
    {35, 0x8000000000000000ull, 0xd0a6d00d70ccec22ull},
    {36, 0x8000000000000000ull, 0xdbfae1c1412648b0ull},
    {39, 0x8000000000000000ull, 0x4144e2bf32d705b4ull},
    {40, 0x8000000000000000ull, 0xe8b42d3692b8d2efull},
    {41, 0x8000000000000000ull, 0x9670b68463faa598ull},
    {44, 0x8000000000000000ull, 0x3b1bd8eac808c6ddull},
    {47, 0x8000000000000000ull, 0x6d6487d320709ee2ull},
    {48, 0x8000000000000000ull, 0xbcbd2f0ecb2df4b0ull},
    {49, 0x8000000000000000ull, 0x7ced0ffcf88e8d71ull},
    {56, 0x8000000000000000ull, 0xf309ce27379d5742ull},
    {63, 0x8000000000000000ull, 0x319b24d958e839e5ull},
    {64, 0x8000000000000000ull, 0x3a99ad35aab1494cull},
    {65, 0x8000000000000000ull, 0x62f591ee31b7ef93ull},
    {71, 0x8000000000000000ull, 0x11f9ce52c8146bb5ull},
    {72, 0x8000000000000000ull, 0xc814932f24d40e74ull},
    {95, 0x8000000000000000ull, 0xad49e1c76b818063ull},
    {96, 0x8000000000000000ull, 0xe1394b52b1401418ull},
    {97, 0x8000000000000000ull, 0xde040ee1a5fce23cull},
    {100, 0x8000000000000000ull, 0x57cd529d56c7972dull},
    {127, 0x8000000000000000ull, 0x6b3865946466317bull},
    {128, 0x8000000000000000ull, 0xb6334f042d89c3f4ull},
    {129, 0x8000000000000000ull, 0x61217643cd71377cull},
    {255, 0x8000000000000000ull, 0x4439a12389ff3334ull},
    {256, 0x8000000000000000ull, 0x2d476bb697990140ull},
    {257, 0x8000000000000000ull, 0x149c02ee680c310full},
    {1000, 0x8000000000000000ull, 0xee315e5a4f413281ull},
    {4099, 0x8000000000000000ull, 0x9814827fd6c08ff4ull},
    {0, 0x123456789abcdef0ull, 0x7fef5b0c316777edull},
    {1, 0x123456789abcdef0ull, 0x76f866e0c3aaa91aull},
    {2, 0x123456789abcdef0ull, 0xba348e0406162309ull},
    {3, 0x123456789abcdef0ull, 0xf64a278ab4a34c8bull},
    {4, 0x123456789abcdef0ull, 0xb21aea81032c7823ull},
    {5, 0x123456789abcdef0ull, 0xe96c6d9331b37da2ull},
    {6, 0x123456789abcdef0ull, 0x0ebb6f09240bcfbbull},
    {7, 0x123456789abcdef0ull, 0x01cfc08bfb7c1681ull},
    {8, 0x123456789abcdef0ull, 0x0b30918c7f636c01ull},
    {9, 0x123456789abcdef0ull, 0x99f50b65428d3cb2ull},
    {11, 0x123456789abcdef0ull, 0x0316783a2e28562cull},
    {12, 0x123456789abcdef0ull, 0x7551f55df773cb37ull},
    {13, 0x123456789abcdef0ull, 0x2f475c4a9084ced1ull},
    {15, 0x123456789abcdef0ull, 0x1c61b3987bbb31c6ull},
    {16, 0x123456789abcdef0ull, 0xca2d9e4e55412395ull},
    {17, 0x123456789abcdef0ull, 0xc0cc4fdd615bc292ull},
    {20, 0x123456789abcdef0ull, 0xba000bb000a67aeeull},
    {23, 0x123456789abcdef0ull, 0x7d5bb3910d2f7220ull},
    {24, 0x123456789abcdef0ull, 0x354dda2e46481c0bull},
    {25, 0x123456789abcdef0ull, 0x073511af130f20c1ull},
    {28, 0x123456789abcdef0ull, 0xa343f79861a598f5ull},
    {31, 0x123456789abcdef0ull, 0x185b6712b22540c9ull},
    {32, 0x123456789abcdef0ull, 0xa4a65bdd7a7d059bull},
    {33, 0x123456789abcdef0ull, 0x1ba0486785cf35e8ull},
    {35, 0x123456789abcdef0ull, 0x8c79a42b28b895f6ull},
    {36, 0x123456789abcdef0ull, 0x7e5d2c81d9a0a149ull},
    {39, 0x123456789abcdef0ull, 0xeab69eb7523c40ebull},
    {40, 0x123456789abcdef0ull, 0xeadff0fbec98e1baull},
    {41, 0x123456789abcdef0ull, 0x9448b5a5832d205dull},
    {44, 0x123456789abcdef0ull, 0x55c6af51422bb6beull},
    {47, 0x123456789abcdef0ull, 0x91b2125b6d54ed8full},
    {48, 0x123456789abcdef0ull, 0x994fa01a65c83ac5ull},
    {49, 0x123456789abcdef0ull, 0x687609ac60d13d9full},
    {56, 0x123456789abcdef0ull, 0x6ed19c0e209f22a6ull},
    {63, 0x123456789abcdef0ull, 0x63018dba15a28decull},
    {64, 0x123456789abcdef0ull, 0xbc97511d993eca4aull},
    {65, 0x123456789abcdef0ull, 0x987f064ee2bbc752ull},
    {71, 0x123456789abcdef0ull, 0x3120d3402d94321eull},
    {72, 0x123456789abcdef0ull, 0x2b6f65768a806bebull},
    {95, 0x123456789abcdef0ull, 0x692abf6d5c666b0aull},
    {96, 0x123456789abcdef0ull, 0x99b3587750529f72ull},
    {97, 0x123456789abcdef0ull, 0xb5ed7cfbb46110feull},
    {100, 0x123456789abcdef0ull, 0x9aeee7527922c012ull},
    {127, 0x123456789abcdef0ull, 0xfd14eecbe6c52f4dull},
    {128, 0x123456789abcdef0ull, 0xa4b13020d58d0544ull},
    {129, 0x123456789abcdef0ull, 0x48f193dbbba23116ull},
    {255, 0x123456789abcdef0ull, 0x57db85ff4489b313ull},
    {256, 0x123456789abcdef0ull, 0x3e5811509d653251ull},
    {257, 0x123456789abcdef0ull, 0xe833dd84b281f7f9ull},
    {1000, 0x123456789abcdef0ull, 0x35a39c14157e89efull},
    {4099, 0x123456789abcdef0ull, 0x200da29726d31cbbull},
};

static uint8_t pattern_byte(size_t i) { return (uint8_t)(i * 167 + 13); }

static void test_xxh64(void)
{
    /* xxHash's own sanity answers for short strings. */
    CHECK(lk_xxh64((const uint8_t *)"", 0, 0) == 0xef46db3751d8e999ull);
    CHECK(lk_xxh64((const uint8_t *)"abc", 3, 0) == 0x44bc2cf5ad770999ull);
    CHECK(lk_xxh64((const uint8_t *)"Nobody inspects the spammish repetition", 39, 0) ==
          0xfbcea83c8a378bf1ull);
    for (size_t v = 0; v < sizeof xxh_vectors / sizeof xxh_vectors[0]; v++) {
        const xxh_vector *x = &xxh_vectors[v];
        /* Every start alignment, the input ending exactly where its allocation does. */
        for (size_t shift = 0; shift < 8; shift += (x->len > 300 ? 3 : 1)) {
            uint8_t *buf = malloc(x->len + shift + 1);
            uint8_t *data = buf + 1 + shift;
            memset(buf, 0xee, 1 + shift);
            for (uint32_t i = 0; i < x->len; i++)
                data[i] = pattern_byte(i);
            uint64_t h = lk_xxh64(data, x->len, x->seed);
            CHECK(h == x->hash);
            if (h != x->hash && failures < 20)
                fprintf(stderr, "  xxh64 len %u seed %016llx: %016llx, want %016llx\n",
                        (unsigned)x->len, (unsigned long long)x->seed, (unsigned long long)h,
                        (unsigned long long)x->hash);
            free(buf);
        }
    }
    /* Every byte of a 100-byte input counts (each lands in a different part of the
     * algorithm: stripes, the 8-byte, 4-byte and 1-byte tails), and nothing past len. */
    uint8_t d[101];
    for (int i = 0; i < 101; i++)
        d[i] = pattern_byte((size_t)i);
    uint64_t base = lk_xxh64(d, 100, 7);
    for (int i = 0; i < 100; i++) {
        d[i] ^= 0x20;
        CHECK(lk_xxh64(d, 100, 7) != base);
        d[i] ^= 0x20;
    }
    d[100] ^= 0xff;
    CHECK(lk_xxh64(d, 100, 7) == base);
    /* The seed counts for the empty input too; NULL with length 0 is the empty input. */
    CHECK(lk_xxh64(d, 0, 1) != lk_xxh64(d, 0, 0));
    CHECK(lk_xxh64(NULL, 0, 0) == 0xef46db3751d8e999ull);
}

/* ------------------------------------------------------------------------------------
 * 2. The offset map
 * --------------------------------------------------------------------------------- */

/* Distinct keys of 5..40 bytes: "key-<n>" padded with a letter (never a digit). */
static size_t make_key(uint64_t n, uint8_t *out)
{
    int len = snprintf((char *)out, 32, "key-%llu", (unsigned long long)n);
    size_t pad = (size_t)(n % 23);
    memset(out + len, 'x' + (int)(n % 3), pad);
    return (size_t)len + pad;
}

static int64_t get_str(lk_offset_map *m, const char *key)
{
    return lk_offset_map_get(m, (const uint8_t *)key, strlen(key));
}

static int put_str(lk_offset_map *m, const char *key, int64_t offset)
{
    return lk_offset_map_put(m, (const uint8_t *)key, strlen(key), offset);
}

/* The table lies inside the memory, on a slot boundary, and never fills every slot. */
static void check_map_shape(const lk_offset_map *m, const void *memory, size_t bytes)
{
    const uint8_t *mem = memory;
    CHECK(m->memory == mem);
    CHECK_EQ(m->memory_slots, bytes / LK_OFFSET_MAP_ENTRY_BYTES);
    CHECK(m->capacity <= m->memory_slots);
    CHECK(m->capacity == 0 || (m->slots >= mem && (size_t)(m->slots - mem) % 24 == 0 &&
                               (size_t)(m->slots - mem) + m->capacity * 24 <= bytes));
    CHECK(m->entries <= m->limit && m->limit <= m->capacity);
    CHECK(m->capacity == 0 || m->entries < m->capacity);
}

static void test_map_arguments(void)
{
    static uint64_t mem[3 * 100];
    lk_offset_map m;
    CHECK_EQ(lk_offset_map_init(NULL, mem, sizeof mem, 0.9, 0), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_offset_map_init(&m, NULL, 240, 0.9, 0), LK_ERR_ARGUMENT);
    for (int mis = 1; mis < 8; mis++)
        CHECK_EQ(lk_offset_map_init(&m, (uint8_t *)mem + mis, 240, 0.9, 0), LK_ERR_ARGUMENT);
    double nan = strtod("nan", NULL), inf = strtod("inf", NULL);
    const double bad[] = {0.0, -0.0, -0.5, 1.0000001, 2.0, nan, inf, -inf};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ(lk_offset_map_init(&m, mem, sizeof mem, bad[i], 0), LK_ERR_ARGUMENT);
    const double good[] = {1.0, 1e-9, 0.5, 0.99999999999999989};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK_EQ(lk_offset_map_init(&m, mem, sizeof mem, good[i], 0), LK_OK);
    CHECK_EQ(lk_offset_map_init(&m, (uint8_t *)mem + 8, 240, 0.9, 0), LK_OK);

    /* No memory at all, or less than a slot: a map that holds nothing. */
    CHECK_EQ(lk_offset_map_init(&m, NULL, 0, 0.9, 10), LK_OK);
    CHECK_EQ(m.capacity, 0);
    CHECK_EQ(put_str(&m, "a", 1), LK_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(get_str(&m, "a"), -1);
    lk_offset_map_clear(&m);
    CHECK_EQ(lk_offset_map_init(&m, mem, 23, 0.9, 0), LK_OK);
    CHECK_EQ(m.memory_slots, 0);
    CHECK_EQ(m.capacity, 0);
    CHECK_EQ(put_str(&m, "a", 1), LK_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(get_str(&m, "a"), -1);

    /* put/get arguments. */
    REQUIRE_OK(lk_offset_map_init(&m, mem, sizeof mem, 0.9, 0));
    CHECK_EQ(lk_offset_map_put(NULL, (const uint8_t *)"a", 1, 1), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_offset_map_put(&m, NULL, 3, 1), LK_ERR_ARGUMENT);
    CHECK_EQ(put_str(&m, "a", -1), LK_ERR_ARGUMENT);
    CHECK_EQ(put_str(&m, "a", INT64_MIN), LK_ERR_ARGUMENT);
    CHECK_EQ(put_str(&m, "a", INT64_MAX), LK_ERR_ARGUMENT);
    CHECK_EQ(m.entries, 0);
    CHECK_EQ(put_str(&m, "a", INT64_MAX - 1), LK_OK);
    CHECK_EQ(get_str(&m, "a"), INT64_MAX - 1);
    CHECK_EQ(lk_offset_map_get(NULL, (const uint8_t *)"a", 1), -1);
    CHECK_EQ(lk_offset_map_get(&m, NULL, 1), -1);
    /* NULL with length 0 is the empty key. */
    CHECK_EQ(lk_offset_map_put(&m, NULL, 0, 7), LK_OK);
    CHECK_EQ(get_str(&m, ""), 7);
    CHECK_EQ(lk_offset_map_get(&m, NULL, 0), 7);
}

static void test_map_basic(void)
{
    static uint64_t mem[3 * 4096];
    lk_offset_map m;
    REQUIRE_OK(lk_offset_map_init(&m, mem, sizeof mem, 0.9, 0));
    CHECK_EQ(m.capacity, 64);
    CHECK_EQ(m.limit, 32);
    CHECK(m.slots == (uint8_t *)mem);
    CHECK_EQ(m.entries, 0);
    CHECK_EQ(get_str(&m, "a"), -1);
    /* Keys that differ by length, a trailing zero byte or one bit are different keys. */
    static const uint8_t k1[] = "a", k2[] = "a\0", k3[] = "ab", k4[] = "`";
    CHECK_EQ(lk_offset_map_put(&m, k1, 1, 0), LK_OK);
    CHECK_EQ(lk_offset_map_put(&m, k2, 2, 10), LK_OK);
    CHECK_EQ(lk_offset_map_put(&m, k3, 2, 20), LK_OK);
    CHECK_EQ(lk_offset_map_put(&m, k4, 1, 30), LK_OK);
    CHECK_EQ(lk_offset_map_put(&m, k1, 0, 40), LK_OK);
    CHECK_EQ(m.entries, 5);
    CHECK_EQ(lk_offset_map_get(&m, k1, 1), 0); /* offset 0 is a value, not "absent" */
    CHECK_EQ(lk_offset_map_get(&m, k2, 2), 10);
    CHECK_EQ(lk_offset_map_get(&m, k3, 2), 20);
    CHECK_EQ(lk_offset_map_get(&m, k4, 1), 30);
    CHECK_EQ(lk_offset_map_get(&m, k1, 0), 40);
    CHECK_EQ(lk_offset_map_get(&m, k3, 1), 0);
    /* Overwrite: the latest put wins, up or down; the entry count does not move. */
    CHECK_EQ(lk_offset_map_put(&m, k3, 2, 25), LK_OK);
    CHECK_EQ(lk_offset_map_get(&m, k3, 2), 25);
    CHECK_EQ(lk_offset_map_put(&m, k3, 2, 3), LK_OK);
    CHECK_EQ(lk_offset_map_get(&m, k3, 2), 3);
    CHECK_EQ(m.entries, 5);
    uint64_t lookups = m.lookups;
    CHECK_EQ(get_str(&m, "absent"), -1);
    CHECK(m.lookups > lookups);
    /* Clear: empty, same table, usable again. */
    uint64_t cap = m.capacity;
    lk_offset_map_clear(&m);
    CHECK_EQ(m.entries, 0);
    CHECK_EQ(m.capacity, cap);
    CHECK_EQ(lk_offset_map_get(&m, k1, 1), -1);
    CHECK_EQ(lk_offset_map_get(&m, k3, 2), -1);
    CHECK_EQ(lk_offset_map_put(&m, k3, 2, 99), LK_OK);
    CHECK_EQ(lk_offset_map_get(&m, k3, 2), 99);
    CHECK_EQ(lk_offset_map_get(&m, k1, 1), -1);
    lk_offset_map_clear(&m);
    lk_offset_map_clear(&m);
    CHECK_EQ(m.entries, 0);
    /* Table sized from initial_keys: 2 * keys + 64 slots, or all of it past a third. */
    REQUIRE_OK(lk_offset_map_init(&m, mem, sizeof mem, 0.9, 100));
    CHECK_EQ(m.capacity, 264);
    REQUIRE_OK(lk_offset_map_init(&m, mem, sizeof mem, 0.9, 700));
    CHECK_EQ(m.capacity, 4096);
    CHECK_EQ(m.limit, (uint64_t)(4096 * 0.9));
    REQUIRE_OK(lk_offset_map_init(&m, mem, sizeof mem + 23, 0.9, 100000));
    CHECK_EQ(m.capacity, 4096);
    /* init zeroes the table it starts with. */
    memset(mem, 0xff, sizeof mem);
    REQUIRE_OK(lk_offset_map_init(&m, mem, sizeof mem, 0.9, 0));
    CHECK_EQ(get_str(&m, "a"), -1);
    CHECK_EQ(put_str(&m, "a", 5), LK_OK);
    CHECK_EQ(get_str(&m, "a"), 5);
    CHECK_EQ(get_str(&m, "b"), -1);
}

/* Fills a map of `slots` slots (+ extra bytes) until it refuses a key, checking every key
 * after every doubling and the table's place in the memory after every put. */
static void map_fill_case(size_t slots, size_t extra, size_t initial, double lf)
{
    size_t bytes = slots * 24 + extra;
    uint8_t *mem = malloc(bytes ? bytes : 1); /* exact: ASan sees a table past the end */
    lk_offset_map m;
    REQUIRE_OK(lk_offset_map_init(&m, mem, bytes, lf, initial));
    uint64_t want = (uint64_t)initial * 2 + 64;
    if (want >= slots / 3)
        want = slots;
    CHECK_EQ(m.capacity, want);
    CHECK(m.slots == mem);
    check_map_shape(&m, mem, bytes);
    uint8_t key[64];
    uint64_t n = 0, grown = 0;
    int rc;
    for (;;) {
        size_t kl = make_key(n, key);
        rc = lk_offset_map_put(&m, key, kl, (int64_t)n * 3);
        if (rc != LK_OK)
            break;
        n++;
        if (m.grown != grown || n % 61 == 0)
            check_map_shape(&m, mem, bytes);
        if (m.grown != grown) {
            CHECK_EQ(m.grown, grown + 1);
            grown = m.grown;
            int bad = 0;
            for (uint64_t i = 0; i < n; i++) {
                kl = make_key(i, key);
                bad += lk_offset_map_get(&m, key, kl) != (int64_t)i * 3;
            }
            CHECK_EQ(bad, 0);
        }
        if (n > slots) {
            CHECK(!"the map took more keys than it has slots");
            break;
        }
    }
    check_map_shape(&m, mem, bytes);
    CHECK_EQ(rc, LK_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(m.entries, n);
    int whole = m.capacity == m.memory_slots;
    /* Full at the load factor. (A table that grew keeps doubling at half load: with
     * lf < 0.5 it stops there, above lf; the contract's "fills to the load factor" would
     * stop at lf. Either is accepted here.) */
    if (whole || lf >= 0.5)
        CHECK_EQ(n, (uint64_t)((double)m.capacity * lf));
    else
        CHECK(n >= (uint64_t)((double)m.capacity * lf) && n <= m.capacity / 2);
    if (!whole) /* a grown table holds at most two thirds of the memory */
        CHECK(3 * m.capacity <= 2 * m.memory_slots);
    /* New keys are refused and change nothing; old ones are still updated. */
    for (uint64_t k = 0; k < 40; k++) {
        size_t kl = make_key(n + 1000 + k, key);
        CHECK_EQ(lk_offset_map_put(&m, key, kl, 5), LK_ERR_BUFFER_TOO_SMALL);
        CHECK_EQ(lk_offset_map_get(&m, key, kl), -1);
    }
    CHECK_EQ(m.entries, n);
    int bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t kl = make_key(i, key);
        bad += lk_offset_map_put(&m, key, kl, (int64_t)i * 3 + 1) != LK_OK;
    }
    CHECK_EQ(bad, 0);
    bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t kl = make_key(i, key);
        bad += lk_offset_map_get(&m, key, kl) != (int64_t)i * 3 + 1;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(m.entries, n);
    /* Clear empties it, keeps the table, and it takes as many keys again. */
    uint64_t cap = m.capacity;
    const uint8_t *table = m.slots;
    lk_offset_map_clear(&m);
    CHECK_EQ(m.entries, 0);
    CHECK_EQ(m.capacity, cap);
    CHECK(m.slots == table);
    bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t kl = make_key(i, key);
        bad += lk_offset_map_get(&m, key, kl) != -1;
    }
    CHECK_EQ(bad, 0);
    uint64_t again = 0;
    for (;;) {
        size_t kl = make_key(again + 77777, key);
        if (lk_offset_map_put(&m, key, kl, 1) != LK_OK)
            break;
        again++;
        if (again > slots)
            break;
    }
    CHECK_EQ(again, n);
    check_map_shape(&m, mem, bytes);
    free(mem);
}

static void test_map_growth(void)
{
    map_fill_case(0, 0, 0, 0.9);
    map_fill_case(0, 23, 5, 0.9);
    map_fill_case(1, 5, 0, 0.9);      /* one slot, limit 0 */
    map_fill_case(2, 0, 0, 0.5);
    map_fill_case(3, 0, 0, 0.99);
    map_fill_case(100, 0, 0, 0.9);    /* whole at init */
    map_fill_case(100, 23, 0, 0.75);
    map_fill_case(191, 0, 0, 0.9);    /* 64 is just a third: whole */
    map_fill_case(195, 0, 0, 0.9);    /* 64 < 195/3: starts small, cannot double twice */
    map_fill_case(5000, 7, 0, 0.9);
    map_fill_case(5000, 0, 10, 0.5);
    map_fill_case(3000, 0, 400, 0.95);
    map_fill_case(3000, 0, 999, 0.95);
    map_fill_case(2500, 0, 0, 0.3);
    map_fill_case(2500, 0, 0, 0.99999999999999989);
    map_fill_case(200000, 0, 0, 0.9); /* a small table in a large memory: many doublings */
    /* Memories that end exactly where a doubled table would (start c0 slots, tables at
     * c0 * (2^j - 1)), and one slot either side. */
    static const size_t starts[] = {0, 10, 100}; /* initial keys: c0 = 64, 84, 264 */
    for (size_t s = 0; s < sizeof starts / sizeof starts[0]; s++)
        for (size_t j = 2; j <= 6; j++) {
            size_t edge = (starts[s] * 2 + 64) * (((size_t)1 << j) - 1);
            for (size_t d = 0; d < 3; d++)
                map_fill_case(edge + d - 1, d == 1 ? 23 : 0, starts[s], d == 2 ? 0.5 : 0.9);
        }
    for (int i = 0; i < 40; i++) {
        size_t slots = rnd_below(20000);
        double lf = 0.3 + (double)rnd_below(6700) / 10000.0;
        map_fill_case(slots, rnd_below(24), rnd_below(4) ? rnd_below((uint32_t)slots / 4 + 1) : 0, lf);
    }
}

/* ------------------------------------------------------------------------------------
 * Batches for the fixed cases
 * --------------------------------------------------------------------------------- */
typedef struct {
    const char *key;   /* NULL: null key */
    const char *value; /* NULL: null value (a tombstone) */
    int32_t delta;     /* offset delta */
    int64_t ts;
} rspec;

enum { NO_HORIZON = 0 };
static const int64_t PRODUCER_ID = 1000;
static const int16_t PRODUCER_EPOCH = 2;
static const int32_t BASE_SEQUENCE = 17, LEADER_EPOCH = 3;

/* Encodes n records as one batch at out and returns its size. With horizon set (not
 * NO_HORIZON) the batch carries a delete horizon (attribute bit 6, baseTimestamp =
 * horizon); last_delta >= 0 sets lastOffsetDelta past the last record's delta; max_ts
 * (not INT64_MIN) sets maxTimestamp. Otherwise it is lk_batch_encode's batch. */
static size_t enc_batch_ex(uint8_t *out, size_t cap, int64_t base, int16_t attrs, int64_t horizon,
                           const rspec *s, int n, int32_t last_delta, int64_t max_ts)
{
    uint8_t keys[1024], values[4096], records[8192];
    int32_t klen[64], vlen[64], deltas[64];
    int64_t ts[64];
    size_t kp = 0, vp = 0;
    int64_t largest = INT64_MIN;
    for (int i = 0; i < n; i++) {
        klen[i] = s[i].key ? (int32_t)strlen(s[i].key) : -1;
        vlen[i] = s[i].value ? (int32_t)strlen(s[i].value) : -1;
        if (klen[i] > 0)
            memcpy(keys + kp, s[i].key, (size_t)klen[i]);
        if (vlen[i] > 0)
            memcpy(values + vp, s[i].value, (size_t)vlen[i]);
        kp += klen[i] > 0 ? (size_t)klen[i] : 0;
        vp += vlen[i] > 0 ? (size_t)vlen[i] : 0;
        deltas[i] = s[i].delta;
        ts[i] = s[i].ts;
        if (ts[i] > largest)
            largest = ts[i];
    }
    lk_records_in r;
    memset(&r, 0, sizeof r);
    r.count = n;
    r.keys = keys;
    r.keys_size = kp;
    r.key_lengths = klen;
    r.values = values;
    r.values_size = vp;
    r.value_lengths = vlen;
    r.timestamps = ts;
    r.offset_deltas = deltas;
    lk_batch_params p;
    p.base_offset = base;
    p.partition_leader_epoch = LEADER_EPOCH;
    p.attributes = attrs;
    p.base_timestamp = 0;
    p.producer_id = PRODUCER_ID;
    p.producer_epoch = PRODUCER_EPOCH;
    p.base_sequence = BASE_SEQUENCE;
    size_t len = 0;
    if (horizon == NO_HORIZON && last_delta < 0 && max_ts == INT64_MIN) {
        REQUIRE_OK(lk_batch_encode(&p, &r, out, cap, &len, NULL));
        return len;
    }
    int64_t base_ts = horizon != NO_HORIZON ? horizon : ts[0];
    size_t rlen = 0;
    REQUIRE_OK(lk_records_encode(&r, base_ts, records, sizeof records, &rlen, NULL));
    p.base_timestamp = base_ts;
    if (horizon != NO_HORIZON)
        p.attributes = (int16_t)(p.attributes | LK_ATTR_DELETE_HORIZON);
    REQUIRE_OK(lk_batch_frame(&p, n, last_delta >= 0 ? last_delta : deltas[n - 1],
                              max_ts != INT64_MIN ? max_ts : largest, records, rlen, out, cap,
                              &len, NULL));
    return len;
}

static size_t enc_batch(uint8_t *out, size_t cap, int64_t base, const rspec *s, int n)
{
    return enc_batch_ex(out, cap, base, 0, NO_HORIZON, s, n, -1, INT64_MIN);
}

static size_t enc_control(uint8_t *out, size_t cap, int64_t base)
{
    lk_batch_params p = {base, LEADER_EPOCH, 0, 0, PRODUCER_ID, PRODUCER_EPOCH, -1};
    size_t len = 0;
    REQUIRE_OK(lk_control_batch_encode(&p, LK_CONTROL_COMMIT, 9, 5555, out, cap, &len, NULL));
    return len;
}

static size_t enc_empty(uint8_t *out, size_t cap, int64_t base, int32_t last_delta)
{
    lk_batch_params p = {base, LEADER_EPOCH, 0, 4444, PRODUCER_ID, PRODUCER_EPOCH, 0};
    size_t len = 0;
    REQUIRE_OK(lk_batch_frame(&p, 0, last_delta, 4444, NULL, 0, out, cap, &len, NULL));
    return len;
}

/* Sets the attributes of the batch at b and fixes its CRC. */
static void set_attributes(uint8_t *b, int16_t attrs)
{
    set16(b + OFF_ATTRS, (uint16_t)attrs);
    CHECK_EQ(lk_batch_update_crc(b, size_at(b), NULL), LK_OK);
}

typedef struct {
    uint8_t buf[8192];
    size_t len;
    size_t pos[16];
    size_t size[16];
    int n;
} fixed_log;

static void fl_added(fixed_log *f, size_t size)
{
    f->pos[f->n] = f->len;
    f->size[f->n++] = size;
    f->len += size;
}

/* L1: A @0 (k0 k1 null k0) | B control @4 | C @5 (k1 k2 k3 at 5, 7, 9) | D @10 (k4 k5),
 * compressed flag | E @12 (k2 k5 null). */
enum { LA, LB, LC, LD, LE };
static void build_l1(fixed_log *f)
{
    static const rspec A[] = {{"k0", "a0", 0, 1000}, {"k1", "a1", 1, 1001},
                              {NULL, "n2", 2, 1002}, {"k0", "a3", 3, 1003}};
    static const rspec C[] = {{"k1", "c5", 0, 2000}, {"k2", "c7", 2, 2002}, {"k3", "c9", 4, 2001}};
    static const rspec D[] = {{"k4", "d10", 0, 3000}, {"k5", "d11", 1, 3001}};
    static const rspec E[] = {{"k2", "e12", 0, 4000}, {"k5", "e13", 1, 4003}, {NULL, "e14", 2, 4001}};
    memset(f, 0, sizeof *f);
    fl_added(f, enc_batch(f->buf + f->len, sizeof f->buf - f->len, 0, A, 4));
    fl_added(f, enc_control(f->buf + f->len, sizeof f->buf - f->len, 4));
    fl_added(f, enc_batch(f->buf + f->len, sizeof f->buf - f->len, 5, C, 3));
    fl_added(f, enc_batch(f->buf + f->len, sizeof f->buf - f->len, 10, D, 2));
    set_attributes(f->buf + f->pos[LD], 2); /* snappy, by the flag only */
    fl_added(f, enc_batch(f->buf + f->len, sizeof f->buf - f->len, 12, E, 3));
}

static uint64_t roomy_mem[3 * 4096];

static void roomy_map(lk_offset_map *m)
{
    REQUIRE_OK(lk_offset_map_init(m, roomy_mem, sizeof roomy_mem, 0.9, 0));
}

static int in_set(int rc, const int *codes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rc == codes[i])
            return 1;
    return 0;
}

static const int MAP_CODES[] = {LK_OK, LK_ERR_CRC, LK_ERR_CORRUPT_RECORD, LK_ERR_BAD_LENGTH,
                                LK_ERR_BAD_MAGIC};
static const int FILTER_CODES[] = {LK_OK, LK_ERR_CRC, LK_ERR_CORRUPT_RECORD, LK_ERR_BAD_LENGTH,
                                   LK_ERR_BAD_MAGIC, LK_ERR_BUFFER_TOO_SMALL};
static const int KEYLESS_CODES[] = {LK_OK, LK_ERR_TRUNCATED, LK_ERR_CORRUPT_RECORD,
                                    LK_ERR_BAD_LENGTH, LK_ERR_BAD_MAGIC};
#define N_CODES(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------------------------
 * 3. The map pass
 * --------------------------------------------------------------------------------- */
static void test_map_pass(void)
{
    static fixed_log L;
    build_l1(&L);
    const uint8_t *buf = L.buf;
    const size_t *pos = L.pos;
    lk_offset_map m;
    lk_map_result r;
    lk_error err;

    /* A..C: everything keyed recorded, control and keyless skipped. */
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, pos[LD], 0, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_END);
    CHECK_EQ(r.position, pos[LD]);
    CHECK_EQ(r.next_offset, 10);
    CHECK_EQ(r.records, 6);
    CHECK_EQ(r.last_offset, 9);
    CHECK_EQ(get_str(&m, "k0"), 3);
    CHECK_EQ(get_str(&m, "k1"), 5);
    CHECK_EQ(get_str(&m, "k2"), 7);
    CHECK_EQ(get_str(&m, "k3"), 9);
    CHECK_EQ(get_str(&m, "k4"), -1);
    CHECK_EQ(get_str(&m, ""), -1);
    CHECK_EQ(m.entries, 4);

    /* The whole log: COMPRESSED at D; its plain version, then E, in the same result. */
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, L.len, 0, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_COMPRESSED);
    CHECK_EQ(r.position, pos[LD]);
    CHECK_EQ(r.next_offset, 10);
    CHECK_EQ(r.records, 6);
    CHECK_EQ(r.last_offset, 9);
    CHECK_EQ(get_str(&m, "k4"), -1);
    uint8_t *plain = plain_copy(buf + pos[LD], L.size[LD]);
    CHECK_EQ(lk_cleaner_map(&m, plain, L.size[LD], 0, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_END);
    CHECK_EQ(r.position, L.size[LD]);
    CHECK_EQ(r.next_offset, 12);
    CHECK_EQ(r.records, 8); /* added to, never reset */
    CHECK_EQ(r.last_offset, 11);
    CHECK_EQ(get_str(&m, "k4"), 10);
    CHECK_EQ(get_str(&m, "k5"), 11);
    CHECK_EQ(lk_cleaner_map(&m, buf + pos[LE], L.size[LE], 0, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_END);
    CHECK_EQ(r.next_offset, 15);
    CHECK_EQ(r.records, 10);
    CHECK_EQ(r.last_offset, 14);
    CHECK_EQ(get_str(&m, "k2"), 12);
    CHECK_EQ(get_str(&m, "k5"), 13);
    CHECK_EQ(get_str(&m, "k0"), 3);

    /* from_offset: records below it are not recorded, batches ending below it skipped. */
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, pos[LD], 6, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_END);
    CHECK_EQ(r.next_offset, 10);
    CHECK_EQ(r.records, 2);
    CHECK_EQ(r.last_offset, 9);
    CHECK_EQ(get_str(&m, "k0"), -1);
    CHECK_EQ(get_str(&m, "k1"), -1);
    CHECK_EQ(get_str(&m, "k2"), 7);
    CHECK_EQ(get_str(&m, "k3"), 9);
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, pos[LD], 2, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.records, 4);
    CHECK_EQ(get_str(&m, "k0"), 3);
    CHECK_EQ(get_str(&m, "k1"), 5);
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, pos[LD], 10, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_END);
    CHECK_EQ(r.position, pos[LD]);
    CHECK_EQ(r.next_offset, 10);
    CHECK_EQ(r.records, 0);
    CHECK_EQ(r.last_offset, 9);
    CHECK_EQ(m.entries, 0);
    /* A compressed batch wholly below from_offset is passed over, not reported. */
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, L.len, 100, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_END);
    CHECK_EQ(r.position, L.len);
    CHECK_EQ(r.records, 0);

    /* stop_offset: LIMIT at a batch that starts at or past it, or inside one. */
    static const struct {
        int64_t stop;
        int batch;
        int64_t next, records;
    } limits[] = {{5, LC, 5, 3}, {7, LC, 7, 4}, {6, LC, 6, 4}, {4, LB, 4, 3},
                  {2, LA, 2, 2}, {0, LA, 0, 0}, {1, LA, 1, 1}, {10, LD, 10, 6}};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        roomy_map(&m);
        r = new_map_result();
        CHECK_EQ(lk_cleaner_map(&m, buf, L.len, 0, limits[i].stop, NULL, 0, &r, &err), LK_OK);
        CHECK_EQ(r.stop, LK_CLEAN_LIMIT);
        CHECK_EQ(r.position, pos[limits[i].batch]);
        CHECK_EQ(r.next_offset, limits[i].next);
        CHECK_EQ(r.records, limits[i].records);
    }
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, pos[LD], 0, 7, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(get_str(&m, "k1"), 5);
    CHECK_EQ(get_str(&m, "k2"), -1);
    /* A stop inside the compressed batch is found in its plain version. */
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, L.len, 0, 11, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_COMPRESSED);
    CHECK_EQ(lk_cleaner_map(&m, plain, L.size[LD], 0, 11, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_LIMIT);
    CHECK_EQ(r.position, 0);
    CHECK_EQ(r.next_offset, 11);
    CHECK_EQ(get_str(&m, "k4"), 10);
    CHECK_EQ(get_str(&m, "k5"), -1);
    /* stop_offset past the end: END. */
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, pos[LD], 0, 10, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_END);
    CHECK_EQ(r.next_offset, 10);

    /* FULL: a 4-slot map at load factor 0.5 takes 2 keys; updates still go in. */
    static uint64_t small_mem[3 * 4];
    REQUIRE_OK(lk_offset_map_init(&m, small_mem, sizeof small_mem, 0.5, 0));
    CHECK_EQ(m.limit, 2);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, pos[LD], 0, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_FULL);
    CHECK_EQ(r.position, pos[LC]);
    CHECK_EQ(r.next_offset, 7); /* k2@7: the first record not recorded */
    CHECK_EQ(r.records, 4);     /* k0@0 k1@1 k0@3 k1@5 */
    CHECK_EQ(get_str(&m, "k0"), 3);
    CHECK_EQ(get_str(&m, "k1"), 5);
    CHECK_EQ(get_str(&m, "k2"), -1);
    CHECK_EQ(m.entries, 2);
    /* ...and the next pass resumes at next_offset from that batch. */
    lk_offset_map_clear(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf + pos[LC], pos[LD] - pos[LC], 7, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_END);
    CHECK_EQ(r.records, 2);
    CHECK_EQ(get_str(&m, "k2"), 7);
    CHECK_EQ(get_str(&m, "k3"), 9);
    CHECK_EQ(get_str(&m, "k1"), -1);
    /* A map with room for no key at all: FULL at the first keyed record. */
    static uint64_t one_slot[3];
    REQUIRE_OK(lk_offset_map_init(&m, one_slot, sizeof one_slot, 0.9, 0));
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, buf, pos[LD], 0, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_FULL);
    CHECK_EQ(r.position, 0);
    CHECK_EQ(r.next_offset, 0);
    CHECK_EQ(r.records, 0);

    /* Offsets must go up: a batch starting at or below the previous batch's last offset. */
    static const rspec X[] = {{"k9", "x", 0, 9000}};
    static uint8_t two[4096];
    for (int64_t xbase = 0; xbase <= 4; xbase++) {
        memcpy(two, buf, L.size[LA]);
        size_t xs = enc_batch(two + L.size[LA], sizeof two - L.size[LA], xbase, X, 1);
        roomy_map(&m);
        r = new_map_result();
        memset(&err, 0, sizeof err);
        int rc = lk_cleaner_map(&m, two, L.size[LA] + xs, 0, INT64_MAX, NULL, 0, &r, &err);
        if (xbase <= 3) {
            CHECK_EQ(rc, LK_ERR_CORRUPT_RECORD);
            CHECK_EQ(err.code, LK_ERR_CORRUPT_RECORD);
            CHECK_EQ(err.position, L.size[LA]);
            CHECK(err.what != NULL);
            CHECK_EQ(r.position, L.size[LA]);
            CHECK_EQ(get_str(&m, "k9"), -1);
        } else {
            CHECK_EQ(rc, LK_OK);
            CHECK_EQ(get_str(&m, "k9"), 4);
        }
        /* The same across two calls sharing the result's last_offset. */
        roomy_map(&m);
        r = new_map_result();
        CHECK_EQ(lk_cleaner_map(&m, two, L.size[LA], 0, INT64_MAX, NULL, 0, &r, &err), LK_OK);
        CHECK_EQ(r.last_offset, 3);
        rc = lk_cleaner_map(&m, two + L.size[LA], xs, 0, INT64_MAX, NULL, 0, &r, &err);
        CHECK_EQ(rc, xbase <= 3 ? LK_ERR_CORRUPT_RECORD : LK_OK);
        if (rc != LK_OK) {
            CHECK_EQ(err.position, 0);
            CHECK_EQ(r.position, 0);
        }
        /* ...and below from_offset too (the order is checked before skipping). */
        roomy_map(&m);
        r = new_map_result();
        rc = lk_cleaner_map(&m, two, L.size[LA] + xs, 100, INT64_MAX, NULL, 0, &r, &err);
        CHECK_EQ(rc, xbase <= 3 ? LK_ERR_CORRUPT_RECORD : LK_OK);
    }
    /* A control batch out of order. */
    memcpy(two, buf, L.size[LA]);
    size_t cs = enc_control(two + L.size[LA], sizeof two - L.size[LA], 2);
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, two, L.size[LA] + cs, 0, INT64_MAX, NULL, 0, &r, &err),
             LK_ERR_CORRUPT_RECORD);

    /* Every cut of A..C: END at the start of the cut batch, whole batches recorded. */
    for (size_t cut = 0; cut <= pos[LD]; cut++) {
        int whole = 0;
        while (whole < LD && pos[whole] + L.size[whole] <= cut)
            whole++;
        uint8_t *copy = exact_copy(buf, cut);
        roomy_map(&m);
        r = new_map_result();
        CHECK_EQ(lk_cleaner_map(&m, copy, cut, 0, INT64_MAX, NULL, 0, &r, &err), LK_OK);
        CHECK_EQ(r.stop, LK_CLEAN_END);
        CHECK_EQ(r.position, whole == 0 ? 0 : pos[whole - 1] + L.size[whole - 1]);
        static const int64_t next_after[] = {0, 4, 5, 10};
        static const int64_t records_after[] = {0, 3, 3, 6};
        CHECK_EQ(r.next_offset, next_after[whole]);
        CHECK_EQ(r.records, records_after[whole]);
        CHECK_EQ(get_str(&m, "k2"), whole == 3 ? 7 : -1);
        free(copy);
    }

    /* Damage: CRC, magic, length, records (CRC fixed). Errors are relative to buf. */
    static uint8_t bad[8192];
    memcpy(bad, buf, pos[LD]);
    bad[pos[LC] + 70] ^= 1;
    roomy_map(&m);
    r = new_map_result();
    memset(&err, 0, sizeof err);
    CHECK_EQ(lk_cleaner_map(&m, bad, pos[LD], 0, INT64_MAX, NULL, 0, &r, &err), LK_ERR_CRC);
    CHECK_EQ(err.code, LK_ERR_CRC);
    CHECK_EQ(err.position, pos[LC] + OFF_CRC);
    CHECK_EQ(r.position, pos[LC]);
    CHECK_EQ(get_str(&m, "k2"), -1);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, bad, pos[LD], 0, INT64_MAX, NULL, 0, &r, NULL), LK_ERR_CRC);

    memcpy(bad, buf, pos[LD]);
    bad[pos[LC] + OFF_MAGIC] = 1;
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, bad, pos[LD], 0, INT64_MAX, NULL, 0, &r, &err), LK_ERR_BAD_MAGIC);
    CHECK_EQ(err.position, pos[LC] + OFF_MAGIC);
    CHECK_EQ(r.position, pos[LC]);

    static const uint32_t bad_lengths[] = {0, 10, 48, 0x7fffffff, 0x80000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad_lengths / sizeof bad_lengths[0]; i++) {
        memcpy(bad, buf, pos[LD]);
        set32(bad + pos[LC] + OFF_LENGTH, bad_lengths[i]);
        roomy_map(&m);
        r = new_map_result();
        CHECK_EQ(lk_cleaner_map(&m, bad, pos[LD], 0, INT64_MAX, NULL, 0, &r, &err), LK_ERR_BAD_LENGTH);
        CHECK_EQ(err.position, pos[LC] + OFF_LENGTH);
        CHECK_EQ(r.position, pos[LC]);
    }
    /* A length one past the buffer: a cut batch, END there. */
    memcpy(bad, buf, pos[LD]);
    set32(bad + pos[LC] + OFF_LENGTH, (uint32_t)(L.size[LC] - 12 + 1));
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, bad, pos[LD], 0, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_END);
    CHECK_EQ(r.position, pos[LC]);

    /* Records damaged under a good CRC: the walk catches them, at the record's start. */
    size_t rec1 = HDR + 1 + (size_t)(buf[pos[LC] + HDR] >> 1); /* C's second record */
    static const struct {
        int record;   /* 0 or 1 */
        size_t at;    /* within the record */
        uint8_t value;
    } rec_damage[] = {
        {0, 0, 0x7e}, /* length 63: past the batch */
        {0, 0, 0x00}, /* length 0 */
        {0, 0, 0x01}, /* length -1 */
        {0, 0, 0x02}, /* length 1: no room for the timestamp delta */
        {0, 0, 0xff}, /* a varint running into the next bytes */
        {0, 4, 0x7e}, /* key length 63: past the record */
        {1, 0, 0x7e},
        {1, 4, 0x7e},
    };
    for (size_t i = 0; i < sizeof rec_damage / sizeof rec_damage[0]; i++) {
        size_t start = rec_damage[i].record ? rec1 : HDR;
        memcpy(bad, buf, pos[LD]);
        bad[pos[LC] + start + rec_damage[i].at] = rec_damage[i].value;
        CHECK_EQ(lk_batch_update_crc(bad + pos[LC], L.size[LC], NULL), LK_OK);
        roomy_map(&m);
        r = new_map_result();
        memset(&err, 0, sizeof err);
        int rc = lk_cleaner_map(&m, bad, pos[LD], 0, INT64_MAX, NULL, 0, &r, &err);
        CHECK_EQ(rc, LK_ERR_CORRUPT_RECORD);
        CHECK_EQ(err.position, pos[LC] + start);
        CHECK_EQ(err.record_index, rec_damage[i].record);
        CHECK(err.what != NULL);
        int64_t p;
        int32_t idx;
        CHECK_EQ(lk_records_first_keyless(bad + pos[LC], L.size[LC], &p, &idx, &err),
                 LK_ERR_CORRUPT_RECORD);
        CHECK_EQ(err.position, start);
    }
    /* Record counts that do not match the records (CRC fixed). */
    static const struct {
        uint32_t count;
        int rc;
    } counts[] = {{4, LK_ERR_CORRUPT_RECORD}, {5, LK_ERR_CORRUPT_RECORD},
                  {2, LK_ERR_CORRUPT_RECORD}, {0, -99 /* see below */},
                  {0xffffffffu, LK_ERR_CORRUPT_RECORD}, {0x80000000u, LK_ERR_CORRUPT_RECORD},
                  {6, LK_ERR_CORRUPT_RECORD}};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        memcpy(bad, buf, pos[LD]);
        set32(bad + pos[LC] + OFF_COUNT, counts[i].count);
        CHECK_EQ(lk_batch_update_crc(bad + pos[LC], L.size[LC], NULL), LK_OK);
        roomy_map(&m);
        r = new_map_result();
        int rc = lk_cleaner_map(&m, bad, pos[LD], 0, INT64_MAX, NULL, 0, &r, &err);
        /* A count of 0 over records: taken as an empty batch (records ignored) or refused. */
        if (counts[i].rc == -99)
            CHECK(rc == LK_OK || rc == LK_ERR_CORRUPT_RECORD);
        else
            CHECK_EQ(rc, counts[i].rc);
        if (rc != LK_OK)
            CHECK(err.position >= (int64_t)pos[LC] && err.position <= (int64_t)pos[LD]);
    }
    /* A control batch must hold one record. */
    memcpy(bad, buf, pos[LD]);
    set32(bad + pos[LB] + OFF_COUNT, 2);
    CHECK_EQ(lk_batch_update_crc(bad + pos[LB], L.size[LB], NULL), LK_OK);
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, bad, pos[LD], 0, INT64_MAX, NULL, 0, &r, &err), LK_ERR_CORRUPT_RECORD);

    /* An empty batch (no records) moves next_offset on like a control batch. */
    memcpy(bad, buf, L.size[LA]);
    size_t es = enc_empty(bad + L.size[LA], sizeof bad - L.size[LA], 4, 3);
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, bad, L.size[LA] + es, 0, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.next_offset, 8);
    CHECK_EQ(r.last_offset, 7);
    CHECK_EQ(r.records, 3);

    /* Arguments. */
    roomy_map(&m);
    r = new_map_result();
    CHECK_EQ(lk_cleaner_map(NULL, buf, L.len, 0, INT64_MAX, NULL, 0, &r, &err), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_map(&m, buf, L.len, 0, INT64_MAX, NULL, 0, NULL, &err), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_map(&m, NULL, 5, 0, INT64_MAX, NULL, 0, &r, &err), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_map(&m, NULL, 0, 3, INT64_MAX, NULL, 0, &r, &err), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_END);
    CHECK_EQ(r.position, 0);
    CHECK_EQ(r.next_offset, 3);
    free(plain);
}

/* ------------------------------------------------------------------------------------
 * 4. The filter pass: fixed cases
 * --------------------------------------------------------------------------------- */

/* One lk_cleaner_filter call with out and keep in allocations of exactly out_cap and
 * keep_cap bytes plus a canary that must come back untouched (ASan catches anything past
 * the canary). What was written is appended to *collected when given. */
static int filter_call(lk_offset_map *map, const uint8_t *in, size_t len, const lk_clean_params *pp,
                       size_t out_cap, size_t keep_cap, lk_clean_result *res, byte_buf *collected,
                       lk_error *err)
{
    uint8_t *out = malloc(out_cap + CANARY), *keep = malloc(keep_cap + CANARY);
    memset(out + out_cap, 0xa5, CANARY);
    memset(keep + keep_cap, 0x5a, CANARY);
    int rc = lk_cleaner_filter(map, in, len, pp, out, out_cap, keep, keep_cap, res, err);
    int intact = 1;
    for (size_t i = 0; i < CANARY; i++)
        intact &= out[out_cap + i] == 0xa5 && keep[keep_cap + i] == 0x5a;
    CHECK(intact);
    if (!intact && failures < 20)
        fprintf(stderr, "  filter wrote past out_cap %zu / keep_cap %zu (written %lld)\n", out_cap,
                keep_cap, (long long)res->written);
    if (rc == LK_OK) {
        CHECK(res->written >= 0 && (uint64_t)res->written <= out_cap);
        CHECK(res->position >= 0 && (uint64_t)res->position <= len);
        CHECK(res->stop == LK_CLEAN_END || res->stop == LK_CLEAN_FULL ||
              res->stop == LK_CLEAN_COMPRESSED);
        if (collected && res->written > 0 && (uint64_t)res->written <= out_cap)
            bytes_append(collected, out, (size_t)res->written);
    }
    free(out);
    free(keep);
    return rc;
}

/* The bytes a record lk_cleaner_filter reserves in out on top of a batch's size
 * (logkernel.h: "BUFFER_TOO_SMALL when the first batch does not fit out (size + N bytes a
 * record)"): the least out_capacity it takes a one-record batch with, minus its size. */
static size_t filter_reserve(void)
{
    static size_t reserve;
    if (reserve)
        return reserve;
    static const rspec A[] = {{"k", "v", 0, 1}};
    static uint64_t mem[3 * 64];
    uint8_t b[256], out[512], keep[1];
    size_t size = enc_batch(b, sizeof b, 0, A, 1);
    lk_offset_map m;
    REQUIRE_OK(lk_offset_map_init(&m, mem, sizeof mem, 0.9, 0));
    lk_clean_params pp = {0, 1, INT64_MAX, NULL, 0, NULL};
    for (size_t extra = 0; extra < 64 && !reserve; extra++) {
        lk_clean_result res = new_clean_result();
        if (lk_cleaner_filter(&m, b, size, &pp, out, size + extra, keep, 1, &res, NULL) == LK_OK)
            reserve = extra ? extra : 64;
    }
    CHECK(reserve >= 9 && reserve < 64);
    return reserve;
}

typedef struct {
    lk_batch_header h;
    int32_t n;
    int64_t offset[64], ts[64];
    char key[64][24], value[64][24];
    int key_null[64], tomb[64];
} out_batch;

/* Validates the batch at b (CRC and records) and decodes it. Returns its size, or 0. */
static size_t read_batch(const uint8_t *b, size_t len, out_batch *o)
{
    lk_record_span spans[64];
    memset(o, 0, sizeof *o);
    if (len < HDR ||
        lk_batch_validate(b, len, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, NULL, NULL) != LK_OK)
        return 0;
    if (lk_batch_decode(b, len, 0, &o->h, spans, 64, &o->n, NULL) != LK_OK)
        return 0;
    for (int32_t i = 0; i < o->n; i++) {
        o->offset[i] = o->h.base_offset + spans[i].offset_delta;
        o->ts[i] = o->h.base_timestamp + spans[i].timestamp_delta;
        o->key_null[i] = spans[i].key_len < 0;
        o->tomb[i] = spans[i].value_len < 0;
        if (spans[i].key_len > 0 && spans[i].key_len < 24)
            memcpy(o->key[i], b + spans[i].key_pos, (size_t)spans[i].key_len);
        if (spans[i].value_len > 0 && spans[i].value_len < 24)
            memcpy(o->value[i], b + spans[i].value_pos, (size_t)spans[i].value_len);
    }
    return size_at(b);
}

static void check_producer_fields(const lk_batch_header *h)
{
    CHECK_EQ(h->producer_id, PRODUCER_ID);
    CHECK_EQ(h->producer_epoch, PRODUCER_EPOCH);
    CHECK_EQ(h->base_sequence, BASE_SEQUENCE);
    CHECK_EQ(h->partition_leader_epoch, LEADER_EPOCH);
    CHECK_EQ(h->magic, 2);
}

/* The map of all of L1 (D through its plain version): k0 3, k1 5, k2 12, k3 9, k4 10,
 * k5 13; map_end 15. */
static void fill_l1_map(lk_offset_map *m, const fixed_log *L)
{
    roomy_map(m);
    lk_map_result mr = new_map_result();
    REQUIRE_OK(lk_cleaner_map(m, L->buf, L->len, 0, INT64_MAX, NULL, 0, &mr, NULL));
    CHECK_EQ(mr.stop, LK_CLEAN_COMPRESSED);
    uint8_t *plain = plain_copy(L->buf + L->pos[LD], L->size[LD]);
    REQUIRE_OK(lk_cleaner_map(m, plain, L->size[LD], 0, INT64_MAX, NULL, 0, &mr, NULL));
    REQUIRE_OK(lk_cleaner_map(m, L->buf + L->pos[LE], L->size[LE], 0, INT64_MAX, NULL, 0, &mr, NULL));
    CHECK_EQ(mr.next_offset, 15);
    CHECK_EQ(mr.records, 10);
    free(plain);
}

#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)

static void test_filter_fixed(void)
{
    static fixed_log L;
    build_l1(&L);
    const size_t *pos = L.pos;
    lk_offset_map m;
    fill_l1_map(&m, &L);
    lk_clean_params pp = {0, 10000000, 15, NULL, 0, NULL};
    lk_clean_result res = new_clean_result();
    byte_buf out = {0};
    lk_error err;
    out_batch o;
    size_t q = 0, n;

    CHECK_EQ(filter_call(&m, L.buf, L.len, &pp, 4096, 64, &res, &out, &err), LK_OK);
    CHECK_EQ(res.stop, LK_CLEAN_COMPRESSED);
    CHECK_EQ(res.position, pos[LD]);
    CHECK_EQ(res.written, out.len);
    /* A: only k0@3 is the latest of its key; the keyless record goes. */
    n = read_batch(out.p + q, left(out.len, q), &o);
    CHECK(n > 0);
    CHECK_EQ(o.h.base_offset, 0);
    CHECK_EQ(o.h.last_offset_delta, 3);
    CHECK_EQ(o.h.record_count, 1);
    CHECK_EQ(o.offset[0], 3);
    CHECK_STR(o.key[0], "k0");
    CHECK_STR(o.value[0], "a3");
    CHECK_EQ(o.ts[0], 1003);
    CHECK_EQ(o.h.base_timestamp, 1003);
    CHECK_EQ(o.h.max_timestamp, 1003);
    CHECK_EQ(o.h.attributes, 0);
    check_producer_fields(&o.h);
    q += n;
    /* B: the control batch, byte for byte. */
    CHECK(q + L.size[LB] <= out.len && memcmp(out.p + q, L.buf + pos[LB], L.size[LB]) == 0);
    q += L.size[LB];
    /* C: k1@5 and k3@9 (k2@7 has a later record). */
    n = read_batch(out.p + q, left(out.len, q), &o);
    CHECK(n > 0);
    CHECK_EQ(o.h.base_offset, 5);
    CHECK_EQ(o.h.last_offset_delta, 4);
    CHECK_EQ(o.h.record_count, 2);
    CHECK_EQ(o.offset[0], 5);
    CHECK_EQ(o.offset[1], 9);
    CHECK_STR(o.key[0], "k1");
    CHECK_STR(o.key[1], "k3");
    CHECK_EQ(o.ts[0], 2000);
    CHECK_EQ(o.ts[1], 2001);
    CHECK_EQ(o.h.base_timestamp, 2000);
    CHECK_EQ(o.h.max_timestamp, 2001);
    check_producer_fields(&o.h);
    q += n;
    CHECK_EQ(q, out.len);
    CHECK_EQ(res.batches_read, 3);
    CHECK_EQ(res.batches_kept, 3);
    CHECK_EQ(res.records_read, 7);
    CHECK_EQ(res.records_kept, 3);
    CHECK_EQ(res.keyless_dropped, 1);
    CHECK_EQ(res.tombstones_dropped, 0);
    CHECK_EQ(res.next_horizon_ms, INT64_MAX);
    CHECK_EQ(res.last_offset, 9);

    /* D (its plain version) and E, in the same result. */
    uint8_t *plain = plain_copy(L.buf + pos[LD], L.size[LD]);
    CHECK_EQ(filter_call(&m, plain, L.size[LD], &pp, 4096, 64, &res, &out, &err), LK_OK);
    CHECK_EQ(res.stop, LK_CLEAN_END);
    CHECK_EQ(res.position, L.size[LD]);
    n = read_batch(out.p + q, left(out.len, q), &o);
    CHECK(n > 0);
    CHECK_EQ(o.h.base_offset, 10);
    CHECK_EQ(o.h.last_offset_delta, 1);
    CHECK_EQ(o.n, 1);
    CHECK_EQ(o.offset[0], 10);
    CHECK_STR(o.key[0], "k4");
    CHECK_EQ(o.ts[0], 3000);
    q += n;
    CHECK_EQ(filter_call(&m, L.buf + pos[LE], L.size[LE], &pp, 4096, 64, &res, &out, &err), LK_OK);
    n = read_batch(out.p + q, left(out.len, q), &o);
    CHECK(n > 0);
    CHECK_EQ(o.h.base_offset, 12);
    CHECK_EQ(o.h.last_offset_delta, 2);
    CHECK_EQ(o.n, 2);
    CHECK_EQ(o.offset[0], 12);
    CHECK_EQ(o.offset[1], 13);
    CHECK_EQ(o.ts[0], 4000);
    CHECK_EQ(o.ts[1], 4003);
    CHECK_EQ(o.h.base_timestamp, 4000);
    CHECK_EQ(o.h.max_timestamp, 4003);
    q += n;
    CHECK_EQ(q, out.len);
    CHECK_EQ(res.batches_read, 5);
    CHECK_EQ(res.batches_kept, 5);
    CHECK_EQ(res.records_read, 12);
    CHECK_EQ(res.records_kept, 6);
    CHECK_EQ(res.keyless_dropped, 2);
    CHECK_EQ(res.last_offset, 14);

    /* map_end 0: every record is at or past it: A, B, C come out byte for byte. */
    pp.map_end = 0;
    res = new_clean_result();
    out.len = 0;
    CHECK_EQ(filter_call(&m, L.buf, pos[LD], &pp, 4096, 64, &res, &out, &err), LK_OK);
    CHECK_EQ(out.len, pos[LD]);
    CHECK(out.len == pos[LD] && memcmp(out.p, L.buf, pos[LD]) == 0);
    CHECK_EQ(res.keyless_dropped, 0);
    CHECK_EQ(res.records_kept, 7);
    /* map_end 12: D loses k5@11 (k5's later record at 13 is known), E stays whole. */
    pp.map_end = 12;
    res = new_clean_result();
    out.len = 0;
    CHECK_EQ(filter_call(&m, plain, L.size[LD], &pp, 4096, 64, &res, &out, &err), LK_OK);
    CHECK_EQ(filter_call(&m, L.buf + pos[LE], L.size[LE], &pp, 4096, 64, &res, &out, &err), LK_OK);
    n = read_batch(out.p, out.len, &o);
    CHECK(n > 0 && o.n == 1 && o.offset[0] == 10);
    CHECK(out.len == n + L.size[LE] && memcmp(out.p + n, L.buf + pos[LE], L.size[LE]) == 0);
    /* map_end 5: A filtered by the map, C (from 5 on) kept whole. */
    pp.map_end = 5;
    res = new_clean_result();
    out.len = 0;
    CHECK_EQ(filter_call(&m, L.buf, pos[LD], &pp, 4096, 64, &res, &out, &err), LK_OK);
    n = read_batch(out.p, out.len, &o);
    CHECK(n > 0 && o.n == 1 && o.offset[0] == 3);
    CHECK(out.len == n + L.size[LB] + L.size[LC] &&
          memcmp(out.p + n, L.buf + pos[LB], L.size[LB] + L.size[LC]) == 0);
    free(plain);

    /* Timestamps out of order: base = the first kept record's, max = the largest kept. */
    static const rspec F[] = {{"x", "v", 0, 500}, {"y", "v", 1, 900}, {"x", "v", 2, 700},
                              {"z", "v", 3, 100}, {"y", "w", 4, 300}};
    static uint8_t fb[1024];
    for (int lat = 0; lat < 2; lat++) {
        size_t fs = enc_batch_ex(fb, sizeof fb, 20, lat ? LK_ATTR_LOG_APPEND_TIME : 0, NO_HORIZON,
                                 F, 5, -1, lat ? 999 : INT64_MIN);
        roomy_map(&m);
        lk_map_result mr = new_map_result();
        REQUIRE_OK(lk_cleaner_map(&m, fb, fs, 0, INT64_MAX, NULL, 0, &mr, NULL));
        lk_clean_params fp = {0, 10000000, mr.next_offset, NULL, 0, NULL};
        res = new_clean_result();
        out.len = 0;
        CHECK_EQ(filter_call(&m, fb, fs, &fp, 4096, 64, &res, &out, &err), LK_OK);
        n = read_batch(out.p, out.len, &o);
        CHECK(n > 0 && n == out.len);
        CHECK_EQ(o.n, 3);
        CHECK_EQ(o.offset[0], 22);
        CHECK_EQ(o.offset[1], 23);
        CHECK_EQ(o.offset[2], 24);
        CHECK_EQ(o.ts[0], 700);
        CHECK_EQ(o.ts[1], 100);
        CHECK_EQ(o.ts[2], 300);
        CHECK_EQ(o.h.base_timestamp, 700);
        CHECK_EQ(o.h.max_timestamp, lat ? 999 : 700);
        CHECK_EQ(o.h.attributes, lat ? LK_ATTR_LOG_APPEND_TIME : 0);
        CHECK_EQ(o.h.last_offset_delta, 4);
    }
    free(out.p);
}

/* L2: T1 @0 (a b) | T2 @2 (a=tombstone c) | T3 @4 (b=tombstone). */
static void test_tombstones(void)
{
    static const rspec T1[] = {{"a", "v0", 0, 1000}, {"b", "v1", 1, 1001}};
    static const rspec T2[] = {{"a", NULL, 0, 2000}, {"c", "v3", 1, 2005}};
    static const rspec T3[] = {{"b", NULL, 0, 3000}};
    static fixed_log L;
    memset(&L, 0, sizeof L);
    fl_added(&L, enc_batch(L.buf + L.len, sizeof L.buf - L.len, 0, T1, 2));
    fl_added(&L, enc_batch(L.buf + L.len, sizeof L.buf - L.len, 2, T2, 2));
    fl_added(&L, enc_batch(L.buf + L.len, sizeof L.buf - L.len, 4, T3, 1));
    lk_offset_map m;
    roomy_map(&m);
    lk_map_result mr = new_map_result();
    REQUIRE_OK(lk_cleaner_map(&m, L.buf, L.len, 0, INT64_MAX, NULL, 0, &mr, NULL));
    CHECK_EQ(mr.next_offset, 5);
    lk_clean_params pp = {5000, 9000, 5, NULL, 0, NULL};
    lk_clean_result res = new_clean_result();
    byte_buf out1 = {0}, out2 = {0}, out3 = {0};
    out_batch o;
    size_t n;

    /* Pass 1: T1 loses both records (batch gone); T2 and T3 keep their tombstones and get
     * the delete horizon (bit 6, baseTimestamp = new_horizon_ms). */
    CHECK_EQ(filter_call(&m, L.buf, L.len, &pp, 4096, 64, &res, &out1, NULL), LK_OK);
    n = read_batch(out1.p, out1.len, &o);
    CHECK(n > 0);
    CHECK_EQ(o.h.base_offset, 2);
    CHECK_EQ(o.h.attributes, LK_ATTR_DELETE_HORIZON);
    CHECK_EQ(o.h.base_timestamp, 9000);
    CHECK_EQ(o.h.max_timestamp, 2005);
    CHECK_EQ(o.n, 2);
    CHECK(o.tomb[0] && !o.tomb[1]);
    CHECK_EQ(o.offset[0], 2);
    CHECK_EQ(o.offset[1], 3);
    CHECK_EQ(o.ts[0], 2000);
    CHECK_EQ(o.ts[1], 2005);
    check_producer_fields(&o.h);
    size_t n2 = read_batch(out1.p + n, left(out1.len, n), &o);
    CHECK(n2 > 0 && n + n2 == out1.len);
    CHECK_EQ(o.h.base_offset, 4);
    CHECK_EQ(o.h.attributes, LK_ATTR_DELETE_HORIZON);
    CHECK_EQ(o.h.base_timestamp, 9000);
    CHECK_EQ(o.h.max_timestamp, 3000);
    CHECK(o.n == 1 && o.tomb[0] && o.ts[0] == 3000);
    CHECK_EQ(res.batches_read, 3);
    CHECK_EQ(res.batches_kept, 2);
    CHECK_EQ(res.records_read, 5);
    CHECK_EQ(res.records_kept, 3);
    CHECK_EQ(res.tombstones_dropped, 0);
    CHECK_EQ(res.next_horizon_ms, 9000);

    /* Pass 2 before the horizon: nothing changes, byte for byte; the horizon is the batch's. */
    lk_clean_params pp2 = {8999, 20000, 5, NULL, 0, NULL};
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, out1.p, out1.len, &pp2, 4096, 64, &res, &out2, NULL), LK_OK);
    CHECK(out2.len == out1.len && memcmp(out2.p, out1.p, out1.len) == 0);
    CHECK_EQ(res.next_horizon_ms, 9000);
    CHECK_EQ(res.tombstones_dropped, 0);

    /* Pass 3 at the horizon: the tombstones go; T2 keeps c without a horizon, T3 is gone. */
    lk_clean_params pp3 = {9000, 30000, 5, NULL, 0, NULL};
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, out1.p, out1.len, &pp3, 4096, 64, &res, &out3, NULL), LK_OK);
    n = read_batch(out3.p, out3.len, &o);
    CHECK(n > 0 && n == out3.len);
    CHECK_EQ(o.h.base_offset, 2);
    CHECK_EQ(o.h.last_offset_delta, 1);
    CHECK_EQ(o.h.attributes, 0);
    CHECK_EQ(o.h.base_timestamp, 2005);
    CHECK_EQ(o.h.max_timestamp, 2005);
    CHECK(o.n == 1 && o.offset[0] == 3 && !o.tomb[0] && o.ts[0] == 2005);
    CHECK_EQ(res.tombstones_dropped, 2);
    CHECK_EQ(res.next_horizon_ms, INT64_MAX);
    CHECK_EQ(res.batches_kept, 1);

    /* map_end 4 (the map of offsets 0..3): b@4 is past it: kept with no horizon, T3 copied;
     * T1 keeps b@1 (the map knows no later b). */
    roomy_map(&m);
    mr = new_map_result();
    REQUIRE_OK(lk_cleaner_map(&m, L.buf, L.len, 0, 4, NULL, 0, &mr, NULL));
    CHECK_EQ(mr.stop, LK_CLEAN_LIMIT);
    CHECK_EQ(mr.next_offset, 4);
    lk_clean_params pp4 = {5000, 9000, 4, NULL, 0, NULL};
    res = new_clean_result();
    out2.len = 0;
    CHECK_EQ(filter_call(&m, L.buf, L.len, &pp4, 4096, 64, &res, &out2, NULL), LK_OK);
    n = read_batch(out2.p, out2.len, &o);
    CHECK(n > 0 && o.n == 1 && o.offset[0] == 1 && o.h.attributes == 0 && o.h.base_timestamp == 1001);
    n2 = read_batch(out2.p + n, left(out2.len, n), &o);
    CHECK(n2 > 0 && o.n == 2 && o.h.attributes == LK_ATTR_DELETE_HORIZON);
    CHECK(out2.len == n + n2 + L.size[2] &&
          memcmp(out2.p + n + n2, L.buf + L.pos[2], L.size[2]) == 0);
    CHECK_EQ(res.next_horizon_ms, 9000);
    /* ...and a horizon batch whose tombstone is past map_end loses its horizon (passed or
     * not), keeping the tombstone: the records before it were not looked at. */
    if (out1.len > HDR && size_at(out1.p) < out1.len) {
        /* T3' of pass 1 is the last batch of out1. */
        size_t first = size_at(out1.p);
        const uint8_t *t3 = out1.p + first;
        size_t t3s = out1.len - first;
        for (int64_t now = 8000; now <= 9000; now += 1000) {
            lk_clean_params pp5 = {now, 50000, 4, NULL, 0, NULL};
            res = new_clean_result();
            out3.len = 0;
            CHECK_EQ(filter_call(&m, t3, t3s, &pp5, 4096, 64, &res, &out3, NULL), LK_OK);
            n = read_batch(out3.p, out3.len, &o);
            CHECK(n > 0 && n == out3.len);
            CHECK(o.n == 1 && o.tomb[0] && o.offset[0] == 4 && o.ts[0] == 3000);
            CHECK_EQ(o.h.attributes, 0);
            CHECK_EQ(o.h.base_timestamp, 3000);
            CHECK_EQ(res.tombstones_dropped, 0);
            CHECK_EQ(res.next_horizon_ms, INT64_MAX);
        }
    }

    /* A batch that already has a horizon keeps it (not new_horizon_ms) when rewritten. */
    static const rspec H[] = {{"p", NULL, 0, 100}, {"q", "x", 1, 110}, {"q", "y", 2, 120}};
    static uint8_t hb[1024];
    size_t hs = enc_batch_ex(hb, sizeof hb, 50, 0, 7777, H, 3, -1, INT64_MIN);
    roomy_map(&m);
    mr = new_map_result();
    REQUIRE_OK(lk_cleaner_map(&m, hb, hs, 0, INT64_MAX, NULL, 0, &mr, NULL));
    lk_clean_params pp6 = {7776, 99999, mr.next_offset, NULL, 0, NULL};
    res = new_clean_result();
    out3.len = 0;
    CHECK_EQ(filter_call(&m, hb, hs, &pp6, 4096, 64, &res, &out3, NULL), LK_OK);
    n = read_batch(out3.p, out3.len, &o);
    CHECK(n > 0 && n == out3.len);
    CHECK_EQ(o.h.attributes, LK_ATTR_DELETE_HORIZON);
    CHECK_EQ(o.h.base_timestamp, 7777);
    CHECK(o.n == 2 && o.offset[0] == 50 && o.offset[1] == 52 && o.ts[0] == 100 && o.ts[1] == 120);
    CHECK_EQ(o.h.max_timestamp, 120);
    CHECK_EQ(res.next_horizon_ms, 7777);
    pp6.now_ms = 7777; /* horizon <= now: the tombstone goes */
    res = new_clean_result();
    out3.len = 0;
    CHECK_EQ(filter_call(&m, hb, hs, &pp6, 4096, 64, &res, &out3, NULL), LK_OK);
    n = read_batch(out3.p, out3.len, &o);
    CHECK(n > 0 && o.n == 1 && o.offset[0] == 52 && o.h.attributes == 0 && o.h.base_timestamp == 120);
    CHECK_EQ(res.tombstones_dropped, 1);
    free(out1.p);
    free(out2.p);
    free(out3.p);
}

static void test_filter_buffers(void)
{
    static fixed_log L;
    build_l1(&L);
    const size_t *pos = L.pos;
    lk_offset_map m;
    fill_l1_map(&m, &L);
    lk_clean_params pp = {0, 10000000, 15, NULL, 0, NULL};
    lk_clean_result res = new_clean_result();
    byte_buf out = {0};
    lk_error err;
    out_batch o;
    size_t cut_len = pos[LD];

    CHECK_EQ(filter_call(&m, L.buf, cut_len, &pp, 4096, 64, &res, &out, &err), LK_OK);
    size_t sA = read_batch(out.p, out.len, &o);
    size_t sC = out.len - sA - L.size[LB];
    CHECK(sA > 0 && sA < L.size[LA]);
    CHECK_EQ(read_batch(out.p + sA + L.size[LB], sC, &o), sC);
    const size_t R = filter_reserve();
    size_t wA = L.size[LA] + R * 4;

    /* The first batch must fit: out one byte short of size + R a record, or keep short. */
    res = new_clean_result();
    memset(&err, 0, sizeof err);
    CHECK_EQ(filter_call(&m, L.buf, cut_len, &pp, wA - 1, 64, &res, NULL, &err),
             LK_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(err.code, LK_ERR_BUFFER_TOO_SMALL);
    CHECK(err.what != NULL);
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, L.buf, cut_len, &pp, wA, 3, &res, NULL, &err), LK_ERR_BUFFER_TOO_SMALL);
    res = new_clean_result();
    CHECK_EQ(lk_cleaner_filter(&m, L.buf, cut_len, &pp, NULL, 0, NULL, 0, &res, &err),
             LK_ERR_BUFFER_TOO_SMALL);
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, L.buf, cut_len, &pp, wA, 4, &res, NULL, &err), LK_OK);

    /* A fits; B (a control batch: 78 + R bytes) does not fit what is left: FULL at B. */
    size_t cap = sA + LK_CONTROL_BATCH_SIZE + R - 1;
    CHECK(cap >= wA);
    res = new_clean_result();
    out.len = 0;
    CHECK_EQ(filter_call(&m, L.buf, cut_len, &pp, cap, 64, &res, &out, &err), LK_OK);
    CHECK_EQ(res.stop, LK_CLEAN_FULL);
    CHECK_EQ(res.position, pos[LB]);
    CHECK_EQ(res.written, sA);
    CHECK_EQ(res.batches_read, 1);
    CHECK_EQ(res.last_offset, 3);
    /* One more byte: B fits, C does not. */
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, L.buf, cut_len, &pp, cap + 1, 64, &res, &out, &err), LK_OK);
    CHECK_EQ(res.stop, LK_CLEAN_FULL);
    CHECK_EQ(res.position, pos[LC]);
    CHECK_EQ(res.written, sA + L.size[LB]);
    /* Resuming at position with the same result gives the rest. */
    CHECK_EQ(filter_call(&m, L.buf + pos[LC], cut_len - pos[LC], &pp, 4096, 64, &res, &out, &err),
             LK_OK);
    CHECK_EQ(res.stop, LK_CLEAN_END);
    CHECK_EQ(res.written, sC);
    /* keep: B needs 1, C 3. */
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, L.buf + pos[LB], cut_len - pos[LB], &pp, 4096, 1, &res, NULL, &err),
             LK_OK);
    CHECK_EQ(res.stop, LK_CLEAN_FULL);
    CHECK_EQ(res.position, L.size[LB]);
    CHECK_EQ(res.written, L.size[LB]);
    /* A control batch first: 78 + R bytes. */
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, L.buf + pos[LB], L.size[LB], &pp, LK_CONTROL_BATCH_SIZE + R - 1, 1, &res, NULL, &err),
             LK_ERR_BUFFER_TOO_SMALL);
    res = new_clean_result();
    out.len = 0;
    CHECK_EQ(filter_call(&m, L.buf + pos[LB], L.size[LB], &pp, LK_CONTROL_BATCH_SIZE + R, 1, &res, &out,
                         &err),
             LK_OK);
    CHECK(out.len == L.size[LB] && memcmp(out.p, L.buf + pos[LB], L.size[LB]) == 0);

    /* A first batch dropped whole, then no room: FULL with nothing written, position past it. */
    {
        static const rspec G1[] = {{"gone", "old", 0, 10}};
        static rspec G2[12];
        static char keys[12][16];
        for (int i = 0; i < 12; i++) {
            snprintf(keys[i], sizeof keys[i], "g%u", (unsigned)i);
            G2[i].key = keys[i];
            G2[i].value = "some value here";
            G2[i].delta = i;
            G2[i].ts = 20 + i;
        }
        static const rspec G3[] = {{"gone", "new", 0, 30}};
        static uint8_t gb[4096];
        size_t g1 = enc_batch(gb, sizeof gb, 0, G1, 1);
        size_t g2 = enc_batch(gb + g1, sizeof gb - g1, 1, G2, 12);
        size_t g3 = enc_batch(gb + g1 + g2, sizeof gb - g1 - g2, 13, G3, 1);
        static uint64_t gmem[3 * 256];
        lk_offset_map gm;
        REQUIRE_OK(lk_offset_map_init(&gm, gmem, sizeof gmem, 0.9, 0));
        lk_map_result mr = new_map_result();
        REQUIRE_OK(lk_cleaner_map(&gm, gb, g1 + g2 + g3, 0, INT64_MAX, NULL, 0, &mr, NULL));
        lk_clean_params gp = {0, 1000, mr.next_offset, NULL, 0, NULL};
        res = new_clean_result();
        CHECK_EQ(filter_call(&gm, gb, g1 + g2 + g3, &gp, g1 + R, 64, &res, NULL, &err), LK_OK);
        CHECK_EQ(res.stop, LK_CLEAN_FULL);
        CHECK_EQ(res.position, g1);
        CHECK_EQ(res.written, 0);
        CHECK_EQ(res.batches_read, 1);
        CHECK_EQ(res.batches_kept, 0);
    }

    /* An error after some batches: position at the bad batch, written what came before. */
    static uint8_t bad[8192];
    memcpy(bad, L.buf, cut_len);
    bad[pos[LC] + 70] ^= 4;
    res = new_clean_result();
    memset(&err, 0, sizeof err);
    CHECK_EQ(filter_call(&m, bad, cut_len, &pp, 4096, 64, &res, NULL, &err), LK_ERR_CRC);
    CHECK_EQ(err.position, pos[LC] + OFF_CRC);
    CHECK_EQ(res.position, pos[LC]);
    CHECK_EQ(res.written, sA + L.size[LB]);
    memcpy(bad, L.buf, cut_len);
    bad[pos[LC] + OFF_MAGIC] = 0;
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, bad, cut_len, &pp, 4096, 64, &res, NULL, &err), LK_ERR_BAD_MAGIC);
    CHECK_EQ(err.position, pos[LC] + OFF_MAGIC);
    memcpy(bad, L.buf, cut_len);
    set32(bad + pos[LC] + OFF_LENGTH, 3);
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, bad, cut_len, &pp, 4096, 64, &res, NULL, &err), LK_ERR_BAD_LENGTH);
    CHECK_EQ(err.position, pos[LC] + OFF_LENGTH);
    memcpy(bad, L.buf, cut_len);
    bad[pos[LC] + HDR] = 0x7e; /* first record's length past the batch */
    CHECK_EQ(lk_batch_update_crc(bad + pos[LC], L.size[LC], NULL), LK_OK);
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, bad, cut_len, &pp, 4096, 64, &res, NULL, &err), LK_ERR_CORRUPT_RECORD);
    CHECK_EQ(err.position, pos[LC] + HDR);
    CHECK_EQ(err.record_index, 0);

    /* Record counts that do not match the records (CRC fixed): the walk finds out. */
    static const uint32_t bad_counts[] = {1, 2, 4, 5, 6, 0xffffffffu, 1000};
    for (size_t k = 0; k < sizeof bad_counts / sizeof bad_counts[0]; k++) {
        memcpy(bad, L.buf, cut_len);
        set32(bad + pos[LC] + OFF_COUNT, bad_counts[k]);
        CHECK_EQ(lk_batch_update_crc(bad + pos[LC], L.size[LC], NULL), LK_OK);
        res = new_clean_result();
        memset(&err, 0, sizeof err);
        CHECK_EQ(filter_call(&m, bad, cut_len, &pp, 1 << 16, 2000, &res, NULL, &err),
                 LK_ERR_CORRUPT_RECORD);
        CHECK(err.position >= (int64_t)pos[LC] && err.position <= (int64_t)cut_len);
    }
    /* A count of 0 over records: passed as an empty batch (copied whole) or refused. */
    memcpy(bad, L.buf, cut_len);
    set32(bad + pos[LC] + OFF_COUNT, 0);
    CHECK_EQ(lk_batch_update_crc(bad + pos[LC], L.size[LC], NULL), LK_OK);
    res = new_clean_result();
    out.len = 0;
    int zrc = filter_call(&m, bad, cut_len, &pp, 4096, 64, &res, &out, &err);
    CHECK(zrc == LK_ERR_CORRUPT_RECORD ||
          (zrc == LK_OK && out.len == sA + L.size[LB] + L.size[LC] &&
           memcmp(out.p + sA + L.size[LB], bad + pos[LC], L.size[LC]) == 0));

    /* Offsets must go up, within a call and across calls. */
    static const rspec X[] = {{"k9", "x", 0, 9000}};
    for (int64_t xbase = 2; xbase <= 4; xbase++) {
        memcpy(bad, L.buf, L.size[LA]);
        size_t xs = enc_batch(bad + L.size[LA], sizeof bad - L.size[LA], xbase, X, 1);
        res = new_clean_result();
        int rc = filter_call(&m, bad, L.size[LA] + xs, &pp, 4096, 64, &res, NULL, &err);
        CHECK_EQ(rc, xbase <= 3 ? LK_ERR_CORRUPT_RECORD : LK_OK);
        if (rc != LK_OK) {
            CHECK_EQ(err.position, L.size[LA]);
            CHECK_EQ(res.position, L.size[LA]);
            CHECK_EQ(res.written, sA);
        }
        res = new_clean_result();
        CHECK_EQ(filter_call(&m, bad, L.size[LA], &pp, 4096, 64, &res, NULL, &err), LK_OK);
        CHECK_EQ(res.last_offset, 3);
        rc = filter_call(&m, bad + L.size[LA], xs, &pp, 4096, 64, &res, NULL, &err);
        CHECK_EQ(rc, xbase <= 3 ? LK_ERR_CORRUPT_RECORD : LK_OK);
    }

    /* Every cut of A..C: END at the start of the cut batch; whole batches written. */
    for (size_t c = 0; c <= cut_len; c++) {
        int whole = 0;
        while (whole < LD && pos[whole] + L.size[whole] <= c)
            whole++;
        uint8_t *copy = exact_copy(L.buf, c);
        res = new_clean_result();
        CHECK_EQ(filter_call(&m, copy, c, &pp, 4096, 64, &res, NULL, &err), LK_OK);
        CHECK_EQ(res.stop, LK_CLEAN_END);
        CHECK_EQ(res.position, pos[whole]);
        size_t expect = (whole >= 1 ? sA : 0) + (whole >= 2 ? L.size[LB] : 0) + (whole >= 3 ? sC : 0);
        CHECK_EQ(res.written, expect);
        free(copy);
    }

    /* Control and empty batches are copied, compressed or not (no COMPRESSED stop). */
    {
        static uint8_t cb[1024];
        size_t c1 = enc_control(cb, sizeof cb, 100);
        set_attributes(cb, (int16_t)(get16(cb + OFF_ATTRS) | 3));
        size_t c2 = enc_empty(cb + c1, sizeof cb - c1, 101, 5);
        size_t c3 = enc_empty(cb + c1 + c2, sizeof cb - c1 - c2, 107, 0);
        set_attributes(cb + c1 + c2, 4);
        res = new_clean_result();
        out.len = 0;
        CHECK_EQ(filter_call(&m, cb, c1 + c2 + c3, &pp, 4096, 64, &res, &out, &err), LK_OK);
        CHECK_EQ(res.stop, LK_CLEAN_END);
        CHECK(out.len == c1 + c2 + c3 && memcmp(out.p, cb, out.len) == 0);
        CHECK_EQ(res.batches_read, 3);
        CHECK_EQ(res.batches_kept, 3);
        CHECK_EQ(res.last_offset, 107);
        /* The map pass passes over them too. */
        lk_map_result mr = new_map_result();
        CHECK_EQ(lk_cleaner_map(&m, cb, c1 + c2 + c3, 0, INT64_MAX, NULL, 0, &mr, &err), LK_OK);
        CHECK_EQ(mr.stop, LK_CLEAN_END);
        CHECK_EQ(mr.next_offset, 108);
    }

    /* Arguments. */
    uint8_t ob[256], kb[16];
    res = new_clean_result();
    CHECK_EQ(lk_cleaner_filter(NULL, L.buf, cut_len, &pp, ob, sizeof ob, kb, sizeof kb, &res, &err),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_filter(&m, L.buf, cut_len, NULL, ob, sizeof ob, kb, sizeof kb, &res, &err),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_filter(&m, L.buf, cut_len, &pp, ob, sizeof ob, kb, sizeof kb, NULL, &err),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_filter(&m, NULL, 5, &pp, ob, sizeof ob, kb, sizeof kb, &res, &err),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_filter(&m, L.buf, cut_len, &pp, NULL, 5, kb, sizeof kb, &res, &err),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_filter(&m, L.buf, cut_len, &pp, ob, sizeof ob, NULL, 5, &res, &err),
             LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_filter(&m, NULL, 0, &pp, NULL, 0, NULL, 0, &res, &err), LK_OK);
    CHECK_EQ(res.stop, LK_CLEAN_END);
    CHECK_EQ(res.position, 0);
    CHECK_EQ(res.written, 0);
    free(out.p);
}

/* ------------------------------------------------------------------------------------
 * 4c. Transactions: fixed cases
 * --------------------------------------------------------------------------------- */

static int expect_copy(const uint8_t *out, size_t out_len, size_t *q, const uint8_t *batch,
                       size_t size);

/* Gives the batch at b another producer id (CRC redone). */
static void set_producer(uint8_t *b, int64_t producer_id)
{
    set64(b + OFF_PRODUCER, (uint64_t)producer_id);
    CHECK_EQ(lk_batch_update_crc(b, size_at(b), NULL), LK_OK);
}

/* T: T0 @0 producer 1000, transactional (k0 k1) | T1 marker @2 | T2 @3 producer 1000,
 * transactional, gzip by the flag (k0 k2), aborted | T3 marker @5 | T4 @6 producer 2000
 * (k1) | T5 @7 producer 3000, transactional (k3), aborted. */
enum { T0, T1, T2, T3, T4, T5 };
static void build_txn_log(fixed_log *f)
{
    static const rspec A[] = {{"k0", "a0", 0, 1000}, {"k1", "a1", 1, 1001}};
    static const rspec B[] = {{"k0", "b3", 0, 2000}, {"k2", "b4", 1, 2001}};
    static const rspec C[] = {{"k1", "c6", 0, 3000}};
    static const rspec D[] = {{"k3", "d7", 0, 4000}};
    memset(f, 0, sizeof *f);
    fl_added(f, enc_batch_ex(f->buf + f->len, sizeof f->buf - f->len, 0, LK_ATTR_TRANSACTIONAL,
                             NO_HORIZON, A, 2, -1, INT64_MIN));
    fl_added(f, enc_control(f->buf + f->len, sizeof f->buf - f->len, 2));
    fl_added(f, enc_batch_ex(f->buf + f->len, sizeof f->buf - f->len, 3, LK_ATTR_TRANSACTIONAL,
                             NO_HORIZON, B, 2, -1, INT64_MIN));
    set_attributes(f->buf + f->pos[T2], LK_ATTR_TRANSACTIONAL | 1);
    fl_added(f, enc_control(f->buf + f->len, sizeof f->buf - f->len, 5));
    fl_added(f, enc_batch(f->buf + f->len, sizeof f->buf - f->len, 6, C, 1));
    set_producer(f->buf + f->pos[T4], 2000);
    fl_added(f, enc_batch_ex(f->buf + f->len, sizeof f->buf - f->len, 7, LK_ATTR_TRANSACTIONAL,
                             NO_HORIZON, D, 1, -1, INT64_MIN));
    set_producer(f->buf + f->pos[T5], 3000);
}

static const lk_aborted_txn TXN_ABORTED[] = {{1000, 3, 5}, {3000, 7, 7}};

static void test_transactions_fixed(void)
{
    static fixed_log L;
    build_txn_log(&L);
    const size_t *pos = L.pos;
    lk_offset_map m;
    lk_error err;

    /* Map pass: the aborted batches put no key (k2, k3 absent; k0 stays at 0), and the
     * compressed one is passed over without a COMPRESSED stop. */
    roomy_map(&m);
    lk_map_result mr = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, L.buf, L.len, 0, INT64_MAX, TXN_ABORTED, 2, &mr, &err), LK_OK);
    CHECK_EQ(mr.stop, LK_CLEAN_END);
    CHECK_EQ(mr.next_offset, 8);
    CHECK_EQ(mr.records, 3);
    CHECK_EQ(get_str(&m, "k0"), 0);
    CHECK_EQ(get_str(&m, "k1"), 6);
    CHECK_EQ(get_str(&m, "k2"), -1);
    CHECK_EQ(get_str(&m, "k3"), -1);
    /* Without the list: the compressed batch stops the pass, as any other. */
    lk_offset_map m2;
    static uint64_t mem2[3 * 64];
    REQUIRE_OK(lk_offset_map_init(&m2, mem2, sizeof mem2, 0.9, 0));
    lk_map_result mr2 = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m2, L.buf, L.len, 0, INT64_MAX, NULL, 0, &mr2, &err), LK_OK);
    CHECK_EQ(mr2.stop, LK_CLEAN_COMPRESSED);
    CHECK_EQ(mr2.position, pos[T2]);

    /* The producer pass: each producer's last data batch (markers are not data). */
    static uint64_t pmem[3 * 64];
    lk_offset_map pm;
    REQUIRE_OK(lk_offset_map_init(&pm, pmem, sizeof pmem, 0.9, 0));
    lk_map_result pr = new_map_result();
    CHECK_EQ(lk_cleaner_producers(&pm, L.buf, L.len, &pr, &err), LK_OK);
    CHECK_EQ(pr.stop, LK_CLEAN_END);
    CHECK_EQ(pr.position, L.len);
    CHECK_EQ(pr.records, 4);
    CHECK_EQ(pr.next_offset, 8);
    uint8_t key[8];
    set64(key, 1000);
    CHECK_EQ(lk_offset_map_get(&pm, key, 8), 4);
    set64(key, 2000);
    CHECK_EQ(lk_offset_map_get(&pm, key, 8), 6);
    set64(key, 3000);
    CHECK_EQ(lk_offset_map_get(&pm, key, 8), 7);

    /* Filter: T0 loses k1@1; T2 (aborted, 1000's last) and T5 (aborted, 3000's last) become
     * bare headers; markers and T4 are copied. */
    lk_clean_params pp = {0, 10000000, 8, TXN_ABORTED, 2, &pm};
    lk_clean_result res = new_clean_result();
    byte_buf out = {0};
    CHECK_EQ(filter_call(&m, L.buf, L.len, &pp, 1 << 14, 64, &res, &out, &err), LK_OK);
    CHECK_EQ(res.stop, LK_CLEAN_END);
    CHECK_EQ(res.aborted_dropped, 3);
    CHECK_EQ(res.empty_batches_kept, 2);
    CHECK_EQ(res.records_read, 6);
    CHECK_EQ(res.records_kept, 2);
    CHECK_EQ(res.batches_kept, 6);
    size_t q = 0;
    out_batch o;
    size_t n = read_batch(out.p, out.len, &o);
    CHECK(n > 0 && o.n == 1 && strcmp(o.key[0], "k0") == 0 && o.offset[0] == 0);
    q += n;
    CHECK(expect_copy(out.p, out.len, &q, L.buf + pos[T1], L.size[T1]));
    lk_batch_header h;
    CHECK_EQ(lk_batch_validate(out.p + q, out.len - q, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, &h,
                               NULL), LK_OK);
    CHECK(h.batch_length + LK_LOG_OVERHEAD == HDR && h.record_count == 0 && h.base_offset == 3 &&
          h.last_offset_delta == 1 && h.attributes == LK_ATTR_TRANSACTIONAL &&
          h.base_timestamp == -1 && h.max_timestamp == 2001 && h.producer_id == 1000 &&
          h.producer_epoch == PRODUCER_EPOCH && h.base_sequence == BASE_SEQUENCE);
    q += HDR;
    CHECK(expect_copy(out.p, out.len, &q, L.buf + pos[T3], L.size[T3]));
    CHECK(expect_copy(out.p, out.len, &q, L.buf + pos[T4], L.size[T4]));
    CHECK_EQ(lk_batch_validate(out.p + q, out.len - q, 0, LK_VALIDATE_CRC, &h, NULL), LK_OK);
    CHECK(h.record_count == 0 && h.base_offset == 7 && h.producer_id == 3000);
    q += HDR;
    CHECK_EQ(q, out.len);
    /* Cleaning that again changes nothing. */
    lk_clean_result res2 = new_clean_result();
    byte_buf out2 = {0};
    CHECK_EQ(filter_call(&m, out.p, out.len, &pp, 1 << 14, 64, &res2, &out2, &err), LK_OK);
    CHECK(out2.len == out.len && memcmp(out2.p, out.p, out.len) == 0);
    free(out2.p);
    free(out.p);

    /* No producer map: the aborted batches just go. */
    lk_clean_params pp_none = {0, 10000000, 8, TXN_ABORTED, 2, NULL};
    res = new_clean_result();
    out = (byte_buf){0};
    CHECK_EQ(filter_call(&m, L.buf, L.len, &pp_none, 1 << 14, 64, &res, &out, &err), LK_OK);
    CHECK_EQ(res.empty_batches_kept, 0);
    CHECK_EQ(out.len, n + L.size[T1] + L.size[T3] + L.size[T4]);
    free(out.p);

    /* map_end 7: T5 (base 7) is past it, so it stays as it is, aborted or not. */
    lk_clean_params pp7 = {0, 10000000, 7, TXN_ABORTED, 2, &pm};
    res = new_clean_result();
    out = (byte_buf){0};
    CHECK_EQ(filter_call(&m, L.buf, L.len, &pp7, 1 << 14, 64, &res, &out, &err), LK_OK);
    CHECK(out.len >= L.size[T5] &&
          memcmp(out.p + out.len - L.size[T5], L.buf + pos[T5], L.size[T5]) == 0);
    CHECK_EQ(res.aborted_dropped, 2);
    free(out.p);

    /* Aborted batches need no keep scratch: from T1 with room for one record's flag, T2's
     * two records are no reason to stop. */
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, L.buf + pos[T1], L.len - pos[T1], &pp, 1 << 14, 1, &res, NULL, &err),
             LK_OK);
    CHECK_EQ(res.stop, LK_CLEAN_END);
    CHECK_EQ(res.position, L.len - pos[T1]);
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, L.buf + pos[T1], L.len - pos[T1], &pp_none, 1 << 14, 1, &res, NULL,
                         &err), LK_OK);
    CHECK_EQ(res.stop, LK_CLEAN_END);

    /* A list not sorted by producer, or one producer's transactions overlapping: refused,
     * with nothing written. */
    const lk_aborted_txn unsorted[] = {{3000, 7, 7}, {1000, 3, 5}};
    const lk_aborted_txn overlapping[] = {{1000, 3, 5}, {1000, 5, 9}};
    memset(&err, 0, sizeof err);
    mr = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m2, L.buf, L.len, 0, INT64_MAX, unsorted, 2, &mr, &err),
             LK_ERR_ARGUMENT);
    CHECK(err.code == LK_ERR_ARGUMENT && err.what != NULL);
    CHECK_EQ(lk_cleaner_map(&m2, L.buf, L.len, 0, INT64_MAX, NULL, 1, &mr, NULL), LK_ERR_ARGUMENT);
    lk_clean_params bad = {0, 10000000, 8, overlapping, 2, &pm};
    res = new_clean_result();
    CHECK_EQ(filter_call(&m, L.buf, L.len, &bad, 1 << 14, 64, &res, NULL, &err), LK_ERR_ARGUMENT);
    CHECK_EQ(res.batches_read, 0);

    /* The producer pass: a full map (room for one producer) stops at the batch of the
     * second; offsets going back, a bad magic and the arguments are errors; a cut batch
     * ends the walk before it. */
    static uint64_t tiny[3 * 2];
    lk_offset_map one;
    REQUIRE_OK(lk_offset_map_init(&one, tiny, sizeof tiny, 0.9, 0));
    pr = new_map_result();
    CHECK_EQ(lk_cleaner_producers(&one, L.buf, L.len, &pr, &err), LK_OK);
    CHECK_EQ(pr.stop, LK_CLEAN_FULL);
    CHECK_EQ(pr.position, pos[T4]);
    CHECK_EQ(pr.records, 2);
    pr = new_map_result();
    CHECK_EQ(lk_cleaner_producers(&pm, L.buf, L.len - 1, &pr, &err), LK_OK);
    CHECK_EQ(pr.stop, LK_CLEAN_END);
    CHECK_EQ(pr.position, pos[T5]);
    uint8_t *twice = malloc(L.len * 2);
    memcpy(twice, L.buf, L.len);
    memcpy(twice + L.len, L.buf, L.len);
    pr = new_map_result();
    CHECK_EQ(lk_cleaner_producers(&pm, twice, L.len * 2, &pr, &err), LK_ERR_CORRUPT_RECORD);
    CHECK_EQ(err.position, L.len);
    CHECK_EQ(pr.position, L.len);
    twice[pos[T2] + OFF_MAGIC] = 1;
    pr = new_map_result();
    CHECK_EQ(lk_cleaner_producers(&pm, twice, L.len, &pr, &err), LK_ERR_BAD_MAGIC);
    CHECK_EQ(err.position, pos[T2] + OFF_MAGIC);
    free(twice);
    CHECK_EQ(lk_cleaner_producers(NULL, L.buf, L.len, &pr, &err), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_producers(&pm, L.buf, L.len, NULL, &err), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_cleaner_producers(&pm, NULL, 5, &pr, &err), LK_ERR_ARGUMENT);
    pr = new_map_result();
    CHECK_EQ(lk_cleaner_producers(&pm, NULL, 0, &pr, &err), LK_OK);
    CHECK_EQ(pr.position, 0);
}

static void test_first_keyless(void)
{
    static fixed_log L;
    build_l1(&L);
    const size_t *pos = L.pos;
    int64_t p;
    int32_t i;
    lk_error err;
    CHECK_EQ(lk_records_first_keyless(L.buf, L.len, &p, &i, &err), LK_OK);
    CHECK(p == 0 && i == 2);
    /* B, C, D: no keyless record before the compressed batch. */
    CHECK_EQ(lk_records_first_keyless(L.buf + pos[LB], L.len - pos[LB], &p, &i, &err), LK_OK);
    CHECK(p == (int64_t)(pos[LD] - pos[LB]) && i == -2);
    CHECK_EQ(lk_records_first_keyless(L.buf + pos[LB], pos[LD] - pos[LB], &p, &i, &err), LK_OK);
    CHECK(p == -1 && i == -1);
    CHECK_EQ(lk_records_first_keyless(L.buf + pos[LE], L.size[LE], &p, &i, &err), LK_OK);
    CHECK(p == 0 && i == 2);
    uint8_t *plain = plain_copy(L.buf + pos[LD], L.size[LD]);
    CHECK_EQ(lk_records_first_keyless(plain, L.size[LD], &p, &i, &err), LK_OK);
    CHECK(p == -1 && i == -1);
    free(plain);
    CHECK_EQ(lk_records_first_keyless(NULL, 0, &p, &i, &err), LK_OK);
    CHECK(p == -1 && i == -1);
    /* Cut: the header's errors. */
    for (size_t c = 1; c < L.size[LC]; c++) {
        uint8_t *copy = exact_copy(L.buf + pos[LB], L.size[LB] + c);
        int rc = lk_records_first_keyless(copy, L.size[LB] + c, &p, &i, &err);
        CHECK_EQ(rc, LK_ERR_TRUNCATED);
        CHECK(err.position >= (int64_t)L.size[LB]);
        free(copy);
    }
    /* A record cut short (CRC is not checked here). */
    static uint8_t bad[8192];
    memcpy(bad, L.buf, L.len);
    bad[pos[LC] + HDR] = 0x7e;
    CHECK_EQ(lk_records_first_keyless(bad + pos[LC], L.size[LC], &p, &i, &err), LK_ERR_CORRUPT_RECORD);
    CHECK_EQ(err.position, HDR);
    memcpy(bad, L.buf, L.len);
    bad[OFF_MAGIC] = 1;
    CHECK_EQ(lk_records_first_keyless(bad, L.len, &p, &i, &err), LK_ERR_BAD_MAGIC);
    memcpy(bad, L.buf, L.len);
    set32(bad + pos[LC] + OFF_LENGTH, 20);
    CHECK_EQ(lk_records_first_keyless(bad + pos[LB], L.len - pos[LB], &p, &i, &err), LK_ERR_BAD_LENGTH);
    CHECK_EQ(err.position, L.size[LB] + OFF_LENGTH);
    /* Arguments. */
    CHECK_EQ(lk_records_first_keyless(NULL, 4, &p, &i, &err), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_records_first_keyless(L.buf, L.len, NULL, &i, &err), LK_ERR_ARGUMENT);
    CHECK_EQ(lk_records_first_keyless(L.buf, L.len, &p, NULL, &err), LK_ERR_ARGUMENT);
}

/* ------------------------------------------------------------------------------------
 * 4b. The filter pass against a model, on random logs
 * --------------------------------------------------------------------------------- */
enum { K_DATA, K_CONTROL, K_EMPTY, K_COMPRESSED };
enum { MAX_BATCHES = 24, MAX_RECS = 40, LOG_CAP = 1 << 17 };

typedef struct {
    int64_t offset, ts;
    int32_t delta;
    uint8_t key[16];
    int32_t key_len; /* -1: null */
    uint8_t value[48];
    int32_t value_len; /* -1: tombstone */
    int32_t hcount;
    int32_t hlens[4];
    uint8_t hdata[16];
    int32_t hdata_len;
    uint8_t headers[32]; /* the headers section after its count, as encoded */
    int32_t headers_len;
} mrec;

typedef struct {
    int kind;
    size_t pos, size;
    int64_t base, last, base_ts, max_ts;
    int16_t attrs;
    int32_t count;
    int64_t pid; /* producer id, -1 for none */
    mrec *r;
} mbatch;

enum { PRODUCER_POOL = 4, MAX_ABORTED = 64 };

typedef struct {
    uint8_t buf[LOG_CAP];
    size_t len;
    mbatch b[MAX_BATCHES];
    int nb;
    mrec recs[MAX_BATCHES * MAX_RECS];
    int nr;
    int64_t t0;
    /* Aborted transactions, sorted by producer then first offset (the list the passes are
     * given; naborted 0 when a test gives none). */
    lk_aborted_txn aborted[MAX_ABORTED];
    size_t naborted;
} mlog;

static void random_record(mrec *r, uint32_t keyspace, uint32_t null_pct, uint32_t tomb_pct)
{
    memset(r, 0, sizeof *r);
    if (rnd_below(100) < null_pct) {
        r->key_len = -1;
    } else {
        uint32_t id = rnd_below(keyspace);
        r->key_len = id == 0 ? 0 : snprintf((char *)r->key, sizeof r->key, "k%u", (unsigned)id);
    }
    if (rnd_below(100) < tomb_pct) {
        r->value_len = -1;
    } else {
        r->value_len = (int32_t)rnd_below(48);
        for (int32_t i = 0; i < r->value_len; i++)
            r->value[i] = (uint8_t)rnd();
    }
    r->hcount = rnd_below(4) == 0 ? 1 + (int32_t)rnd_below(2) : 0;
    uint8_t *w = r->headers;
    for (int32_t h = 0; h < r->hcount; h++) {
        int32_t hk = 1 + (int32_t)rnd_below(4), hv = (int32_t)rnd_below(5) - 1;
        r->hlens[2 * h] = hk;
        r->hlens[2 * h + 1] = hv;
        w = put_varint(w, hk);
        for (int32_t j = 0; j < hk; j++) {
            uint8_t c = (uint8_t)('a' + rnd_below(26));
            r->hdata[r->hdata_len++] = c;
            *w++ = c;
        }
        w = put_varint(w, hv);
        for (int32_t j = 0; j < hv; j++) {
            uint8_t c = (uint8_t)rnd();
            r->hdata[r->hdata_len++] = c;
            *w++ = c;
        }
    }
    r->headers_len = (int32_t)(w - r->headers);
}

static size_t encode_model_batch(mlog *m, const mbatch *b, const lk_batch_params *p, int32_t last_delta)
{
    static uint8_t keys[MAX_RECS * 16], values[MAX_RECS * 48], hdata[MAX_RECS * 16],
        records[1 << 16];
    static int32_t klen[MAX_RECS], vlen[MAX_RECS], deltas[MAX_RECS], hcounts[MAX_RECS],
        hlens[MAX_RECS * 4];
    static int64_t ts[MAX_RECS];
    size_t kp = 0, vp = 0, hp = 0, hl = 0;
    for (int32_t i = 0; i < b->count; i++) {
        const mrec *r = &b->r[i];
        klen[i] = r->key_len;
        if (r->key_len > 0)
            memcpy(keys + kp, r->key, (size_t)r->key_len);
        kp += r->key_len > 0 ? (size_t)r->key_len : 0;
        vlen[i] = r->value_len;
        if (r->value_len > 0)
            memcpy(values + vp, r->value, (size_t)r->value_len);
        vp += r->value_len > 0 ? (size_t)r->value_len : 0;
        deltas[i] = r->delta;
        ts[i] = r->ts;
        hcounts[i] = r->hcount;
        for (int32_t h = 0; h < 2 * r->hcount; h++)
            hlens[hl++] = r->hlens[h];
        memcpy(hdata + hp, r->hdata, (size_t)r->hdata_len);
        hp += (size_t)r->hdata_len;
    }
    lk_records_in in;
    memset(&in, 0, sizeof in);
    in.count = b->count;
    in.keys = keys;
    in.keys_size = kp;
    in.key_lengths = klen;
    in.values = values;
    in.values_size = vp;
    in.value_lengths = vlen;
    in.timestamps = ts;
    in.offset_deltas = deltas;
    in.header_counts = hcounts;
    in.header_lengths = hlens;
    in.header_lengths_count = hl;
    in.header_data = hdata;
    in.header_data_size = hp;
    size_t rlen = 0, len = 0;
    REQUIRE_OK(lk_records_encode(&in, b->base_ts, records, sizeof records, &rlen, NULL));
    REQUIRE_OK(lk_batch_frame(p, b->count, last_delta, b->max_ts, records, rlen, m->buf + m->len,
                              LOG_CAP - m->len, &len, NULL));
    return len;
}

static const int64_t HORIZON_CHOICES[] = {-5000, 5000, 10000000};
static const int64_t NOW_CHOICES[] = {-1000000, 0, 6000, 20000000};

/* A random log: data batches (null and empty keys, tombstones, headers, contiguous or
 * gapped offset deltas, lastOffsetDelta sometimes past the last record, CreateTime or
 * LogAppendTime, some with a delete horizon), control batches, empty batches, batches
 * flagged compressed; offset gaps between batches. Half the batches carry one of
 * PRODUCER_POOL producer ids, and some of those are transactional; then a random list of
 * aborted transactions of those producers (apart per producer, as lk_aborted_txns_check
 * wants), which the rule applies to whatever batches they cover. */
static void gen_log(mlog *m, int nbatches, int max_recs, uint32_t keyspace, uint32_t null_pct,
                    uint32_t tomb_pct)
{
    m->len = 0;
    m->nb = 0;
    m->nr = 0;
    m->t0 = 1700000000000LL + rnd_below(1000000);
    int64_t off = rnd_below(40);
    for (int bi = 0; bi < nbatches && bi < MAX_BATCHES; bi++) {
        mbatch *b = &m->b[m->nb++];
        memset(b, 0, sizeof *b);
        b->base = off;
        b->pos = m->len;
        int64_t t = m->t0 + bi * 1000;
        uint32_t k = rnd_below(100);
        int idem = rnd_below(2);
        int16_t txn = idem && rnd_below(2) ? LK_ATTR_TRANSACTIONAL : 0;
        lk_batch_params p;
        p.base_offset = off;
        p.partition_leader_epoch = (int32_t)rnd_below(10);
        p.attributes = 0;
        p.base_timestamp = t;
        p.producer_id = idem ? 4000 + (int64_t)rnd_below(PRODUCER_POOL) : -1;
        p.producer_epoch = (int16_t)(idem ? 3 : -1);
        p.base_sequence = idem ? 100 * bi : -1;
        b->pid = p.producer_id;
        size_t len = 0;
        if (k < 8) {
            b->kind = K_CONTROL;
            b->count = 1;
            b->last = off;
            REQUIRE_OK(lk_control_batch_encode(&p, rnd_below(2) ? LK_CONTROL_COMMIT : LK_CONTROL_ABORT,
                                               5, t, m->buf + m->len, LOG_CAP - m->len, &len, NULL));
        } else if (k < 14) {
            b->kind = K_EMPTY;
            int32_t ld = (int32_t)rnd_below(3);
            b->last = off + ld;
            b->attrs = txn;
            p.attributes = txn;
            REQUIRE_OK(lk_batch_frame(&p, 0, ld, t, NULL, 0, m->buf + m->len, LOG_CAP - m->len,
                                      &len, NULL));
        } else {
            b->kind = k < 22 ? K_COMPRESSED : K_DATA;
            int horizon = k >= 22 && k < 34, lat = k >= 34 && k < 42;
            b->count = 1 + (int32_t)rnd_below((uint32_t)max_recs);
            b->r = &m->recs[m->nr];
            m->nr += b->count;
            int gapped = rnd_below(3) == 0;
            int32_t d = 0;
            int64_t largest = INT64_MIN;
            for (int32_t i = 0; i < b->count; i++) {
                mrec *r = &b->r[i];
                random_record(r, keyspace, null_pct, tomb_pct);
                r->delta = d;
                r->offset = off + d;
                d += gapped ? 1 + (int32_t)rnd_below(3) : 1;
                r->ts = t + (int64_t)rnd_below(300) - 100;
                if (r->ts > largest)
                    largest = r->ts;
            }
            int32_t last = b->r[b->count - 1].delta +
                           (rnd_below(4) == 0 ? (int32_t)rnd_below(3) : 0);
            b->attrs = (int16_t)((b->kind == K_COMPRESSED ? 1 + (int)rnd_below(4) : 0) |
                                 (horizon ? LK_ATTR_DELETE_HORIZON : 0) |
                                 (lat ? LK_ATTR_LOG_APPEND_TIME : 0) | txn);
            b->base_ts = horizon ? m->t0 + HORIZON_CHOICES[rnd_below(3)] : b->r[0].ts;
            b->max_ts = lat ? t + 5000 : largest;
            b->last = off + last;
            p.attributes = b->attrs;
            p.base_timestamp = b->base_ts;
            len = encode_model_batch(m, b, &p, last);
        }
        b->size = len;
        m->len += len;
        off = b->last + 1 + (rnd_below(4) == 0 ? (int64_t)rnd_below(5) : 0);
    }
    m->naborted = 0;
    for (int64_t pid = 4000; pid < 4000 + PRODUCER_POOL; pid++) {
        int64_t at = (int64_t)rnd_below(10);
        while (rnd_below(3) && at < off && m->naborted < MAX_ABORTED) {
            int64_t first = at + (int64_t)rnd_below(15), last = first + (int64_t)rnd_below(25);
            m->aborted[m->naborted++] = (lk_aborted_txn){pid, first, last};
            at = last + 1;
        }
    }
}

/* 1 if the rule (lk_batch_aborted with the log's list) makes the batch aborted data. */
static int model_aborted(const mlog *m, const mbatch *b)
{
    if (b->kind == K_CONTROL || !(b->attrs & LK_ATTR_TRANSACTIONAL) || b->pid < 0)
        return 0;
    for (size_t i = 0; i < m->naborted; i++)
        if (m->aborted[i].producer_id == b->pid && m->aborted[i].first_offset <= b->base &&
            b->base <= m->aborted[i].last_offset)
            return 1;
    return 0;
}

/* 1 if b is the last data (non-control) batch of its producer in the log. */
static int model_producer_last(const mlog *m, const mbatch *b)
{
    if (b->kind == K_CONTROL || b->pid < 0)
        return 0;
    for (int i = m->nb - 1; i >= 0; i--)
        if (m->b[i].kind != K_CONTROL && m->b[i].pid == b->pid)
            return &m->b[i] == b;
    return 0;
}

static int is_data(const mbatch *b) { return b->kind == K_DATA || b->kind == K_COMPRESSED; }

static int64_t model_latest(const mlog *m, const uint8_t *key, int32_t key_len, int64_t from,
                            int64_t map_end)
{
    int64_t best = -1;
    for (int bi = 0; bi < m->nb; bi++) {
        const mbatch *b = &m->b[bi];
        if (!is_data(b) || model_aborted(m, b))
            continue;
        for (int32_t i = 0; i < b->count; i++) {
            const mrec *r = &b->r[i];
            if (r->key_len == key_len && key_len >= 0 &&
                memcmp(r->key, key, (size_t)key_len) == 0 && r->offset >= from &&
                r->offset < map_end && r->offset > best)
                best = r->offset;
        }
    }
    return best;
}

/* Where a map pass with room for every key stops (its next_offset). */
static int64_t model_map_end(const mlog *m, int64_t from, int64_t stop)
{
    int64_t e = from;
    for (int bi = 0; bi < m->nb; bi++) {
        const mbatch *b = &m->b[bi];
        int64_t next = b->last + 1;
        if (b->base >= stop)
            return e < stop ? stop : e;
        if (next <= from)
            continue;
        if (!is_data(b) || model_aborted(m, b)) {
            if (next > e)
                e = next < stop ? next : stop;
            continue;
        }
        for (int32_t i = 0; i < b->count; i++)
            if (b->r[i].offset >= stop)
                return stop;
        e = next < stop ? next : stop;
    }
    return e;
}

/* The map pass as logkernel's cleaner drives it: a compressed batch is handed over again
 * decompressed (here: with the flag cleared), then the pass goes on after it. */
static int run_map(lk_offset_map *map, const uint8_t *buf, size_t len, int64_t from, int64_t stop,
                   const lk_aborted_txn *aborted, size_t naborted, lk_map_result *res,
                   int64_t *map_end, lk_error *err)
{
    size_t pos = 0;
    *map_end = from;
    while (pos < len) {
        int rc = lk_cleaner_map(map, buf + pos, len - pos, from, stop, aborted, naborted, res, err);
        if (rc != LK_OK)
            return rc;
        CHECK(res->position >= 0 && (uint64_t)res->position <= len - pos);
        *map_end = res->next_offset;
        if (res->stop != LK_CLEAN_COMPRESSED)
            return LK_OK;
        pos += (size_t)res->position;
        size_t size = size_at(buf + pos);
        uint8_t *plain = plain_copy(buf + pos, size);
        rc = lk_cleaner_map(map, plain, size, from, stop, aborted, naborted, res, err);
        free(plain);
        if (rc != LK_OK)
            return rc;
        *map_end = res->next_offset;
        if (res->stop != LK_CLEAN_END)
            return LK_OK;
        CHECK_EQ(res->position, size);
        pos += size;
    }
    return LK_OK;
}

typedef struct {
    size_t out_cap, keep_cap;
} filter_caps;

/* The filter pass as logkernel's cleaner drives it: FULL -> flush and go on from position;
 * BUFFER_TOO_SMALL -> grow out to size + R a record and keep to the count (give up past
 * 16 MiB, as for a hostile count); COMPRESSED -> the batch decompressed, alone, then on. */
static int run_filter(lk_offset_map *map, const uint8_t *in, size_t len, const lk_clean_params *pp,
                      filter_caps *caps, lk_clean_result *res, byte_buf *collected, lk_error *err)
{
    size_t pos = 0;
    int guard = 0;
    while (pos < len) {
        if (++guard > 100000) {
            CHECK(!"the filter pass makes no progress");
            return -100;
        }
        int rc = filter_call(map, in + pos, len - pos, pp, caps->out_cap, caps->keep_cap, res,
                             collected, err);
        if (rc == LK_ERR_BUFFER_TOO_SMALL) {
            lk_batch_header h;
            if (lk_batch_parse_header(in + pos, len - pos, 0, &h, NULL) != LK_OK) {
                CHECK(!"BUFFER_TOO_SMALL without a whole batch");
                return -100;
            }
            uint64_t count = h.record_count > 0 ? (uint64_t)h.record_count : 0;
            uint64_t need = (uint64_t)h.batch_length + LK_LOG_OVERHEAD + filter_reserve() * count;
            if (need <= caps->out_cap && count <= caps->keep_cap) {
                CHECK(!"BUFFER_TOO_SMALL for a batch that fits");
                return -100;
            }
            if (need > (1u << 24))
                return rc;
            if (need > caps->out_cap)
                caps->out_cap = (size_t)need;
            if (count > caps->keep_cap)
                caps->keep_cap = (size_t)count;
            continue;
        }
        if (rc != LK_OK)
            return rc;
        pos += (size_t)res->position;
        if (res->stop == LK_CLEAN_COMPRESSED) {
            lk_batch_header h;
            if (lk_batch_parse_header(in + pos, len - pos, 0, &h, NULL) != LK_OK) {
                CHECK(!"COMPRESSED without a whole batch");
                return -100;
            }
            size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
            uint8_t *plain = plain_copy(in + pos, size);
            rc = run_filter(map, plain, size, pp, caps, res, collected, err);
            free(plain);
            if (rc != LK_OK)
                return rc;
            pos += size;
        } else if (res->stop == LK_CLEAN_FULL) {
            if (res->position == 0) {
                CHECK(!"FULL without progress");
                return -100;
            }
        } else {
            CHECK_EQ(res->stop, LK_CLEAN_END);
            break;
        }
    }
    return LK_OK;
}

/* Expects the bytes of one batch at out + *q. */
static int expect_copy(const uint8_t *out, size_t out_len, size_t *q, const uint8_t *batch,
                       size_t size)
{
    int ok = *q + size <= out_len && memcmp(out + *q, batch, size) == 0;
    CHECK(ok);
    *q += size;
    return ok;
}

/* Expects at out + *q the batch at orig (the model's b) as a header without records:
 * Kafka's empty batch, field by field. */
static int expect_empty(const uint8_t *out, size_t out_len, size_t *q, const mbatch *b,
                        const uint8_t *orig)
{
    lk_batch_header h;
    int ok = *q + HDR <= out_len &&
             lk_batch_validate(out + *q, out_len - *q, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS,
                               &h, NULL) == LK_OK;
    CHECK(ok);
    if (!ok)
        return 0;
    CHECK_EQ(h.batch_length + LK_LOG_OVERHEAD, HDR);
    CHECK_EQ(h.record_count, 0);
    CHECK_EQ(h.base_offset, b->base);
    CHECK_EQ(h.base_offset + h.last_offset_delta, b->last);
    CHECK_EQ(h.base_timestamp, -1);
    CHECK_EQ(h.max_timestamp, (int64_t)get64(orig + OFF_MAX_TS));
    CHECK_EQ(h.attributes,
             get16(orig + OFF_ATTRS) & ~(LK_ATTR_COMPRESSION_MASK | LK_ATTR_DELETE_HORIZON));
    CHECK(memcmp(out + *q + OFF_PRODUCER, orig + OFF_PRODUCER, 14) == 0);
    CHECK(memcmp(out + *q + OFF_EPOCH, orig + OFF_EPOCH, 4) == 0);
    *q += HDR;
    return 1;
}

/* The filter's output and totals against the model: which records stay, byte-for-byte
 * copies, rewritten batches field by field; below map_end, aborted batches (the log's
 * list, if pp has it) keep nothing and, with pp->producers (the producer pass over the
 * whole log), each producer's last batch stays, empty if need be, and its older empty
 * batches go. */
static void verify_filter(const mlog *m, int64_t from, const lk_clean_params *pp, const uint8_t *out,
                          size_t out_len, const lk_clean_result *res)
{
    size_t q = 0;
    int64_t batches_kept = 0, records_read = 0, records_kept = 0, tombstones = 0, keyless = 0;
    int64_t aborted_dropped = 0, empties = 0;
    int64_t horizon_min = INT64_MAX;
    static lk_record_span spans[MAX_RECS];
    for (int bi = 0; bi < m->nb; bi++) {
        const mbatch *b = &m->b[bi];
        const uint8_t *orig = m->buf + b->pos;
        int below = b->base < pp->map_end;
        int producers = pp->producers && below && b->kind != K_CONTROL && b->pid >= 0;
        int last = producers && model_producer_last(m, b);
        if (b->kind == K_CONTROL) {
            batches_kept++;
            if (!expect_copy(out, out_len, &q, orig, b->size))
                return;
            continue;
        }
        if (below && pp->aborted_count && model_aborted(m, b)) {
            records_read += b->count;
            aborted_dropped += b->count;
            if (last) {
                batches_kept++;
                empties++;
                if (!expect_empty(out, out_len, &q, b, orig))
                    return;
            }
            continue;
        }
        if (b->kind == K_EMPTY) {
            if (producers && !last)
                continue;
            batches_kept++;
            empties += last;
            if (!expect_copy(out, out_len, &q, orig, b->size))
                return;
            continue;
        }
        uint8_t *plain = plain_copy(m->buf + b->pos, b->size);
        int has_horizon = (b->attrs & LK_ATTR_DELETE_HORIZON) != 0;
        int drop_tombstones = has_horizon && pp->now_ms >= b->base_ts;
        int keep[MAX_RECS], tk = 0;
        int32_t kept = 0;
        int64_t first_ts = 0, max_ts = INT64_MIN;
        for (int32_t i = 0; i < b->count; i++) {
            const mrec *r = &b->r[i];
            int k = 1;
            if (r->offset < pp->map_end) {
                if (r->key_len < 0) {
                    k = 0;
                    keyless++;
                } else if (model_latest(m, r->key, r->key_len, from, pp->map_end) > r->offset) {
                    k = 0;
                } else if (r->value_len < 0) {
                    if (drop_tombstones) {
                        k = 0;
                        tombstones++;
                    } else {
                        tk = 1;
                    }
                }
            }
            keep[i] = k;
            if (k) {
                if (!kept)
                    first_ts = r->ts;
                kept++;
                if (r->ts > max_ts)
                    max_ts = r->ts;
            }
        }
        records_read += b->count;
        records_kept += kept;
        if (kept == 0) {
            free(plain);
            if (last) {
                batches_kept++;
                empties++;
                if (!expect_empty(out, out_len, &q, b, orig))
                    return;
            }
            continue;
        }
        batches_kept++;
        int64_t horizon = has_horizon ? b->base_ts : pp->new_horizon_ms;
        if (tk && horizon < horizon_min)
            horizon_min = horizon;
        if (kept == b->count && tk == has_horizon) {
            int ok = expect_copy(out, out_len, &q, plain, b->size);
            free(plain);
            if (!ok)
                return;
            continue;
        }
        free(plain);
        /* Rewritten. */
        lk_batch_header h;
        int32_t decoded = 0;
        int rc = q + HDR <= out_len
                     ? lk_batch_decode(out + q, out_len - q, 0, &h, spans, MAX_RECS, &decoded, NULL)
                     : LK_ERR_TRUNCATED;
        CHECK_EQ(rc, LK_OK);
        if (rc != LK_OK)
            return;
        CHECK_EQ(lk_batch_validate(out + q, out_len - q, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS,
                                   NULL, NULL), LK_OK);
        CHECK_EQ(h.base_offset, b->base);
        CHECK_EQ(h.base_offset + h.last_offset_delta, b->last);
        CHECK_EQ(h.record_count, kept);
        CHECK_EQ(decoded, kept);
        CHECK_EQ(h.attributes, (b->attrs & ~(LK_ATTR_DELETE_HORIZON | LK_ATTR_COMPRESSION_MASK)) |
                                   (tk ? LK_ATTR_DELETE_HORIZON : 0));
        CHECK_EQ(h.base_timestamp, tk ? horizon : first_ts);
        CHECK_EQ(h.max_timestamp, (b->attrs & LK_ATTR_LOG_APPEND_TIME) ? b->max_ts : max_ts);
        CHECK(memcmp(out + q + OFF_PRODUCER, m->buf + b->pos + OFF_PRODUCER, 14) == 0);
        CHECK(memcmp(out + q + OFF_EPOCH, m->buf + b->pos + OFF_EPOCH, 4) == 0);
        int32_t j = 0;
        for (int32_t i = 0; i < b->count && j < decoded; i++) {
            if (!keep[i])
                continue;
            const mrec *r = &b->r[i];
            const lk_record_span *s = &spans[j++];
            int same = h.base_offset + s->offset_delta == r->offset &&
                       h.base_timestamp + s->timestamp_delta == r->ts &&
                       s->key_len == r->key_len && s->value_len == r->value_len &&
                       s->headers_count == r->hcount && s->headers_len == r->headers_len &&
                       (r->key_len <= 0 || memcmp(out + q + s->key_pos, r->key, (size_t)r->key_len) == 0) &&
                       (r->value_len <= 0 ||
                        memcmp(out + q + s->value_pos, r->value, (size_t)r->value_len) == 0) &&
                       memcmp(out + q + s->headers_pos, r->headers, (size_t)r->headers_len) == 0 &&
                       s->attributes == 0;
            CHECK(same);
        }
        q += (size_t)h.batch_length + LK_LOG_OVERHEAD;
    }
    CHECK_EQ(q, out_len);
    CHECK_EQ(res->batches_read, m->nb);
    CHECK_EQ(res->batches_kept, batches_kept);
    CHECK_EQ(res->records_read, records_read);
    CHECK_EQ(res->records_kept, records_kept);
    CHECK_EQ(res->tombstones_dropped, tombstones);
    CHECK_EQ(res->keyless_dropped, keyless);
    CHECK_EQ(res->next_horizon_ms, horizon_min);
    CHECK_EQ(res->last_offset, m->nb ? m->b[m->nb - 1].last : -1);
    CHECK_EQ(res->aborted_dropped, aborted_dropped);
    CHECK_EQ(res->empty_batches_kept, empties);
}

/* The producer pass over the log m against the model (every producer of the pool maps to
 * its last data batch's last offset, or is absent); returns the map it filled. */
static void check_producer_pass(const mlog *m, lk_offset_map *pm)
{
    lk_map_result pr = new_map_result();
    lk_error err;
    CHECK_EQ(lk_cleaner_producers(pm, m->buf, m->len, &pr, &err), LK_OK);
    CHECK_EQ(pr.stop, LK_CLEAN_END);
    CHECK_EQ(pr.position, m->len);
    int64_t batches = 0;
    for (int bi = 0; bi < m->nb; bi++)
        batches += m->b[bi].kind != K_CONTROL && m->b[bi].pid >= 0;
    CHECK_EQ(pr.records, batches);
    CHECK_EQ(pr.last_offset, m->nb ? m->b[m->nb - 1].last : -1);
    for (int64_t pid = 4000; pid < 4000 + PRODUCER_POOL; pid++) {
        int64_t want = -1;
        for (int bi = 0; bi < m->nb; bi++)
            if (m->b[bi].kind != K_CONTROL && m->b[bi].pid == pid)
                want = m->b[bi].last;
        uint8_t key[8];
        set64(key, (uint64_t)pid);
        CHECK_EQ(lk_offset_map_get(pm, key, 8), want);
    }
}

/* First keyless record by decoding every batch (an independent walk). */
static void decoded_first_keyless(const uint8_t *buf, size_t len, int64_t *position, int32_t *index)
{
    static lk_record_span spans[4096];
    size_t pos = 0;
    *position = -1;
    *index = -1;
    while (pos < len) {
        lk_batch_header h;
        int32_t decoded = 0;
        if (lk_batch_decode(buf + pos, len - pos, 0, &h, spans, 4096, &decoded, NULL) != LK_OK) {
            CHECK(!"output batch does not decode");
            return;
        }
        if (!(h.attributes & LK_ATTR_CONTROL) && h.record_count > 0) {
            if (h.attributes & LK_ATTR_COMPRESSION_MASK) {
                *position = (int64_t)pos;
                *index = -2;
                return;
            }
            for (int32_t i = 0; i < decoded; i++)
                if (spans[i].key_len < 0) {
                    *position = (int64_t)pos;
                    *index = i;
                    return;
                }
        }
        pos += (size_t)h.batch_length + LK_LOG_OVERHEAD;
    }
}

static mlog LOG;
static uint64_t model_map_mem[3 * 4096];

static void test_filter_model(int rounds)
{
    for (int round = 0; round < rounds; round++) {
        mlog *m = &LOG;
        gen_log(m, 1 + (int)rnd_below(12), 1 + (int)rnd_below(30), 1 + rnd_below(20),
                rnd_below(25), rnd_below(30));
        int64_t end = m->b[m->nb - 1].last + 1;
        int64_t from = rnd_below(3) == 0 ? (int64_t)rnd_below((uint32_t)end + 1) : 0;
        int64_t stop = rnd_below(4) == 0 ? from + (int64_t)rnd_below((uint32_t)(end - from) + 3)
                                         : INT64_MAX;
        int small = rnd_below(4) == 0;
        size_t slots = small ? 1 + rnd_below(40) : 4096;
        double lf = 0.5 + (double)rnd_below(46) / 100.0;
        lk_offset_map map;
        REQUIRE_OK(lk_offset_map_init(&map, model_map_mem, slots * 24, lf, rnd_below(50)));
        lk_map_result mr = new_map_result();
        int64_t map_end = 0;
        lk_error err;
        /* A third of the rounds without transactions: no aborted list, no producers. */
        int transactions = rnd_below(3) != 0;
        if (!transactions)
            m->naborted = 0;
        CHECK_EQ(lk_aborted_txns_check(m->aborted, m->naborted), LK_OK);
        CHECK_EQ(run_map(&map, m->buf, m->len, from, stop, m->aborted, m->naborted, &mr, &map_end,
                         &err), LK_OK);
        int64_t model_end = model_map_end(m, from, stop);
        if (mr.stop == LK_CLEAN_FULL)
            CHECK(map_end <= model_end && map_end >= from);
        else
            CHECK_EQ(map_end, model_end);
        /* The map holds the latest offset of every key in [from, map_end), and no other. */
        int64_t keyed = 0;
        for (int bi = 0; bi < m->nb; bi++) {
            const mbatch *b = &m->b[bi];
            if (!is_data(b))
                continue;
            for (int32_t i = 0; i < b->count; i++) {
                const mrec *r = &b->r[i];
                if (r->key_len < 0)
                    continue;
                /* An aborted record's key too: it maps to its latest committed record. */
                keyed += !model_aborted(m, b) && r->offset >= from && r->offset < map_end;
                CHECK_EQ(lk_offset_map_get(&map, r->key, (size_t)r->key_len),
                         model_latest(m, r->key, r->key_len, from, map_end));
            }
        }
        CHECK_EQ(mr.records, keyed);
        CHECK_EQ(get_str(&map, "absent"), -1);

        int64_t now = m->t0 + NOW_CHOICES[rnd_below(4)];
        static uint64_t producer_mem[3 * 64];
        lk_offset_map pm;
        REQUIRE_OK(lk_offset_map_init(&pm, producer_mem, sizeof producer_mem, 0.9, rnd_below(8)));
        check_producer_pass(m, &pm);
        lk_clean_params pp = {now, now + 1 + (int64_t)rnd_below(10000000), map_end,
                              m->naborted ? m->aborted : NULL, m->naborted,
                              transactions ? &pm : NULL};
        filter_caps caps = {rnd_below(3) == 0 ? 1 + rnd_below(600) : 1 << 16,
                            rnd_below(3) == 0 ? rnd_below(45) : 64};
        lk_clean_result res = new_clean_result();
        byte_buf out = {0};
        CHECK_EQ(run_filter(&map, m->buf, m->len, &pp, &caps, &res, &out, &err), LK_OK);
        verify_filter(m, from, &pp, out.p, out.len, &res);

        /* First keyless record, of the log and of the output. */
        int64_t p, want_p;
        int32_t i, want_i;
        CHECK_EQ(lk_records_first_keyless(m->buf, m->len, &p, &i, &err), LK_OK);
        want_p = -1;
        want_i = -1;
        for (int bi = 0; bi < m->nb && want_p < 0; bi++) {
            const mbatch *b = &m->b[bi];
            if (b->kind == K_COMPRESSED) {
                want_p = (int64_t)b->pos;
                want_i = -2;
            } else if (b->kind == K_DATA) {
                for (int32_t r = 0; r < b->count && want_p < 0; r++)
                    if (b->r[r].key_len < 0) {
                        want_p = (int64_t)b->pos;
                        want_i = r;
                    }
            }
        }
        CHECK(p == want_p && i == want_i);
        CHECK_EQ(lk_records_first_keyless(out.p, out.len, &p, &i, &err), LK_OK);
        decoded_first_keyless(out.p, out.len, &want_p, &want_i);
        CHECK(p == want_p && i == want_i);

        /* Cleaning the output again changes nothing. */
        filter_caps caps2 = {1 << 16, 64};
        lk_clean_result res2 = new_clean_result();
        byte_buf out2 = {0};
        CHECK_EQ(run_filter(&map, out.p, out.len, &pp, &caps2, &res2, &out2, &err), LK_OK);
        CHECK(out2.len == out.len && (out.len == 0 || memcmp(out2.p, out.p, out.len) == 0));
        CHECK_EQ(res2.records_kept, res.records_kept);
        free(out.p);
        free(out2.p);
    }
}

/* ------------------------------------------------------------------------------------
 * 5. Robustness: damaged logs
 * --------------------------------------------------------------------------------- */
static long fuzz_runs, fuzz_filter_ok, fuzz_skipped, fuzz_accepted_invalid;

/* 1 if a batch the passes would reach holds a base offset beyond +-2^62, or a timestamp
 * (base or record) beyond +-2^55: there cleaner.c's int64 arithmetic overflows, and
 * re-encoded timestamp deltas may outgrow what it reserves a record (see
 * test_known_bugs). The first mutation loop skips such inputs; the regression run does not. */
static int extreme_values(const uint8_t *buf, size_t len)
{
    const int64_t lim_off = (int64_t)1 << 62, lim_ts = (int64_t)1 << 55;
    size_t pos = 0;
    while (len - pos >= HDR) {
        const uint8_t *b = buf + pos;
        int64_t length = (int32_t)get32(b + OFF_LENGTH);
        if (length < HDR - LK_LOG_OVERHEAD || (uint64_t)length + LK_LOG_OVERHEAD > len - pos)
            return 0;
        int64_t base = (int64_t)get64(b), base_ts = (int64_t)get64(b + OFF_BASE_TS);
        if (base > lim_off || base < -lim_off)
            return 1;
        pos += (size_t)length + LK_LOG_OVERHEAD;
        /* Timestamps are added up only in batches whose CRC is good. */
        if (lk_crc32c(0, b + OFF_ATTRS, (size_t)length + LK_LOG_OVERHEAD - OFF_ATTRS) !=
            get32(b + OFF_CRC))
            continue;
        if (base_ts > lim_ts || base_ts < -lim_ts)
            return 1;
        const uint8_t *p = b + HDR, *end = b + length + LK_LOG_OVERHEAD;
        int32_t count = (int32_t)get32(b + OFF_COUNT);
        for (int32_t i = 0; i < count && i < 100000; i++) {
            int32_t rl;
            int64_t td, t;
            if (!get_varint(&p, end, &rl) || rl < 1 || rl > end - p)
                break;
            const uint8_t *rend = p + rl, *q = p + 1;
            if (!get_varlong(&q, rend, &td))
                break;
            if (__builtin_add_overflow(base_ts, td, &t) || t > lim_ts || t < -lim_ts)
                return 1;
            p = rend;
        }
    }
    return 0;
}

/* 1 if every whole batch at buf validates with CRC and records (a compressed one: also
 * its plain version), up to a cut tail. */
static int all_batches_valid(const uint8_t *buf, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        lk_batch_header h;
        int rc = lk_batch_parse_header(buf + pos, len - pos, 0, &h, NULL);
        if (rc == LK_ERR_TRUNCATED || len - pos < HDR)
            return 1;
        if (rc != LK_OK)
            return 0;
        size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
        int ok;
        if (h.attributes & LK_ATTR_COMPRESSION_MASK) {
            uint8_t *plain = plain_copy(buf + pos, size);
            ok = lk_batch_validate(buf + pos, size, 0, LK_VALIDATE_CRC, NULL, NULL) == LK_OK &&
                 lk_batch_validate(plain, size, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, NULL,
                                   NULL) == LK_OK;
            free(plain);
        } else {
            ok = lk_batch_validate(buf + pos, size, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, NULL,
                                   NULL) == LK_OK;
        }
        if (!ok)
            return 0;
        pos += size;
    }
    return 1;
}

static const int PRODUCER_CODES[] = {LK_OK, LK_ERR_CORRUPT_RECORD, LK_ERR_BAD_LENGTH,
                                     LK_ERR_BAD_MAGIC};

/* Runs the four functions on buf[0:len) (copied to an exact allocation). good_map is the
 * map of the undamaged log, map_end its end; aborted its aborted transactions, and
 * producers its producer pass's map (NULL: none), given to the passes half the time. */
static void run_all(const uint8_t *src, size_t len, lk_offset_map *good_map, int64_t map_end,
                    int64_t t0, const lk_aborted_txn *aborted_list, size_t aborted_count,
                    lk_offset_map *producers)
{
    int transactions = rnd_below(2);
    const lk_aborted_txn *aborted = transactions ? aborted_list : NULL;
    size_t naborted = transactions ? aborted_count : 0;
    if (!known_bugs_mode && extreme_values(src, len)) {
        fuzz_skipped++;
        return;
    }
    fuzz_runs++;
    uint8_t *buf = exact_copy(src, len);
    lk_error err;
    static uint64_t scratch_mem[3 * 512];
    lk_offset_map sm;
    REQUIRE_OK(lk_offset_map_init(&sm, scratch_mem, sizeof scratch_mem, 0.9, rnd_below(100)));
    int64_t from = rnd_below(4) == 0 ? (int64_t)rnd_below(200) : 0;
    int64_t stop = rnd_below(4) == 0 ? from + (int64_t)rnd_below(300) : INT64_MAX;

    /* The map pass, one call. */
    lk_map_result mr = new_map_result();
    memset(&err, 0, sizeof err);
    int rc = lk_cleaner_map(&sm, buf, len, from, stop, aborted, naborted, &mr, &err);
    CHECK(in_set(rc, MAP_CODES, N_CODES(MAP_CODES)));
    if (rc == LK_OK) {
        CHECK(mr.position >= 0 && (uint64_t)mr.position <= len);
        CHECK(mr.stop >= LK_CLEAN_END && mr.stop <= LK_CLEAN_LIMIT);
        CHECK(mr.records >= 0 && (uint64_t)mr.records <= len);
        CHECK(sm.entries <= sm.limit && sm.capacity <= sm.memory_slots);
    } else {
        CHECK_EQ(err.code, rc);
        CHECK(err.what != NULL);
        CHECK(err.position >= 0 && (uint64_t)err.position <= len);
    }
    /* The map pass driven through compressed batches. */
    lk_offset_map_clear(&sm);
    mr = new_map_result();
    int64_t me = 0;
    rc = run_map(&sm, buf, len, from, stop, aborted, naborted, &mr, &me, &err);
    CHECK(in_set(rc, MAP_CODES, N_CODES(MAP_CODES)));
    /* ...and from INT64_MIN, so that no batch is passed over unread: then it reads what
     * the filter pass reads, and must find the same batches sound. */
    lk_offset_map_clear(&sm);
    mr = new_map_result();
    int rc_map = run_map(&sm, buf, len, INT64_MIN, INT64_MAX, aborted, naborted, &mr, &me, &err);
    CHECK(in_set(rc_map, MAP_CODES, N_CODES(MAP_CODES)));
    CHECK(rc_map != LK_OK || mr.stop != LK_CLEAN_FULL);

    /* The producer pass: only documented codes, positions inside the buffer. */
    lk_offset_map spm;
    lk_map_result pr = new_map_result();
    REQUIRE_OK(lk_offset_map_init(&spm, scratch_mem, sizeof scratch_mem, 0.9, rnd_below(4)));
    memset(&err, 0, sizeof err);
    rc = lk_cleaner_producers(&spm, buf, len, &pr, &err);
    CHECK(in_set(rc, PRODUCER_CODES, N_CODES(PRODUCER_CODES)));
    CHECK(pr.position >= 0 && (uint64_t)pr.position <= len);
    if (rc != LK_OK) {
        CHECK_EQ(err.code, rc);
        CHECK(err.position >= 0 && (uint64_t)err.position <= len);
    }

    /* The filter pass with the undamaged log's map, through FULL, COMPRESSED and growth.
     * With transactions, below map_end INT64_MAX so that the filter skips the records of
     * exactly the batches the map pass from INT64_MIN skipped (both then agree on which
     * batches are sound). */
    int64_t now = t0 + NOW_CHOICES[rnd_below(4)];
    lk_clean_params pp = {now, now + 1 + (int64_t)rnd_below(10000000),
                          transactions ? INT64_MAX : map_end, aborted, naborted,
                          transactions ? producers : NULL};
    filter_caps caps = {rnd_below(3) == 0 ? rnd_below(500) : 1 << 15, rnd_below(3) == 0 ? rnd_below(30) : 64};
    lk_clean_result res = new_clean_result();
    byte_buf out = {0};
    memset(&err, 0, sizeof err);
    rc = run_filter(good_map, buf, len, &pp, &caps, &res, &out, &err);
    CHECK(in_set(rc, FILTER_CODES, N_CODES(FILTER_CODES)));
    if (rc != LK_ERR_BUFFER_TOO_SMALL)
        CHECK((rc == LK_OK) == (rc_map == LK_OK));
    if (rc != LK_OK && in_set(rc, FILTER_CODES, N_CODES(FILTER_CODES))) {
        CHECK(err.what != NULL);
        CHECK(err.position >= 0 && (uint64_t)err.position <= len);
    }
    if (rc == LK_OK) {
        fuzz_filter_ok++;
        /* Every batch written is whole and carries a good CRC; its records validate too
         * whenever the input's did. */
        int strict = all_batches_valid(buf, len), invalid = 0;
        size_t q = 0;
        while (q < out.len) {
            lk_batch_header h;
            if (lk_batch_parse_header(out.p + q, left(out.len, q), 0, &h, NULL) != LK_OK) {
                CHECK(!"the filter wrote a broken batch");
                break;
            }
            size_t size = (size_t)h.batch_length + LK_LOG_OVERHEAD;
            CHECK_EQ(lk_batch_validate(out.p + q, size, 0, LK_VALIDATE_CRC, NULL, NULL), LK_OK);
            int records_ok = lk_batch_validate(out.p + q, size, 0,
                                               LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, NULL,
                                               NULL) == LK_OK;
            if (strict)
                CHECK(records_ok);
            invalid += !records_ok;
            q += size;
        }
        fuzz_accepted_invalid += invalid > 0;
        int64_t p;
        int32_t i;
        rc = lk_records_first_keyless(out.p, out.len, &p, &i, &err);
        CHECK(strict ? rc == LK_OK : in_set(rc, KEYLESS_CODES, N_CODES(KEYLESS_CODES)));
    }

    /* First keyless record of the damaged input. */
    int64_t p = 0;
    int32_t i = 0;
    rc = lk_records_first_keyless(buf, len, &p, &i, &err);
    CHECK(in_set(rc, KEYLESS_CODES, N_CODES(KEYLESS_CODES)));
    if (rc == LK_OK) {
        CHECK(p >= -1 && p < (int64_t)len);
        CHECK(i >= -2);
        CHECK((p == -1) == (i == -1));
    } else {
        CHECK(err.position >= 0 && (uint64_t)err.position <= len);
    }
    free(out.p);
    free(buf);
}

/* a + b as the two's complement machine does it (a damaged field may be anything). */
static int64_t wrap64(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }

static void fix_crc(uint8_t *buf, size_t len, size_t bp)
{
    if (bp < len)
        (void)lk_batch_update_crc(buf + bp, len - bp, NULL);
}

/* Damages buf (the log m, len bytes, room for cap) in one or two ways; returns the new
 * length. */
static size_t mutate(uint8_t *buf, size_t len, size_t cap, const mlog *m)
{
    int times = rnd_below(4) == 0 ? 2 : 1;
    for (int t = 0; t < times && len > 0; t++) {
        const mbatch *b = &m->b[rnd_below((uint32_t)m->nb)];
        const mbatch *prev = b > m->b ? b - 1 : b;
        size_t bp = b->pos;
        if (bp + HDR > len)
            bp = 0;
        size_t bsize = size_at(buf + bp);
        if (bsize > len - bp || bsize < HDR)
            bsize = len - bp;
        int fix = rnd_below(4) != 0;
        switch (rnd_below(12)) {
        case 0: { /* flip bits anywhere */
            int n = 1 + (int)rnd_below(4);
            for (int k = 0; k < n; k++)
                buf[rnd_below((uint32_t)len)] ^= (uint8_t)(1 + rnd_below(255));
            break;
        }
        case 1: /* cut */
            len = rnd_below((uint32_t)len + 1);
            break;
        case 2: { /* batchLength */
            uint32_t orig = get32(buf + bp + OFF_LENGTH);
            const uint32_t v[] = {0, 1, 48, 49, 50, orig - 1, orig + 1, orig - 7, orig + 13,
                                  (uint32_t)(len - bp - 12), (uint32_t)(len - bp - 11),
                                  0x7fffffffu, 0x80000000u, 0xffffffffu, rnd(), orig * 2};
            set32(buf + bp + OFF_LENGTH, v[rnd_below(sizeof v / sizeof v[0])]);
            break;
        }
        case 3: { /* recordsCount */
            uint32_t orig = get32(buf + bp + OFF_COUNT);
            const uint32_t v[] = {0, 1, 2, 0xffffffffu, orig - 1, orig + 1, orig * 2, 0x7fffffffu,
                                  0x80000000u, rnd(), 1000};
            set32(buf + bp + OFF_COUNT, v[rnd_below(sizeof v / sizeof v[0])]);
            if (fix)
                fix_crc(buf, len, bp);
            break;
        }
        case 4: { /* bytes inside the records: varints, lengths, deltas */
            if (bsize <= HDR)
                break;
            size_t at = bp + HDR + rnd_below((uint32_t)(bsize - HDR));
            int n = 1 + (int)rnd_below(10);
            static const uint8_t pat[] = {0xff, 0x80, 0xfe, 0x7f, 0x00, 0x01, 0x02, 0x7e, 0x81};
            uint32_t which = rnd_below(sizeof pat + 1);
            for (int k = 0; k < n && at + (size_t)k < bp + bsize; k++)
                buf[at + (size_t)k] = which == sizeof pat ? (uint8_t)rnd() : pat[which];
            if (fix)
                fix_crc(buf, len, bp);
            break;
        }
        case 5: { /* lastOffsetDelta */
            uint32_t orig = get32(buf + bp + OFF_LAST_DELTA);
            const uint32_t v[] = {0, 0xffffffffu, orig - 1, orig + 1, 0x7fffffffu, 0x80000000u,
                                  rnd(), orig + 1000};
            set32(buf + bp + OFF_LAST_DELTA, v[rnd_below(sizeof v / sizeof v[0])]);
            if (fix)
                fix_crc(buf, len, bp);
            break;
        }
        case 6: { /* baseOffset (not covered by the CRC) */
            int64_t orig = (int64_t)get64(buf + bp);
            int64_t v[] = {0, wrap64(orig, -1), wrap64(orig, 1), prev->base, prev->last,
                           wrap64(orig, rnd_below(1000)), -1, -((int64_t)1 << 40),
                           (int64_t)1 << 40, (int64_t)(rnd64() >> 2) - ((int64_t)1 << 61),
                           INT64_MAX - (int64_t)rnd_below(100), INT64_MIN + (int64_t)rnd_below(100)};
            size_t n = sizeof v / sizeof v[0] - (known_bugs_mode ? 0 : 2);
            set64(buf + bp, (uint64_t)v[rnd_below((uint32_t)n)]);
            break;
        }
        case 7: { /* attributes */
            uint16_t a = get16(buf + bp + OFF_ATTRS);
            a = rnd_below(4) == 0 ? (uint16_t)rnd() : (uint16_t)(a ^ (1u << rnd_below(7)));
            set16(buf + bp + OFF_ATTRS, a);
            if (fix)
                fix_crc(buf, len, bp);
            break;
        }
        case 8: /* magic */
            buf[bp + OFF_MAGIC] = (uint8_t)rnd_below(4);
            break;
        case 9: { /* timestamps */
            size_t at = bp + (rnd_below(2) ? OFF_BASE_TS : OFF_MAX_TS);
            int64_t orig = (int64_t)get64(buf + at);
            int64_t v[] = {wrap64(orig, (int64_t)rnd_below(2000000) - 1000000), -1, 0,
                           (int64_t)(rnd64() >> 14) - ((int64_t)1 << 49),
                           INT64_MAX - (int64_t)rnd_below(100), INT64_MIN + (int64_t)rnd_below(100)};
            size_t n = sizeof v / sizeof v[0] - (known_bugs_mode ? 0 : 2);
            set64(buf + at, (uint64_t)v[rnd_below((uint32_t)n)]);
            if (fix)
                fix_crc(buf, len, bp);
            break;
        }
        case 10: /* a batch again at the end (offsets go back) */
            if (len + bsize <= cap) {
                memmove(buf + len, buf + bp, bsize);
                len += bsize;
            }
            break;
        default: /* one random byte in the header */
            buf[bp + rnd_below(HDR)] = (uint8_t)rnd();
            break;
        }
    }
    return len;
}

static void test_fuzz(int logs, int mutations)
{
    static uint8_t work[LOG_CAP * 2];
    static uint64_t good_mem[3 * 4096], producer_mem[3 * 64];
    for (int l = 0; l < logs; l++) {
        mlog *m = &LOG;
        gen_log(m, 1 + (int)rnd_below(6), 1 + (int)rnd_below(12), 1 + rnd_below(10), 20, 20);
        lk_offset_map good, producers;
        REQUIRE_OK(lk_offset_map_init(&good, good_mem, sizeof good_mem, 0.9, 0));
        REQUIRE_OK(lk_offset_map_init(&producers, producer_mem, sizeof producer_mem, 0.9, 0));
        lk_map_result mr = new_map_result(), pr = new_map_result();
        int64_t map_end = 0;
        CHECK_EQ(run_map(&good, m->buf, m->len, 0, INT64_MAX, m->aborted, m->naborted, &mr, &map_end,
                         NULL), LK_OK);
        CHECK_EQ(lk_cleaner_producers(&producers, m->buf, m->len, &pr, NULL), LK_OK);
        const lk_aborted_txn *a = m->aborted;
        size_t na = m->naborted;
        for (int k = 0; k < mutations; k++) {
            memcpy(work, m->buf, m->len);
            size_t len = mutate(work, m->len, sizeof work, m);
            run_all(work, len, &good, map_end, m->t0, a, na, &producers);
        }
        /* Every cut of a small log, whole and with one mutation. */
        if (m->len <= 600 && l % 3 == 0) {
            for (size_t cut = 0; cut <= m->len; cut++)
                run_all(m->buf, cut, &good, map_end, m->t0, a, na, &producers);
            memcpy(work, m->buf, m->len);
            size_t len = mutate(work, m->len, sizeof work, m);
            for (size_t cut = 0; cut <= len; cut += 1 + rnd_below(3))
                run_all(work, cut, &good, map_end, m->t0, a, na, &producers);
        }
    }
    /* Garbage shaped like batches: plausible lengths and magic, random everything else. */
    for (int g = 0; g < logs * 4; g++) {
        size_t len = rnd_below(700), pos = 0;
        for (size_t i = 0; i < len; i++)
            work[i] = (uint8_t)rnd();
        while (pos + HDR <= len && rnd_below(3)) {
            size_t size = HDR + rnd_below((uint32_t)(len - pos - HDR) + 1);
            set32(work + pos + OFF_LENGTH, (uint32_t)(size - LK_LOG_OVERHEAD));
            work[pos + OFF_MAGIC] = 2;
            set64(work + pos, (uint64_t)rnd_below(1000));
            set64(work + pos + OFF_BASE_TS, (uint64_t)1700000000000LL);
            if (rnd_below(2))
                set16(work + pos + OFF_ATTRS, (uint16_t)rnd_below(2) * LK_ATTR_DELETE_HORIZON);
            if (rnd_below(2))
                set32(work + pos + OFF_COUNT, rnd_below(8));
            if (rnd_below(2))
                (void)lk_batch_update_crc(work + pos, size, NULL);
            pos += size;
        }
        lk_offset_map good, producers;
        REQUIRE_OK(lk_offset_map_init(&good, good_mem, sizeof good_mem, 0.9, 0));
        REQUIRE_OK(lk_offset_map_init(&producers, producer_mem, sizeof producer_mem, 0.9, 0));
        lk_map_result pr = new_map_result();
        (void)lk_cleaner_producers(&producers, work, len, &pr, NULL);
        static const lk_aborted_txn garbage_aborted[] = {{0, 0, 500}, {7, 3, 900}};
        run_all(work, len, &good, INT64_MAX, 1700000000000LL, garbage_aborted, 2, &producers);
    }
    CHECK(fuzz_filter_ok > fuzz_runs / 20);
    if (getenv("TEST_CLEANER_VERBOSE"))
        printf("fuzz: %ld runs, %ld filter passes OK, %ld with output records the validator "
               "rejects, %ld skipped (extreme values: see the regressions)\n",
               fuzz_runs, fuzz_filter_ok, fuzz_accepted_invalid, fuzz_skipped);
}

/* ------------------------------------------------------------------------------------
 * Regressions: each check runs in a child process with a time limit, so a hang or a crash
 * is a failed check, not a dead test.
 * --------------------------------------------------------------------------------- */
static void run_isolated(const char *name, void (*fn)(void), unsigned seconds)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        CHECK(!"fork failed");
        return;
    }
    if (pid == 0) {
        checks = 0;
        failures = 0;
        alarm(seconds);
        fn();
        fflush(stdout);
        fflush(stderr);
        _exit(failures ? 1 : 0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        status = -1;
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (ok)
        ;
    else if (WIFSIGNALED(status))
        fprintf(stderr, "REGRESSION: %s: killed by signal %d%s\n", name, WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (hung: past its time limit)" : "");
    else
        fprintf(stderr, "REGRESSION: %s: failed\n", name);
    CHECK(ok);
}

/* 20 records with 58-byte bodies (1-byte timestamp deltas), one a tombstone, each the
 * latest of its key; new_horizon_ms = INT64_MAX (what logkernel passes for a
 * delete.retention.ms near LONG_MAX: min(now + retention, INT64_MAX)). The rewrite makes
 * every timestamp delta 10 bytes and pushes each body past 63, so its length varint
 * grows to 2 bytes: 10 more bytes a record, where lk_cleaner_filter reserves 9
 * (logkernel.h at e62c4b4: "size + 9 bytes a record"; filter_reserve() measures it), which is
 * also exactly what logkernel's FilterBuffers.grow_for allocates after BUFFER_TOO_SMALL. */
static void kb_filter_overruns_out(void)
{
    static rspec s[20];
    static char keys[20][16], value[47];
    memset(value, 'v', 46);
    for (int i = 0; i < 20; i++) {
        snprintf(keys[i], sizeof keys[i], "key-%02u", (unsigned)i);
        s[i].key = keys[i];
        s[i].value = i == 0 ? NULL : value;
        s[i].delta = i;
        s[i].ts = 1700000000000LL;
    }
    static uint8_t b[4096];
    size_t size = enc_batch(b, sizeof b, 0, s, 20);
    lk_offset_map m;
    roomy_map(&m);
    lk_map_result mr = new_map_result();
    REQUIRE_OK(lk_cleaner_map(&m, b, size, 0, INT64_MAX, NULL, 0, &mr, NULL));
    lk_clean_params pp = {1700000000000LL, INT64_MAX, mr.next_offset, NULL, 0, NULL};
    lk_clean_result res = new_clean_result();
    size_t cap = size + filter_reserve() * 20;
    int rc = filter_call(&m, b, size, &pp, cap, 20, &res, NULL, NULL);
    CHECK_EQ(rc, LK_OK);
    CHECK(res.written <= (int64_t)cap);
    if (res.written > (int64_t)cap)
        fprintf(stderr, "  batch of %zu bytes, 20 records: out_capacity %zu (size + reserve * 20), "
                        "written %lld\n", size, cap, (long long)res.written);
}

/* lk_offset_map_init accepts memory of fewer than 24 bytes (or none) and makes a map of
 * capacity 0; lk_offset_map_put refuses keys then, but lk_cleaner_map calls the internal
 * put, whose probe loop on a 0-slot table reads and writes memory[0..23]. */
static void kb_zero_capacity_map_writes(void)
{
    uint8_t *mem = calloc(1, 48);
    lk_offset_map m;
    REQUIRE_OK(lk_offset_map_init(&m, mem, 16, 0.9, 0));
    CHECK_EQ(m.capacity, 0);
    static const rspec A[] = {{"k", "v", 0, 1}};
    uint8_t b[256];
    size_t size = enc_batch(b, sizeof b, 0, A, 1);
    lk_map_result r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, b, size, 0, INT64_MAX, NULL, 0, &r, NULL), LK_OK);
    CHECK_EQ(r.stop, LK_CLEAN_FULL);
    CHECK_EQ(r.records, 0);
    CHECK_EQ(m.entries, 0);
    int untouched = 1;
    for (int i = 16; i < 48; i++)
        untouched &= mem[i] == 0;
    CHECK(untouched); /* bytes 16..23 hold offset + 1 */
    free(mem);
}

static void kb_zero_capacity_map_null(void)
{
    lk_offset_map m;
    REQUIRE_OK(lk_offset_map_init(&m, NULL, 0, 0.9, 0));
    static const rspec A[] = {{"k", "v", 0, 1}};
    uint8_t b[256];
    size_t size = enc_batch(b, sizeof b, 0, A, 1);
    lk_map_result r = new_map_result();
    CHECK_EQ(lk_cleaner_map(&m, b, size, 0, INT64_MAX, NULL, 0, &r, NULL), LK_OK); /* SIGSEGV */
    CHECK_EQ(r.stop, LK_CLEAN_FULL);
}

/* Load factor 1.0 is accepted (the contract's range is (0, 1]), and at e62c4b4 the map
 * then fills every slot: find_slot's probe for a new or an absent key never meets an
 * empty slot and loops forever (the put of the key after the last slot, or any get of an
 * absent key once full). A full map must refuse new keys and answer -1. */
static void load_factor_one(size_t slots)
{
    uint64_t *mem = calloc(slots, 24);
    lk_offset_map m;
    REQUIRE_OK(lk_offset_map_init(&m, mem, slots * 24, 1.0, 0));
    uint8_t key[64];
    uint64_t n = 0;
    int rc = LK_OK;
    while (n <= slots) {
        size_t kl = make_key(n, key);
        rc = lk_offset_map_put(&m, key, kl, (int64_t)n); /* hangs once every slot is used */
        if (rc != LK_OK)
            break;
        n++;
    }
    CHECK_EQ(rc, LK_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(m.entries, n);
    CHECK(n + 1 >= m.capacity && n < m.capacity);
    size_t kl = make_key(slots + 100, key);
    CHECK_EQ(lk_offset_map_get(&m, key, kl), -1);
    CHECK_EQ(lk_offset_map_put(&m, key, kl, 1), LK_ERR_BUFFER_TOO_SMALL);
    int bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        kl = make_key(i, key);
        bad += lk_offset_map_get(&m, key, kl) != (int64_t)i;
    }
    CHECK_EQ(bad, 0);
    free(mem);
}

static void kb_load_factor_one_whole(void) { load_factor_one(10); }
static void kb_load_factor_one_grown(void) { load_factor_one(1000); }

/* lk_offset_map_init: initial_keys * 2 + 64 wraps for initial_keys >= 2^63, so a table
 * meant to be the whole memory is 62 (or 64) slots. */
static void kb_initial_keys_wrap(void)
{
    static uint64_t mem[3 * 1000];
    lk_offset_map m;
    REQUIRE_OK(lk_offset_map_init(&m, mem, sizeof mem, 0.9, SIZE_MAX));
    CHECK_EQ(m.capacity, m.memory_slots);
    REQUIRE_OK(lk_offset_map_init(&m, mem, sizeof mem, 0.9, (SIZE_MAX >> 1) + 1));
    CHECK_EQ(m.capacity, m.memory_slots);
}

/* Signed overflow (undefined behaviour; UBSan stops the -asan build): baseOffset is not
 * covered by the CRC, and base + lastOffsetDelta (+ 1) is computed for every batch, by
 * the map pass, the filter pass and their lookahead, before anything checks it. */
static size_t batch_at_top(uint8_t *b, size_t cap)
{
    static const rspec A[] = {{"k", "v", 0, 1}, {"l", "v", 1, 2}, {"m", "v", 2, 3}};
    size_t size = enc_batch(b, cap, 0, A, 3);
    set64(b, (uint64_t)(INT64_MAX - 1));
    return size;
}

static void kb_overflow_map_offsets(void)
{
    uint8_t b[512];
    size_t size = batch_at_top(b, sizeof b);
    lk_offset_map m;
    roomy_map(&m);
    lk_map_result r = new_map_result();
    int rc = lk_cleaner_map(&m, b, size, 0, INT64_MAX, NULL, 0, &r, NULL);
    CHECK(in_set(rc, MAP_CODES, N_CODES(MAP_CODES)));
}

static void kb_overflow_filter_offsets(void)
{
    uint8_t b[512];
    size_t size = batch_at_top(b, sizeof b);
    lk_offset_map m;
    roomy_map(&m);
    lk_clean_params pp = {0, 1, INT64_MAX, NULL, 0, NULL};
    lk_clean_result res = new_clean_result();
    int rc = filter_call(&m, b, size, &pp, 4096, 64, &res, NULL, NULL);
    CHECK(in_set(rc, FILTER_CODES, N_CODES(FILTER_CODES)));
}

/* Timestamps (CRC-covered, so from a producer): baseTimestamp + timestampDelta and
 * (... - new_base) overflow in the filter pass. lk_batch_encode itself writes these
 * batches (it subtracts in unsigned arithmetic). */
static void kb_overflow_filter_timestamps(void)
{
    static const rspec A[] = {{"k", "old", 0, INT64_MAX}, {"k", "new", 1, INT64_MIN}};
    uint8_t b[512];
    size_t size = enc_batch(b, sizeof b, 0, A, 2);
    CHECK_EQ(lk_batch_validate(b, size, 0, LK_VALIDATE_CRC | LK_VALIDATE_RECORDS, NULL, NULL),
             LK_OK);
    lk_offset_map m;
    roomy_map(&m);
    lk_map_result mr = new_map_result();
    REQUIRE_OK(lk_cleaner_map(&m, b, size, 0, INT64_MAX, NULL, 0, &mr, NULL));
    lk_clean_params pp = {0, 1, mr.next_offset, NULL, 0, NULL};
    lk_clean_result res = new_clean_result();
    CHECK_EQ(filter_call(&m, b, size, &pp, 4096, 64, &res, NULL, NULL), LK_OK);
}

static void kb_overflow_tombstone_horizon(void)
{
    static const rspec A[] = {{"k", NULL, 0, -5}};
    uint8_t b[512];
    size_t size = enc_batch(b, sizeof b, 0, A, 1);
    lk_offset_map m;
    roomy_map(&m);
    lk_map_result mr = new_map_result();
    REQUIRE_OK(lk_cleaner_map(&m, b, size, 0, INT64_MAX, NULL, 0, &mr, NULL));
    lk_clean_params pp = {0, INT64_MAX, mr.next_offset, NULL, 0, NULL};
    lk_clean_result res = new_clean_result();
    CHECK_EQ(filter_call(&m, b, size, &pp, 4096, 64, &res, NULL, NULL), LK_OK);
}

/* The mutation loop again, without skipping inputs with extreme offsets and timestamps
 * (and with such values among its mutations): UBSan reports the overflows above. */
static void kb_fuzz_unscreened(void)
{
    known_bugs_mode = 1;
    test_fuzz(300, 40);
}

static void test_known_bugs(void)
{
    run_isolated("filter writes past out_capacity (size + 9 bytes a record is not enough)",
                 kb_filter_overruns_out, 10);
    run_isolated("lk_cleaner_map with a 0-slot map writes past the map's memory",
                 kb_zero_capacity_map_writes, 10);
    run_isolated("lk_cleaner_map with a map over NULL, 0 bytes", kb_zero_capacity_map_null, 10);
    run_isolated("load factor 1.0: a map sized whole at init, filled up", kb_load_factor_one_whole, 3);
    run_isolated("load factor 1.0: a map that grew, filled up", kb_load_factor_one_grown, 3);
    run_isolated("initial_keys near SIZE_MAX wraps", kb_initial_keys_wrap, 10);
    run_isolated("map pass: baseOffset near INT64_MAX (UBSan)", kb_overflow_map_offsets, 10);
    run_isolated("filter pass: baseOffset near INT64_MAX (UBSan)", kb_overflow_filter_offsets, 10);
    run_isolated("filter pass: timestamps INT64_MAX, INT64_MIN (UBSan)",
                 kb_overflow_filter_timestamps, 10);
    run_isolated("filter pass: tombstone at -5 ms, new horizon INT64_MAX (UBSan)",
                 kb_overflow_tombstone_horizon, 10);
    run_isolated("mutation loop with extreme offsets and timestamps (UBSan)", kb_fuzz_unscreened, 300);
}

int main(void)
{
    rng_state = 0xC1EA4E55F00DULL;
    alarm(900); /* a hang is a failure, not a stuck build */
    test_xxh64();
    test_map_arguments();
    test_map_basic();
    test_map_growth();
    test_map_pass();
    test_filter_fixed();
    test_tombstones();
    test_filter_buffers();
    test_transactions_fixed();
    test_first_keyless();
    test_filter_model(2000);
    test_fuzz(2500, 80);
    test_known_bugs(); /* fixed now; kept as regressions */
    return check_summary("test_cleaner");
}
