/*
 * test_murmur2.c - lk_murmur2 against Kafka's own known answers (UtilsTest.testMurmur2 in
 * the Java client) and against a bit-by-bit model of the Java arithmetic written with
 * int64 and explicit masks, over every tail length and random bytes (high bit set
 * included: Java reads bytes signed and masks them with 0xff).
 */
#include <stdint.h>
#include <string.h>

#include "logkernel.h"

#include "check.h"

/* The Java method step by step in 64-bit arithmetic, masking to 32 bits after every
 * operation the way Java's int wraps; a different shape of code from murmur2.c. */
static int64_t model_murmur2(const uint8_t *data, int64_t length)
{
    const int64_t mask = 0xffffffffLL, m = 0x5bd1e995LL;
    int64_t h = (0x9747b28cLL ^ length) & mask;
    int64_t i = 0;
    for (; i + 4 <= length; i += 4) {
        int64_t k = data[i] + (data[i + 1] * 256LL) + (data[i + 2] * 65536LL) +
                    (data[i + 3] * 16777216LL);
        k = (k * m) & mask;
        k ^= k >> 24;
        k = (k * m) & mask;
        h = (h * m) & mask;
        h ^= k;
    }
    int64_t rest = length - i;
    if (rest == 3)
        h ^= data[i + 2] * 65536LL;
    if (rest >= 2)
        h ^= data[i + 1] * 256LL;
    if (rest >= 1) {
        h ^= data[i];
        h = (h * m) & mask;
    }
    h ^= h >> 13;
    h = (h * m) & mask;
    h ^= h >> 15;
    return h >= 0x80000000LL ? h - 0x100000000LL : h; /* Java's int view */
}

static void test_kafka_vectors(void)
{
    /* org.apache.kafka.common.utils.UtilsTest#testMurmur2 */
    static const struct {
        const char *key;
        int32_t hash;
    } cases[] = {
        {"21", -973932308},
        {"foobar", -790332482},
        {"a-little-bit-long-string", -985981536},
        {"a-little-bit-longer-string", -1486304829},
        {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
        {"abc", 479470107},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_EQ(lk_murmur2(cases[i].key, (int32_t)strlen(cases[i].key)), cases[i].hash);
    /* Empty input: the seed ^ 0, mixed (the value every client computes for b""). */
    CHECK_EQ(lk_murmur2("", 0), model_murmur2((const uint8_t *)"", 0));
    CHECK_EQ(lk_murmur2(NULL, 0), lk_murmur2("", 0));
    /* No error channel: NULL or a negative length hash as the empty input. */
    CHECK_EQ(lk_murmur2(NULL, 5), lk_murmur2("", 0));
    CHECK_EQ(lk_murmur2("abc", -1), lk_murmur2("", 0));
}

static void test_against_model(void)
{
    static uint8_t data[4096];
    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof data; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data[i] = (uint8_t)(state >> 24);
    }
    /* every length up to 300 from several alignments, then some long ones */
    for (int32_t len = 0; len <= 300; len++)
        for (size_t at = 0; at < 4; at++)
            CHECK_EQ(lk_murmur2((const char *)data + at, len), model_murmur2(data + at, len));
    for (int32_t len = 1000; len <= 4000; len += 997)
        CHECK_EQ(lk_murmur2((const char *)data, len), model_murmur2(data, len));
    /* all-0xff and all-0x80 bytes: the sign of Java's byte must not leak in */
    uint8_t ones[7], highs[7];
    memset(ones, 0xff, sizeof ones);
    memset(highs, 0x80, sizeof highs);
    for (int32_t len = 0; len <= 7; len++) {
        CHECK_EQ(lk_murmur2((const char *)ones, len), model_murmur2(ones, len));
        CHECK_EQ(lk_murmur2((const char *)highs, len), model_murmur2(highs, len));
    }
}

int main(void)
{
    test_kafka_vectors();
    test_against_model();
    return check_summary("test_murmur2");
}
