/*
 * support.h - helpers the C tests share besides the checks: a small deterministic
 * random-number generator (xorshift64; each test may reseed rng_state in main),
 * big-endian field access, and reading a whole file.
 */
#ifndef LOGKERNEL_TEST_SUPPORT_H
#define LOGKERNEL_TEST_SUPPORT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static uint32_t rnd_below(uint32_t n) { return n ? rnd() % n : 0; }

/* Big-endian fields, as Kafka's batch headers hold them. */
static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint64_t get64(const uint8_t *p) { return ((uint64_t)get32(p) << 32) | get32(p + 4); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static void set16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static void set32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static void set64(uint8_t *p, uint64_t v)
{
    set32(p, (uint32_t)(v >> 32));
    set32(p + 4, (uint32_t)v);
}

/* The file's bytes (malloc'd; the caller frees) and their count, or NULL if unreadable. */
static uint8_t *read_whole(const char *path, size_t *len)
{
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && n > 0 && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = b && n > 0 ? (size_t)n : 0;
    return b;
}

#endif
