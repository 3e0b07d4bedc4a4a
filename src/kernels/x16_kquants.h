/* x16_kquants.h: internal to src/kernels/. The x16 micro-kernels of the
 * weight types that dot against Q8_K activations beyond Q4_K / Q6_K
 * (x16_kquants_avx512.c), registered by x86_avx512.c's table init. */
#ifndef CS_X16_KQUANTS_H
#define CS_X16_KQUANTS_H

#include <stdbool.h>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
/* Sets k->ukernel_x16[] for IQ4_XS: the VNNI kernels when vnni (the
 * caller checked cpuid), else the maddubs ones; bit-identical either way.
 * Call only from the AVX-512 table init. */
void x16_kquants_register_avx512(kernels_table *k, bool vnni);
#endif

#endif /* CS_X16_KQUANTS_H */
