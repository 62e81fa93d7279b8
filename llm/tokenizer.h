/* Byte-level BPE tokenizer loaded from a HuggingFace tokenizer.json (Qwen2/2.5/3, Llama-3,
 * GPT-2 style). Encoding matches the `tokenizers` library token for token.
 *
 * Supported tokenizer.json parts:
 *   normalizer     null, NFC, or a Sequence of NFC
 *   pre_tokenizer  ByteLevel (use_regex true: the GPT-2 pattern), or
 *                  Sequence[Split(Regex, Isolated), ByteLevel(use_regex false)] where the regex
 *                  is the Qwen2, Llama-3 or GPT-2 pattern (matched by hand-written code)
 *   model          BPE with merges as "a b" strings or [a, b] arrays, ignore_merges
 *   decoder        ByteLevel (or null)
 *   added_tokens   matched longest-first in the text with HF's lstrip/rstrip/single_word/
 *                  normalized semantics
 * The post_processor is ignored: encode never adds BOS/EOS.
 *
 * Thread-safety: a loaded tokenizer is read-only; any number of threads may encode/decode with
 * it at once. An osc_detok belongs to one thread.
 * Errors: functions return osc_status and set osc_last_error(); load errors read
 * "<path>: <problem>". */
#ifndef OSC_LLM_TOKENIZER_H
#define OSC_LLM_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>
#include "core/status.h"

typedef struct osc_tokenizer osc_tokenizer;

/* Largest tokenizer.json accepted, and the longest token (in bytes) a tokenizer may have. */
#define OSC_TOKENIZER_MAX_FILE (64u << 20)
#define OSC_TOKENIZER_MAX_TOKEN_BYTES 1024

/* Load tokenizer.json. *out is owned by the caller (osc_tokenizer_free). Errors: OSC_ERR_IO
 * (cannot read), OSC_ERR_FORMAT (malformed JSON, missing model/vocab, bad ids, duplicate ids,
 * merges naming unknown tokens, file over OSC_TOKENIZER_MAX_FILE), OSC_ERR_UNSUPPORTED (a model,
 * normalizer, pre-tokenizer, regex or decoder this code does not implement; the message names
 * it), OSC_ERR_OOM. On error *out is NULL. */
osc_status osc_tokenizer_load(const char *tokenizer_json_path, osc_tokenizer **out);
void osc_tokenizer_free(osc_tokenizer *t); /* NULL is fine */

/* Encode len bytes of UTF-8 text (need not be NUL-terminated).
 * parse_special != 0: added tokens written in the text become their ids, as HF does.
 * parse_special == 0: special added tokens are treated as plain text (HF's
 *   encode_special_tokens=True); non-special added tokens (e.g. Qwen3's <think>) still match,
 *   as in HF.
 * No BOS/post-processor is added. On success *ids is malloc'd (caller frees; may be NULL when
 * *n_ids == 0). Errors: OSC_ERR_INVALID_ARG (NULL arguments, invalid UTF-8), OSC_ERR_OOM. */
osc_status osc_tokenizer_encode(const osc_tokenizer *t, const char *text, size_t len,
                                int parse_special, int32_t **ids, int *n_ids);

/* Largest id (vocab or added token) + 1. */
int osc_tokenizer_vocab_size(const osc_tokenizer *t);
/* Token string as written in tokenizer.json (vocab key, e.g. "Ġthe", or added-token content)
 * -> id; -1 if there is none. */
int32_t osc_tokenizer_token_id(const osc_tokenizer *t, const char *token_str);
/* Raw bytes a token decodes to (byte-level decoded; added tokens give their content). The
 * pointer lives as long as t; the bytes are not NUL-terminated. NULL for an unknown id. */
const char *osc_tokenizer_token_bytes(const osc_tokenizer *t, int32_t id, size_t *len);
/* 1 if id is an added token marked "special", else 0. */
int osc_tokenizer_is_special(const osc_tokenizer *t, int32_t id);

/* Decode ids to a malloc'd NUL-terminated string (caller frees). skip_special: drop special
 * tokens. Ids with no token (out of range, holes) are skipped, as HF does. Invalid UTF-8 that
 * results is kept as raw bytes (HF would print U+FFFD). Errors: OSC_ERR_INVALID_ARG,
 * OSC_ERR_OOM. */
osc_status osc_tokenizer_decode(const osc_tokenizer *t, const int32_t *ids, int n,
                                int skip_special, char **out);

/* Streaming decode for printing tokens as they come. Feed one id, get the text that is now
 * complete: never splits a UTF-8 character, holds an incomplete character until the next token
 * completes it; an invalid sequence is written as U+FFFD, one per maximal invalid subpart (like
 * Python's bytes.decode(errors="replace")). No allocation. The returned pointer is d->out and
 * is valid until the next call on d. */
#define OSC_DETOK_OUT (3 * OSC_TOKENIZER_MAX_TOKEN_BYTES + 16)
typedef struct osc_detok {
    unsigned char pending[8]; /* an incomplete UTF-8 character (at most 3 bytes) */
    int n_pending;
    char out[OSC_DETOK_OUT];
} osc_detok;
void osc_detok_init(osc_detok *d);
const char *osc_detok_push(osc_detok *d, const osc_tokenizer *t, int32_t id, int skip_special);
/* End of stream: an incomplete character left over becomes U+FFFD. Returns d->out. */
const char *osc_detok_flush(osc_detok *d);

#endif
