/* cmd_gen_model.c: `ctxshift gen-model`, a random-weight llama GGUF from a
 * preset plus overrides (cs_gen_model_preset, cs_gen_model_write). */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "tools.h"

static void gen_usage(FILE *f) {
    char names[256];
    fprintf(f,
            "usage: ctxshift gen-model -o FILE [flags]\n"
            "\n"
            "Write a llama GGUF with deterministic random weights (a function of --seed) and the\n"
            "tokenizer of another GGUF file.\n"
            "\n"
            "  -o, --output FILE     the file to write (required)\n"
            "      --preset NAME     tiny, 110m, 1.1b, llama3-1b, smollm2-135m, qwen2.5-0.5b or\n"
            "                        nemo-small (default: tiny)\n"
            "      --type TYPE       weight type of the 2-D tensors: %s\n"
            "                        (default: f32; norms stay f32)\n"
            "      --vocab FILE      GGUF whose tokenizer is copied (required except for tiny,\n"
            "                        whose default is %s)\n"
            "      --seed N          weight seed (default: the preset's)\n"
            "      --n-embd N        model width\n"
            "      --n-layer N       number of blocks\n"
            "      --n-head N        query heads\n"
            "      --n-head-kv N     K/V heads (must divide --n-head)\n"
            "      --n-ff N          FFN hidden size\n"
            "      --n-ctx N         training context (llama.context_length)\n"
            "      --n-vocab N       use the first N tokens of the vocabulary; 0 = all\n"
            "      --tied            tie the output matrix to the token embeddings\n"
            "  -h, --help            print this help\n",
            tool_weight_type_names(names, sizeof names, false), CS_DEFAULT_MODEL);
}

typedef struct gen_override {
    const char *flag;
    int32_t min;
    int32_t *field;
    bool set;
    int32_t value;
} gen_override;

int cmd_gen_model(int argc, char **argv) {
    const char *out = NULL, *preset = "tiny", *vocab = NULL;
    int32_t type = CS_TYPE_F32;
    int64_t seed = -1;
    bool tied = false, help = false;
    cs_gen_model_params p;
    memset(&p, 0, sizeof(p));
    gen_override ov[] = {
        {"--n-embd", 1, &p.n_embd, false, 0},   {"--n-layer", 1, &p.n_layer, false, 0},
        {"--n-head", 1, &p.n_head, false, 0},   {"--n-head-kv", 1, &p.n_head_kv, false, 0},
        {"--n-ff", 1, &p.n_ff, false, 0},       {"--n-ctx", 1, &p.n_ctx_train, false, 0},
        {"--n-vocab", 0, &p.n_vocab, false, 0},
    };
    const size_t n_ov = sizeof(ov) / sizeof(ov[0]);

    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        int rc = 0;
        size_t k = 0;
        while (k < n_ov && strcmp(a, ov[k].flag) != 0) k++;
        if (k < n_ov) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, ov[k].min, 1 << 20, &ov[k].value);
            ov[k].set = true;
        } else if (tool_arg_is(a, "-h", "--help")) {
            help = true;
        } else if (tool_arg_is(a, "-o", "--output")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) out = v;
        } else if (tool_arg_is(a, NULL, "--preset")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) preset = v;
        } else if (tool_arg_is(a, NULL, "--vocab")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) vocab = v;
        } else if (tool_arg_is(a, NULL, "--type")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) {
                type = cs_type_from_name(v);
                if (type < 0) {
                    char names[256];
                    tool_error("%s: '%s' is not a weight type (%s)", a, v,
                               tool_weight_type_names(names, sizeof names, false));
                    rc = TOOL_EXIT_USAGE;
                }
            }
        } else if (tool_arg_is(a, NULL, "--seed")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) rc = tool_parse_i64(a, v, 0, INT64_MAX, &seed);
        } else if (tool_arg_is(a, NULL, "--tied")) {
            tied = true;
        } else {
            rc = tool_arg_unknown("gen-model", a);
        }
        if (rc != 0) return rc;
    }
    if (help) {
        gen_usage(stdout);
        return TOOL_EXIT_OK;
    }
    if (out == NULL) {
        tool_error("gen-model: -o FILE is required (see 'ctxshift gen-model --help')");
        return TOOL_EXIT_USAGE;
    }
    if (!cs_gen_model_preset(preset, &p)) {
        tool_error("--preset: '%s' is not a preset (tiny, 110m, 1.1b, llama3-1b, smollm2-135m, "
                   "qwen2.5-0.5b, nemo-small)",
                   preset);
        return TOOL_EXIT_USAGE;
    }
    if (vocab == NULL) {
        if (strcmp(preset, "tiny") != 0) {
            tool_error("gen-model: --vocab FILE is required for preset '%s'", preset);
            return TOOL_EXIT_USAGE;
        }
        vocab = CS_DEFAULT_MODEL;
    }
    for (size_t k = 0; k < n_ov; k++) {
        if (ov[k].set) *ov[k].field = ov[k].value;
    }
    p.type = type;
    p.vocab_path = vocab;
    if (seed >= 0) p.seed = (uint64_t)seed;
    if (tied) p.tied_embeddings = true;

    tool_log_setup(false);
    const cs_status st = cs_gen_model_write(&p, out);
    if (st != CS_OK) return tool_fail_lib(st, out);
    fprintf(stderr,
            "gen-model: wrote '%s': preset %s, type %s, n_embd %d, n_layer %d, n_head %d, "
            "n_head_kv %d, n_ff %d, n_ctx %d, vocab '%s'\n",
            out, preset, cs_type_name(p.type), (int)p.n_embd, (int)p.n_layer, (int)p.n_head,
            (int)p.n_head_kv, (int)p.n_ff, (int)p.n_ctx_train, vocab);
    return TOOL_EXIT_OK;
}
