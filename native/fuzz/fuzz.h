/*
 * fuzz.h - what the fuzz target (fuzz_decoders.c) and its standalone driver (driver.c)
 * share. libFuzzer needs only LLVMFuzzerTestOneInput.
 */
#ifndef LOGKERNEL_FUZZ_H
#define LOGKERNEL_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Runs every decoder on data[0:size) and checks their answers; aborts on a disagreement.
 * Always returns 0 (libFuzzer's convention). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether one input in eight is also written to a segment file and opened, recovered,
 * read and appended to (file I/O: slower than the rest together). 1 by default. */
extern int fuzz_segments;

/* Removes the scratch directory of the segment checks, if one was made. */
void fuzz_cleanup(void);

#endif
