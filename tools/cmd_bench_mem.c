/* cmd_bench_mem.c: `ctxshift bench mem`, the memory read bandwidth that
 * bounds token generation (every weight byte is read once per token).
 *
 * Each of T threads (pinned to nothing, like the engine's pool) sums its
 * contiguous share of a buffer far larger than the caches (default 1 GiB)
 * with the fastest plain read loop measured on x86 (mem_read_pick below;
 * the output names it). One untimed pass pages the buffer in; then r timed
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
    uint64_t (*read)(const uint64_t *p, size_t n);
    const uint64_t *p;
    size_t n; /* uint64 words */
    uint64_t sum;
    mem_start *start;
} mem_job;

/* The read loops: 4 independent accumulators of 128 bytes a step, which
 * keeps the loads, not the adds, the limit. The widest plain loads the CPU
 * has, picked at run time, because the tool is built for baseline x86-64:
 * before, a GCC vector-extension loop of 32 bytes compiled to baseline
 * code read 26.3-26.8 GB/s at 1 thread where the same loop built with AVX2
 * read 32.4-33.2 (Zen 4 VM, 1 GiB, best of 6), so every ceiling of the tg
 * suite sat about a fifth low. Measured beside it (same VM, 1 thread, best
 * of 4-5, three runs): 4 x 32-byte AVX2 loads 32.3-32.9 GB/s, 4 x 16-byte
 * SSE2 29.5-31.9, 8 x 32-byte 29.5-31.2, 2 or 4 x 64-byte AVX-512
 * 29.9-31.3, any of them with software prefetch 512 B or 2 KiB ahead
 * 25.0-30.0 (the hardware prefetcher follows the stream alone), so the
 * AVX2 loop is the probe wherever the CPU has it. */
typedef uint64_t (*mem_read_fn)(const uint64_t *p, size_t n);

static uint64_t mem_read_scalar(const uint64_t *p, size_t n) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) a0 += p[i], a1 += p[i + 1], a2 += p[i + 2], a3 += p[i + 3];
    for (; i < n; i++) a0 += p[i];
    return a0 + a1 + a2 + a3;
}

#if defined(__x86_64__)
#include <immintrin.h>
static uint64_t mem_read_sse2(const uint64_t *p, size_t n) {
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 = _mm_add_epi64(a0, _mm_loadu_si128((const __m128i *)(const void *)(p + i)));
        a1 = _mm_add_epi64(a1, _mm_loadu_si128((const __m128i *)(const void *)(p + i + 2)));
        a2 = _mm_add_epi64(a2, _mm_loadu_si128((const __m128i *)(const void *)(p + i + 4)));
        a3 = _mm_add_epi64(a3, _mm_loadu_si128((const __m128i *)(const void *)(p + i + 6)));
    }
    uint64_t v[2];
    _mm_storeu_si128((__m128i *)(void *)v,
                     _mm_add_epi64(_mm_add_epi64(a0, a1), _mm_add_epi64(a2, a3)));
    return v[0] + v[1] + mem_read_scalar(p + i, n - i);
}

__attribute__((target("avx2"))) static uint64_t mem_read_avx2(const uint64_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256((const __m256i *)(const void *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 12)));
    }
    uint64_t v[4];
    _mm256_storeu_si256((__m256i *)(void *)v,
                        _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    return v[0] + v[1] + v[2] + v[3] + mem_read_scalar(p + i, n - i);
}
#endif

/* The loop for this CPU and its name (bench_mem_loop, tools.h). */
static mem_read_fn mem_read_pick(const char **name) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        *name = "avx2 4x32B";
        return mem_read_avx2;
    }
    *name = "sse2 4x16B";
    return mem_read_sse2;
#else
    *name = "scalar 4x8B";
    return mem_read_scalar;
#endif
}

const char *bench_mem_loop(void) {
    const char *name = NULL;
    (void)mem_read_pick(&name);
    return name;
}

static void *mem_worker(void *arg) {
    mem_job *j = arg;
    pthread_mutex_lock(&j->start->mu);
    while (j->start->go == 0) pthread_cond_wait(&j->start->cv, &j->start->mu);
    const int go = j->start->go;
    pthread_mutex_unlock(&j->start->mu);
    if (go < 0) return NULL;
    j->sum = j->read(j->p, j->n);
    return NULL;
}

/* Word i of a probe buffer (bench_mem_buffer) holds i * MEM_FILL (odd: the
 * words are distinct), so the sum of any prefix is known in closed form. */
#define MEM_FILL 0x9e3779b97f4a7c15ull

/* The sum mod 2^64 of the first n words of a probe buffer: MEM_FILL times
 * n (n - 1) / 2, the halving done on the even factor so no bit is lost. */
static uint64_t mem_expected_sum(uint64_t n) {
    if (n == 0) return 0;
    const uint64_t tri = n % 2 == 0 ? n / 2 * (n - 1) : (n - 1) / 2 * n;
    return MEM_FILL * tri;
}

/* One timed pass (tools.h). Every pass checks its threads' sums against
 * the buffer's known contents, so a read loop that skipped or repeated a
 * word (a tail, a share boundary) fails instead of reporting a rate. */
double bench_mem_pass(const uint64_t *buf, size_t words, int32_t nt, uint64_t *sink) {
    if (nt < 1 || nt > BENCH_MEM_MAX_THREADS) {
        tool_error("the read probe runs 1 to %d threads, not %d", BENCH_MEM_MAX_THREADS, (int)nt);
        return -1.0;
    }
    pthread_t th[BENCH_MEM_MAX_THREADS];
    mem_job jobs[BENCH_MEM_MAX_THREADS];
    mem_start start = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    int32_t made = 0;
    const char *loop = NULL;
    const mem_read_fn read = mem_read_pick(&loop);
    for (int32_t t = 0; t < nt; t++) {
        const size_t a = words * (size_t)t / (size_t)nt, b = words * (size_t)(t + 1) / (size_t)nt;
        jobs[t] = (mem_job){read, buf + a, b - a, 0, &start};
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
    if (made < nt) {
        tool_error("the read probe could start only %d of %d threads", (int)made, (int)nt);
        return -1.0;
    }
    uint64_t sum = 0;
    for (int32_t t = 0; t < made; t++) sum += jobs[t].sum;
    *sink += sum;
    if (sum != mem_expected_sum(words)) {
        tool_error("the read probe's loop '%s' summed %016llx over %zu words where the buffer "
                   "holds %016llx",
                   loop, (unsigned long long)sum, words,
                   (unsigned long long)mem_expected_sum(words));
        return -1.0;
    }
    return (double)(t1 - t0) * 1e-9;
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
    for (size_t i = 0; i < words; i++) buf[i] = i * MEM_FILL;
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
        printf("| threads | buffer MiB | huge pages | loop | read GB/s (median) | best GB/s |\n"
               "| ------: | ---------: | ---------: | ---- | -----------------: | --------: |\n");
    for (int32_t ti = 0; ti < n_threads && rc == TOOL_EXIT_OK; ti++) {
        if (bench_mem_pass(buf, words, threads[ti], &sink) < 0) { /* untimed warm pass */
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
                   "\"median_gbs\": %.3f, \"best_gbs\": %.3f, \"huge_page_fraction\": %.3f, "
                   "\"loop\": \"%s\"}",
                   ti ? ",\n" : "", (int)threads[ti], bytes, (int)reps, gbs, best, huge_frac,
                   bench_mem_loop());
        else
            printf("| %7d | %10d | %8.0f %% | %s | %18.2f | %9.2f |\n", (int)threads[ti],
                   (int)size_mib, 100.0 * huge_frac, bench_mem_loop(), gbs, best);
    }
    if (json) printf("\n]\n");
    if (sink == 42) fprintf(stderr, "(checksum %llu)\n", (unsigned long long)sink); /* keep it */
    bench_mem_buffer_free(buf, bytes);
    free(secs);
    return rc;
}
