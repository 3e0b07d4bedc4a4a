/* Compiled as C99 with -pedantic: keeps include/ctxshift.h portable. */
#include "ctxshift.h"

int cs_api_c99_check(void);
int cs_api_c99_check(void) {
    return (int)sizeof(cs_context_params) + (int)CS_OK;
}
