/* test_golden.c: llama.cpp's logits (../shared/golden, README there) for
 * the basic_* scenarios, per weight type, within the tolerances that README
 * recommends for a float32 re-implementation that reproduces ggml's Q8_0
 * activation quantization. Every row's arg-max must match where llama.cpp's
 * top-1/top-2 margin exceeds twice the tolerance. */
#include "test.h"

#include "fixtures/golden.h"

/* golden/README.md, "Recommended tolerances" */
#define TOL_GOLDEN_F32  1e-3
#define TOL_GOLDEN_F16  3e-2
#define TOL_GOLDEN_Q8_0 1e-2
#define TOL_GOLDEN_Q4_0 1e-2

static void replay(const char *file, double atol, int32_t n_threads) {
    char path[1024], models[1024];
    char rel[256];
    snprintf(rel, sizeof rel, "golden/%s", file);
    if (!test_shared_path(rel, path, sizeof path)) {
        test_skip(CS_SKIP_REFERENCE, "%s/%s not found", CS_SHARED_DIR, rel);
    }
    snprintf(models, sizeof models, "%s/models", CS_SHARED_DIR);
    golden_result r;
    int rc = golden_replay(path, models, atol, n_threads, &r);
    print_message("%s (%d threads): %d rows, %d values, max |diff| %.3g, %d failures%s%s\n", file,
                  n_threads, r.n_rows, r.n_values, r.max_abs_diff, r.n_fail,
                  r.first_failure[0] ? ": " : "", r.first_failure);
    assert_int_equal(rc, 0);
    assert_true(r.n_rows > 0);
    assert_int_equal(r.n_fail, 0);
}

static void test_golden_basic_f32(void **s) {
    (void)s;
    replay("basic_f32.json", TOL_GOLDEN_F32, 1);
    replay("basic_f32.json", TOL_GOLDEN_F32, 2);
}
static void test_golden_basic_f16(void **s) {
    (void)s;
    replay("basic_f16.json", TOL_GOLDEN_F16, 1);
}
static void test_golden_basic_q8_0(void **s) {
    (void)s;
    replay("basic_q8_0.json", TOL_GOLDEN_Q8_0, 1);
}
static void test_golden_basic_q4_0(void **s) {
    (void)s;
    replay("basic_q4_0.json", TOL_GOLDEN_Q4_0, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_basic_f32),
        cmocka_unit_test(test_golden_basic_f16),
        cmocka_unit_test(test_golden_basic_q8_0),
        cmocka_unit_test(test_golden_basic_q4_0),
    };
    return test_run(tests, NULL, NULL);
}
