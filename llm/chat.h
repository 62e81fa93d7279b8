/* Chat templates: render chat messages into the prompt text a model was trained on. Pure string
 * building; the tokenizer parses the special-token strings (<|im_start|> ...) afterwards.
 *
 * OSC_CHAT_CHATML follows the Qwen2.5-Instruct chat template (tokenizer_config.json of
 * Qwen2.5-*-Instruct), plain-messages path (no tools):
 *   - if the first message is not "system": "<|im_start|>system\n{default_system}<|im_end|>\n";
 *   - every message: "<|im_start|>{role}\n{content}<|im_end|>\n" (content verbatim, not stripped);
 *     role "tool" is rendered as Qwen2.5 does: consecutive tool messages share one user turn,
 *     "<|im_start|>user" + ("\n<tool_response>\n{content}\n</tool_response>")... + "<|im_end|>\n";
 *   - generation prompt: "<|im_start|>assistant\n".
 *   Qwen2.5-Instruct's own default system is "You are Qwen, created by Alibaba Cloud. You are a
 *   helpful assistant."; Qwen2-Instruct and Qwen2.5-Omni use "You are a helpful assistant.", which
 *   is our default (default_system == NULL). Qwen3's template differs (no default system, <think>
 *   handling) and is not what this renders.
 * OSC_CHAT_LLAMA3 follows the Llama-3-Instruct template:
 *   "<|begin_of_text|>" then per message
 *   "<|start_header_id|>{role}<|end_header_id|>\n\n{content stripped of leading/trailing ASCII
 *   whitespace}<|eot_id|>"; generation prompt "<|start_header_id|>assistant<|end_header_id|>\n\n".
 *   No default system message (default_system == NULL); a non-NULL default_system is inserted as a
 *   system message when the first message is not "system".
 *
 * Ownership: *out is malloc'd and owned by the caller (free()). On error *out is NULL.
 * Errors: OSC_ERR_INVALID_ARG (NULL out/msgs with n > 0, n < 0, NULL or empty role, unknown
 * format, a role containing a newline or '<|' -- it would forge template structure),
 * OSC_ERR_OOM. NULL content renders as "". Thread-safe (no shared state).
 */
#ifndef OSC_LLM_CHAT_H
#define OSC_LLM_CHAT_H

#include "core/status.h"

typedef enum { OSC_CHAT_CHATML = 0, OSC_CHAT_LLAMA3 = 1 } osc_chat_format;

typedef struct osc_chat_msg {
    const char *role;    /* "system", "user", "assistant" (ChatML also "tool") */
    const char *content; /* UTF-8 text; NULL = "" */
} osc_chat_msg;

/* Render msgs[0..n) into a full prompt. add_generation_prompt: append the assistant header.
 * default_system: ChatML system text used when msgs[0] is not "system" (NULL -> "You are a
 * helpful assistant."); for Llama-3 see above (NULL -> none). n == 0 is allowed (ChatML then
 * renders just the default system turn, as the Qwen template does). */
osc_status osc_chat_render(osc_chat_format fmt, const osc_chat_msg *msgs, int n,
                           int add_generation_prompt, const char *default_system, char **out);

/* The text to append one more message to a conversation already fed to the model, for multi-turn
 * sessions that keep their KV cache.
 * What the caller has already emitted: a rendering that ended with the generation prompt
 * (osc_chat_render(..., add_generation_prompt=1) or a previous osc_chat_render_turn(..., 1)),
 * followed by the assistant's reply tokens WITHOUT the end-of-turn token that stopped generation
 * (ChatML <|im_end|>, Llama-3 <|eot_id|>: sampled, but not yet fed through the model).
 * The returned text therefore starts by closing that assistant turn with exactly
 * osc_chat_turn_close(fmt), then renders msg, then (if add_generation_prompt) the assistant
 * header:
 *   ChatML:  "<|im_end|>\n" "<|im_start|>{role}\n{content}<|im_end|>\n" ["<|im_start|>assistant\n"]
 *   Llama-3: "<|eot_id|>" "<|start_header_id|>{role}<|end_header_id|>\n\n{stripped}<|eot_id|>"
 *            ["<|start_header_id|>assistant<|end_header_id|>\n\n"]
 * A caller that did feed the end-of-turn token skips the first strlen(osc_chat_turn_close(fmt))
 * bytes. With that, render(msgs + {assistant, reply}) + render_turn(next) is byte-identical to
 * render(msgs + {assistant, reply} + next) (Llama-3: when the reply has no edge whitespace).
 * role "tool" is rendered as its own user turn (no merging with a preceding tool message). */
osc_status osc_chat_render_turn(osc_chat_format fmt, const osc_chat_msg *msg,
                                int add_generation_prompt, char **out);

/* The text that closes an assistant turn: ChatML "<|im_end|>\n", Llama-3 "<|eot_id|>". NULL for an
 * unknown format. Static string. */
const char *osc_chat_turn_close(osc_chat_format fmt);

/* Default system prompt. ChatML: omni=1 -> the official Qwen2.5-Omni system prompt ("You are
 * Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory
 * and visual inputs, as well as generating text and speech."; audio output requires it), omni=0 ->
 * "You are a helpful assistant.". Llama-3: NULL (no default system message). Static string. */
const char *osc_chat_default_system(osc_chat_format fmt, int omni);

#endif
