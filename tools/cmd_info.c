/* cmd_info.c: `ctxshift info FILE`, a description of a GGUF file
 * (cs_gguf_describe): version, metadata and tensors, to stdout. */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "tools.h"

static void info_usage(FILE *f) {
    char names[256];
    fputs("usage: ctxshift info FILE [flags]\n"
          "\n"
          "Describe a GGUF file: version, metadata (long arrays summarized), then each tensor's\n"
          "name, type, shape and offset, and the count of tensors of each type. The file is\n"
          "validated as a model load does; a model file (one with general.architecture) is\n"
          "also loaded, and its family, head sizes (k, v), RoPE kind (norm, neox) and scaling\n"
          "(none, linear, llama3) are shown, or why ctxshift refuses it.\n",
          f);
    fprintf(f, "Weight types ctxshift computes with: %s.\n\n",
            tool_weight_type_names(names, sizeof names, false));
    fputs("  -m, --model FILE     the file (instead of the positional FILE)\n"
          "      --max-array N    print at most N items of an array (default: 16)\n"
          "  -h, --help           print this help\n",
          f);
}

static void info_write(const char *text, void *user) {
    fputs(text, (FILE *)user);
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int32_t max_array = 16;
    bool help = false;
    tool_args it = {argc, argv, 1};
    for (; it.i < argc; it.i++) {
        const char *a = argv[it.i];
        const char *v = NULL;
        int rc = 0;
        if (tool_arg_is(a, "-h", "--help")) {
            help = true;
        } else if (tool_arg_is(a, NULL, "--max-array")) {
            if ((rc = tool_arg_value(&it, &v)) == 0)
                rc = tool_parse_i32(a, v, 0, INT32_MAX, &max_array);
        } else if (tool_arg_is(a, "-m", "--model")) {
            if ((rc = tool_arg_value(&it, &v)) == 0) {
                if (path != NULL) {
                    tool_error("info: more than one file given");
                    rc = TOOL_EXIT_USAGE;
                }
                path = v;
            }
        } else if (a[0] != '-' || strcmp(a, "-") == 0) {
            if (path != NULL) {
                tool_error("info: more than one file given ('%s' and '%s')", path, a);
                rc = TOOL_EXIT_USAGE;
            }
            path = a;
        } else {
            rc = tool_arg_unknown("info", a);
        }
        if (rc != 0) return rc;
    }
    if (help) {
        info_usage(stdout);
        return TOOL_EXIT_OK;
    }
    if (path == NULL) {
        tool_error("info: a GGUF file is required (see 'ctxshift info --help')");
        return TOOL_EXIT_USAGE;
    }
    tool_log_setup(false);
    cs_status st = cs_gguf_describe(path, max_array, info_write, stdout);
    if (st == CS_OK) st = cs_model_describe(path, info_write, stdout);
    fflush(stdout);
    if (st != CS_OK) return tool_fail_lib(st, path);
    return TOOL_EXIT_OK;
}
