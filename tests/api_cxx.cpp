// Compiled as C++11 with -pedantic -Werror (never linked): keeps
// include/ctxshift.h usable from C++: extern "C" linkage, no C-only syntax,
// the version macros usable in constant expressions.
#include "ctxshift.h"

static_assert(CS_VERSION_NUMBER ==
                  10000 * CS_VERSION_MAJOR + 100 * CS_VERSION_MINOR + CS_VERSION_PATCH,
              "CS_VERSION_NUMBER");
static_assert(sizeof(CS_VERSION_STRING) >= sizeof("0.0.0"), "CS_VERSION_STRING");

// Taking the address of a few functions checks that the declarations have C
// linkage types the compiler accepts; the call signatures are C++-checked.
int api_cxx_check();
int api_cxx_check() {
    const char *(*version)(void) = cs_version;
    cs_status (*seq_rm)(cs_context *, cs_seq, cs_pos, cs_pos) = cs_kv_seq_rm;
    cs_status (*seq_add)(cs_context *, cs_seq, cs_pos, cs_pos, cs_pos) = cs_kv_seq_add;
    cs_context_params cp = cs_context_default_params();
    cs_sampler_params sp = cs_sampler_default_params();
    return (version != nullptr) + (seq_rm != nullptr) + (seq_add != nullptr) + (int)cp.n_ctx +
           (int)sp.top_k + (int)CS_OK + (int)CS_TYPE_Q8_0;
}
