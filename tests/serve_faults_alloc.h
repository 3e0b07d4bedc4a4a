/* serve_faults_alloc.h: force-included (-include) into every source of
 * test_serve_faults, so that the `ctxshift serve` code it compiles from
 * tools/ allocates through the test's counting allocator (which can make
 * the n-th allocation fail) and reads a clock the test controls. No system
 * header is included here: the macros rename the declarations of stdlib.h,
 * string.h and time.h too (same types, so they redeclare the fault_*
 * functions), and a source that defines _GNU_SOURCE before its includes
 * (serve_http.c) still gets the GNU names. tests/test_serve_faults.c
 * defines the functions and undoes the macros for itself. */
#ifndef CS_SERVE_FAULTS_ALLOC_H
#define CS_SERVE_FAULTS_ALLOC_H

#include <stddef.h>

struct timespec;

void *fault_malloc(size_t n);
void *fault_calloc(size_t n, size_t size);
void *fault_realloc(void *p, size_t n);
char *fault_strdup(const char *s);
void fault_free(void *p);
/* CLOCK_MONOTONIC is frozen (timings and the map's refresh do not depend
 * on the machine's speed); other clocks are the real ones. clockid_t is
 * int on Linux. */
int fault_clock_gettime(int clk, struct timespec *ts);

#define malloc        fault_malloc
#define calloc        fault_calloc
#define realloc       fault_realloc
#define strdup        fault_strdup
#define free          fault_free
#define clock_gettime fault_clock_gettime

#endif /* CS_SERVE_FAULTS_ALLOC_H */
