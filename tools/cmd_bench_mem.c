/* cmd_bench_mem.c: `ctxshift bench mem`, the memory read bandwidth that
 * bounds token generation (every weight byte is read once per token).
 *
 * Each of T threads (pinned to nothing, like the engine's pool) sums its
 * contiguous share of a buffer far larger than the caches (default 1 GiB)
 * with 4 independent vector accumulators, which keeps the loads, not the
 * adds, the limit. One untimed pass pages the buffer in; then r timed
 * passes; the reported figure is the median (and best) bytes / second.
 * The tg ceiling of a model is this bandwidth divided by the bytes a token
 * reads (bench/peer/suite.sh does that division). `ctxshift bench
 * --mem-pair` runs the same pass (bench_mem_pass, tools.h) after every
 * generated token over as many bytes as the token read, which pairs each
 * token with the bandwidth of its own moment.
 *
 * The buffer asks for transparent huge pages (madvise MADV_HUGEPAGE), as
 * the engine's packed weights do, so the ceiling is the one those weights
 * could reach; --small-pages measures 4 KiB pages (a file mapping's, which
 * llama.cpp reads its weights from). The figure says which it got. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, madvise */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "args.h"
#include "tools.h"

/* The start line of a pass: the readers wait until the caller sets go
 * (1: read, -1: a thread could not start, leave without reading). A
 * barrier would wait forever for a thread that was never created. */
typedef struct mem_start {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int go;
} mem_start;

typedef struct mem_job {
    const uint64_t *p;
    size_t n; /* uint64 words */
    uint64_t sum;
    mem_start *start;
} mem_job;

static void *mem_worker(void *arg) {
    mem_job *j = arg;
    pthread_mutex_lock(&j->start->mu);
    while (j->start->go == 0) pthread_cond_wait(&j->start->cv, &j->start->mu);
    const int go = j->start->go;
    pthread_mutex_unlock(&j->start->mu);
    if (go < 0) return NULL;
    /* 32-byte vector loads (GCC/clang vector extension: whatever SIMD the
     * build targets), 4 independent accumulators: one 128-byte step per
     * two cache lines keeps enough loads in flight to saturate memory.
     * No software prefetch: the hardware prefetcher follows the stream, and
     * prefetches 4 KiB ahead read slower (Zen 4 VM, 256 MiB, 1 thread,
     * three runs of 20-300 alternating passes, best pass: 24.6 / 31.4 /
     * 30.9 GB/s with them, 25.4 / 34.0 / 32.6 without), so the ceiling
     * would sit a few % low. */
    typedef uint64_t v4u64 __attribute__((vector_size(32), aligned(8)));
    v4u64 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    size_t i = 0;
    for (; i + 16 <= j->n; i += 16) {
        v4u64 x0, x1, x2, x3;
        memcpy(&x0, j->p + i, 32);
        memcpy(&x1, j->p + i + 4, 32);
        memcpy(&x2, j->p + i + 8, 32);
        memcpy(&x3, j->p + i + 12, 32);
        a0 += x0, a1 += x1, a2 += x2, a3 += x3;
    }
    uint64_t s = 0;
    for (; i < j->n; i++) s += j->p[i];
    const v4u64 t = a0 + a1 + a2 + a3;
    j->sum = s + t[0] + t[1] + t[2] + t[3];
    return NULL;
}

/* One timed pass (tools.h). */
double bench_mem_pass(const uint64_t *buf, size_t words, int32_t nt, uint64_t *sink) {
    if (nt < 1 || nt > BENCH_MEM_MAX_THREADS) return -1.0;
    pthread_t th[BENCH_MEM_MAX_THREADS];
    mem_job jobs[BENCH_MEM_MAX_THREADS];
    mem_start start = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    int32_t made = 0;
    for (int32_t t = 0; t < nt; t++) {
        const size_t a = words * (size_t)t / (size_t)nt, b = words * (size_t)(t + 1) / (size_t)nt;
        jobs[t] = (mem_job){buf + a, b - a, 0, &start};
        if (pthread_create(&th[t], NULL, mem_worker, &jobs[t]) != 0) break;
        made++;
    }
    const uint64_t t0 = tool_time_ns();
    pthread_mutex_lock(&start.mu);
    start.go = made < nt ? -1 : 1; /* a thread that cannot start fails the pass */
    pthread_cond_broadcast(&start.cv);
    pthread_mutex_unlock(&start.mu);
    for (int32_t t = 0; t < made; t++) pthread_join(th[t], NULL);
    const uint64_t t1 = tool_time_ns();
    pthread_cond_destroy(&start.cv);
    pthread_mutex_destroy(&start.mu);
    for (int32_t t = 0; t < made; t++) *sink += jobs[t].sum;
    return made < nt ? -1.0 : (double)(t1 - t0) * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_sort_median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The process's anonymous huge-page bytes (Linux /proc; 0 elsewhere). */
static uint64_t anon_huge_bytes(void) {
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb << 10;
}

uint64_t *bench_mem_buffer(size_t bytes, bool small, double *huge_frac) {
    *huge_frac = 0.0;
    if (bytes < sizeof(uint64_t)) return NULL;
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) return NULL;
    uint64_t *buf = map;
    const size_t words = bytes / sizeof(uint64_t);
    /* before the first touch: the pages are chosen then */
    (void)madvise(buf, bytes, small ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);
    const uint64_t hb0 = anon_huge_bytes(); /* the process's other huge pages */
    for (size_t i = 0; i < words; i++) buf[i] = i * 0x9e3779b97f4a7c15ull;
    /* the share of the buffer in huge pages (the kernel may refuse them) */
    const uint64_t hb1 = anon_huge_bytes(), hb = hb1 > hb0 ? hb1 - hb0 : 0;
    *huge_frac = (double)(hb < bytes ? hb : bytes) / (double)bytes;
    return buf;
}

void bench_mem_buffer_free(uint64_t *buf, size_t bytes) {
    if (buf) munmap(buf, bytes);
}

static void mem_usage(FILE *f) {
    fprintf(f, "usage: ctxshift bench mem [flags]\n"
               "\n"
               "Measure memory read bandwidth (GB/s = 1e9 bytes/s), the ceiling of token\n"
               "generation: tokens/s <= bandwidth / bytes of weights read per token.\n"
               "\n"
               "  -t, --threads LIST     reader threads (default: number of cores)\n"
               "  -r, --repetitions N    timed passes per thread count (default: 5)\n"
               "      --size MIB         buffer size in MiB (default: 1024)\n"
               "      --small-pages      4 KiB pages (default: transparent huge pages, as the\n"
               "                         packed weights use; the output says what was had)\n"
               "      --json             a JSON array, one object per thread count\n"
               "  -h, --help             print this help\n");
}

int cmd_bench_mem(int argc, char **argv) {
    tool_args it = {argc, argv, 1};
    int32_t threads[32], n_threads = 1, reps = 5, size_mib = 1024;
    bool json = false, small = false;
    threads[0] = tool_default_threads();
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i], *v = NULL;
        int rc = 0;
        if (tool_arg_is(a, "-h", "--help")) {
            mem_usage(stdout);
            return TOOL_EXIT_OK;
        } else if (tool_arg_is(a, "-t", "--threads")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32_list(a, v, 1, BENCH_MEM_MAX_THREADS, threads, 32, &n_threads);
        } else if (tool_arg_is(a, "-r", "--repetitions")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_i32(a, v, 1, 1000, &reps);
        } else if (tool_arg_is(a, NULL, "--size")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 1, 1 << 20, &size_mib);
        } else if (tool_arg_is(a, NULL, "--json")) {
            json = true;
        } else if (tool_arg_is(a, NULL, "--small-pages")) {
            small = true;
        } else {
            rc = tool_arg_unknown("bench mem", a);
        }
        if (rc != 0) return rc;
    }
    const size_t bytes = (size_t)size_mib << 20, words = bytes / sizeof(uint64_t);
    double huge_frac = 0.0;
    uint64_t *buf = bench_mem_buffer(bytes, small, &huge_frac);
    double *secs = malloc((size_t)reps * sizeof *secs);
    if (!buf || !secs) {
        bench_mem_buffer_free(buf, bytes);
        free(secs);
        tool_error("out of memory for a %d MiB buffer", (int)size_mib);
        return TOOL_EXIT_FAIL;
    }
    uint64_t sink = 0;
    int rc = TOOL_EXIT_OK;
    if (json)
        printf("[\n");
    else
        printf("| threads | buffer MiB | huge pages | read GB/s (median) | best GB/s |\n"
               "| ------: | ---------: | ---------: | -----------------: | --------: |\n");
    for (int32_t ti = 0; ti < n_threads && rc == TOOL_EXIT_OK; ti++) {
        if (bench_mem_pass(buf, words, threads[ti], &sink) < 0) { /* untimed warm pass */
            tool_error("cannot start %d threads", (int)threads[ti]);
            rc = TOOL_EXIT_FAIL;
            break;
        }
        for (int32_t r = 0; r < reps && rc == TOOL_EXIT_OK; r++)
            if ((secs[r] = bench_mem_pass(buf, words, threads[ti], &sink)) <= 0)
                rc = TOOL_EXIT_FAIL;
        if (rc != TOOL_EXIT_OK) break;
        const double med = bench_sort_median(secs, (size_t)reps); /* secs[0]: the best */
        const double gbs = (double)bytes / med * 1e-9, best = (double)bytes / secs[0] * 1e-9;
        if (json)
            printf("%s  {\"test\": \"mem_read\", \"n_threads\": %d, \"bytes\": %zu, \"reps\": %d, "
                   "\"median_gbs\": %.3f, \"best_gbs\": %.3f, \"huge_page_fraction\": %.3f}",
                   ti ? ",\n" : "", (int)threads[ti], bytes, (int)reps, gbs, best, huge_frac);
        else
            printf("| %7d | %10d | %8.0f %% | %18.2f | %9.2f |\n", (int)threads[ti], (int)size_mib,
                   100.0 * huge_frac, gbs, best);
    }
    if (json) printf("\n]\n");
    if (sink == 42) fprintf(stderr, "(checksum %llu)\n", (unsigned long long)sink); /* keep it */
    bench_mem_buffer_free(buf, bytes);
    free(secs);
    return rc;
}
