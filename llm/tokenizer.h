/* Byte-level BPE tokenizer loaded from a HuggingFace tokenizer.json (Qwen2/2.5/3, Llama-3,
 * GPT-2 style) or from a GGUF file's metadata. Encoding matches the `tokenizers` library token
 * for token.
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
#include "core/gguf.h"
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

/* ---- building a tokenizer from arrays (GGUF metadata, or any other source) ---- */

/* Pre-tokenizer split patterns: the Qwen2 and Llama-3 regexes, GPT-2's, SmolLM's (every \p{N}
 * character on its own, then the GPT-2 regex on the runs between them: HF's
 * Sequence[Digits(individual_digits), ByteLevel]), or none (the whole piece is one word). */
typedef enum osc_pretok {
    OSC_PRETOK_NONE = 0, OSC_PRETOK_QWEN2, OSC_PRETOK_LLAMA3, OSC_PRETOK_GPT2, OSC_PRETOK_SMOLLM
} osc_pretok;

/* Token kinds, numbered as GGUF's tokenizer.ggml.token_type. NORMAL, UNKNOWN and BYTE tokens form
 * the BPE vocab; CONTROL tokens are special added tokens, USER_DEFINED ones non-special added
 * tokens (both matched in text before BPE, no lstrip/rstrip/single_word, not normalized); UNUSED
 * ids are holes (as ids missing from a tokenizer.json vocab). */
enum { OSC_TOKEN_NORMAL = 1, OSC_TOKEN_UNKNOWN = 2, OSC_TOKEN_CONTROL = 3, OSC_TOKEN_USER_DEFINED = 4,
       OSC_TOKEN_UNUSED = 5, OSC_TOKEN_BYTE = 6 };

typedef struct osc_tokenizer_def {
    int32_t n_tokens;          /* ids are 0..n_tokens-1; at most 1 << 24 */
    const char *const *tokens; /* token i: a vocab key as a byte-level BPE writes it ("Ġthe"), or an
                                  added token's content */
    const uint32_t *token_len; /* byte lengths; the strings need not be NUL-terminated */
    const int32_t *token_type; /* OSC_TOKEN_* per id; NULL: all NORMAL */
    int32_t n_merges;
    const char *const *merges; /* "left right", ranked in order; split at the first space after the
                                  first byte (as llama.cpp does) */
    const uint32_t *merge_len;
    osc_pretok pretok;
    int nfc;                   /* NFC-normalize text before BPE (the added tokens are matched first) */
    int add_prefix_space;      /* GPT-2's: a space before text that does not start with one */
    int ignore_merges;         /* a pre-token word that is a vocab token is emitted whole (Llama-3) */
    int32_t unk_id;            /* -1: none */
} osc_tokenizer_def;

/* Build a tokenizer from def; `what` starts error messages (a path). The same checks as the
 * tokenizer.json loader (empty or overlong tokens, merges naming unknown tokens, invalid UTF-8 in
 * added tokens) give OSC_ERR_FORMAT; a repeated vocab string is allowed (the later id wins, as in
 * llama.cpp). */
osc_status osc_tokenizer_new(const char *what, const osc_tokenizer_def *def, osc_tokenizer **out);

/* The tokenizer stored in a GGUF file's metadata (llama.cpp's tokenizer.ggml.* keys). Supported:
 * tokenizer.ggml.model "gpt2" (byte-level BPE) with tokenizer.ggml.pre
 *   "qwen2", "deepseek-r1-qwen"          -> the Qwen2 pattern, NFC (as Qwen2 tokenizer.json)
 *   "llama3", "llama-v3", "llama-bpe"   -> the Llama-3 pattern, ignore_merges
 *   "smollm"                            -> OSC_PRETOK_SMOLLM
 *   "gpt-2", "default" or absent        -> the GPT-2 pattern (llama.cpp's "default" is an older
 *                                          multi-regex split; GPT-2 is what its files mean)
 * plus tokenizer.ggml.tokens, token_type, merges, add_space_prefix and unknown_token_id. Other
 * models or pre names give OSC_ERR_UNSUPPORTED naming them; malformed keys OSC_ERR_FORMAT. */
osc_status osc_tokenizer_from_gguf(const osc_gguf *g, osc_tokenizer **out);
osc_status osc_tokenizer_load_gguf(const char *path, osc_tokenizer **out);

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
