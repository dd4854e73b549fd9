// Blockwise absmax int8 / int4 quantization, byte-identical to codec/quant.ts: every step is
// one IEEE f32 operation (__fdiv_rn, rintf, __fmul_rn, __fadd_rn) and this file is compiled
// without fast-math, so denormal scales survive. Non-finite inputs and out-of-range codes are
// reported through the flags buffer (first index and count), never smeared into a scale.
//
// Fast path (blockSize % 4 == 0, aligned pointers): a group of tpb threads owns a quant block
// at a time and keeps it in registers (≤ 4 float4 per thread), so the source is read exactly
// once.
// (Two float4 per thread at 32 registers spills and runs 2-6% slower.)

#define Q_MAXU 4


__device__ __forceinline__ float q_scale(float absmax, float qmax) {
  float scale = __fdiv_rn(absmax, qmax);
  if (scale == 0.0f && absmax > 0.0f) scale = __int_as_float(1);
  if (f_isinf(__fmul_rn(qmax, scale))) scale = __int_as_float(__float_as_int(scale) - 1);
  return scale;
}
__device__ __forceinline__ int q_code(float x, float scale, float qmax) {
  if (scale == 0.0f) return 0;
  float v = rintf(__fdiv_rn(x, scale));
  v = fminf(fmaxf(v, -qmax), qmax);
  return (int)v;
}
// Out of line: inlined at each of a thread's 16 call sites, the exact division's register use
// set the fast kernel's occupancy, though it runs for a handful of elements per million.
__device__ __noinline__ int q_code_exact(float x, float scale, float qmax) { return q_code(x, scale, qmax); }
// The same code without a division in the common case, for a block whose scale is non-zero,
// whose reciprocal `inv` is finite and whose inputs are all finite (the caller checks those
// once per block and takes q_code otherwise). y = x · inv is within ~2^-22 (relative) of
// x / scale, and |y| ≲ 128, so it is off by < 3.1e-5 absolute; rounding can only disagree
// with rintf(fl(x / scale)) when y lies that close to a half-integer, i.e. when its distance
// to the nearest integer is ≥ 0.5 - 6.2e-5. Those elements take the exact __fdiv_rn path.
__device__ __forceinline__ int q_code_fast(float x, float scale, float inv, float qmax) {
  float y = x * inv;
  float r = rintf(y);
  if (fabsf(y - r) >= 0.5f - 6.2e-5f) return q_code_exact(x, scale, qmax);
  return (int)fminf(fmaxf(r, -qmax), qmax);
}
__device__ __forceinline__ void q_check(float x, u64 idx, u64* flags) {
  if (!f_isfinite(x)) {
    flag_first(flags, FLAG_QUANT_NONFINITE, idx, __float_as_uint(x));
    atomicAdd(flags + FLAG_QUANT_COUNT, 1ull);
  }
}
// Out of line for the fast kernel, where it sits in a rarely taken branch.
__device__ __noinline__ void q_report(float x, u64 idx, u64* flags) { q_check(x, idx, flags); }

// One quant block's values into registers: unit u (4 elements) of thread t is t + k·tpb.
__device__ __forceinline__ void q_load(float4* vals, const float* __restrict__ src, i64 start, i64 n, int t, int tpb, int U, bool active) {
#pragma unroll
  for (int k = 0; k < Q_MAXU; k++) {
    int u = t + k * tpb;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    i64 e = start + 4 * (i64)u;
    if (active && u < U) {
      if (e + 4 <= n) {
        v = *reinterpret_cast<const float4*>(src + e);
      } else {
        if (e < n) v.x = src[e];
        if (e + 1 < n) v.y = src[e + 1];
        if (e + 2 < n) v.z = src[e + 2];
      }
    }
    vals[k] = v;
  }
}

// Scale and codes of one quant block held in registers by a group of tpb threads. Every
// thread of the CTA calls it (it synchronizes when a group spans warps); `active` says
// whether this group's block exists.
__device__ __forceinline__ void q_block(const float4* vals, float* red, unsigned char* __restrict__ codes, float* __restrict__ scales,
    i64 qb, i64 start, i64 n, int bits, int g, int t, int tpb, int U, bool active, u64* flags) {
  const float qmax = bits == 8 ? 127.0f : 7.0f;
  // |x| as bits: for non-negative floats the order of the bit patterns is the order of the
  // values, and NaN / Inf (all-ones exponent) sort above every finite value, so one integer max
  // per element finds the block's absmax and whether it holds a non-finite input.
  unsigned amax = 0;
#pragma unroll
  for (int k = 0; k < Q_MAXU; k++) {
    float4 v = vals[k];
    amax = max(amax, max(max(__float_as_uint(v.x) & 0x7fffffffu, __float_as_uint(v.y) & 0x7fffffffu),
                         max(__float_as_uint(v.z) & 0x7fffffffu, __float_as_uint(v.w) & 0x7fffffffu)));
  }
  float absmax = __uint_as_float(amax);
  bool nonFinite = amax >= 0x7f800000u;
  if (nonFinite) {
    // Rare: report each non-finite input, and take the absmax as fmaxf does (NaN ignored).
    absmax = 0.0f;
#pragma unroll
    for (int k = 0; k < Q_MAXU; k++) {
      i64 e = start + 4 * (i64)(t + k * tpb);
      float4 v = vals[k];
      absmax = fmaxf(absmax, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
      if (!f_isfinite(v.x)) q_report(v.x, e, flags);
      if (!f_isfinite(v.y)) q_report(v.y, e + 1, flags);
      if (!f_isfinite(v.z)) q_report(v.z, e + 2, flags);
      if (!f_isfinite(v.w)) q_report(v.w, e + 3, flags);
    }
  }
  // Group max: shuffles inside a warp, shared memory across the warps of a group.
  int width = tpb < 32 ? tpb : 32;
  for (int o = width >> 1; o > 0; o >>= 1) absmax = fmaxf(absmax, __shfl_xor_sync(0xffffffffu, absmax, o));
  if (tpb > 32) {
    int w = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) red[w] = absmax;
    __syncthreads();
    int w0 = (g * tpb) >> 5, nw = tpb >> 5;
    for (int k = 0; k < nw; k++) absmax = fmaxf(absmax, red[w0 + k]);
    __syncthreads();  // red is written again by the next block
  }
  if (!active) return;
  float scale = q_scale(absmax, qmax);
  float inv = __frcp_rn(scale);
  if (t == 0) scales[qb] = scale;
  // Exact codes (q_code) for a thread holding a non-finite input, and for a whole group whose
  // scale is zero, whose reciprocal overflows or whose absmax is Inf; finite inputs under a
  // usable scale take the fast path, whose result is the same.
  bool exact = scale == 0.0f || !f_isfinite(inv) || !f_isfinite(absmax) || nonFinite;
#pragma unroll
  for (int k = 0; k < Q_MAXU; k++) {
    int u = t + k * tpb;
    if (u >= U) break;
    i64 e = start + 4 * (i64)u;
    if (e >= n) break;
    float4 v = vals[k];
    int q0, q1, q2, q3;
    if (exact) {
      q0 = q_code_exact(v.x, scale, qmax); q1 = q_code_exact(v.y, scale, qmax); q2 = q_code_exact(v.z, scale, qmax); q3 = q_code_exact(v.w, scale, qmax);
    } else {
      q0 = q_code_fast(v.x, scale, inv, qmax); q1 = q_code_fast(v.y, scale, inv, qmax); q2 = q_code_fast(v.z, scale, inv, qmax); q3 = q_code_fast(v.w, scale, inv, qmax);
    }
    if (bits == 8) {
      unsigned word = (unsigned)(q0 & 0xff) | ((unsigned)(q1 & 0xff) << 8) | ((unsigned)(q2 & 0xff) << 16) | ((unsigned)(q3 & 0xff) << 24);
      if (e + 4 <= n) {
        *reinterpret_cast<unsigned*>(codes + e) = word;
      } else {
        for (int j = 0; j < 4 && e + j < n; j++) codes[e + j] = (unsigned char)(word >> (8 * j));
      }
    } else {
      unsigned b0 = (unsigned)(q0 & 0xf) | ((unsigned)(q1 & 0xf) << 4);
      unsigned b1 = (unsigned)(q2 & 0xf) | ((unsigned)(q3 & 0xf) << 4);
      i64 byte = e >> 1;
      i64 nbytes = (n + 1) >> 1;
      if (byte + 2 <= nbytes) {
        *reinterpret_cast<unsigned short*>(codes + byte) = (unsigned short)(b0 | (b1 << 8));
      } else {
        codes[byte] = (unsigned char)b0;
        if (byte + 1 < nbytes) codes[byte + 1] = (unsigned char)b1;
      }
    }
  }
}

// Grid-stride: each group walks quant blocks gridDim·groups apart, loading the next block
// into registers before it codes the current one, so its loads overlap its own work (on an
// H200 this runs at 0.66-0.86 of copy bandwidth, one block per group and launch at 0.65-0.79).
extern "C" __global__ void __launch_bounds__(256, 3) quant_fast(const float* __restrict__ src, unsigned char* __restrict__ codes, float* __restrict__ scales,
    i64 n, int bs, int bits, int tpb, u64* flags) {
  __shared__ float red[32];
  int groups = blockDim.x / tpb;
  int g = threadIdx.x / tpb, t = threadIdx.x % tpb;
  i64 nblocks = (n + bs - 1) / bs;
  i64 stride = (i64)gridDim.x * groups;
  int U = bs >> 2;
  float4 cur[Q_MAXU], nxt[Q_MAXU];
  i64 base = (i64)blockIdx.x * groups;
  q_load(cur, src, (base + g) * bs, n, t, tpb, U, base + g < nblocks);
  for (; base < nblocks; base += stride) {
    i64 qb = base + g;
    i64 qn = qb + stride;
    q_load(nxt, src, qn * bs, n, t, tpb, U, qn < nblocks);
    q_block(cur, red, codes, scales, qb, qb * bs, n, bits, g, t, tpb, U, qb < nblocks, flags);
#pragma unroll
    for (int k = 0; k < Q_MAXU; k++) cur[k] = nxt[k];
  }
}

// Generic path: one 256-thread block per quant block, two passes over global memory.
extern "C" __global__ void quant_generic(const float* __restrict__ src, unsigned char* __restrict__ codes, float* __restrict__ scales,
    i64 n, int bs, int bits, u64* flags) {
  __shared__ float red[32];
  __shared__ float sh_scale;
  const float qmax = bits == 8 ? 127.0f : 7.0f;
  i64 qb = blockIdx.x;
  i64 start = qb * bs;
  i64 end = start + bs < n ? start + bs : n;
  float absmax = 0.0f;
  for (i64 e = start + threadIdx.x; e < end; e += blockDim.x) {
    float x = src[e];
    q_check(x, e, flags);
    absmax = fmaxf(absmax, fabsf(x));
  }
  absmax = warp_max(absmax);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = absmax;
  __syncthreads();
  if (threadIdx.x == 0) {
    float a = 0.0f;
    for (int k = 0; k < (int)(blockDim.x >> 5); k++) a = fmaxf(a, red[k]);
    float s = q_scale(a, qmax);
    sh_scale = s;
    scales[qb] = s;
  }
  __syncthreads();
  float scale = sh_scale;
  if (bits == 8) {
    for (i64 e = start + threadIdx.x; e < end; e += blockDim.x) codes[e] = (unsigned char)(q_code(src[e], scale, qmax) & 0xff);
  } else {
    // Blocks are even-sized, so a block starts on a byte boundary.
    for (i64 p = start + 2 * (i64)threadIdx.x; p < end; p += 2 * (i64)blockDim.x) {
      unsigned b = (unsigned)(q_code(src[p], scale, qmax) & 0xf);
      if (p + 1 < end) b |= (unsigned)(q_code(src[p + 1], scale, qmax) & 0xf) << 4;
      codes[p >> 1] = (unsigned char)b;
    }
  }
}

__device__ __forceinline__ float dq_one(int q, float scale) { return __fmul_rn((float)q, scale); }
__device__ __forceinline__ void dq_bad(u64 idx, int code, u64* flags) {
  flag_first(flags, FLAG_DEQUANT_CODE, idx, (unsigned)code);
  atomicAdd(flags + FLAG_DEQUANT_COUNT, 1ull);
}

// Fast path: units of 4 elements (blockSize % 4 == 0, dst 16-byte aligned, codes aligned).
extern "C" __global__ void dequant_fast(float* __restrict__ dst, const unsigned char* __restrict__ codes, const float* __restrict__ scales,
    i64 n, int bs, int bits, int acc, u64* flags) {
  i64 nu = (n + 3) >> 2;
  i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 u = (i64)blockIdx.x * blockDim.x + threadIdx.x; u < nu; u += stride) {
    i64 e = u * 4;
    float scale = scales[e / bs];
    int q[4];
    bool full = e + 4 <= n;
    if (bits == 8) {
      if (full) {
        unsigned w = *reinterpret_cast<const unsigned*>(codes + e);
#pragma unroll
        for (int j = 0; j < 4; j++) q[j] = (int)(signed char)(w >> (8 * j));
      } else {
        for (int j = 0; j < 4; j++) q[j] = e + j < n ? (int)(signed char)codes[e + j] : 0;
      }
#pragma unroll
      for (int j = 0; j < 4; j++) if (q[j] == -128) { dq_bad(e + j, -128, flags); q[j] = 0; }
    } else {
      i64 byte = e >> 1;
      unsigned w;
      if (full) w = *reinterpret_cast<const unsigned short*>(codes + byte);
      else w = codes[byte] | (e + 2 < n ? ((unsigned)codes[byte + 1] << 8) : 0u);
#pragma unroll
      for (int j = 0; j < 4; j++) {
        int nib = (w >> (4 * j)) & 0xf;
        if (nib == 8 && e + j < n) { dq_bad(e + j, -8, flags); nib = 0; }
        q[j] = (nib ^ 8) - 8;
      }
    }
    if (full) {
      float4 o = make_float4(dq_one(q[0], scale), dq_one(q[1], scale), dq_one(q[2], scale), dq_one(q[3], scale));
      if (acc) {
        float4 d = *reinterpret_cast<float4*>(dst + e);
        o.x = __fadd_rn(d.x, o.x); o.y = __fadd_rn(d.y, o.y); o.z = __fadd_rn(d.z, o.z); o.w = __fadd_rn(d.w, o.w);
      }
      *reinterpret_cast<float4*>(dst + e) = o;
    } else {
      for (int j = 0; j < 4 && e + j < n; j++) {
        float x = dq_one(q[j], scale);
        dst[e + j] = acc ? __fadd_rn(dst[e + j], x) : x;
      }
    }
  }
}

extern "C" __global__ void dequant_generic(float* __restrict__ dst, const unsigned char* __restrict__ codes, const float* __restrict__ scales,
    i64 n, int bs, int bits, int acc, u64* flags) {
  i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
    float scale = scales[e / bs];
    int q;
    if (bits == 8) {
      q = (int)(signed char)codes[e];
      if (q == -128) { dq_bad(e, -128, flags); q = 0; }
    } else {
      int nib = (codes[e >> 1] >> ((e & 1) * 4)) & 0xf;
      if (nib == 8) { dq_bad(e, -8, flags); nib = 0; }
      q = (nib ^ 8) - 8;
    }
    float x = dq_one(q, scale);
    dst[e] = acc ? __fadd_rn(dst[e], x) : x;
  }
}
