// Fused AdamW over flat f32 params / grads / m / v, optionally writing the bf16 working copy
// in the same pass. c1 = 1 − β1^t and c2 = 1 − β2^t come from the host (computed in f64).

__device__ __forceinline__ float adamw_one(float& w, float g, float& m, float& v, float lr, float b1, float b2, float eps, float wd, float c1, float c2, float gs) {
  g *= gs;
  m = b1 * m + (1.0f - b1) * g;
  v = b2 * v + (1.0f - b2) * g * g;
  w = w - lr * ((m / c1) / (sqrtf(v / c2) + eps) + wd * w);
  return w;
}

extern "C" __global__ void adamw_f32(float* __restrict__ params, const float* __restrict__ grads, float* __restrict__ ms, float* __restrict__ vs,
    bf16* __restrict__ lowp, i64 n, float lr, float b1, float b2, float eps, float wd, float c1, float c2, float gs, int vec) {
  i64 stride = (i64)gridDim.x * blockDim.x;
  i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  i64 start = 0;
  if (vec) {
    i64 nv = n >> 2;
    for (i64 i = tid; i < nv; i += stride) {
      float4 w = reinterpret_cast<float4*>(params)[i];
      float4 g = reinterpret_cast<const float4*>(grads)[i];
      float4 m = reinterpret_cast<float4*>(ms)[i];
      float4 v = reinterpret_cast<float4*>(vs)[i];
      adamw_one(w.x, g.x, m.x, v.x, lr, b1, b2, eps, wd, c1, c2, gs);
      adamw_one(w.y, g.y, m.y, v.y, lr, b1, b2, eps, wd, c1, c2, gs);
      adamw_one(w.z, g.z, m.z, v.z, lr, b1, b2, eps, wd, c1, c2, gs);
      adamw_one(w.w, g.w, m.w, v.w, lr, b1, b2, eps, wd, c1, c2, gs);
      reinterpret_cast<float4*>(params)[i] = w;
      reinterpret_cast<float4*>(ms)[i] = m;
      reinterpret_cast<float4*>(vs)[i] = v;
      if (lowp != nullptr) reinterpret_cast<uint2*>(lowp)[i] = make_uint2(pack_bf2(w.x, w.y), pack_bf2(w.z, w.w));
    }
    start = nv * 4;
  }
  for (i64 i = start + tid; i < n; i += stride) {
    float w = params[i], m = ms[i], v = vs[i];
    adamw_one(w, grads[i], m, v, lr, b1, b2, eps, wd, c1, c2, gs);
    params[i] = w; ms[i] = m; vs[i] = v;
    if (lowp != nullptr) lowp[i] = f2bf(w);
  }
}

// Fused Lion: every operation an f32 one in the CPU reference's order, with the _rn intrinsics
// so NVRTC contracts nothing into a fused multiply-add: the result is the CPU's bit for bit.
// c1 = 1 − β1 and c2 = 1 − β2 come from the host, rounded to f32.
__device__ __forceinline__ void lion_one(float& w, float g, float& m, float lr, float b1, float b2, float c1, float c2, float wd, float gs) {
  g = __fmul_rn(g, gs);
  float c = __fadd_rn(__fmul_rn(b1, m), __fmul_rn(c1, g));
  float s = c > 0.0f ? 1.0f : (c < 0.0f ? -1.0f : 0.0f);
  w = __fsub_rn(w, __fmul_rn(lr, __fadd_rn(s, __fmul_rn(wd, w))));
  m = __fadd_rn(__fmul_rn(b2, m), __fmul_rn(c2, g));
}

extern "C" __global__ void lion_f32(float* __restrict__ params, const float* __restrict__ grads, float* __restrict__ ms, bf16* __restrict__ lowp, i64 n,
    float lr, float b1, float b2, float c1, float c2, float wd, float gs, int vec) {
  i64 stride = (i64)gridDim.x * blockDim.x;
  i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  i64 start = 0;
  if (vec) {
    i64 nv = n >> 2;
    for (i64 i = tid; i < nv; i += stride) {
      float4 w = reinterpret_cast<float4*>(params)[i];
      float4 g = reinterpret_cast<const float4*>(grads)[i];
      float4 m = reinterpret_cast<float4*>(ms)[i];
      lion_one(w.x, g.x, m.x, lr, b1, b2, c1, c2, wd, gs);
      lion_one(w.y, g.y, m.y, lr, b1, b2, c1, c2, wd, gs);
      lion_one(w.z, g.z, m.z, lr, b1, b2, c1, c2, wd, gs);
      lion_one(w.w, g.w, m.w, lr, b1, b2, c1, c2, wd, gs);
      reinterpret_cast<float4*>(params)[i] = w;
      reinterpret_cast<float4*>(ms)[i] = m;
      if (lowp != nullptr) reinterpret_cast<uint2*>(lowp)[i] = make_uint2(pack_bf2(w.x, w.y), pack_bf2(w.z, w.w));
    }
    start = nv * 4;
  }
  for (i64 i = start + tid; i < n; i += stride) {
    float w = params[i], m = ms[i];
    lion_one(w, grads[i], m, lr, b1, b2, c1, c2, wd, gs);
    params[i] = w; ms[i] = m;
    if (lowp != nullptr) lowp[i] = f2bf(w);
  }
}

// Fused 8-bit AdamW (gpu/adam8.ts states the format and the order of operations; gpu/cpu.ts
// adamw8bit is the reference): one thread block per quantization block of 2048 elements, 256
// threads of 8 elements each. Every f32 operation is an _rn intrinsic, so NVRTC contracts nothing
// into a fused multiply-add and the result is the CPU's bit for bit. maps: the 256 values of m's
// map, then v's. k: lr, b1, b2, 1-b1, 1-b2, eps, wd, gradScale, c1, c2 (host-rounded f32).
#define A8_BLOCK 2048
#define A8_THREADS 256
#define A8_PER (A8_BLOCK / A8_THREADS)

__device__ __forceinline__ int a8_nearest(const float* map, float y) {
  int lo = 0;
#pragma unroll
  for (int step = 128; step >= 1; step >>= 1) if (map[lo + step] <= y) lo += step;
  if (lo < 255 && __fsub_rn(map[lo + 1], y) < __fsub_rn(y, map[lo])) lo++;
  return lo;
}

// Max of two NaN-free partials (the per-thread maxima never take a NaN).
__device__ __forceinline__ float a8_max(float a, float b) { return b > a ? b : a; }

extern "C" __global__ void __launch_bounds__(A8_THREADS) adamw8bit_f32(float* __restrict__ params, const float* __restrict__ grads,
    unsigned char* __restrict__ mc, unsigned char* __restrict__ vc, float* __restrict__ scales, const float* __restrict__ maps,
    bf16* __restrict__ lowp, i64 n, float lr, float b1, float b2, float ob1, float ob2, float eps, float wd, float gs, float c1, float c2) {
  __shared__ float map[512];
  __shared__ float red[2][A8_THREADS / 32];
  for (int i = threadIdx.x; i < 512; i += A8_THREADS) map[i] = maps[i];
  __syncthreads();
  const i64 b = blockIdx.x;
  const i64 base = b * A8_BLOCK;
  const float sm = scales[2 * b], sv = scales[2 * b + 1];
  float m[A8_PER], v[A8_PER];
  float am = 0.0f, av = 0.0f;
#pragma unroll
  for (int j = 0; j < A8_PER; j++) {
    const i64 i = base + threadIdx.x + (i64)j * A8_THREADS;
    m[j] = 0.0f; v[j] = 0.0f;
    if (i >= n) continue;
    float g = __fmul_rn(grads[i], gs);
    float mi = __fadd_rn(__fmul_rn(b1, __fmul_rn(map[mc[i]], sm)), __fmul_rn(ob1, g));
    float vi = __fadd_rn(__fmul_rn(b2, __fmul_rn(map[256 + vc[i]], sv)), __fmul_rn(__fmul_rn(ob2, g), g));
    float w = params[i];
    float u = __fdiv_rn(__fdiv_rn(mi, c1), __fadd_rn(__fsqrt_rn(__fdiv_rn(vi, c2)), eps));
    w = __fsub_rn(w, __fmul_rn(lr, __fadd_rn(u, __fmul_rn(wd, w))));
    params[i] = w;
    if (lowp != nullptr) lowp[i] = f2bf(w);
    m[j] = mi; v[j] = vi;
    float a = fabsf(mi);
    if (a > am) am = a;
    if (vi > av) av = vi;
  }
  // Block absmax: max is exact and, on NaN-free partials, independent of the order.
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) {
    am = a8_max(am, __shfl_xor_sync(0xffffffffu, am, o));
    av = a8_max(av, __shfl_xor_sync(0xffffffffu, av, o));
  }
  if ((threadIdx.x & 31) == 0) { red[0][threadIdx.x >> 5] = am; red[1][threadIdx.x >> 5] = av; }
  __syncthreads();
  am = 0.0f; av = 0.0f;
#pragma unroll
  for (int k = 0; k < A8_THREADS / 32; k++) { am = a8_max(am, red[0][k]); av = a8_max(av, red[1][k]); }
  if (threadIdx.x == 0) { scales[2 * b] = am; scales[2 * b + 1] = av; }
#pragma unroll
  for (int j = 0; j < A8_PER; j++) {
    const i64 i = base + threadIdx.x + (i64)j * A8_THREADS;
    if (i >= n) continue;
    mc[i] = (unsigned char)a8_nearest(map, am == 0.0f ? 0.0f : __fdiv_rn(m[j], am));
    vc[i] = (unsigned char)a8_nearest(map + 256, av == 0.0f ? 0.0f : __fdiv_rn(v[j], av));
  }
}

// Fused 8-bit Lion (gpu/adam8.ts states the format and the order of operations; gpu/cpu.ts
// lion8bit is the reference): adamw8bit_f32's block layout with one moment, m, and one absmax per
// block; lion_one's f32 operations on the dequantized m, then m requantized with the block's new
// absmax. maps: m's 256 values (the same upload as adamw8bit's, whose first half they are).
// k: lr, b1, b2, 1-b1, 1-b2, wd, gradScale (host-rounded f32).
extern "C" __global__ void __launch_bounds__(A8_THREADS) lion8bit_f32(float* __restrict__ params, const float* __restrict__ grads,
    unsigned char* __restrict__ mc, float* __restrict__ scales, const float* __restrict__ maps, bf16* __restrict__ lowp, i64 n,
    float lr, float b1, float b2, float c1, float c2, float wd, float gs) {
  __shared__ float map[256];
  __shared__ float red[A8_THREADS / 32];
  for (int i = threadIdx.x; i < 256; i += A8_THREADS) map[i] = maps[i];
  __syncthreads();
  const i64 b = blockIdx.x;
  const i64 base = b * A8_BLOCK;
  const float sm = scales[b];
  float m[A8_PER];
  float am = 0.0f;
#pragma unroll
  for (int j = 0; j < A8_PER; j++) {
    const i64 i = base + threadIdx.x + (i64)j * A8_THREADS;
    m[j] = 0.0f;
    if (i >= n) continue;
    float w = params[i];
    float mi = __fmul_rn(map[mc[i]], sm);
    lion_one(w, grads[i], mi, lr, b1, b2, c1, c2, wd, gs);
    params[i] = w;
    if (lowp != nullptr) lowp[i] = f2bf(w);
    m[j] = mi;
    float a = fabsf(mi);
    if (a > am) am = a;
  }
  // Block absmax: max is exact and, on NaN-free partials, independent of the order.
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) am = a8_max(am, __shfl_xor_sync(0xffffffffu, am, o));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = am;
  __syncthreads();
  am = 0.0f;
#pragma unroll
  for (int k = 0; k < A8_THREADS / 32; k++) am = a8_max(am, red[k]);
  if (threadIdx.x == 0) scales[b] = am;
#pragma unroll
  for (int j = 0; j < A8_PER; j++) {
    const i64 i = base + threadIdx.x + (i64)j * A8_THREADS;
    if (i >= n) continue;
    mc[i] = (unsigned char)a8_nearest(map, am == 0.0f ? 0.0f : __fdiv_rn(m[j], am));
  }
}

// Zeroth-order perturbation (gpu/zo.ts, the reference is gpu/cpu.ts addSigns): params[i] += ±scale,
// the sign from a hash of the step's seed and the element's index in the flat layout. One
// correctly rounded f32 addition, so the result is the CPU's bit for bit.
__device__ __forceinline__ unsigned zo_mix(unsigned x) {
  x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
  return x;
}

extern "C" __global__ void zo_signs_f32(float* __restrict__ params, bf16* __restrict__ lowp, i64 n, i64 offset, int seed0, int seed1, float scale) {
  i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    u64 idx = (u64)(offset + i);
    unsigned h = zo_mix(zo_mix((unsigned)idx ^ (unsigned)seed0) ^ (unsigned)(idx >> 32) ^ (unsigned)seed1);
    float w = __fadd_rn(params[i], h >= 0x80000000u ? -scale : scale);
    params[i] = w;
    if (lowp != nullptr) lowp[i] = f2bf(w);
  }
}
