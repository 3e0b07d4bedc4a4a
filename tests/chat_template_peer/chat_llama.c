/* chat_llama.c: llama.cpp's side of the chat template peer test: renders
 * chats.h's conversations with llama_chat_apply_template of node-llama-cpp's
 * prebuilt libllama. Usage:
 *   chat_llama names        the names llama_chat_builtin_templates lists
 *   chat_llama name NAME    render with the built-in template NAME
 *   chat_llama file PATH    render with the template string in PATH
 *                           (llama.cpp detects the format itself)
 * Compiled by tests/chat_template_peer_test.sh (peer_build). */
#include "chats.h"

#include <llama.h>
#include <stdlib.h>

static void render_all(const char *tmpl) {
    static char buf[1 << 16];
    for (int c = 0; c < N_CHATS; c++) {
        struct llama_chat_message msgs[6];
        for (int i = 0; i < k_chats[c].n; i++)
            msgs[i] =
                (struct llama_chat_message){k_chats[c].msgs[i].role, k_chats[c].msgs[i].content};
        for (int add = 0; add <= 1; add++) {
            int32_t len = llama_chat_apply_template(tmpl, msgs, (size_t)k_chats[c].n, add, buf,
                                                    (int32_t)sizeof buf);
            if (len >= (int32_t)sizeof buf) {
                fprintf(stderr, "chat_llama: rendering of %d bytes\n", len);
                exit(1);
            }
            chat_record(c, add, buf, len);
        }
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "names") == 0) {
        const char *names[256];
        int32_t n = llama_chat_builtin_templates(names, 256);
        for (int32_t i = 0; i < n && i < 256; i++) printf("%s\n", names[i]);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "name") == 0) {
        render_all(argv[2]);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "file") == 0) {
        const char *tmpl = chat_read_file(argv[2]);
        if (!tmpl) {
            fprintf(stderr, "chat_llama: cannot read %s\n", argv[2]);
            return 1;
        }
        render_all(tmpl);
        return 0;
    }
    fprintf(stderr, "usage: chat_llama names | name NAME | file PATH\n");
    return 2;
}
