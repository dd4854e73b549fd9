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
