/*
 * check.h - the assertion macros the C tests share. A failed CHECK is counted and
 * reported (the first 50) and the test goes on; REQUIRE_OK stops the program, for a
 * failure that would only cascade. check_summary prints the one closing line and gives
 * the exit status.
 */
#ifndef LOGKERNEL_TEST_CHECK_H
#define LOGKERNEL_TEST_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "logkernel.h"

static long checks, failures;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        checks++;                                                                            \
        if (!(cond)) {                                                                       \
            failures++;                                                                      \
            if (failures < 50)                                                               \
                fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                                    \
    } while (0)

#define CHECK_EQ(a, b)                                                                       \
    do {                                                                                     \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                                        \
        checks++;                                                                            \
        if (a_ != b_) {                                                                      \
            failures++;                                                                      \
            if (failures < 50)                                                               \
                fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%" PRId64 " != %" PRId64     \
                                ")\n",                                                       \
                        __FILE__, __LINE__, #a, #b, a_, b_);                                 \
        }                                                                                    \
    } while (0)

#define REQUIRE_OK(expr)                                                                     \
    do {                                                                                     \
        int rc_ = (expr);                                                                    \
        checks++;                                                                            \
        if (rc_ != LK_OK) {                                                                  \
            fprintf(stderr, "%s:%d: %s returned %d (%s)\n", __FILE__, __LINE__, #expr, rc_,  \
                    lk_status_message(rc_));                                                 \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static int check_summary(const char *test)
{
    if (failures) {
        fprintf(stderr, "%s: %ld of %ld checks FAILED\n", test, failures, checks);
        return 1;
    }
    printf("%s: %ld checks passed\n", test, checks);
    return 0;
}

#endif
