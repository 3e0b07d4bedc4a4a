/* test.h: cmocka prelude (headers in the order cmocka needs) and helpers. */
#ifndef CS_TEST_H
#define CS_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <math.h>

#include "ctxshift.h"

/* Path of a file in ../shared (golden data, models). Returns NULL (and the
 * test should call test_skip(CS_SKIP_REFERENCE, ...)) when it is missing. */
static inline const char *test_shared_path(const char *rel, char *buf, size_t size) {
    snprintf(buf, size, "%s/%s", CS_SHARED_DIR, rel);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

/* The bundled model (always in the repository). */
static inline const char *test_bundled_model(void) {
    return CS_SOURCE_DIR "/models/stories260K-f32.gguf";
}

/* A fresh path under the build folder for a test's temporary file. */
static inline const char *test_tmp_path(const char *name, char *buf, size_t size) {
    snprintf(buf, size, "%s/tmp-%d-%s", CS_BINARY_DIR, (int)getpid(), name);
    return buf;
}

/* ------------------------------------------------------------ skips
 * A test never calls cmocka's skip() directly but test_skip(kind, fmt,
 * ...), and main() returns test_run(tests, setup, teardown). Why: a bare
 * skip() exits 0, so a missing ../shared silently removed every comparison
 * with llama.cpp. Now:
 * - CS_SKIP_REFERENCE (the test compares with llama.cpp's data in ../shared,
 *   a peer, or needs a tool the project installs) is a failure when the run
 *   is strict: env CI set (non-empty, not "0"/"false") or CS_SHARED_DIR is
 *   there. Otherwise it is a skip.
 * - CS_SKIP_CPU (this CPU lacks an instruction set) is always a skip.
 * Each skip prints "skip (reference|cpu): reason"; a binary with skips and no
 * failures exits CS_TEST_SKIP_EXIT (77), which CMake maps to ctest's
 * "Skipped" (SKIP_RETURN_CODE). tests/cli_lib.sh applies the same rules to the
 * shell tests. */
typedef enum { CS_SKIP_REFERENCE, CS_SKIP_CPU } test_skip_kind;

#define CS_TEST_SKIP_EXIT 77

/* Skips seen so far in this process (cmocka runs all tests in one). */
static inline int *test_n_skipped(void) {
    static int n;
    return &n;
}

/* Whether a reference skip must fail; the reason goes to *why. */
static inline bool test_strict(const char **why) {
    const char *ci = getenv("CI");
    if (ci && ci[0] && strcmp(ci, "0") != 0 && strcmp(ci, "false") != 0) {
        *why = "CI is set";
        return true;
    }
    if (access(CS_SHARED_DIR, F_OK) == 0) {
        *why = CS_SHARED_DIR " exists";
        return true;
    }
    return false;
}

/* Prints the skip and counts it; returns true when it must fail instead. */
__attribute__((format(printf, 2, 3))) static inline bool test_skip_note(test_skip_kind kind,
                                                                        const char *fmt, ...) {
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    const char *why = "";
    if (kind == CS_SKIP_REFERENCE && test_strict(&why)) {
        print_error("reference test cannot run (%s) and %s: a failure, not a skip\n", reason, why);
        return true;
    }
    print_message("skip (%s): %s\n", kind == CS_SKIP_CPU ? "cpu" : "reference", reason);
    ++*test_n_skipped();
    return false;
}

#define test_skip(kind, ...)                                                                       \
    do {                                                                                           \
        if (test_skip_note((kind), __VA_ARGS__)) fail();                                           \
        skip();                                                                                    \
    } while (0)

/* The exit status of a test binary: cmocka's failure count when non-zero,
 * else CS_TEST_SKIP_EXIT when a test skipped, else 0. */
static inline int test_exit_status(int n_failed) {
    if (n_failed != 0) return n_failed > 0 && n_failed < CS_TEST_SKIP_EXIT ? n_failed : 1;
    if (*test_n_skipped() > 0) {
        print_message("%d test(s) skipped\n", *test_n_skipped());
        return CS_TEST_SKIP_EXIT;
    }
    return 0;
}

/* ------------------------------------------------- random test data */

/* The weight-type tests' generator (an LCG): the next value uniform in
 * [-1, 1) from *rng. */
static inline float test_frand(uint64_t *rng) {
    *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(*rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* x[0, n) = test_frand from seed, every 97th value (from index 5) times 6:
 * outliers for the block scales. *rng holds the generator state after. */
static inline void test_fill(float *x, int64_t n, uint64_t seed, uint64_t *rng) {
    *rng = seed;
    for (int64_t i = 0; i < n; i++) {
        x[i] = test_frand(rng);
        if (i % 97 == 5) x[i] *= 6.0f; /* outliers */
    }
}

/* ||x - y|| / ||x|| over n values, in double: a quantizer's round-trip
 * error. */
static inline double test_rel_rms(const float *x, const float *y, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)x[i] - (double)y[i]) * ((double)x[i] - (double)y[i]);
        s += (double)x[i] * (double)x[i];
    }
    return sqrt(e / s);
}

/* CS_TEST_FILTER=PATTERN runs only the tests whose names match (cmocka's
 * wildcards), for working on one test of a long binary. */
static inline void test_apply_filter(void) {
    const char *f = getenv("CS_TEST_FILTER");
    if (f && f[0]) cmocka_set_test_filter(f);
}

#define test_run(tests, setup, teardown)                                                           \
    (test_apply_filter(), test_exit_status(cmocka_run_group_tests(tests, setup, teardown)))

#endif /* CS_TEST_H */
