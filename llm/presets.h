/* Named model shapes (configs of real checkpoints, no weights) for benchmarks and smoke tests.
 *
 * osc_llm_preset fills every field of *out from the table and validates it
 * (osc_llm_config_validate); an unknown name gives OSC_ERR_INVALID_ARG and the message lists
 * the known names. Pair with osc_llm_new_random to build a random-weight model of that shape.
 * Values are those of the published config.json files (Qwen2.5-Omni: the thinker's
 * text_config); see llm/presets.c for sources and the choices made where a value is unsure.
 * Thread-safe (a read-only table). */
#ifndef OSC_LLM_PRESETS_H
#define OSC_LLM_PRESETS_H
#include "../core/config.h"

osc_status osc_llm_preset(const char *name, osc_llm_config *out);
/* The known names, comma-separated, e.g. "qwen2.5-omni-7b, qwen2.5-omni-3b, ...". */
const char *osc_llm_preset_names(void);

#endif
