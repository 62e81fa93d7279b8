/* kernels/ops.c: validation and dispatch of the ops in kernels/ops.h, and osc_rope_init.
 * Every op checks devices, dtypes and shapes here (OSC_ERR_INVALID_ARG with a message naming
 * the op and the shapes), then calls osc_cpu_<op> (output on OSC_DEV_CPU) or osc_cuda_<op>
 * (output on OSC_DEV_CUDA, when built with CUDA; else OSC_ERR_UNSUPPORTED). The backends may
 * assume the checks below. */
#include "ops.h"
#include "rope.h"
#include "cpu/cpu.h"
#ifdef OSC_HAVE_CUDA
#include "cuda/launch.h"
#endif

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------- */

typedef struct { char s[96]; } shape_str;

/* "F32[3,4]@cpu" */
static shape_str sh(const osc_tensor *t) {
    shape_str r;
    if (!t) { snprintf(r.s, sizeof r.s, "(null)"); return r; }
    int n = snprintf(r.s, sizeof r.s, "%s[", osc_dtype_name(t->dt));
    for (int i = 0; i < t->nd && i < OSC_MAX_DIMS && n < (int)sizeof r.s; i++)
        n += snprintf(r.s + n, sizeof r.s - (size_t)n, "%s%lld", i ? "," : "", (long long)t->ne[i]);
    if (n < (int)sizeof r.s)
        snprintf(r.s + n, sizeof r.s - (size_t)n, "]@%s", t->dev == OSC_DEV_CPU ? "cpu" : "cuda");
    return r;
}

/* Structural sanity of one tensor (non-NULL, data, 1..4 dims, non-negative sizes). */
static osc_status check_tensor(const char *op, const char *name, const osc_tensor *t) {
    if (!t) return osc_error(OSC_ERR_INVALID_ARG, "%s: %s is NULL", op, name);
    if (t->nd < 1 || t->nd > OSC_MAX_DIMS)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: %s has %d dims", op, name, t->nd);
    for (int i = 0; i < t->nd; i++)
        if (t->ne[i] < 0) return osc_error(OSC_ERR_INVALID_ARG, "%s: %s %s has a negative dim", op, name, sh(t).s);
    if (!t->data && osc_tensor_nelem(t) > 0)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: %s %s has no data", op, name, sh(t).s);
    if (t->dev != OSC_DEV_CPU && t->dev != OSC_DEV_CUDA)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: %s has an unknown device", op, name);
    return OSC_OK;
}

static osc_status same_dev(const char *op, const char *name, const osc_tensor *t, const osc_tensor *ref) {
    if (t->dev != ref->dev)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: %s %s is on another device than %s", op, name, sh(t).s,
                         sh(ref).s);
    return OSC_OK;
}

/* Activation/weight dtype of a device: F32 on the CPU, BF16 on CUDA. */
static osc_dtype act_dt(osc_dev d) { return d == OSC_DEV_CPU ? OSC_F32 : OSC_BF16; }

static osc_status want_dt(const char *op, const char *name, const osc_tensor *t, osc_dtype dt) {
    if (t->dt != dt)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: %s %s must be %s on %s", op, name, sh(t).s, osc_dtype_name(dt),
                         t->dev == OSC_DEV_CPU ? "cpu" : "cuda");
    return OSC_OK;
}

static int64_t last_dim(const osc_tensor *t) { return t->ne[t->nd - 1]; }
static int64_t rows_of(const osc_tensor *t) {
    int64_t d = last_dim(t);
    return d ? osc_tensor_nelem(t) / d : 0;
}
/* Same dtype-independent shape: equal element count and equal last dim. */
static int same_rows_cols(const osc_tensor *a, const osc_tensor *b) {
    return last_dim(a) == last_dim(b) && osc_tensor_nelem(a) == osc_tensor_nelem(b);
}

#define TRY(e) OSC_TRY(e)

#ifdef OSC_HAVE_CUDA
#define DISPATCH(dev, cpu_call, cuda_call) \
    return (dev) == OSC_DEV_CPU ? (cpu_call) : (cuda_call)
#else
#define DISPATCH(dev, cpu_call, cuda_call) \
    return (dev) == OSC_DEV_CPU ? (cpu_call) : osc_error(OSC_ERR_UNSUPPORTED, "%s: built without CUDA", __func__)
#endif

/* ---- ops -------------------------------------------------------------------------------- */

osc_status osc_op_embed(osc_tensor *out, const osc_tensor *table, const osc_tensor *ids) {
    const char *op = "embed";
    TRY(check_tensor(op, "out", out)); TRY(check_tensor(op, "table", table)); TRY(check_tensor(op, "ids", ids));
    TRY(same_dev(op, "table", table, out)); TRY(same_dev(op, "ids", ids, out));
    osc_dtype dt = act_dt(out->dev);
    TRY(want_dt(op, "out", out, dt)); TRY(want_dt(op, "table", table, dt)); TRY(want_dt(op, "ids", ids, OSC_I32));
    if (table->nd != 2 || last_dim(out) != table->ne[1] ||
        osc_tensor_nelem(out) != osc_tensor_nelem(ids) * table->ne[1])
        return osc_error(OSC_ERR_INVALID_ARG, "embed: shapes out %s, table %s, ids %s (want out [S,D], table [V,D], ids [S])",
                         sh(out).s, sh(table).s, sh(ids).s);
    DISPATCH(out->dev, osc_cpu_embed(out, table, ids), osc_cuda_embed(out, table, ids));
}

osc_status osc_op_matmul(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, const osc_tensor *bias) {
    const char *op = "matmul";
    TRY(check_tensor(op, "out", out)); TRY(check_tensor(op, "x", x)); TRY(check_tensor(op, "w", w));
    TRY(same_dev(op, "x", x, out)); TRY(same_dev(op, "w", w, out));
    osc_dtype dt = act_dt(out->dev);
    TRY(want_dt(op, "x", x, dt)); TRY(want_dt(op, "w", w, dt));
    if (!(out->dt == dt || (out->dev == OSC_DEV_CUDA && out->dt == OSC_F32)))
        return osc_error(OSC_ERR_INVALID_ARG, "matmul: out %s must be %s%s", sh(out).s, osc_dtype_name(dt),
                         out->dev == OSC_DEV_CUDA ? " or F32" : "");
    if (bias) {
        TRY(check_tensor(op, "bias", bias)); TRY(same_dev(op, "bias", bias, out)); TRY(want_dt(op, "bias", bias, dt));
    }
    int64_t K = last_dim(x), M = rows_of(x), N = w->nd == 2 ? w->ne[0] : -1;
    if (w->nd != 2 || w->ne[1] != K || last_dim(out) != N || rows_of(out) != M ||
        (bias && osc_tensor_nelem(bias) != N) || K <= 0)
        return osc_error(OSC_ERR_INVALID_ARG,
                         "matmul: shapes out %s, x %s, w %s, bias %s (want out [M,N], x [M,K], w [N,K], bias [N])",
                         sh(out).s, sh(x).s, sh(w).s, sh(bias).s);
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX)
        return osc_error(OSC_ERR_INVALID_ARG, "matmul: dims too large (M=%lld N=%lld K=%lld)", (long long)M,
                         (long long)N, (long long)K);
    if (out->data == x->data || out->data == w->data)
        return osc_error(OSC_ERR_INVALID_ARG, "matmul: out must not alias x or w");
    DISPATCH(out->dev, osc_cpu_matmul(out, x, w, bias), osc_cuda_matmul(out, x, w, bias));
}

osc_status osc_op_matmul_glu(osc_tensor *out, osc_tensor *up, const osc_tensor *x, const osc_tensor *w_gate,
                             const osc_tensor *w_up) {
    const char *op = "matmul_glu";
    TRY(check_tensor(op, "out", out));
    TRY(check_tensor(op, "up", up));
    TRY(check_tensor(op, "w_gate", w_gate));
    TRY(check_tensor(op, "w_up", w_up));
    if (!same_rows_cols(out, up) || w_gate->nd != 2 || w_up->nd != 2 || w_gate->ne[0] != w_up->ne[0] ||
        w_gate->ne[1] != w_up->ne[1])
        return osc_error(OSC_ERR_INVALID_ARG, "matmul_glu: shapes out %s, up %s, w_gate %s, w_up %s", sh(out).s,
                         sh(up).s, sh(w_gate).s, sh(w_up).s);
    if (out->data == up->data) return osc_error(OSC_ERR_INVALID_ARG, "matmul_glu: out must not alias up");
#ifdef OSC_HAVE_CUDA
    if (out->dev == OSC_DEV_CUDA) {
        int done = 0;
        TRY(check_tensor(op, "x", x));
        TRY(same_dev(op, "x", x, out));
        if (out->dt == OSC_BF16 && x->dt == OSC_BF16 && w_gate->dt == OSC_BF16 && w_up->dt == OSC_BF16 &&
            same_dev(op, "w_gate", w_gate, out) == OSC_OK && same_dev(op, "w_up", w_up, out) == OSC_OK &&
            last_dim(x) == w_gate->ne[1] && rows_of(x) == rows_of(out) && last_dim(out) == w_gate->ne[0] &&
            out->data != x->data)
            TRY(osc_cuda_matmul_glu(out, x, w_gate, w_up, &done));
        if (done) return OSC_OK;
    }
#endif
    TRY(osc_op_matmul(out, x, w_gate, NULL));
    TRY(osc_op_matmul(up, x, w_up, NULL));
    return osc_op_silu_mul(out, out, up);
}

/* Shared checks of the row-wise norms. */
static osc_status check_norm(const char *op, osc_tensor *out, const osc_tensor *x, const osc_tensor *w,
                             const osc_tensor *b, float eps) {
    TRY(check_tensor(op, "out", out)); TRY(check_tensor(op, "x", x)); TRY(check_tensor(op, "w", w));
    TRY(same_dev(op, "x", x, out)); TRY(same_dev(op, "w", w, out));
    osc_dtype dt = act_dt(out->dev);
    TRY(want_dt(op, "out", out, dt)); TRY(want_dt(op, "x", x, dt)); TRY(want_dt(op, "w", w, dt));
    if (b) { TRY(check_tensor(op, "b", b)); TRY(same_dev(op, "b", b, out)); TRY(want_dt(op, "b", b, dt)); }
    int64_t D = last_dim(x);
    if (!same_rows_cols(out, x) || osc_tensor_nelem(w) != D || (b && osc_tensor_nelem(b) != D) || D <= 0)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: shapes out %s, x %s, w %s%s%s (want out, x [R,D], w [D])", op,
                         sh(out).s, sh(x).s, sh(w).s, b ? ", b " : "", b ? sh(b).s : "");
    if (!(eps >= 0.0f) || isinf(eps)) return osc_error(OSC_ERR_INVALID_ARG, "%s: bad eps %g", op, (double)eps);
    return OSC_OK;
}

osc_status osc_op_rmsnorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, float eps) {
    TRY(check_norm("rmsnorm", out, x, w, NULL, eps));
    DISPATCH(out->dev, osc_cpu_rmsnorm(out, x, w, eps), osc_cuda_rmsnorm(out, x, w, eps));
}

osc_status osc_op_layernorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, const osc_tensor *b,
                            float eps) {
    if (!b) return osc_error(OSC_ERR_INVALID_ARG, "layernorm: bias is NULL");
    TRY(check_norm("layernorm", out, x, w, b, eps));
    DISPATCH(out->dev, osc_cpu_layernorm(out, x, w, b, eps), osc_cuda_layernorm(out, x, w, b, eps));
}

osc_status osc_op_rope(osc_tensor *x, const osc_tensor *pos, const osc_rope *rope) {
    const char *op = "rope";
    TRY(check_tensor(op, "x", x)); TRY(check_tensor(op, "pos", pos));
    TRY(same_dev(op, "pos", pos, x));
    TRY(want_dt(op, "x", x, act_dt(x->dev))); TRY(want_dt(op, "pos", pos, OSC_I32));
    if (!rope) return osc_error(OSC_ERR_INVALID_ARG, "rope: rope is NULL");
    int D = rope->head_dim;
    if (D <= 0 || D % 2 || D / 2 > OSC_ROPE_MAX_HALF)
        return osc_error(OSC_ERR_INVALID_ARG, "rope: bad head_dim %d", D);
    int mrope = rope->mrope_section[0] > 0;
    if (mrope) {
        const int *s = rope->mrope_section;
        if (s[1] < 0 || s[2] < 0 || s[0] + s[1] + s[2] != D / 2)
            return osc_error(OSC_ERR_INVALID_ARG, "rope: mrope_section [%d,%d,%d] does not sum to head_dim/2 = %d",
                             s[0], s[1], s[2], D / 2);
    }
    if (x->nd != 3 || x->ne[2] != D)
        return osc_error(OSC_ERR_INVALID_ARG, "rope: x %s must be [S,H,%d]", sh(x).s, D);
    int64_t S = x->ne[0];
    if (mrope ? (pos->nd != 2 || pos->ne[0] != 3 || pos->ne[1] != S) : (osc_tensor_nelem(pos) != S))
        return osc_error(OSC_ERR_INVALID_ARG, "rope: pos %s must be %s for x %s", sh(pos).s, mrope ? "[3,S]" : "[S]",
                         sh(x).s);
    DISPATCH(x->dev, osc_cpu_rope(x, pos, rope), osc_cuda_rope(x, pos, rope));
}

/* Elementwise ops: all tensors activations of the output's device, same rows/cols. */
static osc_status check_ew(const char *op, const osc_tensor *out, const osc_tensor *a, const char *an,
                           const osc_tensor *b, const char *bn) {
    TRY(check_tensor(op, "out", out)); TRY(check_tensor(op, an, a));
    TRY(same_dev(op, an, a, out));
    osc_dtype dt = act_dt(out->dev);
    TRY(want_dt(op, "out", out, dt)); TRY(want_dt(op, an, a, dt));
    if (b) { TRY(check_tensor(op, bn, b)); TRY(same_dev(op, bn, b, out)); TRY(want_dt(op, bn, b, dt)); }
    if (!same_rows_cols(out, a) || (b && !same_rows_cols(out, b)))
        return osc_error(OSC_ERR_INVALID_ARG, "%s: shapes out %s, %s %s%s%s%s differ", op, sh(out).s, an, sh(a).s,
                         b ? ", " : "", b ? bn : "", b ? sh(b).s : "");
    return OSC_OK;
}

osc_status osc_op_silu_mul(osc_tensor *out, const osc_tensor *gate, const osc_tensor *up) {
    TRY(check_ew("silu_mul", out, gate, "gate", up, "up"));
    DISPATCH(out->dev, osc_cpu_silu_mul(out, gate, up), osc_cuda_silu_mul(out, gate, up));
}

osc_status osc_op_gelu(osc_tensor *out, const osc_tensor *x) {
    TRY(check_ew("gelu", out, x, "x", NULL, NULL));
    DISPATCH(out->dev, osc_cpu_gelu(out, x), osc_cuda_gelu(out, x));
}

osc_status osc_op_add(osc_tensor *out, const osc_tensor *a, const osc_tensor *b) {
    TRY(check_ew("add", out, a, "a", b, "b"));
    DISPATCH(out->dev, osc_cpu_add(out, a, b), osc_cuda_add(out, a, b));
}

osc_status osc_op_add_rmsnorm(osc_tensor *x, const osc_tensor *d, osc_tensor *out, const osc_tensor *w, float eps) {
    TRY(check_norm("add_rmsnorm", out, x, w, NULL, eps));
    TRY(check_ew("add_rmsnorm", x, x, "x", d, "d"));
    if (out->data == x->data || out->data == d->data)
        return osc_error(OSC_ERR_INVALID_ARG, "add_rmsnorm: out must not alias x or d");
    if (out->dev == OSC_DEV_CPU) {
        TRY(osc_cpu_add(x, x, d));
        return osc_cpu_rmsnorm(out, x, w, eps);
    }
    DISPATCH(out->dev, OSC_OK, osc_cuda_add_rmsnorm(x, d, out, w, eps));
}

osc_status osc_op_add_bias(osc_tensor *x, const osc_tensor *bias) {
    const char *op = "add_bias";
    TRY(check_tensor(op, "x", x)); TRY(check_tensor(op, "bias", bias));
    TRY(same_dev(op, "bias", bias, x));
    osc_dtype dt = act_dt(x->dev);
    TRY(want_dt(op, "x", x, dt)); TRY(want_dt(op, "bias", bias, dt));
    if (osc_tensor_nelem(bias) != last_dim(x))
        return osc_error(OSC_ERR_INVALID_ARG, "add_bias: x %s, bias %s (want x [R,N], bias [N])", sh(x).s, sh(bias).s);
    DISPATCH(x->dev, osc_cpu_add_bias(x, bias), osc_cuda_add_bias(x, bias));
}

osc_status osc_op_softmax(osc_tensor *x) {
    TRY(check_tensor("softmax", "x", x));
    if (!(x->dt == act_dt(x->dev) || x->dt == OSC_F32))
        return osc_error(OSC_ERR_INVALID_ARG, "softmax: x %s has a bad dtype", sh(x).s);
    DISPATCH(x->dev, osc_cpu_softmax(x), osc_cuda_softmax(x));
}

osc_status osc_op_convert(osc_tensor *out, const osc_tensor *in) {
    const char *op = "convert";
    TRY(check_tensor(op, "out", out)); TRY(check_tensor(op, "in", in));
    TRY(same_dev(op, "in", in, out));
    if (osc_tensor_nelem(out) != osc_tensor_nelem(in))
        return osc_error(OSC_ERR_INVALID_ARG, "convert: out %s and in %s differ in size", sh(out).s, sh(in).s);
    int ok_out = out->dt == OSC_F32 || out->dt == OSC_BF16;
    int ok_in = in->dt == OSC_F32 || in->dt == OSC_BF16 || (out->dev == OSC_DEV_CPU && in->dt == OSC_F16 && out->dt == OSC_F32);
    if (!(out->dt == in->dt || (ok_out && ok_in)))
        return osc_error(OSC_ERR_INVALID_ARG, "convert: %s -> %s not supported", sh(in).s, sh(out).s);
    DISPATCH(out->dev, osc_cpu_convert(out, in), osc_cuda_convert(out, in));
}

osc_status osc_op_fill_uniform(osc_tensor *t, uint64_t seed, float lo, float hi) {
    const char *op = "fill_uniform";
    TRY(check_tensor(op, "t", t));
    if (!(t->dt == OSC_F32 || t->dt == act_dt(t->dev)) || !(lo <= hi))
        return osc_error(OSC_ERR_INVALID_ARG, "fill_uniform: t %s, range [%g, %g]", sh(t).s, lo, hi);
    DISPATCH(t->dev, osc_cpu_fill_uniform(t, seed, lo, hi), osc_cuda_fill_uniform(t, seed, lo, hi));
}

osc_status osc_op_argmax(osc_tensor *out, const osc_tensor *x) {
    const char *op = "argmax";
    TRY(check_tensor(op, "out", out)); TRY(check_tensor(op, "x", x));
    TRY(same_dev(op, "x", x, out));
    TRY(want_dt(op, "out", out, OSC_I32));
    if (!(x->dt == act_dt(x->dev) || x->dt == OSC_F32))
        return osc_error(OSC_ERR_INVALID_ARG, "argmax: x %s has a bad dtype", sh(x).s);
    if (osc_tensor_nelem(out) != rows_of(x) || last_dim(x) <= 0)
        return osc_error(OSC_ERR_INVALID_ARG, "argmax: out %s, x %s (want out [R], x [R,N], N > 0)", sh(out).s,
                         sh(x).s);
    DISPATCH(out->dev, osc_cpu_argmax(out, x), osc_cuda_argmax(out, x));
}

/* the tensor / device / dtype checks every attention op starts with */
static osc_status attn_tensors_ok(const char *op, const osc_tensor *out, const osc_tensor *q, const osc_tensor *k,
                                  const osc_tensor *v) {
    TRY(check_tensor(op, "out", out)); TRY(check_tensor(op, "q", q));
    TRY(check_tensor(op, "k", k)); TRY(check_tensor(op, "v", v));
    TRY(same_dev(op, "q", q, out)); TRY(same_dev(op, "k", k, out)); TRY(same_dev(op, "v", v, out));
    osc_dtype dt = act_dt(out->dev);
    TRY(want_dt(op, "out", out, dt)); TRY(want_dt(op, "q", q, dt));
    TRY(want_dt(op, "k", k, dt)); TRY(want_dt(op, "v", v, dt));
    return OSC_OK;
}

osc_status osc_op_attention(osc_tensor *out, const osc_tensor *q, const osc_tensor *k, const osc_tensor *v,
                            int64_t q_pos0, float scale, int causal) {
    TRY(attn_tensors_ok("attention", out, q, k, v));
    if (q->nd != 3 || k->nd != 3 || v->nd != 3 || out->nd != 3 || k->ne[0] != v->ne[0] || k->ne[1] != v->ne[1] ||
        k->ne[2] != q->ne[2] || v->ne[2] != q->ne[2] || out->ne[0] != q->ne[0] || out->ne[1] != q->ne[1] ||
        out->ne[2] != q->ne[2] || k->ne[1] <= 0 || q->ne[1] % k->ne[1] != 0 || q->ne[2] <= 0)
        return osc_error(OSC_ERR_INVALID_ARG,
                         "attention: shapes out %s, q %s, k %s, v %s (want q/out [S,Hq,D], k/v [T,Hkv,D], Hq %% Hkv == 0)",
                         sh(out).s, sh(q).s, sh(k).s, sh(v).s);
    if (q_pos0 < 0 || (causal && q_pos0 + q->ne[0] > k->ne[0]) || (q->ne[0] > 0 && k->ne[0] <= 0))
        return osc_error(OSC_ERR_INVALID_ARG, "attention: q_pos0 %lld + S %lld does not fit T %lld", (long long)q_pos0,
                         (long long)q->ne[0], (long long)k->ne[0]);
    if (out->data == q->data || out->data == k->data || out->data == v->data)
        return osc_error(OSC_ERR_INVALID_ARG, "attention: out must not alias q, k or v");
    if (!isfinite(scale)) return osc_error(OSC_ERR_INVALID_ARG, "attention: scale %g is not finite", (double)scale);
    DISPATCH(out->dev, osc_cpu_attention(out, q, k, v, q_pos0, scale, causal),
             osc_cuda_attention(out, q, k, v, q_pos0, scale, causal));
}

osc_status osc_op_attention_varlen(osc_tensor *out, const osc_tensor *q, const osc_tensor *k, const osc_tensor *v,
                                   const int32_t *cu, int nseg, float scale, int causal) {
    const char *op = "attention_varlen";
    TRY(attn_tensors_ok(op, out, q, k, v));
    if (q->nd != 3 || k->nd != 3 || v->nd != 3 || out->nd != 3 || k->ne[0] != q->ne[0] || v->ne[0] != q->ne[0] ||
        k->ne[1] != v->ne[1] || k->ne[2] != q->ne[2] || v->ne[2] != q->ne[2] || out->ne[0] != q->ne[0] ||
        out->ne[1] != q->ne[1] || out->ne[2] != q->ne[2] || k->ne[1] <= 0 || q->ne[1] % k->ne[1] != 0 || q->ne[2] <= 0)
        return osc_error(OSC_ERR_INVALID_ARG,
                         "%s: shapes out %s, q %s, k %s, v %s (want q/out [N,Hq,D], k/v [N,Hkv,D], Hq %% Hkv == 0)", op,
                         sh(out).s, sh(q).s, sh(k).s, sh(v).s);
    if (nseg < 0 || (nseg > 0 && !cu)) return osc_error(OSC_ERR_INVALID_ARG, "%s: %d segments, offsets %p", op, nseg, (const void *)cu);
    if (q->ne[0] > INT32_MAX) return osc_error(OSC_ERR_UNSUPPORTED, "%s: %lld rows", op, (long long)q->ne[0]);
    for (int s = 0; s < nseg; s++)
        if (cu[s] < 0 || cu[s + 1] < cu[s] || cu[s + 1] > q->ne[0])
            return osc_error(OSC_ERR_INVALID_ARG, "%s: segment %d [%d, %d) is not inside [0, %lld) in order", op, s, cu[s],
                             cu[s + 1], (long long)q->ne[0]);
    if (out->data == q->data || out->data == k->data || out->data == v->data)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: out must not alias q, k or v", op);
    if (!isfinite(scale)) return osc_error(OSC_ERR_INVALID_ARG, "%s: scale %g is not finite", op, (double)scale);
    if (nseg == 0) return OSC_OK;
    if (out->dev == OSC_DEV_CPU) {
        for (int s = 0; s < nseg; s++) {
            int64_t a = cu[s], n = cu[s + 1] - cu[s];
            if (n == 0) continue;
            osc_tensor os = osc_tensor_rows(out, a, n), qs = osc_tensor_rows(q, a, n);
            osc_tensor ks = osc_tensor_rows(k, a, n), vs = osc_tensor_rows(v, a, n);
            TRY(osc_cpu_attention(&os, &qs, &ks, &vs, 0, scale, causal));
        }
        return OSC_OK;
    }
    DISPATCH(out->dev, OSC_OK, osc_cuda_attention_varlen(out, q, k, v, cu, nseg, scale, causal));
}

osc_status osc_op_attention_decode_batch(osc_tensor *out, const osc_tensor *q, const osc_tensor *const *k,
                                         const osc_tensor *const *v, const int *lens, int B, float scale) {
    const char *op = "attention_decode_batch";
    if (B <= 0 || !k || !v || !lens) return osc_error(OSC_ERR_INVALID_ARG, "%s: empty batch", op);
    TRY(check_tensor(op, "out", out)); TRY(check_tensor(op, "q", q));
    if (q->nd != 3 || out->nd != 3 || q->ne[0] != B || out->ne[0] != B || out->ne[1] != q->ne[1] || out->ne[2] != q->ne[2])
        return osc_error(OSC_ERR_INVALID_ARG, "%s: q/out must be [%d, Hq, D]: q %s, out %s", op, B, sh(q).s, sh(out).s);
    for (int b = 0; b < B; b++) {
        const osc_tensor *kb = k[b], *vb = v[b];
        TRY(check_tensor(op, "k", kb)); TRY(check_tensor(op, "v", vb));
        TRY(same_dev(op, "k", kb, out)); TRY(same_dev(op, "v", vb, out));
        if (kb->nd != 3 || vb->nd != 3 || kb->ne[1] != k[0]->ne[1] || vb->ne[1] != kb->ne[1] || kb->ne[2] != q->ne[2] ||
            vb->ne[2] != q->ne[2] || q->ne[1] % kb->ne[1] || lens[b] < 1 || lens[b] > kb->ne[0] || lens[b] > vb->ne[0])
            return osc_error(OSC_ERR_INVALID_ARG, "%s: sequence %d: k %s, v %s, len %d for q %s", op, b, sh(kb).s, sh(vb).s,
                             lens[b], sh(q).s);
    }
    if (out->dev == OSC_DEV_CPU || B == 1) {
        for (int b = 0; b < B; b++) {
            osc_tensor ob = osc_tensor_rows(out, b, 1), qb = osc_tensor_rows(q, b, 1);
            osc_tensor kb = osc_tensor_rows(k[b], 0, lens[b]), vb = osc_tensor_rows(v[b], 0, lens[b]);
            TRY(osc_op_attention(&ob, &qb, &kb, &vb, lens[b] - 1, scale, 1));
        }
        return OSC_OK;
    }
    osc_dtype dt = act_dt(out->dev);
    TRY(want_dt(op, "out", out, dt)); TRY(want_dt(op, "q", q, dt));
    for (int b = 0; b < B; b++) { TRY(want_dt(op, "k", k[b], dt)); TRY(want_dt(op, "v", v[b], dt)); }
    DISPATCH(out->dev, OSC_ERR_UNSUPPORTED, osc_cuda_attention_decode_batch(out, q, k, v, lens, B, scale));
}

/* ---- rope tables -------------------------------------------------------------------------- */

osc_status osc_rope_init(osc_rope *r, int head_dim, double theta, int type, float factor, float low_freq_factor,
                         float high_freq_factor, int orig_max_pos, const int *mrope_section) {
    if (!r) return osc_error(OSC_ERR_INVALID_ARG, "rope_init: r is NULL");
    memset(r, 0, sizeof *r);
    if (head_dim <= 0 || head_dim % 2 || head_dim / 2 > OSC_ROPE_MAX_HALF)
        return osc_error(OSC_ERR_INVALID_ARG, "rope_init: bad head_dim %d", head_dim);
    if (!(theta > 1.0) || isinf(theta)) return osc_error(OSC_ERR_INVALID_ARG, "rope_init: bad theta %g", theta);
    int half = head_dim / 2;
    if (mrope_section) {
        if (mrope_section[0] <= 0 || mrope_section[1] < 0 || mrope_section[2] < 0 ||
            mrope_section[0] + mrope_section[1] + mrope_section[2] != half)
            return osc_error(OSC_ERR_INVALID_ARG, "rope_init: mrope_section [%d,%d,%d] must sum to head_dim/2 = %d",
                             mrope_section[0], mrope_section[1], mrope_section[2], half);
    }
    if (type == OSC_ROPE_LLAMA3 &&
        (!(factor > 0) || !(low_freq_factor > 0) || !(high_freq_factor > low_freq_factor) || orig_max_pos <= 0))
        return osc_error(OSC_ERR_INVALID_ARG, "rope_init: bad llama3 scaling (factor %g, low %g, high %g, orig %d)",
                         (double)factor, (double)low_freq_factor, (double)high_freq_factor, orig_max_pos);
    if (type != OSC_ROPE_DEFAULT && type != OSC_ROPE_LLAMA3)
        return osc_error(OSC_ERR_INVALID_ARG, "rope_init: unknown rope type %d", type);
    r->head_dim = head_dim;
    r->attn_factor = 1.0f;
    if (mrope_section) for (int i = 0; i < 3; i++) r->mrope_section[i] = mrope_section[i];
    for (int j = 0; j < half; j++) {
        /* torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all fp32 */
        float e = (float)(2 * j) / (float)head_dim;
        float p = (float)pow(theta, (double)e);
        float inv = 1.0f / p;
        if (type == OSC_ROPE_LLAMA3) {
            /* transformers _compute_llama3_parameters, fp32 tensor arithmetic with scalars as fp32 */
            float low_wl = (float)((double)orig_max_pos / (double)low_freq_factor);
            float high_wl = (float)((double)orig_max_pos / (double)high_freq_factor);
            float wavelen = (float)(2.0 * M_PI) / inv;
            float inv_l = wavelen > low_wl ? inv / factor : inv;
            if (!(wavelen < high_wl) && !(wavelen > low_wl)) {
                float smooth = ((float)orig_max_pos / wavelen - low_freq_factor) /
                               (float)((double)high_freq_factor - (double)low_freq_factor);
                inv_l = (1.0f - smooth) * inv_l / factor + smooth * inv_l;
            }
            inv = inv_l;
        }
        r->inv_freq[j] = inv;
    }
    return OSC_OK;
}

/* ---- 1-D convolution helpers (audio encoder) ---------------------------------------------- */
#include "cpu/cpu_conv.h"

osc_status osc_op_im2col1d(osc_tensor *out, const osc_tensor *x, int kernel, int stride, int pad) {
    const char *op = "im2col1d";
    TRY(check_tensor(op, "out", out)); TRY(check_tensor(op, "x", x));
    TRY(same_dev(op, "x", x, out));
    osc_dtype dt = act_dt(out->dev);
    TRY(want_dt(op, "out", out, dt)); TRY(want_dt(op, "x", x, dt));
    if (kernel <= 0 || stride <= 0 || pad < 0 || pad >= kernel)
        return osc_error(OSC_ERR_INVALID_ARG, "im2col1d: bad kernel %d, stride %d, pad %d", kernel, stride, pad);
    if (x->nd != 2 || out->nd != 2)
        return osc_error(OSC_ERR_INVALID_ARG, "im2col1d: x %s and out %s must be 2-D", sh(x).s, sh(out).s);
    int64_t T_in = x->ne[0], C = x->ne[1];
    int64_t T_out = T_in + 2 * pad >= kernel ? (T_in + 2 * pad - kernel) / stride + 1 : 0;
    if (out->ne[0] != T_out || out->ne[1] != C * kernel)
        return osc_error(OSC_ERR_INVALID_ARG, "im2col1d: out %s for x %s, kernel %d, stride %d, pad %d (want [%lld,%lld])",
                         sh(out).s, sh(x).s, kernel, stride, pad, (long long)T_out, (long long)(C * kernel));
    if (out->data == x->data && T_out > 0) return osc_error(OSC_ERR_INVALID_ARG, "im2col1d: out must not alias x");
    DISPATCH(out->dev, osc_cpu_im2col1d(out, x, kernel, stride, pad), osc_cuda_im2col1d(out, x, kernel, stride, pad));
}

osc_status osc_op_avgpool2_rows(osc_tensor *out, const osc_tensor *x) {
    const char *op = "avgpool2_rows";
    TRY(check_tensor(op, "out", out)); TRY(check_tensor(op, "x", x));
    TRY(same_dev(op, "x", x, out));
    osc_dtype dt = act_dt(out->dev);
    TRY(want_dt(op, "out", out, dt)); TRY(want_dt(op, "x", x, dt));
    if (x->nd != 2 || out->nd != 2 || out->ne[1] != x->ne[1] || out->ne[0] != x->ne[0] / 2)
        return osc_error(OSC_ERR_INVALID_ARG, "avgpool2_rows: shapes out %s, x %s (want out [R/2,D], x [R,D])", sh(out).s,
                         sh(x).s);
    if (out->data == x->data && out->ne[0] > 0) return osc_error(OSC_ERR_INVALID_ARG, "avgpool2_rows: out must not alias x");
    DISPATCH(out->dev, osc_cpu_avgpool2_rows(out, x), osc_cuda_avgpool2_rows(out, x));
}
