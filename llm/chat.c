/* Chat templates (see chat.h). The ChatML path follows the Qwen2.5-Instruct chat template's
 * plain-messages branch (checked against it rendered with jinja2, tests/test_chat.c). */
#include "llm/chat.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char k_default_chatml[] = "You are a helpful assistant.";
static const char k_default_omni[] =
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
    "perceiving auditory and visual inputs, as well as generating text and speech.";

const char *osc_chat_default_system(osc_chat_format fmt, int omni) {
    if (fmt == OSC_CHAT_CHATML) return omni ? k_default_omni : k_default_chatml;
    return NULL;
}

const char *osc_chat_turn_close(osc_chat_format fmt) {
    switch (fmt) {
    case OSC_CHAT_CHATML: return "<|im_end|>\n";
    case OSC_CHAT_LLAMA3: return "<|eot_id|>";
    }
    return NULL;
}

/* ---- growable string ---- */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (n > SIZE_MAX - b->len - 1) {
        b->oom = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void sb_put(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

static osc_status sb_finish(sbuf *b, char **out) {
    if (!b->oom && !b->p) sb_putn(b, "", 0);
    if (b->oom) {
        free(b->p);
        return osc_error(OSC_ERR_OOM, "chat: out of memory rendering the prompt");
    }
    *out = b->p;
    return OSC_OK;
}

static int is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Jinja's `| trim` (Python str.strip()) on ASCII whitespace */
static void sb_put_stripped(sbuf *b, const char *s) {
    size_t n = strlen(s), i = 0;
    while (i < n && is_ws(s[i])) i++;
    while (n > i && is_ws(s[n - 1])) n--;
    sb_putn(b, s + i, n - i);
}

static osc_status check_msg(const osc_chat_msg *m, int idx) {
    if (!m->role || !m->role[0])
        return osc_error(OSC_ERR_INVALID_ARG, "chat: message %d has no role", idx);
    if (strchr(m->role, '\n') || strstr(m->role, "<|"))
        return osc_error(OSC_ERR_INVALID_ARG, "chat: message %d: bad role \"%.40s\"", idx, m->role);
    return OSC_OK;
}

static const char *content_of(const osc_chat_msg *m) { return m->content ? m->content : ""; }

/* ChatML message, generic path: <|im_start|>{role}\n{content}<|im_end|>\n */
static void chatml_msg(sbuf *b, const char *role, const char *content) {
    sb_put(b, "<|im_start|>");
    sb_put(b, role);
    sb_put(b, "\n");
    sb_put(b, content);
    sb_put(b, "<|im_end|>\n");
}

static void llama3_msg(sbuf *b, const char *role, const char *content) {
    sb_put(b, "<|start_header_id|>");
    sb_put(b, role);
    sb_put(b, "<|end_header_id|>\n\n");
    sb_put_stripped(b, content);
    sb_put(b, "<|eot_id|>");
}

osc_status osc_chat_render(osc_chat_format fmt, const osc_chat_msg *msgs, int n,
                           int add_generation_prompt, const char *default_system, char **out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "chat: out is NULL");
    *out = NULL;
    if (n < 0 || (n > 0 && !msgs))
        return osc_error(OSC_ERR_INVALID_ARG, "chat: bad message list (n = %d)", n);
    if (fmt != OSC_CHAT_CHATML && fmt != OSC_CHAT_LLAMA3)
        return osc_error(OSC_ERR_INVALID_ARG, "chat: unknown format %d", (int)fmt);
    for (int i = 0; i < n; i++) OSC_TRY(check_msg(&msgs[i], i));

    sbuf b = {0};
    int first_is_system = n > 0 && strcmp(msgs[0].role, "system") == 0;
    if (fmt == OSC_CHAT_CHATML) {
        if (!first_is_system)
            chatml_msg(&b, "system", default_system ? default_system : k_default_chatml);
        for (int i = 0; i < n; i++) {
            const osc_chat_msg *m = &msgs[i];
            if (strcmp(m->role, "tool") == 0) {
                /* consecutive tool results share one user turn (Qwen2.5 template) */
                if (i == 0 || strcmp(msgs[i - 1].role, "tool") != 0) sb_put(&b, "<|im_start|>user");
                sb_put(&b, "\n<tool_response>\n");
                sb_put(&b, content_of(m));
                sb_put(&b, "\n</tool_response>");
                if (i == n - 1 || strcmp(msgs[i + 1].role, "tool") != 0) sb_put(&b, "<|im_end|>\n");
            } else {
                chatml_msg(&b, m->role, content_of(m));
            }
        }
        if (add_generation_prompt) sb_put(&b, "<|im_start|>assistant\n");
    } else {
        sb_put(&b, "<|begin_of_text|>");
        if (!first_is_system && default_system) llama3_msg(&b, "system", default_system);
        for (int i = 0; i < n; i++) llama3_msg(&b, msgs[i].role, content_of(&msgs[i]));
        if (add_generation_prompt) sb_put(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
    return sb_finish(&b, out);
}

osc_status osc_chat_render_turn(osc_chat_format fmt, const osc_chat_msg *msg,
                                int add_generation_prompt, char **out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "chat: out is NULL");
    *out = NULL;
    if (!msg) return osc_error(OSC_ERR_INVALID_ARG, "chat: message is NULL");
    if (fmt != OSC_CHAT_CHATML && fmt != OSC_CHAT_LLAMA3)
        return osc_error(OSC_ERR_INVALID_ARG, "chat: unknown format %d", (int)fmt);
    OSC_TRY(check_msg(msg, 0));

    sbuf b = {0};
    sb_put(&b, osc_chat_turn_close(fmt));
    if (fmt == OSC_CHAT_CHATML) {
        if (strcmp(msg->role, "tool") == 0) {
            sb_put(&b, "<|im_start|>user\n<tool_response>\n");
            sb_put(&b, content_of(msg));
            sb_put(&b, "\n</tool_response><|im_end|>\n");
        } else {
            chatml_msg(&b, msg->role, content_of(msg));
        }
        if (add_generation_prompt) sb_put(&b, "<|im_start|>assistant\n");
    } else {
        llama3_msg(&b, msg->role, content_of(msg));
        if (add_generation_prompt) sb_put(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
    return sb_finish(&b, out);
}
