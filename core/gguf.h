/* GGUF reader (llama.cpp's single-file model format, versions 2 and 3, little-endian).
 *
 * The file is memory-mapped read-only. osc_gguf_open parses the header, every metadata
 * key/value (all value types, arrays nested to OSC_GGUF_MAX_DEPTH), the tensor infos and
 * general.alignment (default 32), and checks everything before use, since files are untrusted:
 * counts against the bytes left in the file before anything is allocated, string lengths, value
 * and tensor type ids, duplicate keys and tensor names, 1..4 dims, element-count and byte-size
 * overflow, row sizes against the quantization block, tensor offsets (aligned, inside the data
 * section, not overlapping). Any problem gives OSC_ERR_FORMAT with a message that starts with
 * the path ("PATH: ..."); OSC_ERR_IO when the file cannot be opened; OSC_ERR_UNSUPPORTED for a
 * big-endian file or version 1.
 *
 * Strings in the file are length-prefixed, not NUL-terminated: string values are handed out as
 * (pointer, length) into the mapping. Keys and tensor names are copied and NUL-terminated (a key
 * or name holding a NUL byte is refused).
 *
 * Ownership: osc_gguf owns its mapping and every pointer it hands out; all stay valid until
 * osc_gguf_close(). Thread-safety: after open, every call here is read-only and may be made from
 * any thread. */
#ifndef OSC_CORE_GGUF_H
#define OSC_CORE_GGUF_H
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define OSC_GGUF_DEFAULT_ALIGNMENT 32
#define OSC_GGUF_MAX_DIMS 4
#define OSC_GGUF_MAX_DEPTH 8      /* arrays of arrays, at most this deep */
#define OSC_GGUF_MAX_NAME 255     /* longest key or tensor name, bytes */

/* Metadata value types (the GGUF spec's numbering). */
typedef enum osc_gguf_type {
    OSC_GGUF_U8 = 0, OSC_GGUF_I8 = 1, OSC_GGUF_U16 = 2, OSC_GGUF_I16 = 3,
    OSC_GGUF_U32 = 4, OSC_GGUF_I32 = 5, OSC_GGUF_F32 = 6, OSC_GGUF_BOOL = 7,
    OSC_GGUF_STRING = 8, OSC_GGUF_ARRAY = 9, OSC_GGUF_U64 = 10, OSC_GGUF_I64 = 11,
    OSC_GGUF_F64 = 12
} osc_gguf_type;

/* Tensor types (ggml's numbering). The reader knows the block layout of all of these (so a file
 * holding any of them parses); osc_ggml_can_dequant() says which ones it can convert. */
enum {
    OSC_GGML_F32 = 0, OSC_GGML_F16 = 1, OSC_GGML_Q4_0 = 2, OSC_GGML_Q4_1 = 3,
    OSC_GGML_Q5_0 = 6, OSC_GGML_Q5_1 = 7, OSC_GGML_Q8_0 = 8, OSC_GGML_Q8_1 = 9,
    OSC_GGML_Q2_K = 10, OSC_GGML_Q3_K = 11, OSC_GGML_Q4_K = 12, OSC_GGML_Q5_K = 13,
    OSC_GGML_Q6_K = 14, OSC_GGML_Q8_K = 15, OSC_GGML_IQ2_XXS = 16, OSC_GGML_IQ2_XS = 17,
    OSC_GGML_IQ3_XXS = 18, OSC_GGML_IQ1_S = 19, OSC_GGML_IQ4_NL = 20, OSC_GGML_IQ3_S = 21,
    OSC_GGML_IQ2_S = 22, OSC_GGML_IQ4_XS = 23, OSC_GGML_I8 = 24, OSC_GGML_I16 = 25,
    OSC_GGML_I32 = 26, OSC_GGML_I64 = 27, OSC_GGML_F64 = 28, OSC_GGML_IQ1_M = 29,
    OSC_GGML_BF16 = 30, OSC_GGML_TQ1_0 = 34, OSC_GGML_TQ2_0 = 35, OSC_GGML_MXFP4 = 39,
    OSC_GGML_NVFP4 = 40, OSC_GGML_Q1_0 = 41
};

/* A metadata value. Read the fields directly or through the helpers below.
 *   scalars (U8..I64, F32, F64, BOOL): p points at the little-endian bytes (may be unaligned);
 *   STRING: p = the bytes, n = the length (not NUL-terminated);
 *   ARRAY: elem = the element type, n = the element count, p = the first element.
 *     Fixed-size elements are packed at p. STRING elements: use osc_gguf_arr_str. ARRAY elements
 *     (nested arrays): items[i] is element i. */
typedef struct osc_gguf_value {
    osc_gguf_type type;
    osc_gguf_type elem;
    uint64_t n;
    const unsigned char *p;
    const uint64_t *str_off;             /* ARRAY of STRING: offset of element i from p */
    const struct osc_gguf_value *items;  /* ARRAY of ARRAY */
} osc_gguf_value;

typedef struct osc_gguf_tensor {
    const char *name;
    uint32_t type;                 /* OSC_GGML_* */
    int n_dims;                    /* 1..4 */
    int64_t ne[OSC_GGUF_MAX_DIMS]; /* GGUF order: ne[0] is the contiguous (innermost) dim, the
                                      reverse of a HuggingFace / numpy shape; unused dims are 1 */
    int64_t nelem;
    uint64_t offset;               /* from the start of the data section */
    const void *data;              /* inside the mapping; may be unaligned */
    size_t nbytes;
    const char *file;              /* the path, for messages */
} osc_gguf_tensor;

typedef struct osc_gguf osc_gguf;

osc_status osc_gguf_open(const char *path, osc_gguf **out);
void osc_gguf_close(osc_gguf *g); /* NULL is fine */

/* 1 when path is a regular file that starts with the GGUF magic or whose name ends in ".gguf"
 * (so that a broken .gguf file still reaches this reader and gets a clear error); else 0. */
int osc_gguf_is_file(const char *path);

const char *osc_gguf_path(const osc_gguf *g);
uint32_t osc_gguf_version(const osc_gguf *g);
uint64_t osc_gguf_alignment(const osc_gguf *g);
uint64_t osc_gguf_data_offset(const osc_gguf *g); /* file offset of the data section */

/* ---- metadata ---- */

int osc_gguf_n_kv(const osc_gguf *g);
/* Key and value of entry i in file order; NULL when out of range. */
const char *osc_gguf_key_at(const osc_gguf *g, int i);
const osc_gguf_value *osc_gguf_value_at(const osc_gguf *g, int i);
/* NULL when absent (no error is set). O(log n). */
const osc_gguf_value *osc_gguf_find(const osc_gguf *g, const char *key);
const char *osc_gguf_type_name(osc_gguf_type t);

/* Typed getters. OSC_OK with *out set; OSC_ERR_FORMAT "PATH: missing metadata KEY" when the key
 * is absent and "PATH: metadata KEY is TYPE, expected ..." when it has another type or does not
 * fit. Integer getters take any integer type whose value fits; f32 takes F32 or F64; bool takes
 * BOOL only; string gives the bytes (not NUL-terminated) and their length. Check presence first
 * with osc_gguf_find for optional keys. */
osc_status osc_gguf_get_u32(const osc_gguf *g, const char *key, uint32_t *out);
osc_status osc_gguf_get_i32(const osc_gguf *g, const char *key, int32_t *out);
osc_status osc_gguf_get_u64(const osc_gguf *g, const char *key, uint64_t *out);
osc_status osc_gguf_get_f32(const osc_gguf *g, const char *key, float *out);
osc_status osc_gguf_get_bool(const osc_gguf *g, const char *key, int *out);
osc_status osc_gguf_get_str(const osc_gguf *g, const char *key, const char **s, size_t *len);
/* An array whose elements have type elem (elem < 0: any element type). */
osc_status osc_gguf_get_arr(const osc_gguf *g, const char *key, int elem, const osc_gguf_value **out);

/* Value helpers. Scalars: 1 when v is an integer (or BOOL) type whose value fits, else 0. */
int osc_gguf_value_i64(const osc_gguf_value *v, int64_t *out);
int osc_gguf_value_u64(const osc_gguf_value *v, uint64_t *out);
/* 1 when v is F32 or F64 (or an integer type), with the value as a double. */
int osc_gguf_value_f64(const osc_gguf_value *v, double *out);
/* Element i of an array of fixed-size scalars, as for the scalar helpers; 0 when out of range or
 * of another element type. */
int osc_gguf_arr_i64(const osc_gguf_value *arr, uint64_t i, int64_t *out);
int osc_gguf_arr_f64(const osc_gguf_value *arr, uint64_t i, double *out);
/* Element i of an array of strings (bytes, not NUL-terminated); NULL when out of range or not
 * a string array. */
const char *osc_gguf_arr_str(const osc_gguf_value *arr, uint64_t i, size_t *len);
/* Element i of an array of arrays; NULL when out of range or not nested. */
const osc_gguf_value *osc_gguf_arr_at(const osc_gguf_value *arr, uint64_t i);

/* ---- tensors ---- */

int osc_gguf_n_tensors(const osc_gguf *g);
const osc_gguf_tensor *osc_gguf_tensor_at(const osc_gguf *g, int i); /* file order */
/* NULL when absent (no error is set). O(log n). */
const osc_gguf_tensor *osc_gguf_tensor_find(const osc_gguf *g, const char *name);

/* Type traits. Name "?" / sizes 0 for an unknown id. */
const char *osc_ggml_type_name(uint32_t type);
int osc_ggml_block_size(uint32_t type);  /* elements per block */
int osc_ggml_type_size(uint32_t type);   /* bytes per block */
/* 1 for the types osc_gguf_read_f32 converts: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
 * Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. */
int osc_ggml_can_dequant(uint32_t type);

/* Decode nblocks whole blocks of a type at src (any alignment) into float32, bit-exactly as
 * ggml's reference dequantization (and the gguf Python package) do. */
osc_status osc_ggml_dequant(uint32_t type, const void *src, int64_t nblocks, float *dst);

/* Elements [first, first + n) of a tensor in storage order (ne[0] fastest) as float32 or as
 * bfloat16 (float32 rounded to nearest even; BF16 tensors are copied as they are). first and n
 * must be multiples of the type's block size (whole rows always are). Errors:
 * OSC_ERR_UNSUPPORTED "FILE: tensor NAME has type Q5_0, which this reader cannot convert",
 * OSC_ERR_INVALID_ARG for a bad range. Large ranges are converted on several threads. */
osc_status osc_gguf_read_f32(const osc_gguf_tensor *t, int64_t first, int64_t n, float *dst);
osc_status osc_gguf_read_bf16(const osc_gguf_tensor *t, int64_t first, int64_t n, uint16_t *dst);

#endif
