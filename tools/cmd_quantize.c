/* cmd_quantize.c: `ctxshift quantize IN OUT TYPE`, llama-quantize's job for
 * the types ctxshift computes with and llama.cpp's mixes
 * (cs_model_quantize_threads; the mixes listed by cs_quantize_mix_name). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "tools.h"

static void quantize_usage(FILE *f) {
    char names[256];
    fputs("usage: ctxshift quantize IN OUT TYPE [flags]\n"
          "\n"
          "Write the llama or qwen2 GGUF IN with its weights in TYPE to OUT (written to\n"
          "OUT.tmp, then renamed). TYPE (any case):\n",
          f);
    fprintf(f, "  %s\n", tool_weight_type_names(names, sizeof names, true));
    fputs("      every 2-D weight in TYPE (like llama-quantize --pure)\n"
          "  llama:MIX, MIX one of llama.cpp's file types:",
          f);
    for (int32_t i = 0; cs_quantize_mix_name(i); i++) /* 8 a line */
        fprintf(f, "%s%s", i % 8 == 0 ? "\n      " : " ", cs_quantize_mix_name(i));
    fputs("\n"
          "      each tensor in the type llama-quantize gives it (no importance matrix):\n"
          "      output.weight in q6_K, some attn_v / ffn_down / attn_output tensors in\n"
          "      more bits. A MIX that is no type's name works bare too (Q4_K_M); bare\n"
          "      Q4_0 is the plain type.\n"
          "Norms and 1-D tensors are copied. A tensor whose rows do not fit TYPE's block\n"
          "falls back as in llama.cpp (q4_K -> q5_0, q6_K -> q8_0, ..., else f16); a plain\n"
          "32-block type keeps it f32. docs/CLI.md has the rules.\n"
          "\n"
          "  -t, --threads N   worker threads (default: number of cores)\n"
          "  -v, --verbose     print each tensor's type\n"
          "  -h, --help        print this help\n",
          f);
}

int cmd_quantize(int argc, char **argv) {
    const char *pos[3] = {NULL, NULL, NULL};
    int n_pos = 0;
    int32_t n_threads = 0;
    bool verbose = false, help = false;

    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        int rc = 0;
        if (tool_arg_is(a, "-h", "--help")) {
            help = true;
        } else if (tool_arg_is(a, "-v", "--verbose")) {
            verbose = true;
        } else if (tool_arg_is(a, "-t", "--threads")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_i32(a, v, 1, 512, &n_threads);
        } else if (a[0] == '-' && a[1] != '\0') {
            rc = tool_arg_unknown("quantize", a);
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            tool_error("quantize: unexpected argument '%s' (IN OUT TYPE already given)", a);
            rc = TOOL_EXIT_USAGE;
        }
        if (rc != 0) return rc;
    }
    if (help) {
        quantize_usage(stdout);
        return TOOL_EXIT_OK;
    }
    if (n_pos != 3) {
        tool_error("quantize: IN OUT TYPE are required (see 'ctxshift quantize --help')");
        return TOOL_EXIT_USAGE;
    }
    tool_log_setup(verbose);
    const cs_status st = cs_model_quantize_threads(pos[0], pos[1], pos[2], n_threads);
    if (st == CS_ERR_INVALID_ARG) { /* the type: a usage error */
        tool_fail_lib(st, NULL);
        return TOOL_EXIT_USAGE;
    }
    if (st != CS_OK) return tool_fail_lib(st, NULL); /* messages name the file */
    struct stat sb;
    long long size = stat(pos[1], &sb) == 0 ? (long long)sb.st_size : -1;
    fprintf(stderr, "quantize: wrote '%s' (%s, %lld bytes)\n", pos[1], pos[2], size);
    return TOOL_EXIT_OK;
}
