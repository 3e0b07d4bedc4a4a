/* main.c: the ctxshift command: dispatch to a subcommand (tools/cmd_*.c). */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "tools.h"

typedef struct tool_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} tool_command;

/* One row per subcommand; tools.h says how to add one. */
static const tool_command tool_commands[] = {
    {"run", cmd_run, "generate text from a prompt (llama-cli style flags)"},
    {"bench", cmd_bench, "measure prompt processing and generation speed (llama-bench style)"},
    {"perplexity", cmd_perplexity, "perplexity of a text file (llama-perplexity's algorithm)"},
    {"info", cmd_info, "describe a GGUF file: metadata and tensors"},
    {"tokenize", cmd_tokenize, "print the tokens of a text"},
    {"gen-model", cmd_gen_model, "write a random-weight llama GGUF model"},
    {"replay", cmd_replay, "replay a llama.cpp golden KV-cache scenario and compare"},
    {"parallel", cmd_parallel, "serve N simulated clients with continuous batching"},
    {"passkey", cmd_passkey, "llama.cpp's passkey retrieval test (self-extend, context shift)"},
    {"quantize", cmd_quantize, "convert a model's weights to f16, q8_0, q4_0, q4_K_M, ..."},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server; clients share one KV cache"},
    {"chat", cmd_chat, "chat with a model in the terminal (chat templates, context shift)"},
};

static void main_usage(FILE *f) {
    fputs("usage: ctxshift <command> [flags]\n"
          "\n"
          "A CPU inference engine for Llama GGUF models with an application-controlled KV cache.\n"
          "\n"
          "commands:\n",
          f);
    for (size_t i = 0; i < sizeof(tool_commands) / sizeof(tool_commands[0]); i++) {
        fprintf(f, "  %-12s %s\n", tool_commands[i].name, tool_commands[i].summary);
    }
    fputs("\n"
          "'ctxshift <command> --help' lists the flags of a command.\n"
          "exit status: 0 ok, 1 runtime failure, 2 usage error.\n",
          f);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        main_usage(stderr);
        return TOOL_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (tool_arg_is(cmd, "-h", "--help") || strcmp(cmd, "help") == 0) {
        main_usage(stdout);
        return TOOL_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        /* The header's version, the loaded library's when it differs, and
         * the kernel table in use (cs_system_info's first field). */
        printf("ctxshift %s", CS_VERSION_STRING);
        if (strcmp(cs_version(), CS_VERSION_STRING) != 0) printf(" (library %s)", cs_version());
        printf(" (%s)\n", cs_system_info());
        return fflush(stdout) == 0 ? TOOL_EXIT_OK : TOOL_EXIT_FAIL;
    }
    for (size_t i = 0; i < sizeof(tool_commands) / sizeof(tool_commands[0]); i++) {
        if (strcmp(cmd, tool_commands[i].name) == 0) {
            const int rc = tool_commands[i].fn(argc - 1, argv + 1);
            if (fflush(stdout) != 0 && rc == TOOL_EXIT_OK) {
                tool_error("writing to stdout failed");
                return TOOL_EXIT_FAIL;
            }
            return rc;
        }
    }
    if (cmd[0] == '-') {
        tool_error("unknown flag '%s' before the command (see 'ctxshift --help')", cmd);
    } else {
        tool_error("unknown command '%s' (see 'ctxshift --help')", cmd);
    }
    return TOOL_EXIT_USAGE;
}
