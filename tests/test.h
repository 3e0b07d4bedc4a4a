/* test.h: cmocka prelude (headers in the order cmocka needs) and helpers. */
#ifndef CS_TEST_H
#define CS_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ctxshift.h"

/* Path of a file in ../shared (golden data, models). Returns NULL (and the
 * test should call skip()) when shared/ is not beside the checkout. */
static inline const char *cs_test_shared_path(const char *rel, char *buf, size_t size) {
    snprintf(buf, size, "%s/%s", CS_SHARED_DIR, rel);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

/* The bundled model (always in the repository). */
static inline const char *cs_test_bundled_model(void) {
    return CS_SOURCE_DIR "/models/stories260K-f32.gguf";
}

/* A fresh path under the build folder for a test's temporary file. */
static inline const char *cs_test_tmp_path(const char *name, char *buf, size_t size) {
    snprintf(buf, size, "%s/tmp-%d-%s", CS_BINARY_DIR, (int)getpid(), name);
    return buf;
}

#endif /* CS_TEST_H */
