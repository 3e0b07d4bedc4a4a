/* cmd_tokenize.c: `ctxshift tokenize`, the tokens of a text, printed as
 * llama-tokenize prints them. Loads only the vocabulary, so vocab-only GGUF
 * files work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "tools.h"

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: ctxshift tokenize [flags]\n"
            "\n"
            "Print the tokens of a text: one \"id -> 'piece'\" line per token, or with --ids a\n"
            "list like [1, 403, 407].\n"
            "\n"
            "  -m, --model FILE      GGUF model or vocab-only file (default: %s)\n"
            "  -p, --prompt TEXT     the text\n"
            "  -f, --file FILE       read the text from a file\n"
            "      --no-bos          do not add BOS (or other special tokens the vocabulary adds)\n"
            "      --parse-special   turn the text of control tokens (\"<s>\") into those tokens\n"
            "      --ids             print only the ids, as a list\n"
            "      --show-count      print the number of tokens at the end\n"
            "  -h, --help            print this help\n",
            CS_DEFAULT_MODEL);
}

int cmd_tokenize(int argc, char **argv) {
    const char *model_path = CS_DEFAULT_MODEL;
    const char *prompt = NULL;
    const char *file = NULL;
    bool no_bos = false, parse_special = false, ids = false, show_count = false, help = false;
    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        int rc = 0;
        if (tool_arg_is(a, "-h", "--help")) {
            help = true;
        } else if (tool_arg_is(a, "-m", "--model")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) model_path = v;
        } else if (tool_arg_is(a, "-p", "--prompt")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) prompt = v;
        } else if (tool_arg_is(a, "-f", "--file")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) file = v;
        } else if (tool_arg_is(a, NULL, "--no-bos")) {
            no_bos = true;
        } else if (tool_arg_is(a, NULL, "--parse-special")) {
            parse_special = true;
        } else if (tool_arg_is(a, NULL, "--ids")) {
            ids = true;
        } else if (tool_arg_is(a, NULL, "--show-count")) {
            show_count = true;
        } else {
            rc = tool_arg_unknown("tokenize", a);
        }
        if (rc != 0) return rc;
    }
    if (help) {
        tokenize_usage(stdout);
        return TOOL_EXIT_OK;
    }
    if ((prompt == NULL) == (file == NULL)) {
        tool_error("tokenize: give exactly one of -p TEXT and -f FILE");
        return TOOL_EXIT_USAGE;
    }
    tool_log_setup(false);

    int rc = TOOL_EXIT_FAIL;
    char *file_text = NULL;
    size_t len = 0;
    cs_model *model = NULL;
    cs_token *tokens = NULL;
    int32_t n = 0;
    char *piece = NULL;
    size_t piece_cap = 0;
    if (file != NULL) {
        if ((rc = tool_read_file(file, &file_text, &len)) != 0) goto done;
        prompt = file_text;
    } else {
        len = strlen(prompt);
    }
    if ((rc = tool_load_model(model_path, true, &model)) != 0) goto done;
    if ((rc = tool_tokenize(model, prompt, len, !no_bos, parse_special, &tokens, &n)) != 0)
        goto done;
    rc = TOOL_EXIT_FAIL;
    if (ids) {
        putchar('[');
        for (int32_t i = 0; i < n; i++) printf("%s%d", i > 0 ? ", " : "", (int)tokens[i]);
        printf("]\n");
    } else {
        for (int32_t i = 0; i < n; i++) {
            const int32_t np = tool_token_piece(model, tokens[i], true, &piece, &piece_cap);
            if (np < 0) {
                tool_error("tokenize: cannot get the text of token %d", (int)tokens[i]);
                goto done;
            }
            printf("%6d -> '", (int)tokens[i]);
            fwrite(piece, 1, (size_t)np, stdout);
            printf("'\n");
        }
    }
    if (show_count) printf("Total number of tokens: %d\n", (int)n);
    rc = TOOL_EXIT_OK;
done:
    free(piece);
    free(tokens);
    cs_model_free(model);
    free(file_text);
    return rc;
}
