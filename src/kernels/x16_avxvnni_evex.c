/* x16_avxvnni_evex.c: x16_avxvnni.c once more, with its vpdpbusd /
 * vpdpwssd in the EVEX encoding (AVX512_VNNI + AVX512VL) instead of the
 * VEX one (AVX-VNNI): the table "avxvnni_evex", which runs the avxvnni
 * kernels on AVX-512 VNNI CPUs so that they are tested and measured there
 * (x16_avxvnni.c's file comment). Compiled with the flags of x86_avx2.c. */
#define CS_AVXVNNI_EVEX 1
#include "x16_avxvnni.c"
