/* A stand-in for libtensorflowlite_c: the subset of the C API effv2-runtime's edgetpu backend
 * calls, with deterministic behaviour the tests can predict.
 *
 * TfLiteModelCreate really parses the .tflite flatbuffer (bounds-checked) for subgraph 0's first
 * input and output tensor: shape, type, name, per-tensor scale and zero point; anything else
 * returns NULL, as TFLite's verifier would. Invoke "runs" the model by copying input bytes to
 * the output cyclically, out[k] = in[(k + s) % n], with s = 1 when a delegate is attached (so a
 * test sees that the Edge TPU delegate reached the interpreter) and 0 otherwise.
 * EFFV2_STUB_INVOKE_FAIL=1 makes Invoke return kTfLiteError. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct TfLiteQuantizationParams { float scale; int32_t zero_point; } TfLiteQuantizationParams;

typedef struct TfLiteTensor {
  int type;
  int ndims;
  int dims[8];
  TfLiteQuantizationParams q;
  char name[64];
  uint8_t *data;
  size_t bytes;
} TfLiteTensor;

typedef struct TfLiteModel { TfLiteTensor in, out; } TfLiteModel;
typedef struct TfLiteInterpreterOptions { int threads; void *delegate; } TfLiteInterpreterOptions;
typedef struct TfLiteInterpreter { TfLiteTensor in, out; void *delegate; int allocated; } TfLiteInterpreter;

const char *TfLiteVersion(void) { return "stub-2.0 (effv2 test)"; }

/* ---- a bounds-checked flatbuffer reader, just enough for TFLite's schema ---- */
typedef struct { const uint8_t *p; size_t n; } Buf;

static int rd(Buf b, size_t off, void *v, size_t len) {
  if (off > b.n || len > b.n - off) return 0;
  memcpy(v, b.p + off, len); /* little-endian hosts only, like TFLite's files */
  return 1;
}

/* Position of field `f` of the table at `t`, or 0 when absent/invalid. */
static size_t field(Buf b, size_t t, int f) {
  int32_t soff;
  uint16_t vsize, fo;
  if (!rd(b, t, &soff, 4)) return 0;
  int64_t vt = (int64_t)t - soff;
  if (vt < 0 || !rd(b, (size_t)vt, &vsize, 2)) return 0;
  if ((size_t)(4 + 2 * f + 2) > vsize || !rd(b, (size_t)vt + 4 + 2 * f, &fo, 2) || fo == 0) return 0;
  return t + fo;
}

/* Follow the uoffset stored at `at` (0 = an absent field); 0 when out of range. */
static size_t deref(Buf b, size_t at) {
  uint32_t o;
  if (!at || !rd(b, at, &o, 4) || (size_t)o >= b.n - at) return 0;
  return at + o;
}

/* Vector at field f: element count and position of element 0. */
static int vec(Buf b, size_t t, int f, uint32_t *len, size_t *first) {
  size_t v = deref(b, field(b, t, f));
  if (!v || !rd(b, v, len, 4)) return 0;
  *first = v + 4;
  return 1; /* each element read is bounds-checked */
}

static int elem_size(int type) {
  switch (type) {
    case 0: case 2: return 4; /* float32, int32 */
    case 3: case 9: return 1; /* uint8, int8 */
    default: return 0;
  }
}

static int read_tensor(Buf b, size_t tensors, uint32_t ntensors, int32_t index, TfLiteTensor *out) {
  memset(out, 0, sizeof *out);
  if (index < 0 || (uint32_t)index >= ntensors) return 0;
  size_t t = deref(b, tensors + 4 * (size_t)index);
  if (!t) return 0;
  uint32_t nd;
  size_t d0;
  if (!vec(b, t, 0, &nd, &d0) || nd > 8) return 0;
  out->ndims = (int)nd;
  size_t count = 1;
  for (uint32_t i = 0; i < nd; i++) {
    if (!rd(b, d0 + 4 * i, &out->dims[i], 4) || out->dims[i] < 0) return 0;
    count *= (size_t)out->dims[i];
    if (count > ((size_t)1 << 30)) return 0;
  }
  int8_t type = 0; /* TensorType, default FLOAT32 */
  size_t tf = field(b, t, 1);
  if (tf && !rd(b, tf, &type, 1)) return 0;
  out->type = type;
  if (!elem_size(type)) return 0;
  out->bytes = count * (size_t)elem_size(type);
  uint32_t nlen;
  size_t name;
  if (vec(b, t, 3, &nlen, &name)) rd(b, name, out->name, nlen < 63 ? nlen : 63);
  size_t q = deref(b, field(b, t, 4));
  if (q) {
    uint32_t ns, nz;
    size_t s0, z0;
    int64_t zp = 0;
    if (vec(b, q, 2, &ns, &s0) && ns >= 1) rd(b, s0, &out->q.scale, 4);
    if (vec(b, q, 3, &nz, &z0) && nz >= 1 && rd(b, z0, &zp, 8)) out->q.zero_point = (int32_t)zp;
  }
  return 1;
}

TfLiteModel *TfLiteModelCreate(const void *data, size_t size) {
  Buf b = {data, size};
  if (!data || size < 8 || memcmp(b.p + 4, "TFL3", 4) != 0) return NULL;
  uint32_t root;
  if (!rd(b, 0, &root, 4) || root >= size) return NULL;
  uint32_t nsub, ntensors, nin, nout;
  size_t sub0, tensors, ins, outs;
  if (!root || !vec(b, root, 2, &nsub, &sub0) || nsub < 1) return NULL;
  size_t sg = deref(b, sub0);
  if (!sg || !vec(b, sg, 0, &ntensors, &tensors) || !vec(b, sg, 1, &nin, &ins) || !vec(b, sg, 2, &nout, &outs)) return NULL;
  int32_t i0, o0;
  if (nin < 1 || nout < 1 || !rd(b, ins, &i0, 4) || !rd(b, outs, &o0, 4)) return NULL;
  TfLiteModel *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  if (!read_tensor(b, tensors, ntensors, i0, &m->in) || !read_tensor(b, tensors, ntensors, o0, &m->out)) {
    free(m);
    return NULL;
  }
  return m;
}

void TfLiteModelDelete(TfLiteModel *m) { free(m); }

TfLiteInterpreterOptions *TfLiteInterpreterOptionsCreate(void) { return calloc(1, sizeof(TfLiteInterpreterOptions)); }
void TfLiteInterpreterOptionsDelete(TfLiteInterpreterOptions *o) { free(o); }
void TfLiteInterpreterOptionsSetNumThreads(TfLiteInterpreterOptions *o, int32_t n) { o->threads = n; }
void TfLiteInterpreterOptionsAddDelegate(TfLiteInterpreterOptions *o, void *d) { o->delegate = d; }

TfLiteInterpreter *TfLiteInterpreterCreate(const TfLiteModel *m, const TfLiteInterpreterOptions *o) {
  if (!m) return NULL;
  TfLiteInterpreter *it = calloc(1, sizeof *it);
  if (!it) return NULL;
  it->in = m->in;
  it->out = m->out;
  it->delegate = o ? o->delegate : NULL;
  return it;
}

void TfLiteInterpreterDelete(TfLiteInterpreter *it) {
  if (!it) return;
  free(it->in.data);
  free(it->out.data);
  free(it);
}

int TfLiteInterpreterAllocateTensors(TfLiteInterpreter *it) {
  free(it->in.data);
  free(it->out.data);
  it->in.data = calloc(it->in.bytes + 1, 1);
  it->out.data = calloc(it->out.bytes + 1, 1);
  it->allocated = it->in.data && it->out.data;
  return it->allocated ? 0 : 1;
}

int TfLiteInterpreterInvoke(TfLiteInterpreter *it) {
  const char *fail = getenv("EFFV2_STUB_INVOKE_FAIL");
  if (!it->allocated || (fail && strcmp(fail, "1") == 0) || it->in.bytes == 0) return 1;
  size_t shift = it->delegate ? 1 : 0;
  for (size_t k = 0; k < it->out.bytes; k++) it->out.data[k] = it->in.data[(k + shift) % it->in.bytes];
  return 0;
}

int32_t TfLiteInterpreterGetInputTensorCount(const TfLiteInterpreter *it) { (void)it; return 1; }
int32_t TfLiteInterpreterGetOutputTensorCount(const TfLiteInterpreter *it) { (void)it; return 1; }
TfLiteTensor *TfLiteInterpreterGetInputTensor(const TfLiteInterpreter *it, int32_t i) {
  return i == 0 ? (TfLiteTensor *)&it->in : NULL;
}
const TfLiteTensor *TfLiteInterpreterGetOutputTensor(const TfLiteInterpreter *it, int32_t i) {
  return i == 0 ? &it->out : NULL;
}

int TfLiteTensorType(const TfLiteTensor *t) { return t->type; }
int32_t TfLiteTensorNumDims(const TfLiteTensor *t) { return t->ndims; }
int32_t TfLiteTensorDim(const TfLiteTensor *t, int32_t i) { return i >= 0 && i < t->ndims ? t->dims[i] : -1; }
size_t TfLiteTensorByteSize(const TfLiteTensor *t) { return t->bytes; }
const char *TfLiteTensorName(const TfLiteTensor *t) { return t->name; }
TfLiteQuantizationParams TfLiteTensorQuantizationParams(const TfLiteTensor *t) { return t->q; }

int TfLiteTensorCopyFromBuffer(TfLiteTensor *t, const void *src, size_t n) {
  if (!t->data || n != t->bytes) return 1;
  memcpy(t->data, src, n);
  return 0;
}

int TfLiteTensorCopyToBuffer(const TfLiteTensor *t, void *dst, size_t n) {
  if (!t->data || n != t->bytes) return 1;
  memcpy(dst, t->data, n);
  return 0;
}
