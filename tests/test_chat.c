/* Chat template tests. ChatML goldens below were rendered once with the real Qwen2.5-Instruct
 * chat template via jinja2 (not the Qwen3 template, which has no default system message and
 * handles <think>); Llama-3 expectations are hand-written from the Llama-3-Instruct template. */
#include <string.h>

#include "llm/chat.h"
#include "tests/check.h"

/* Rendered with the real Qwen2.5-Instruct chat template (tokenizer_config.json chat_template)
 * via jinja2 (trim_blocks, lstrip_blocks as in transformers). qwen25: the template as is;
 * qwen2: the same template with its default system text replaced by "You are a helpful
 * assistant." (Qwen2-Instruct / Qwen2.5-Omni default, our NULL default). */
typedef struct golden { const char *name; int n; osc_chat_msg msgs[6]; int gen; const char *qwen25; const char *qwen2; } golden;
static const golden k_golden[] = {
    {"user only, generation prompt", 1, {{"user", "Hello!"}}, 1,
        "<|im_start|>system\n"
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "Hello!<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|im_start|>system\n"
        "You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "Hello!<|im_end|>\n"
        "<|im_start|>assistant\n"},
    {"system + user", 2, {{"system", "You are a pirate."}, {"user", "Where is the treasure?"}}, 1,
        "<|im_start|>system\n"
        "You are a pirate.<|im_end|>\n"
        "<|im_start|>user\n"
        "Where is the treasure?<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|im_start|>system\n"
        "You are a pirate.<|im_end|>\n"
        "<|im_start|>user\n"
        "Where is the treasure?<|im_end|>\n"
        "<|im_start|>assistant\n"},
    {"multi-turn", 4, {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello! How can I help?"}, {"user", "What is 2+2?"}}, 1,
        "<|im_start|>system\n"
        "Be brief.<|im_end|>\n"
        "<|im_start|>user\n"
        "Hi<|im_end|>\n"
        "<|im_start|>assistant\n"
        "Hello! How can I help?<|im_end|>\n"
        "<|im_start|>user\n"
        "What is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|im_start|>system\n"
        "Be brief.<|im_end|>\n"
        "<|im_start|>user\n"
        "Hi<|im_end|>\n"
        "<|im_start|>assistant\n"
        "Hello! How can I help?<|im_end|>\n"
        "<|im_start|>user\n"
        "What is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"},
    {"unicode, no generation prompt", 2, {{"user", "你好，世界 🌍 — café?"}, {"assistant", "¡Hola! ✓ Ça va."}}, 0,
        "<|im_start|>system\n"
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "你好，世界 🌍 — café?<|im_end|>\n"
        "<|im_start|>assistant\n"
        "¡Hola! ✓ Ça va.<|im_end|>\n",
        "<|im_start|>system\n"
        "You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "你好，世界 🌍 — café?<|im_end|>\n"
        "<|im_start|>assistant\n"
        "¡Hola! ✓ Ça va.<|im_end|>\n"},
    {"empty contents", 2, {{"user", ""}, {"assistant", ""}}, 1,
        "<|im_start|>system\n"
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "<|im_end|>\n"
        "<|im_start|>assistant\n"
        "<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|im_start|>system\n"
        "You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "<|im_end|>\n"
        "<|im_start|>assistant\n"
        "<|im_end|>\n"
        "<|im_start|>assistant\n"},
    {"whitespace kept verbatim", 2, {{"user", "  spaced out \n\n"}, {"assistant", "\nok\t"}}, 1,
        "<|im_start|>system\n"
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "  spaced out \n"
        "\n"
        "<|im_end|>\n"
        "<|im_start|>assistant\n"
        "\n"
        "ok\t<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|im_start|>system\n"
        "You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "  spaced out \n"
        "\n"
        "<|im_end|>\n"
        "<|im_start|>assistant\n"
        "\n"
        "ok\t<|im_end|>\n"
        "<|im_start|>assistant\n"},
    {"system not first", 3, {{"user", "a"}, {"system", "b"}, {"user", "c"}}, 1,
        "<|im_start|>system\n"
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "a<|im_end|>\n"
        "<|im_start|>system\n"
        "b<|im_end|>\n"
        "<|im_start|>user\n"
        "c<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|im_start|>system\n"
        "You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "a<|im_end|>\n"
        "<|im_start|>system\n"
        "b<|im_end|>\n"
        "<|im_start|>user\n"
        "c<|im_end|>\n"
        "<|im_start|>assistant\n"},
    {"tool results", 5, {{"user", "weather?"}, {"assistant", "Checking."}, {"tool", "{\"t\": 21}"}, {"tool", "sunny"}, {"user", "thanks"}}, 1,
        "<|im_start|>system\n"
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "weather?<|im_end|>\n"
        "<|im_start|>assistant\n"
        "Checking.<|im_end|>\n"
        "<|im_start|>user\n"
        "<tool_response>\n"
        "{\"t\": 21}\n"
        "</tool_response>\n"
        "<tool_response>\n"
        "sunny\n"
        "</tool_response><|im_end|>\n"
        "<|im_start|>user\n"
        "thanks<|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|im_start|>system\n"
        "You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "weather?<|im_end|>\n"
        "<|im_start|>assistant\n"
        "Checking.<|im_end|>\n"
        "<|im_start|>user\n"
        "<tool_response>\n"
        "{\"t\": 21}\n"
        "</tool_response>\n"
        "<tool_response>\n"
        "sunny\n"
        "</tool_response><|im_end|>\n"
        "<|im_start|>user\n"
        "thanks<|im_end|>\n"
        "<|im_start|>assistant\n"},
};

static const char k_q25_default[] = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

static int str_eq(const char *got, const char *want, const char *what) {
    if (got && strcmp(got, want) == 0) return 1;
    fprintf(stderr, "--- %s\n--- want:\n%s\n--- got:\n%s\n", what, want, got ? got : "(null)");
    return 0;
}

static char *render(osc_chat_format f, const osc_chat_msg *m, int n, int gen, const char *sys) {
    char *out = NULL;
    osc_status st = osc_chat_render(f, m, n, gen, sys, &out);
    if (st != OSC_OK) fprintf(stderr, "render: %s\n", osc_last_error());
    return out;
}

static char *render_turn(osc_chat_format f, const osc_chat_msg *m, int gen) {
    char *out = NULL;
    osc_status st = osc_chat_render_turn(f, m, gen, &out);
    if (st != OSC_OK) fprintf(stderr, "render_turn: %s\n", osc_last_error());
    return out;
}

/* a + b as a new malloc'd string */
static char *cat2(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *r = malloc(na + nb + 1);
    memcpy(r, a, na);
    memcpy(r + na, b, nb + 1);
    return r;
}

int main(void) {
    /* ---- ChatML against the Qwen2.5 template goldens ---- */
    for (size_t g = 0; g < sizeof k_golden / sizeof k_golden[0]; g++) {
        const golden *t = &k_golden[g];
        char *a = render(OSC_CHAT_CHATML, t->msgs, t->n, t->gen, k_q25_default);
        CHECK(str_eq(a, t->qwen25, t->name), "qwen2.5 default system: %s", t->name);
        free(a);
        char *b = render(OSC_CHAT_CHATML, t->msgs, t->n, t->gen, NULL);
        CHECK(str_eq(b, t->qwen2, t->name), "NULL default system: %s", t->name);
        free(b);
    }

    /* ---- default system prompts ---- */
    CHECK(strcmp(osc_chat_default_system(OSC_CHAT_CHATML, 0), "You are a helpful assistant.") == 0,
          "chatml default");
    CHECK(strcmp(osc_chat_default_system(OSC_CHAT_CHATML, 1),
                 "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable "
                 "of perceiving auditory and visual inputs, as well as generating text and speech.") == 0,
          "omni default");
    CHECK(osc_chat_default_system(OSC_CHAT_LLAMA3, 0) == NULL, "llama3 has no default system");
    {
        osc_chat_msg m[] = {{"user", "What is in this picture?"}};
        char *s = render(OSC_CHAT_CHATML, m, 1, 1, osc_chat_default_system(OSC_CHAT_CHATML, 1));
        CHECK(str_eq(s,
                     "<|im_start|>system\nYou are Qwen, a virtual human developed by the Qwen Team, "
                     "Alibaba Group, capable of perceiving auditory and visual inputs, as well as "
                     "generating text and speech.<|im_end|>\n<|im_start|>user\nWhat is in this "
                     "picture?<|im_end|>\n<|im_start|>assistant\n", "omni"), "omni render");
        free(s);
        /* n == 0: just the default system turn (+ generation prompt) */
        s = render(OSC_CHAT_CHATML, NULL, 0, 1, NULL);
        CHECK(str_eq(s, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        "<|im_start|>assistant\n", "empty"), "n=0");
        free(s);
        /* NULL content renders as "" */
        osc_chat_msg mn[] = {{"system", NULL}, {"user", NULL}};
        s = render(OSC_CHAT_CHATML, mn, 2, 0, NULL);
        CHECK(str_eq(s, "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|im_end|>\n", "null"),
              "NULL content");
        free(s);
    }

    /* ---- Llama-3 (hand-written expectations) ---- */
    {
        osc_chat_msg m[] = {{"system", "  You are terse.\n"}, {"user", "\tHi there \n\n"},
                            {"assistant", "Hello."}, {"user", "Bye"}};
        char *s = render(OSC_CHAT_LLAMA3, m, 4, 1, NULL);
        CHECK(str_eq(s,
                     "<|begin_of_text|>"
                     "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n", "llama3"),
              "llama3 multi-turn");
        free(s);
        /* no default system message; no generation prompt */
        osc_chat_msg u[] = {{"user", "héllo ✓"}};
        s = render(OSC_CHAT_LLAMA3, u, 1, 0, NULL);
        CHECK(str_eq(s, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhéllo ✓<|eot_id|>",
                     "llama3 user"), "llama3 no system");
        free(s);
        /* an explicit default system is inserted when the first message is not system */
        s = render(OSC_CHAT_LLAMA3, u, 1, 1, "Be nice.");
        CHECK(str_eq(s, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe nice.<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nhéllo ✓<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n", "llama3 sys"),
              "llama3 explicit default system");
        free(s);
        /* whitespace-only and empty contents strip to "" */
        osc_chat_msg w[] = {{"user", " \n\t "}, {"assistant", ""}};
        s = render(OSC_CHAT_LLAMA3, w, 2, 0, NULL);
        CHECK(str_eq(s, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>", "llama3 ws"),
              "llama3 whitespace");
        free(s);
    }

    /* ---- render_turn: prefix + reply + turn == full render ---- */
    for (int f = 0; f < 2; f++) {
        osc_chat_format fmt = f ? OSC_CHAT_LLAMA3 : OSC_CHAT_CHATML;
        osc_chat_msg conv[] = {{"system", "Be brief."}, {"user", "Hi"},
                               {"assistant", "Hello! How can I help?"}, {"user", "What is 2+2?"},
                               {"assistant", "4"}, {"user", "Thanks ✓"}};
        /* turn 1 rendered in full, then the reply, then turns appended one at a time */
        char *acc = render(fmt, conv, 2, 1, NULL);
        for (int k = 2; k + 1 < 6; k += 2) {
            char *t1 = cat2(acc, conv[k].content); /* the generated reply, without its stop token */
            free(acc);
            char *turn = render_turn(fmt, &conv[k + 1], 1);
            acc = cat2(t1, turn);
            free(t1);
            free(turn);
            char *full = render(fmt, conv, k + 2, 1, NULL);
            CHECK(str_eq(acc, full, "render_turn"), "render_turn fmt %d after %d msgs", f, k + 2);
            free(full);
        }
        free(acc);
        /* turn without generation prompt, and the closing text */
        osc_chat_msg u = {"user", "x"};
        char *t = render_turn(fmt, &u, 0);
        const char *want = f ? "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>"
                             : "<|im_end|>\n<|im_start|>user\nx<|im_end|>\n";
        CHECK(str_eq(t, want, "turn"), "render_turn no gen fmt %d", f);
        CHECK(t && strncmp(t, osc_chat_turn_close(fmt), strlen(osc_chat_turn_close(fmt))) == 0,
              "turn starts with the close text");
        free(t);
    }
    {
        /* ChatML tool turn */
        osc_chat_msg tm = {"tool", "42"};
        char *t = render_turn(OSC_CHAT_CHATML, &tm, 1);
        CHECK(str_eq(t, "<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n"
                        "<|im_start|>assistant\n", "tool turn"), "tool turn");
        free(t);
    }

    /* ---- errors ---- */
    {
        char *out = (char *)1;
        osc_chat_msg bad[] = {{NULL, "x"}};
        CHECK(osc_chat_render(OSC_CHAT_CHATML, bad, 1, 1, NULL, &out) == OSC_ERR_INVALID_ARG &&
              out == NULL, "NULL role");
        osc_chat_msg forged[] = {{"user<|im_end|>", "x"}};
        CHECK(osc_chat_render(OSC_CHAT_CHATML, forged, 1, 1, NULL, &out) == OSC_ERR_INVALID_ARG,
              "forged role");
        CHECK(osc_chat_render(OSC_CHAT_CHATML, NULL, 2, 1, NULL, &out) == OSC_ERR_INVALID_ARG,
              "NULL msgs");
        CHECK(osc_chat_render(OSC_CHAT_CHATML, bad, -1, 1, NULL, &out) == OSC_ERR_INVALID_ARG, "n<0");
        CHECK(osc_chat_render((osc_chat_format)7, NULL, 0, 1, NULL, &out) == OSC_ERR_INVALID_ARG,
              "bad format");
        CHECK(osc_chat_render(OSC_CHAT_CHATML, NULL, 0, 1, NULL, NULL) == OSC_ERR_INVALID_ARG, "NULL out");
        CHECK(osc_chat_render_turn(OSC_CHAT_CHATML, NULL, 1, &out) == OSC_ERR_INVALID_ARG, "NULL msg");
        CHECK(osc_chat_turn_close((osc_chat_format)7) == NULL, "bad format close");
    }

    return check_done("test_chat");
}
