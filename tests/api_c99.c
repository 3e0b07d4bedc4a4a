/* Compiled as C99 with -pedantic: keeps include/ctxshift.h portable. */
#include "ctxshift.h"

int api_c99_check(void);
int api_c99_check(void) {
    return (int)sizeof(cs_context_params) + (int)CS_OK;
}
