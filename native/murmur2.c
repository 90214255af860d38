/*
 * murmur2.c - Kafka's key hash (org.apache.kafka.common.utils.Utils.murmur2), which the
 * default partitioner uses: partition = (murmur2(key) & 0x7fffffff) % partitions.
 *
 * The Java method is MurmurHash2 (Austin Appleby) with Kafka's fixed seed, computed in
 * Java's 32-bit int arithmetic: multiplication and xor wrap modulo 2^32, `>>>` is a
 * logical shift. Here every step is on uint32_t, where C guarantees the same wrapping;
 * only the final conversion to the signed result needs care (see to_java_int).
 *
 * Input bytes are read as unsigned (Java's `data[i] & 0xff`), four at a time in
 * little-endian order, whatever the host's byte order. The 1-3 trailing bytes are folded
 * in highest first, then mixed once, as the Java switch with its fall-through does.
 */
#include <stdint.h>

#include "logkernel.h"

/* Kafka's constants. None is tunable: another value would place keys on other partitions
 * than every Kafka client does. The seed is Kafka's choice; M and R are MurmurHash2's
 * mixing multiplier and shift, picked by its author for good avalanche behaviour.
 * (static const rather than enum: 0x9747b28c is out of an enum constant's int range.) */
static const uint32_t MURMUR2_SEED = 0x9747b28cu;
static const uint32_t MURMUR2_M = 0x5bd1e995u;
static const unsigned MURMUR2_R = 24;

/* The int32 whose two's-complement bits are h (Java's view of the same 32 bits), without
 * relying on the implementation-defined conversion of an out-of-range value. */
static int32_t to_java_int(uint32_t h)
{
    return h <= (uint32_t)INT32_MAX ? (int32_t)h : -(int32_t)(~h) - 1;
}

int32_t lk_murmur2(const char *data, int32_t len)
{
    if (!data || len < 0)
        len = 0;
    const uint8_t *p = (const uint8_t *)data;
    uint32_t h = MURMUR2_SEED ^ (uint32_t)len;
    int32_t whole = len / 4;
    for (int32_t i = 0; i < whole; i++, p += 4) {
        uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        k *= MURMUR2_M;
        k ^= k >> MURMUR2_R;
        k *= MURMUR2_M;
        h *= MURMUR2_M;
        h ^= k;
    }
    int32_t tail = len & 3;
    if (tail >= 3)
        h ^= (uint32_t)p[2] << 16;
    if (tail >= 2)
        h ^= (uint32_t)p[1] << 8;
    if (tail >= 1) {
        h ^= (uint32_t)p[0];
        h *= MURMUR2_M;
    }
    h ^= h >> 13;
    h *= MURMUR2_M;
    h ^= h >> 15;
    return to_java_int(h);
}
