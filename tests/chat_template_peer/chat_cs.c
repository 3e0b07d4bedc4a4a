/* chat_cs.c: ctxshift's side of the chat template peer test: renders
 * chats.h's conversations with cs_chat_apply_template. Usage:
 *   chat_cs names        the names cs_chat_template_name lists
 *   chat_cs name NAME    render with the format NAME
 *   chat_cs file PATH    detect the format of the template string in PATH
 *                        (cs_chat_template_detect), print "detected NAME"
 *                        on stderr, and render with it; exit 3 when
 *                        no format matches
 * It also checks, for every rendering, that the segments concatenate to
 * the flat string (exit 1 otherwise). */
#include "chats.h"

#include <ctxshift.h>
#include <stdlib.h>

static void render_all(const char *name) {
    static char buf[1 << 16];
    static cs_chat_segment segs[1024];
    for (int c = 0; c < N_CHATS; c++) {
        cs_chat_message msgs[6];
        for (int i = 0; i < k_chats[c].n; i++)
            msgs[i] = (cs_chat_message){k_chats[c].msgs[i].role, k_chats[c].msgs[i].content};
        for (int add = 0; add <= 1; add++) {
            int32_t len =
                cs_chat_apply_template(name, msgs, (size_t)k_chats[c].n, add, buf, sizeof buf);
            int32_t n = cs_chat_apply_segments(name, msgs, (size_t)k_chats[c].n, add, segs, 1024);
            if (len < 0 || n < 0 || len >= (int32_t)sizeof buf || n > 1024) {
                fprintf(stderr, "chat_cs: %s on chat %d: %s\n", name, c, cs_last_error());
                exit(1);
            }
            size_t at = 0;
            for (int32_t i = 0; i < n; i++) {
                if (at + segs[i].len > (size_t)len ||
                    memcmp(buf + at, segs[i].text, segs[i].len) != 0) {
                    fprintf(stderr, "chat_cs: %s on chat %d: segment %d differs\n", name, c, i);
                    exit(1);
                }
                at += segs[i].len;
            }
            if (at != (size_t)len) {
                fprintf(stderr, "chat_cs: %s on chat %d: segments hold %zu of %d bytes\n", name, c,
                        at, len);
                exit(1);
            }
            chat_record(c, add, buf, len);
        }
    }
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "names") == 0) {
        for (int32_t i = 0; cs_chat_template_name(i); i++) printf("%s\n", cs_chat_template_name(i));
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "name") == 0) {
        render_all(argv[2]);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "file") == 0) {
        const char *tmpl = chat_read_file(argv[2]);
        const char *name = NULL;
        if (!tmpl || cs_chat_template_detect(tmpl, &name) != CS_OK) {
            fprintf(stderr, "chat_cs: cannot read %s\n", argv[2]);
            return 1;
        }
        if (!name) {
            fprintf(stderr, "detected unknown\n");
            return 3;
        }
        fprintf(stderr, "detected %s\n", name);
        render_all(name);
        return 0;
    }
    fprintf(stderr, "usage: chat_cs names | name NAME | file PATH\n");
    return 2;
}
