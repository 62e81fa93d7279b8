/* config.json / generation_config.json parsing for every supported architecture, plus errors. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "tests/check.h"

static char g_tmp[1024];

/* Make tmp/<name>/ and write <file> into it (file NULL: only the dir); returns the dir. */
static const char *put(const char *name, const char *file, const char *text) {
    static char dir[1200];
    snprintf(dir, sizeof dir, "%s/%s", g_tmp, name);
    mkdir(dir, 0755);
    if (file) {
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", dir, file);
        FILE *f = fopen(p, "wb");
        if (!f) { perror(p); exit(1); }
        fputs(text, f);
        fclose(f);
    }
    return dir;
}

static osc_status load(const char *name, const char *json, osc_llm_config *c) {
    const char *d = put(name, "config.json", json);
    return osc_config_load(d, c);
}

static void expect_err(const char *name, const char *json, osc_status want, const char *phrase) {
    osc_llm_config c;
    osc_status s = load(name, json, &c);
    const char *m = osc_last_error();
    CHECK(s == want, "%s: status %d, want %d (%s)", name, (int)s, (int)want, m);
    CHECK(strstr(m, "config.json") && strstr(m, name), "%s: message lacks the path: %s", name, m);
    CHECK(strstr(m, phrase) != NULL, "%s: message lacks '%s': %s", name, phrase, m);
}

static const char *QWEN2 =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"model_type\":\"qwen2\",\"vocab_size\":151936,"
    "\"hidden_size\":896,\"intermediate_size\":4864,\"num_hidden_layers\":24,\"num_attention_heads\":14,"
    "\"num_key_value_heads\":2,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,"
    "\"max_position_embeddings\":32768,\"tie_word_embeddings\":true,\"use_sliding_window\":false,"
    "\"sliding_window\":32768,\"hidden_act\":\"silu\",\"bos_token_id\":151643,\"eos_token_id\":151645,"
    "\"torch_dtype\":\"bfloat16\"}";

static void test_qwen2(void) {
    osc_llm_config c;
    osc_status s = load("qwen2", QWEN2, &c);
    CHECK(s == OSC_OK, "qwen2: %s", osc_last_error());
    CHECK(c.arch == OSC_ARCH_QWEN2 && strcmp(c.model_type, "qwen2") == 0, "arch");
    CHECK(c.vocab_size == 151936 && c.hidden_size == 896 && c.intermediate_size == 4864, "sizes");
    CHECK(c.n_layers == 24 && c.n_heads == 14 && c.n_kv_heads == 2 && c.head_dim == 64, "heads %d %d %d",
          c.n_heads, c.n_kv_heads, c.head_dim);
    CHECK(c.rms_eps == 1e-6f && c.rope_theta == 1e6 && c.rope_type == OSC_ROPE_DEFAULT, "rope/eps");
    CHECK(c.max_pos == 32768 && c.tie_embeddings == 1 && c.attn_bias == 1 && c.qk_norm == 0, "flags");
    CHECK(c.bos_id == 151643 && c.pad_id == -1 && c.n_eos == 1 && c.eos_ids[0] == 151645, "ids");
    CHECK(c.image_token_id == -1 && c.audio_token_id == -1 && c.vision_start_id == -1, "no mm ids");

    /* Defaults: kv heads = heads, eps 1e-6, theta 1e4, tie false. */
    s = load("qwen2min",
             "{\"model_type\":\"qwen2\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
             "\"num_hidden_layers\":2,\"num_attention_heads\":4}",
             &c);
    CHECK(s == OSC_OK, "qwen2min: %s", osc_last_error());
    CHECK(c.n_kv_heads == 4 && c.head_dim == 16 && c.rms_eps == 1e-6f && c.rope_theta == 10000.0 &&
              c.tie_embeddings == 0 && c.n_eos == 0 && c.bos_id == -1,
          "qwen2 defaults");
}

static void test_qwen3(void) {
    osc_llm_config c;
    osc_status s = load("qwen3",
                        "{\"model_type\":\"qwen3\",\"vocab_size\":151936,\"hidden_size\":1024,"
                        "\"intermediate_size\":3072,\"num_hidden_layers\":28,\"num_attention_heads\":16,"
                        "\"num_key_value_heads\":8,\"head_dim\":128,\"attention_bias\":false,"
                        "\"rms_norm_eps\":1e-06,\"rope_theta\":1000000,\"rope_scaling\":null,"
                        "\"max_position_embeddings\":40960,\"tie_word_embeddings\":true,"
                        "\"bos_token_id\":151643,\"eos_token_id\":151645}",
                        &c);
    CHECK(s == OSC_OK, "qwen3: %s", osc_last_error());
    CHECK(c.arch == OSC_ARCH_QWEN3 && c.qk_norm == 1 && c.attn_bias == 0, "qwen3 flags");
    CHECK(c.head_dim == 128 && c.n_heads == 16 && c.n_kv_heads == 8, "qwen3 head_dim %d", c.head_dim);
    CHECK(c.max_pos == 40960 && c.tie_embeddings == 1 && c.rope_theta == 1e6, "qwen3 misc");
    s = load("qwen3b",
             "{\"model_type\":\"qwen3\",\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,"
             "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
             "\"head_dim\":32,\"attention_bias\":true}",
             &c);
    CHECK(s == OSC_OK && c.attn_bias == 1 && c.head_dim == 32, "qwen3 bias: %s", osc_last_error());
}

static void test_llama(void) {
    osc_llm_config c;
    osc_status s = load("llama3",
                        "{\"model_type\":\"llama\",\"vocab_size\":128256,\"hidden_size\":2048,"
                        "\"intermediate_size\":8192,\"num_hidden_layers\":16,\"num_attention_heads\":32,"
                        "\"num_key_value_heads\":8,\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,"
                        "\"rope_scaling\":{\"factor\":32.0,\"high_freq_factor\":4.0,\"low_freq_factor\":1.0,"
                        "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},"
                        "\"max_position_embeddings\":131072,\"tie_word_embeddings\":true,"
                        "\"attention_bias\":false,\"mlp_bias\":false,\"bos_token_id\":128000,"
                        "\"eos_token_id\":[128001,128008,128009]}",
                        &c);
    CHECK(s == OSC_OK, "llama: %s", osc_last_error());
    CHECK(c.arch == OSC_ARCH_LLAMA && c.attn_bias == 0 && c.qk_norm == 0 && c.head_dim == 64, "llama arch");
    CHECK(c.rope_type == OSC_ROPE_LLAMA3 && c.rope_factor == 32.0f && c.rope_low_freq_factor == 1.0f &&
              c.rope_high_freq_factor == 4.0f && c.rope_orig_max_pos == 8192 && c.rope_theta == 500000.0,
          "llama3 rope");
    CHECK(c.rms_eps == 1e-5f && c.max_pos == 131072, "llama eps/max_pos");
    CHECK(c.n_eos == 3 && c.eos_ids[0] == 128001 && c.eos_ids[2] == 128009 && c.bos_id == 128000, "llama eos");

    /* Older spelling "type" and a missing scaling field. */
    s = load("llama3type",
             "{\"model_type\":\"llama\",\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,"
             "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"rope_scaling\":{\"type\":\"llama3\","
             "\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}}",
             &c);
    CHECK(s == OSC_OK && c.rope_type == OSC_ROPE_LLAMA3 && c.rope_factor == 8.0f && c.max_pos == 2048,
          "llama3 'type': %s", osc_last_error());
    expect_err("llama3bad",
               "{\"model_type\":\"llama\",\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"rope_scaling\":{\"rope_type\":\"llama3\","
               "\"factor\":8}}",
               OSC_ERR_FORMAT, "low_freq_factor");
    expect_err("yarn",
               "{\"model_type\":\"qwen2\",\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"rope_scaling\":{\"rope_type\":\"yarn\","
               "\"factor\":4}}",
               OSC_ERR_UNSUPPORTED, "yarn");
}

/* transformers 5.x: rope_parameters instead of rope_theta/rope_scaling. */
static void test_rope_parameters(void) {
    osc_llm_config c;
    osc_status s = load("tf5llama",
                        "{\"model_type\":\"llama\",\"vocab_size\":128256,\"hidden_size\":2048,"
                        "\"intermediate_size\":8192,\"num_hidden_layers\":16,\"num_attention_heads\":32,"
                        "\"num_key_value_heads\":8,\"rope_parameters\":{\"rope_type\":\"llama3\","
                        "\"rope_theta\":500000.0,\"factor\":32.0,\"low_freq_factor\":1.0,"
                        "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}",
                        &c);
    CHECK(s == OSC_OK, "tf5 llama: %s", osc_last_error());
    CHECK(c.rope_theta == 500000.0 && c.rope_type == OSC_ROPE_LLAMA3 && c.rope_factor == 32.0f &&
              c.rope_orig_max_pos == 8192,
          "tf5 llama rope theta %g", c.rope_theta);
    s = load("tf5qwen2",
             "{\"model_type\":\"qwen2\",\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,"
             "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
             "\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1000000.0}}",
             &c);
    CHECK(s == OSC_OK && c.rope_theta == 1e6 && c.rope_type == OSC_ROPE_DEFAULT, "tf5 qwen2: %s",
          osc_last_error());
}

static const char *OMNI =
    "{\"architectures\":[\"Qwen2_5OmniModel\"],\"model_type\":\"qwen2_5_omni\",\"enable_audio_output\":true,"
    "\"talker_config\":{\"model_type\":\"qwen2_5_omni_talker\",\"hidden_size\":896,\"vocab_size\":8448},"
    "\"thinker_config\":{\"model_type\":\"qwen2_5_omni_thinker\",\"audio_token_index\":151646,"
    "\"image_token_index\":151655,\"video_token_index\":151656,\"audio_start_token_id\":151647,"
    "\"audio_end_token_id\":151648,\"vision_start_token_id\":151652,\"vision_end_token_id\":151653,"
    "\"bos_token_id\":151644,\"eos_token_id\":151645,\"pad_token_id\":151643,"
    "\"position_id_per_seconds\":25,\"seconds_per_chunk\":2,\"user_token_id\":872,"
    "\"tie_word_embeddings\":false,"
    "\"audio_config\":{\"d_model\":1280,\"encoder_layers\":32,\"num_mel_bins\":128},"
    "\"vision_config\":{\"depth\":32,\"hidden_size\":1280,\"out_hidden_size\":3584},"
    "\"text_config\":{\"model_type\":\"qwen2_5_omni_text\",\"vocab_size\":152064,\"hidden_size\":3584,"
    "\"intermediate_size\":18944,\"num_hidden_layers\":28,\"num_attention_heads\":28,"
    "\"num_key_value_heads\":4,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,"
    "\"rope_scaling\":{\"mrope_section\":[16,24,24],\"rope_type\":\"default\",\"type\":\"default\"},"
    "\"max_position_embeddings\":32768,\"hidden_act\":\"silu\",\"use_sliding_window\":false}},"
    "\"token2wav_config\":{}}";

static void check_omni(const osc_llm_config *c, const char *what) {
    CHECK(c->arch == OSC_ARCH_QWEN2_5_OMNI, "%s arch", what);
    CHECK(c->vocab_size == 152064 && c->hidden_size == 3584 && c->intermediate_size == 18944 &&
              c->n_layers == 28 && c->n_heads == 28 && c->n_kv_heads == 4 && c->head_dim == 128,
          "%s sizes", what);
    CHECK(c->rope_type == OSC_ROPE_MROPE && c->mrope_section[0] == 16 && c->mrope_section[1] == 24 &&
              c->mrope_section[2] == 24 && c->rope_theta == 1e6,
          "%s mrope", what);
    CHECK(c->attn_bias == 1 && c->tie_embeddings == 0 && c->qk_norm == 0 && c->max_pos == 32768, "%s flags", what);
    CHECK(c->audio_token_id == 151646 && c->image_token_id == 151655 && c->video_token_id == 151656, "%s pads",
          what);
    CHECK(c->audio_start_id == 151647 && c->audio_end_id == 151648 && c->vision_start_id == 151652 &&
              c->vision_end_id == 151653,
          "%s spans", what);
    CHECK(c->bos_id == 151644 && c->pad_id == 151643 && c->n_eos == 1 && c->eos_ids[0] == 151645, "%s ids", what);
}

static void test_omni(void) {
    osc_llm_config c;
    osc_status s = load("omni", OMNI, &c);
    CHECK(s == OSC_OK, "omni: %s", osc_last_error());
    check_omni(&c, "omni");
    CHECK(strcmp(c.model_type, "qwen2_5_omni") == 0, "omni model_type");

    /* Thinker-only config: the thinker object at the top level. */
    const char *th = strstr(OMNI, "\"thinker_config\":{") + strlen("\"thinker_config\":");
    char buf[4096];
    size_t n = strlen(th) - strlen(",\"token2wav_config\":{}}");
    memcpy(buf, th, n);
    buf[n] = 0;
    s = load("omnithinker", buf, &c);
    CHECK(s == OSC_OK, "omni thinker: %s", osc_last_error());
    check_omni(&c, "omni thinker");

    /* transformers 5.x style: mrope inside rope_parameters with rope_theta. */
    s = load("omnitf5",
             "{\"model_type\":\"qwen2_5_omni_thinker\",\"image_token_id\":151655,\"text_config\":{"
             "\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
             "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"rope_parameters\":{\"rope_type\":\"default\","
             "\"rope_theta\":1000000.0,\"mrope_section\":[2,3,3]}}}",
             &c);
    CHECK(s != OSC_OK, "image token id outside the vocabulary accepted");
    s = load("omnitf5b",
             "{\"model_type\":\"qwen2_5_omni_thinker\",\"image_token_id\":999,\"text_config\":{"
             "\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
             "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"rope_parameters\":{\"rope_type\":\"default\","
             "\"rope_theta\":1000000.0,\"mrope_section\":[2,3,3]}}}",
             &c);
    CHECK(s == OSC_OK && c.rope_type == OSC_ROPE_MROPE && c.mrope_section[1] == 3 && c.rope_theta == 1e6 &&
              c.image_token_id == 999 && c.head_dim == 16,
          "omni tf5: %s", osc_last_error());

    expect_err("omnibadmrope",
               "{\"model_type\":\"qwen2_5_omni_thinker\",\"text_config\":{"
               "\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
               "\"num_attention_heads\":4,\"rope_scaling\":{\"type\":\"mrope\",\"mrope_section\":[2,3,4]}}}",
               OSC_ERR_FORMAT, "mrope_section");
    expect_err("omninomrope",
               "{\"model_type\":\"qwen2_5_omni_thinker\",\"text_config\":{"
               "\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
               "\"num_attention_heads\":4}}",
               OSC_ERR_FORMAT, "mrope_section");
    expect_err("omninothinker", "{\"model_type\":\"qwen2_5_omni\"}", OSC_ERR_FORMAT, "thinker_config");
}

static void test_vl(void) {
    osc_llm_config c;
    /* Older layout: decoder fields at the top level. */
    osc_status s = load("vl",
                        "{\"model_type\":\"qwen2_5_vl\",\"vocab_size\":151936,\"hidden_size\":2048,"
                        "\"intermediate_size\":11008,\"num_hidden_layers\":36,\"num_attention_heads\":16,"
                        "\"num_key_value_heads\":2,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,"
                        "\"rope_scaling\":{\"type\":\"mrope\",\"mrope_section\":[16,24,24]},"
                        "\"max_position_embeddings\":128000,\"tie_word_embeddings\":true,"
                        "\"image_token_id\":151655,\"video_token_id\":151656,\"vision_start_token_id\":151652,"
                        "\"vision_end_token_id\":151653,\"vision_token_id\":151654,\"bos_token_id\":151643,"
                        "\"eos_token_id\":151645,\"vision_config\":{\"hidden_size\":1280,\"depth\":32}}",
                        &c);
    CHECK(s == OSC_OK, "vl: %s", osc_last_error());
    CHECK(c.arch == OSC_ARCH_QWEN2_5_VL && c.attn_bias == 1 && c.rope_type == OSC_ROPE_MROPE &&
              c.mrope_section[0] == 16 && c.head_dim == 128 && c.tie_embeddings == 1,
          "vl fields");
    CHECK(c.image_token_id == 151655 && c.video_token_id == 151656 && c.vision_start_id == 151652 &&
              c.vision_end_id == 151653 && c.audio_token_id == -1 && c.audio_start_id == -1,
          "vl ids");
    /* Newer layout: text_config nested, token ids at the top. */
    s = load("vlnested",
             "{\"model_type\":\"qwen2_5_vl\",\"image_token_id\":151655,\"video_token_id\":151656,"
             "\"vision_start_token_id\":151652,\"vision_end_token_id\":151653,\"tie_word_embeddings\":false,"
             "\"text_config\":{\"model_type\":\"qwen2_5_vl_text\",\"vocab_size\":152064,\"hidden_size\":3584,"
             "\"intermediate_size\":18944,\"num_hidden_layers\":28,\"num_attention_heads\":28,"
             "\"num_key_value_heads\":4,\"rope_theta\":1000000.0,\"eos_token_id\":151645,"
             "\"rope_scaling\":{\"rope_type\":\"default\",\"type\":\"default\",\"mrope_section\":[16,24,24]}},"
             "\"vision_config\":{\"hidden_size\":1280}}",
             &c);
    CHECK(s == OSC_OK, "vl nested: %s", osc_last_error());
    CHECK(c.hidden_size == 3584 && c.n_layers == 28 && c.n_kv_heads == 4 && c.rope_type == OSC_ROPE_MROPE &&
              c.image_token_id == 151655 && c.n_eos == 1 && c.eos_ids[0] == 151645 && c.tie_embeddings == 0,
          "vl nested fields");
}

static void test_errors(void) {
    osc_llm_config c;
    expect_err("malformed", "{\"model_type\":\"qwen2\",", OSC_ERR_FORMAT, "not valid JSON");
    expect_err("notobject", "[1,2]", OSC_ERR_FORMAT, "not a JSON object");
    expect_err("nomodeltype", "{\"hidden_size\":8}", OSC_ERR_FORMAT, "model_type");
    expect_err("nohidden",
               "{\"model_type\":\"qwen2\",\"vocab_size\":100,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4}",
               OSC_ERR_FORMAT, "missing hidden_size");
    expect_err("notdivisible",
               "{\"model_type\":\"qwen2\",\"vocab_size\":100,\"hidden_size\":96,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":6,\"num_key_value_heads\":4}",
               OSC_ERR_FORMAT, "not divisible");
    expect_err("unknownmt", "{\"model_type\":\"gpt2\",\"n_embd\":768}", OSC_ERR_UNSUPPORTED, "qwen2, qwen3, llama");
    expect_err("stringsize",
               "{\"model_type\":\"qwen2\",\"vocab_size\":100,\"hidden_size\":\"64\",\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4}",
               OSC_ERR_FORMAT, "hidden_size must be an integer");
    expect_err("zeroheads",
               "{\"model_type\":\"qwen2\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":0}",
               OSC_ERR_FORMAT, "num_attention_heads");
    expect_err("hugevocab",
               "{\"model_type\":\"qwen2\",\"vocab_size\":1e12,\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4}",
               OSC_ERR_FORMAT, "vocab_size");
    expect_err("oddheaddim",
               "{\"model_type\":\"qwen3\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"head_dim\":15}",
               OSC_ERR_FORMAT, "head_dim");
    expect_err("bigheaddim",
               "{\"model_type\":\"qwen3\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"head_dim\":1024}",
               OSC_ERR_FORMAT, "head_dim");
    expect_err("manylayers",
               "{\"model_type\":\"llama\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":5000,\"num_attention_heads\":4}",
               OSC_ERR_FORMAT, "num_hidden_layers");
    expect_err("badeos",
               "{\"model_type\":\"qwen2\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"eos_token_id\":\"x\"}",
               OSC_ERR_FORMAT, "eos_token_id");
    expect_err("eosoutside",
               "{\"model_type\":\"qwen2\",\"vocab_size\":100,\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"eos_token_id\":[5,100]}",
               OSC_ERR_FORMAT, "eos_token_id");
    /* Missing config.json: an I/O error naming the path. */
    const char *d = put("noconfig", NULL, NULL);
    osc_status s = osc_config_load(d, &c);
    CHECK(s == OSC_ERR_IO && strstr(osc_last_error(), "noconfig/config.json"), "missing config: %s",
          osc_last_error());
    /* Oversized file refused. */
    {
        static char big[5 * 1024 * 1024 + 64];
        memset(big, ' ', sizeof big - 1);
        big[0] = '{';
        big[sizeof big - 2] = '}';
        big[sizeof big - 1] = 0;
        s = load("bigconfig", big, &c);
        CHECK(s != OSC_OK && strstr(osc_last_error(), "bigconfig"), "oversized config: %s", osc_last_error());
    }
}

static void test_gen(void) {
    osc_gen_config g;
    const char *d = put("gen1", "generation_config.json",
                        "{\"bos_token_id\":151643,\"do_sample\":true,\"eos_token_id\":[151645,151643],"
                        "\"pad_token_id\":151643,\"repetition_penalty\":1.05,\"temperature\":0.7,"
                        "\"top_k\":20,\"top_p\":0.8,\"transformers_version\":\"4.37.0\"}");
    osc_status s = osc_gen_config_load(d, &g);
    CHECK(s == OSC_OK, "gen: %s", osc_last_error());
    CHECK(g.do_sample == 1 && fabsf(g.temperature - 0.7f) < 1e-7f && g.top_k == 20 && fabsf(g.top_p - 0.8f) < 1e-7f,
          "gen sampling %d %g %d %g", g.do_sample, g.temperature, g.top_k, g.top_p);
    CHECK(fabsf(g.repeat_penalty - 1.05f) < 1e-7f && g.min_p == 0.0f, "gen rp");
    CHECK(g.n_eos == 2 && g.eos_ids[0] == 151645 && g.eos_ids[1] == 151643 && g.bos_id == 151643, "gen ids");

    /* Greedy config: do_sample false means temperature 0. Single eos int. */
    d = put("gen2", "generation_config.json", "{\"do_sample\":false,\"temperature\":0.6,\"eos_token_id\":2}");
    s = osc_gen_config_load(d, &g);
    CHECK(s == OSC_OK && g.do_sample == 0 && g.temperature == 0.0f && g.n_eos == 1 && g.eos_ids[0] == 2,
          "gen greedy: %s", osc_last_error());

    /* Missing file: defaults. */
    d = put("gennone", NULL, NULL);
    s = osc_gen_config_load(d, &g);
    CHECK(s == OSC_OK, "gen missing: %s", osc_last_error());
    CHECK(g.temperature == 0.0f && g.do_sample == 0 && g.top_k == 0 && g.top_p == 1.0f && g.min_p == 0.0f &&
              g.repeat_penalty == 1.0f && g.n_eos == 0 && g.bos_id == -1,
          "gen defaults");

    /* Malformed: errors name the file. */
    d = put("genbad", "generation_config.json", "{\"temperature\":");
    s = osc_gen_config_load(d, &g);
    CHECK(s == OSC_ERR_FORMAT && strstr(osc_last_error(), "genbad/generation_config.json"), "gen bad json: %s",
          osc_last_error());
    d = put("genbad2", "generation_config.json", "{\"top_p\":1.5}");
    s = osc_gen_config_load(d, &g);
    CHECK(s == OSC_ERR_FORMAT && strstr(osc_last_error(), "top_p"), "gen top_p: %s", osc_last_error());
    d = put("genbad3", "generation_config.json", "{\"do_sample\":\"yes\"}");
    s = osc_gen_config_load(d, &g);
    CHECK(s == OSC_ERR_FORMAT && strstr(osc_last_error(), "do_sample"), "gen do_sample: %s", osc_last_error());
    d = put("genbad4", "generation_config.json", "{\"eos_token_id\":[1,2,3,4,5,6,7,8,9]}");
    s = osc_gen_config_load(d, &g);
    CHECK(s == OSC_ERR_FORMAT && strstr(osc_last_error(), "eos_token_id"), "gen many eos: %s", osc_last_error());
}

int main(void) {
    const char *t = getenv("OSC_TEST_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/test_config", t && t[0] ? t : "/tmp");
    mkdir(t && t[0] ? t : "/tmp", 0755);
    mkdir(g_tmp, 0755);
    test_qwen2();
    test_qwen3();
    test_llama();
    test_rope_parameters();
    test_omni();
    test_vl();
    test_errors();
    test_gen();
    return check_done("test_config");
}
