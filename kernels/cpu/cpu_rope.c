/* kernels/cpu/cpu_rope.c: in-place rotary embedding (NeoX rotate_half convention), plain and
 * M-RoPE, float32. */
#include "cpu.h"

#include <math.h>

/* x [S,H,D] in place; pos I32 [S] (plain) or [3,S] (M-RoPE, rope->mrope_section[0] > 0).
 * For frequency j < D/2: angle = fp32(pos * inv_freq[j]) (HF computes the product in fp32),
 * c = cos(angle) * attn_factor, s = sin(angle) * attn_factor, and
 *   x'[j]       = x[j] * c - x[j+D/2] * s
 *   x'[j+D/2]   = x[j+D/2] * c + x[j] * s            (x * cos + rotate_half(x) * sin). */
osc_status osc_cpu_rope(osc_tensor *x, const osc_tensor *pos, const osc_rope *rope) {
    const int64_t S = x->ne[0], H = x->ne[1];
    const int D = rope->head_dim, half = D / 2;
    const int mrope = rope->mrope_section[0] > 0;
    const int s0 = rope->mrope_section[0], s01 = rope->mrope_section[0] + rope->mrope_section[1];
    const int32_t *p = (const int32_t *)pos->data;
    float *xa = (float *)x->data;
    const float af = rope->attn_factor;
#pragma omp parallel for schedule(static) num_threads(osc_cpu_threads()) if (S > 1)
    for (int64_t s = 0; s < S; s++) {
        float cs[OSC_ROPE_MAX_HALF], sn[OSC_ROPE_MAX_HALF]; /* [D/2] */
        for (int j = 0; j < half; j++) {
            int axis = !mrope ? 0 : j < s0 ? 0 : j < s01 ? 1 : 2;
            float angle = (float)p[axis * S + s] * rope->inv_freq[j];
            cs[j] = cosf(angle) * af;
            sn[j] = sinf(angle) * af;
        }
        for (int64_t h = 0; h < H; h++) {
            float *v = xa + (s * H + h) * D;
            for (int j = 0; j < half; j++) {
                float x0 = v[j], x1 = v[j + half];
                v[j] = x0 * cs[j] - x1 * sn[j];
                v[j + half] = x1 * cs[j] + x0 * sn[j];
            }
        }
    }
    return OSC_OK;
}
