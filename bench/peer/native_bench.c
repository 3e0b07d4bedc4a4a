// native_bench.c: llama-bench's pp/tg measurement, written against the
// PREBUILT llama.cpp shared libraries that node-llama-cpp 3.21.1 ships
// (node_modules/@node-llama-cpp/linux-x64/bins/linux-x64), so the peer runs
// llama.cpp without node in the loop and with a persistent thread pool.
//
// Why it exists: node-llama-cpp never attaches a ggml thread pool to its
// context, so every llama_decode with n_threads > 1 creates and joins
// n_threads - 1 pthreads. On the Firecracker VM this project runs on a
// create+join costs about 1.2 ms, and a single-token decode of stories260K at
// 2 threads then takes 8-25 ms instead of 0.2 ms. llama-bench (and ctxshift)
// keep their workers alive, so that number would flatter ctxshift. This
// harness does what llama-bench does: ggml_threadpool_new (poll 50) +
// llama_attach_threadpool.
//
// Built by compare.sh (`--native`) with the headers of the exact llama.cpp
// source node-llama-cpp bundles (node_modules/node-llama-cpp/llama/
// gitRelease.bundle); nothing of llama.cpp is compiled, only this file.
// Not part of the CMake build (it is not bench/bench_*.c).
//
// What is timed, per repetition (after one untimed warm-up of each test):
//   pp: llama_memory_clear; then llama_decode of N tokens (BOS + pseudo-random
//       ids) in chunks of n_batch (= n_ubatch = 512, one chunk for N <= 512),
//       then llama_synchronize. Logits for the last token only.
//   tg: llama_memory_clear; then n times llama_decode of one token (BOS, then
//       pseudo-random ids) + llama_synchronize. Each decode computes logits.
// Output: a JSON array like llama-bench -o json (subset of its fields), one
// object for pp (n_gen 0) and one for tg (n_prompt 0).
//
// -d D: before every timed run, untimed, D tokens fill the cache (llama-bench
// --n-depth); --warmup-tokens N: the pp warm-up decodes N tokens instead of
// the whole prompt (the interleaved suite runs one repetition per process).
//
// --ggml-cpu NAME: load exactly one CPU variant, DIR/libggml-cpu-NAME.so
// (haswell: AVX2 + FMA + F16C, no AVX-512; a NAME with a '/' is a path),
// instead of ggml_backend_load_all_from_path, which scores every
// libggml-cpu-*.so the package ships and keeps the best one this CPU runs (on
// an AVX-512 machine an AVX-512 one). ggml_backend_load still asks the
// variant's ggml_backend_score, so one this CPU cannot run (alderlake needs
// AVX-VNNI) is refused, not crashed into. Every JSON object carries
// "system_info" (llama_print_system_info: the loaded variant's compile-time
// features, e.g. "AVX2 = 1" and no "AVX512 = 1") so a table can say which
// variant really ran.
//
// usage: native_bench -m MODEL [-p 512] [-n 128] [-t 1] [-r 5] [-d D]
//                     [--warmup-tokens N] [--fa off|on|auto] [--backend-dir DIR]
//                     [--ggml-cpu NAME]

#define _POSIX_C_SOURCE 200809L

#include <ggml-backend.h>
#include <ggml-cpu.h>
#include <ggml.h>
#include <llama.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { NB_BATCH = 512, NB_MAX_REPS = 1000 };

typedef struct nb_args {
    const char *model;
    const char *backend_dir;
    const char *ggml_cpu; /* CPU variant to load alone; NULL = ggml's best */
    int n_prompt;
    int n_gen;
    int threads;
    int reps;
    int depth;  /* tokens in the cache before each timed run (llama-bench -d) */
    int warmup; /* pp warm-up tokens; 0 = the whole prompt */
    enum llama_flash_attn_type fa;
    const char *fa_name;
} nb_args;

typedef struct ggml_threadpool *(*nb_tp_new_fn)(struct ggml_threadpool_params *);
typedef void (*nb_tp_free_fn)(struct ggml_threadpool *);

static uint64_t nb_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// 32-bit LCG: deterministic stand-in for llama-bench's std::rand() % n_vocab.
static uint32_t nb_rng_state = 1234u;
static llama_token nb_rand_token(int32_t n_vocab) {
    nb_rng_state = nb_rng_state * 1664525u + 1013904223u;
    return (llama_token)(nb_rng_state % (uint32_t)n_vocab);
}

static void nb_quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static int nb_parse_int(const char *s, int min, const char *name) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < min || v > 1000000) {
        fprintf(stderr, "native_bench: %s must be an integer >= %d, got '%s'\n", name, min, s);
        exit(2);
    }
    return (int)v;
}

static void nb_parse(int argc, char **argv, nb_args *a) {
    a->model = NULL;
    a->backend_dir = NULL;
    a->ggml_cpu = NULL;
    a->n_prompt = 512;
    a->n_gen = 128;
    a->threads = 1;
    a->reps = 5;
    a->depth = 0;
    a->warmup = 0;
    a->fa = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    a->fa_name = "off";
    for (int i = 1; i < argc; i += 2) { // every option takes one value
        const char *k = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            fprintf(stderr, "native_bench: missing value for %s\n", k);
            exit(2);
        }
        if (strcmp(k, "-m") == 0) {
            a->model = v;
        } else if (strcmp(k, "--backend-dir") == 0) {
            a->backend_dir = v;
        } else if (strcmp(k, "--ggml-cpu") == 0) {
            a->ggml_cpu = v;
        } else if (strcmp(k, "-p") == 0) {
            a->n_prompt = nb_parse_int(v, 0, k);
        } else if (strcmp(k, "-n") == 0) {
            a->n_gen = nb_parse_int(v, 0, k);
        } else if (strcmp(k, "-t") == 0) {
            a->threads = nb_parse_int(v, 1, k);
        } else if (strcmp(k, "-r") == 0) {
            a->reps = nb_parse_int(v, 1, k);
            if (a->reps > NB_MAX_REPS) {
                fprintf(stderr, "native_bench: -r at most %d\n", NB_MAX_REPS);
                exit(2);
            }
        } else if (strcmp(k, "-d") == 0) {
            a->depth = nb_parse_int(v, 0, k);
        } else if (strcmp(k, "--warmup-tokens") == 0) {
            a->warmup = nb_parse_int(v, 1, k);
        } else if (strcmp(k, "--fa") == 0) {
            a->fa_name = v;
            if (strcmp(v, "off") == 0) {
                a->fa = LLAMA_FLASH_ATTN_TYPE_DISABLED;
            } else if (strcmp(v, "on") == 0) {
                a->fa = LLAMA_FLASH_ATTN_TYPE_ENABLED;
            } else if (strcmp(v, "auto") == 0) {
                a->fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
            } else {
                fprintf(stderr, "native_bench: --fa must be off, on or auto\n");
                exit(2);
            }
        } else {
            fprintf(stderr, "native_bench: unknown argument '%s'\n", k);
            exit(2);
        }
    }
    if (a->model == NULL || (a->n_prompt == 0 && a->n_gen == 0)) {
        fprintf(stderr, "usage: native_bench -m MODEL [-p 512] [-n 128] [-t 1] [-r 5] [-d DEPTH] "
                        "[--warmup-tokens N] [--fa off|on|auto] [--backend-dir DIR] "
                        "[--ggml-cpu NAME]\n");
        exit(2);
    }
    if (a->ggml_cpu != NULL && strchr(a->ggml_cpu, '/') == NULL && a->backend_dir == NULL) {
        fprintf(stderr, "native_bench: --ggml-cpu NAME needs --backend-dir DIR\n");
        exit(2);
    }
}

// Loads the CPU backend: the named variant alone (--ggml-cpu) or ggml's best.
// Returns 0, or -1 when the named variant is missing or this CPU cannot run
// it (ggml_backend_load logs why through nb_quiet_log only on errors, so the
// message here names the file).
static int nb_load_backends(const nb_args *a) {
    if (a->ggml_cpu == NULL) {
        if (a->backend_dir != NULL) {
            ggml_backend_load_all_from_path(a->backend_dir);
        } else {
            ggml_backend_load_all();
        }
        return 0;
    }
    char path[4096];
    int n = strchr(a->ggml_cpu, '/') != NULL
                ? snprintf(path, sizeof path, "%s", a->ggml_cpu)
                : snprintf(path, sizeof path, "%s/libggml-cpu-%s.so", a->backend_dir, a->ggml_cpu);
    if (n < 0 || (size_t)n >= sizeof path) {
        fprintf(stderr, "native_bench: --ggml-cpu path too long\n");
        return -1;
    }
    if (ggml_backend_load(path) == NULL) {
        fprintf(stderr,
                "native_bench: cannot load %s (missing, or its ggml_backend_score says this CPU "
                "lacks an instruction it needs)\n",
                path);
        return -1;
    }
    return 0;
}

// Writes s as a JSON string body (quotes and backslashes escaped, control
// characters dropped): the variant name from the command line and
// llama_print_system_info (plain ASCII).
static void nb_json_str(const char *s) {
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\') {
            putchar('\\');
        }
        if ((unsigned char)*s >= 0x20) {
            putchar(*s);
        }
    }
}

static int nb_pp(struct llama_context *ctx, const llama_token *toks, int n) {
    for (int i = 0; i < n; i += NB_BATCH) {
        int len = n - i < NB_BATCH ? n - i : NB_BATCH;
        if (llama_decode(ctx, llama_batch_get_one((llama_token *)(uintptr_t)(toks + i), len)) !=
            0) {
            return -1;
        }
    }
    llama_synchronize(ctx);
    return 0;
}

// Clear the cache, then (untimed) decode depth tokens; the timed decodes
// that follow continue the sequence (llama_batch_get_one positions follow
// the cache).
static int nb_reset(struct llama_context *ctx, const llama_token *toks, int depth) {
    llama_memory_clear(llama_get_memory(ctx), false);
    return depth > 0 ? nb_pp(ctx, toks, depth) : 0;
}

static int nb_tg(struct llama_context *ctx, const llama_token *toks, int n) {
    for (int i = 0; i < n; i++) {
        llama_token t = toks[i];
        if (llama_decode(ctx, llama_batch_get_one(&t, 1)) != 0) {
            return -1;
        }
        llama_synchronize(ctx);
    }
    return 0;
}

static void nb_print(const nb_args *a, const struct llama_model *model, int n_prompt, int n_gen,
                     const uint64_t *ns, int reps, int first) {
    double ts[NB_MAX_REPS];
    double sum_ns = 0.0, sum_ts = 0.0;
    int n_tok = n_prompt + n_gen;
    for (int r = 0; r < reps; r++) {
        ts[r] = 1e9 * (double)n_tok / (double)ns[r];
        sum_ns += (double)ns[r];
        sum_ts += ts[r];
    }
    double avg_ns = sum_ns / reps, avg_ts = sum_ts / reps, var_ns = 0.0, var_ts = 0.0;
    for (int r = 0; r < reps; r++) {
        var_ns += ((double)ns[r] - avg_ns) * ((double)ns[r] - avg_ns);
        var_ts += (ts[r] - avg_ts) * (ts[r] - avg_ts);
    }
    double sd_ns = reps > 1 ? sqrt(var_ns / (reps - 1)) : 0.0;
    double sd_ts = reps > 1 ? sqrt(var_ts / (reps - 1)) : 0.0;
    char desc[128];
    llama_model_desc(model, desc, sizeof desc);
    printf("%s  {\"model_filename\": \"%s\", \"model_type\": \"%s\", \"model_size\": %llu, "
           "\"model_n_params\": %llu, \"build_commit\": \"node-llama-cpp 3.21.1 prebuilt libllama "
           "(native_bench)\", "
           "\"backends\": \"CPU\", \"n_batch\": %d, \"n_ubatch\": %d, \"n_threads\": %d, \"poll\": "
           "50, "
           "\"type_k\": \"f16\", \"type_v\": \"f16\", \"flash_attn\": \"%s\", \"n_prompt\": %d, "
           "\"n_gen\": %d, \"n_depth\": %d, "
           "\"avg_ns\": %.0f, \"stddev_ns\": %.0f, \"avg_ts\": %.6f, \"stddev_ts\": %.6f, "
           "\"native_avg_ts\": %.6f, \"native_stddev_ts\": %.6f, \"ggml_cpu\": \"",
           first ? "" : ",\n", a->model, desc, (unsigned long long)llama_model_size(model),
           (unsigned long long)llama_model_n_params(model), NB_BATCH, NB_BATCH, a->threads,
           a->fa_name, n_prompt, n_gen, a->depth, avg_ns, sd_ns, avg_ts, sd_ts, avg_ts, sd_ts);
    nb_json_str(a->ggml_cpu != NULL ? a->ggml_cpu : "best");
    printf("\", \"system_info\": \"");
    nb_json_str(llama_print_system_info());
    printf("\", \"samples_ts\": [");
    for (int r = 0; r < reps; r++) {
        printf("%s%.6f", r ? ", " : "", ts[r]);
    }
    printf("]}");
}

int main(int argc, char **argv) {
    nb_args a;
    nb_parse(argc, argv, &a);
    int rc = 1;
    struct llama_model *model = NULL;
    struct llama_context *ctx = NULL;
    struct ggml_threadpool *tp = NULL;
    nb_tp_free_fn tp_free = NULL;
    llama_token *toks = NULL;
    uint64_t ns[NB_MAX_REPS];

    llama_log_set(nb_quiet_log, NULL);
    if (nb_load_backends(&a) != 0) {
        return 1;
    }
    llama_backend_init();

    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu == NULL) {
        fprintf(stderr, "native_bench: no CPU backend loaded (pass --backend-dir)\n");
        goto done;
    }
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu);
    nb_tp_new_fn tp_new =
        (nb_tp_new_fn)ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new");
    tp_free = (nb_tp_free_fn)ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free");
    if (tp_new == NULL || tp_free == NULL) {
        fprintf(stderr, "native_bench: CPU backend lacks ggml_threadpool_new/free\n");
        goto done;
    }

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    model = llama_model_load_from_file(a.model, mp);
    if (model == NULL) {
        fprintf(stderr, "native_bench: cannot load %s\n", a.model);
        goto done;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(a.depth + a.n_prompt + a.n_gen);
    cp.n_batch = NB_BATCH;
    cp.n_ubatch = NB_BATCH;
    cp.n_threads = a.threads;
    cp.n_threads_batch = a.threads;
    cp.flash_attn_type = a.fa;
    cp.no_perf = true;
    ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        fprintf(stderr, "native_bench: cannot create a context\n");
        goto done;
    }
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(a.threads);
    tpp.poll = 50; // llama-bench's default
    tp = tp_new(&tpp);
    if (tp == NULL) {
        fprintf(stderr, "native_bench: cannot create a thread pool of %d\n", a.threads);
        goto done;
    }
    llama_attach_threadpool(ctx, tp, NULL);
    llama_set_n_threads(ctx, a.threads, a.threads);

    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int32_t n_vocab = llama_vocab_n_tokens(vocab);
    int n_max = a.n_prompt > a.n_gen ? a.n_prompt : a.n_gen;
    if (a.depth > n_max) {
        n_max = a.depth;
    }
    toks = malloc(sizeof *toks * (size_t)n_max);
    if (toks == NULL) {
        goto done;
    }
    toks[0] = llama_vocab_get_add_bos(vocab) ? llama_vocab_bos(vocab) : nb_rand_token(n_vocab);
    for (int i = 1; i < n_max; i++) {
        toks[i] = nb_rand_token(n_vocab);
    }

    printf("[\n");
    int first = 1;
    if (a.n_prompt > 0) {
        int n_warm = a.warmup > 0 && a.warmup < a.n_prompt ? a.warmup : a.n_prompt;
        if (nb_reset(ctx, toks, 0) != 0 || nb_pp(ctx, toks, n_warm) != 0) { // warm-up
            goto decode_fail;
        }
        for (int r = 0; r < a.reps; r++) {
            if (nb_reset(ctx, toks, a.depth) != 0) {
                goto decode_fail;
            }
            uint64_t t0 = nb_now_ns();
            if (nb_pp(ctx, toks, a.n_prompt) != 0) {
                goto decode_fail;
            }
            ns[r] = nb_now_ns() - t0;
        }
        nb_print(&a, model, a.n_prompt, 0, ns, a.reps, first);
        first = 0;
    }
    if (a.n_gen > 0) {
        if (nb_reset(ctx, toks, 0) != 0 || nb_tg(ctx, toks, 1) != 0) { // warm-up
            goto decode_fail;
        }
        for (int r = 0; r < a.reps; r++) {
            if (nb_reset(ctx, toks, a.depth) != 0) {
                goto decode_fail;
            }
            uint64_t t0 = nb_now_ns();
            if (nb_tg(ctx, toks, a.n_gen) != 0) {
                goto decode_fail;
            }
            ns[r] = nb_now_ns() - t0;
        }
        nb_print(&a, model, 0, a.n_gen, ns, a.reps, first);
    }
    printf("\n]\n");
    rc = 0;
    goto done;

decode_fail:
    fprintf(stderr, "native_bench: llama_decode failed\n");
done:
    free(toks);
    if (ctx != NULL) {
        llama_free(ctx);
    }
    if (tp != NULL) {
        tp_free(tp);
    }
    if (model != NULL) {
        llama_model_free(model);
    }
    llama_backend_free();
    return rc;
}
