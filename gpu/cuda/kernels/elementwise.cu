// Elementwise kernels: add, residual, scale, cast, GELU forward/backward.
// One generic grid-stride body (no __restrict__: add and scale run in place, out == a); the host picks the 8-wide vector path when every pointer is
// 16-byte aligned. Arithmetic is f32; each output is rounded once to its storage type.

template <typename T> __device__ __forceinline__ void load8(const T* p, float* v);
template <> __device__ __forceinline__ void load8<float>(const float* p, float* v) { Vec<float>::load(p, v); Vec<float>::load(p + 4, v + 4); }
template <> __device__ __forceinline__ void load8<bf16>(const bf16* p, float* v) { Vec<bf16>::load(p, v); }
template <typename T> __device__ __forceinline__ void store8(T* p, const float* v);
template <> __device__ __forceinline__ void store8<float>(float* p, const float* v) { Vec<float>::store(p, v); Vec<float>::store(p + 4, v + 4); }
template <> __device__ __forceinline__ void store8<bf16>(bf16* p, const float* v) { Vec<bf16>::store(p, v); }

#define GELU_K 0.7978845608028654f
struct OpAdd { static const bool B = true; __device__ static float f(float a, float b, float) { return a + b; } };
struct OpScale { static const bool B = false; __device__ static float f(float a, float, float s) { return a * s; } };
struct OpCopy { static const bool B = false; __device__ static float f(float a, float, float) { return a; } };
struct OpGelu {
  static const bool B = false;
  __device__ static float f(float x, float, float) {
    float u = GELU_K * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
  }
};
struct OpGeluBack {
  static const bool B = true;
  __device__ static float f(float x, float dy, float) {
    float u = GELU_K * (x + 0.044715f * x * x * x);
    float th = tanhf(u);
    float sech2 = 1.0f - th * th;
    float local = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
    return local * dy;
  }
};

template <class Op, typename TO, typename TA, typename TB>
__device__ __forceinline__ void ew_body(TO* out, const TA* a, const TB* b, float s, i64 n, int vec) {
  i64 stride = (i64)gridDim.x * blockDim.x;
  i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  i64 start = 0;
  if (vec) {
    i64 nv = n >> 3;
    for (i64 i = tid; i < nv; i += stride) {
      float va[8], vb[8], vo[8];
      load8<TA>(a + 8 * i, va);
      if (Op::B) load8<TB>(b + 8 * i, vb);
#pragma unroll
      for (int k = 0; k < 8; k++) vo[k] = Op::f(va[k], Op::B ? vb[k] : 0.0f, s);
      store8<TO>(out + 8 * i, vo);
    }
    start = nv * 8;
  }
  for (i64 i = start + tid; i < n; i += stride) {
    float vb = Op::B ? to_f(b[i]) : 0.0f;
    out[i] = from_f<TO>(Op::f(to_f(a[i]), vb, s));
  }
}

#define EW(NAME, OP, TO, TA, TB) \
  extern "C" __global__ void NAME(TO* out, const TA* a, const TB* b, float s, i64 n, int vec) { ew_body<OP, TO, TA, TB>(out, a, b, s, n, vec); }

EW(ew_add_f32, OpAdd, float, float, float)
EW(ew_add_bf16, OpAdd, bf16, bf16, bf16)
EW(ew_scale_f32, OpScale, float, float, float)
EW(ew_scale_bf16, OpScale, bf16, bf16, bf16)
EW(ew_cast_f32_bf16, OpCopy, bf16, float, float)
EW(ew_cast_bf16_f32, OpCopy, float, bf16, bf16)
EW(gelu_fwd_f32, OpGelu, float, float, float)
EW(gelu_fwd_bf16, OpGelu, bf16, bf16, bf16)
EW(gelu_bwd_f32, OpGeluBack, float, float, float)
EW(gelu_bwd_bf16, OpGeluBack, bf16, bf16, bf16)

// out[n, oc] += bias[oc] (the matmul bias when cuBLASLt's epilogue is not used).
template <typename T>
__device__ __forceinline__ void bias_add(T* __restrict__ out, const T* __restrict__ bias, i64 N, int OC) {
  i64 n = N * OC;
  i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = from_f<T>(to_f(out[i]) + to_f(bias[i % OC]));
}
extern "C" __global__ void bias_add_f32(float* out, const float* bias, i64 N, int OC) { bias_add<float>(out, bias, N, OC); }
extern "C" __global__ void bias_add_bf16(bf16* out, const bf16* bias, i64 N, int OC) { bias_add<bf16>(out, bias, N, OC); }
