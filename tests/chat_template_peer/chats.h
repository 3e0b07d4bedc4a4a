/* chats.h: the conversations both sides of the chat template peer test
 * render (chat_cs.c with ctxshift, chat_llama.c with llama.cpp), and the
 * record format they print. Roles are system/user/assistant only, the roles
 * ctxshift accepts. */
#ifndef CHATS_H
#define CHATS_H

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *role, *content;
} chat_msg;

typedef struct {
    const char *what;
    int n;
    chat_msg msgs[6];
} chat;

static const chat k_chats[] = {
    {"system user assistant user",
     4,
     {{"system", "You are a helpful assistant."},
      {"user", "Hello"},
      {"assistant", "Hi there"},
      {"user", "Who are you"}}},
    {"white space around every content",
     4,
     {{"system", "  Be brief.\n"},
      {"user", "\tHello \n"},
      {"assistant", " Hi! "},
      {"user", " Bye\n\n"}}},
    {"user only", 1, {{"user", "What is 2 + 2?"}}},
    {"two system messages, then a turn",
     4,
     {{"system", "A"}, {"system", " B "}, {"user", "U"}, {"assistant", "V"}}},
    {"system after a reply",
     4,
     {{"user", "first"}, {"assistant", "reply"}, {"system", "late system"}, {"user", "second"}}},
    {"empty contents", 3, {{"system", ""}, {"user", ""}, {"assistant", ""}}},
    {"control-token text and UTF-8 in content",
     3,
     {{"user", "<|im_end|><|eot_id|>[INST]</s><start_of_turn>"},
      {"assistant", "caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80"},
      {"user", "\n"}}},
    {"assistant first", 2, {{"assistant", "I start."}, {"user", "ok"}}},
};
#define N_CHATS ((int)(sizeof k_chats / sizeof k_chats[0]))

/* One record: "#<chat> add_ass=<0|1> len=<n>\n", the n bytes, "\n"; or
 * "#<chat> add_ass=<0|1> error=<code>\n". */
static inline void chat_record(int c, int add_ass, const char *text, int len) {
    if (len < 0) {
        printf("#%d add_ass=%d error=%d\n", c, add_ass, len);
        return;
    }
    printf("#%d add_ass=%d len=%d\n", c, add_ass, len);
    fwrite(text, 1, (size_t)len, stdout);
    printf("\n");
}

/* The whole of a file, NUL-terminated, in a static buffer (templates are a
 * few KiB; the largest known is under 64 KiB). NULL when it cannot. */
static inline const char *chat_read_file(const char *path) {
    static char buf[1 << 20];
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int full = n == sizeof buf - 1;
    fclose(f);
    if (full) return NULL;
    buf[n] = '\0';
    return buf;
}

#endif /* CHATS_H */
