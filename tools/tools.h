/* tools.h: entry points of the ctxshift subcommands (tools/cmd_*.c).
 *
 * Each takes the arguments after the subcommand name (argv[0] is the
 * subcommand itself) and returns the process exit code: 0 ok, 1 runtime
 * failure, 2 usage error. "--help" prints the usage to stdout and returns 0.
 *
 * Adding a subcommand is a file and a row: write tools/cmd_NAME.c with
 * `int cmd_NAME(int argc, char **argv)`, declare it here, and add a row
 * {"NAME", cmd_NAME, "summary"} to the command table in tools/main.c (the
 * build globs the .c files of tools/). The file reads as its phases: an options
 * struct that embeds tool_common (args.h) and starts from
 * tool_common_defaults(TOOL_FLAG_...) with its own defaults by field name;
 * a parse loop that hands each argument to tool_parse_common first, then
 * its own flags, then tool_arg_unknown; tool_begin for --help and -v;
 * tool_load_model, tool_context_new and tool_decode (tool_context.h) for
 * the model, the context and every decode; the work; the report; one
 * cleanup label. Tools use only the public API (include/ctxshift.h). */
#ifndef CS_TOOLS_H
#define CS_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* `ctxshift bench kv`: KV cache operation costs (tools/cmd_bench_kv.c). */
int cmd_bench_kv(int argc, char **argv);
/* `ctxshift bench mem`: memory read bandwidth (tools/cmd_bench_mem.c). */
int cmd_bench_mem(int argc, char **argv);
/* Its read probe, also run by `ctxshift bench --mem-pair` between tokens.
 * bench_mem_buffer: an anonymous mapping of bytes (>= 8), transparent huge
 * pages unless small, every page written; *huge_frac the share the kernel
 * gave in huge pages. NULL when the mapping fails. Free it with
 * bench_mem_buffer_free (NULL allowed). bench_mem_pass: nt threads (1..256,
 * created for the pass, pinned to nothing like the engine's pool) each sum a
 * contiguous share of the first words words; returns the pass's seconds
 * (thread start to last join), < 0 after printing why (tool_error) when a
 * thread cannot start, nt is out of range or the sums differ from what
 * bench_mem_buffer wrote (a wrong read loop); adds the sums to *sink
 * (keeps the reads). Cost: one read of the buffer, about 30 ms per GiB
 * on one core of a 33 GB/s machine.
 * bench_mem_loop: the name of the read loop the passes use on this CPU
 * (e.g. "avx2 4x32B"; a static string). */
enum { BENCH_MEM_MAX_THREADS = 256 };
uint64_t *bench_mem_buffer(size_t bytes, bool small, double *huge_frac);
void bench_mem_buffer_free(uint64_t *buf, size_t bytes);
double bench_mem_pass(const uint64_t *buf, size_t words, int32_t nt, uint64_t *sink);
const char *bench_mem_loop(void);
/* Sorts v[0..n) ascending (n >= 1) and returns its median (the mean of the
 * middle two for even n). O(n log n). */
double bench_sort_median(double *v, size_t n);
int cmd_perplexity(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_gen_model(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_parallel(int argc, char **argv);
int cmd_passkey(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
/* `ctxshift serve`: the HTTP server (tools/cmd_serve.c, serve_*.c). */
int cmd_serve(int argc, char **argv);
/* `ctxshift chat`: a conversation in the terminal (tools/cmd_chat.c). */
int cmd_chat(int argc, char **argv);

#ifndef CS_DEFAULT_MODEL
/* CMake defines the absolute path of the bundled model; this fallback is
 * relative to the repository root. */
#define CS_DEFAULT_MODEL "models/stories260K-f32.gguf"
#endif

#endif /* CS_TOOLS_H */
