/*
 * support.h - helpers the C tests share besides the checks: a small deterministic
 * random-number generator (xorshift64; each test may reseed rng_state in main) and
 * reading a whole file.
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
