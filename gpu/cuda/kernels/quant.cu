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

// ---- quantize: a team of threads per quant block, the block held in registers --------------
//
// A CTA of Q_CTA threads is split into teams of tpb = 2^tpbLog threads; a team owns one quant
// block per step of a grid-stride loop and holds it in registers as UN float4 per thread (unit
// u = 4 elements, thread t holds units t + k·tpb, so every warp load is 512 contiguous bytes).
// The input is read once: max |x| by warp shuffles (and shared memory across the warps of a
// team, behind a named barrier per team), then the codes from the registers.
//
// Codes without a division or a float-to-int conversion (both run at a quarter of the FP32
// rate on sm_90 and set the pace of the earlier kernel): y = x · (1 / scale), then
// t = y + 1.5·2^23 rounds y to an integer, ties to even, and leaves it as two's complement in
// the low bits of t's bit pattern. y is within ~2.3e-5 of fl(x / scale) (|y| ≲ qmax, two
// roundings of 2^-24 each against one), so rintf(fl(x / scale)) = round(y) unless y lies within
// 6.2e-5 of a half-integer; such an element (and a NaN, whose distance compares false) takes
// the exact q_code path, out of the hot loop. |x| ≤ absmax and scale = fl(absmax / qmax) within
// 2^-21 (denormal scales with a finite reciprocal are ≥ 2^-128) give |y| < qmax + 0.5, so the
// fast path needs no clamp. A scale of 0 (an all-zero block) takes 1 / scale = 0: every code 0.
#define Q_CTA 256
#define Q_MAGIC 12582912.0f
#define Q_TIE (0.5f - 6.2e-5f)

// Low bytes of four code words (two's complement codes) packed into one word, a in byte 0.
__device__ __forceinline__ unsigned q_pack8(unsigned a, unsigned b, unsigned c, unsigned d) {
  return __byte_perm(__byte_perm(a, b, 0x0040), __byte_perm(c, d, 0x0040), 0x5410);
}
// Low nibbles of four code words in 16 bits, a in bits 0-3 (int4 packs element 2i low).
__device__ __forceinline__ unsigned q_pack4(unsigned a, unsigned b, unsigned c, unsigned d) {
  unsigned x = q_pack8(a, b, c, d) & 0x0f0f0f0fu;
  x |= x >> 4;  // byte 0: a | b << 4, byte 2: c | d << 4
  return __byte_perm(x, 0u, 0x4420);
}

__device__ __forceinline__ void bar_team(unsigned id, unsigned threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// Quant block qb's units for thread t (zeros past the block or the input).
template <int UN>
__device__ __forceinline__ void qt_load(float4 (&v)[UN], const float* __restrict__ src, unsigned qb, unsigned nblocks, unsigned n, unsigned bs,
    unsigned t, unsigned tpb) {
  const bool active = qb < nblocks;
  const unsigned start = active ? qb * bs : 0u;
  const unsigned lim = active ? min(n - start, bs) : 0u;
  const float* p = src + start;
#pragma unroll
  for (int k = 0; k < UN; k++) {
    const unsigned off = 4u * (t + (unsigned)k * tpb);
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (off + 4u <= lim) {
      x = __ldcs(reinterpret_cast<const float4*>(p + off));
    } else if (off < lim) {
      x.x = p[off];
      if (off + 1u < lim) x.y = p[off + 1u];
      if (off + 2u < lim) x.z = p[off + 2u];
    }
    v[k] = x;
  }
}

// One fast-path element: the code word (see above) and whether it must be redone exactly.
__device__ __forceinline__ unsigned qt_fast(float x, float inv, bool& redo) {
  const float y = __fmul_rn(x, inv);
  const float t = __fadd_rn(y, Q_MAGIC);
  const float d = __fsub_rn(y, __fsub_rn(t, Q_MAGIC));
  redo |= !(fabsf(d) < Q_TIE);
  return __float_as_uint(t);
}

// The cold path for one element: the fast code where it holds, else the exact one (reporting
// a non-finite input).
__device__ __noinline__ unsigned qt_exact(float x, float scale, float inv, float qmax, bool fast, unsigned idx, u64* flags) {
  if (fast) {
    bool redo = false;
    const unsigned w = qt_fast(x, inv, redo);
    if (!redo) return w;
  }
  q_check(x, idx, flags);
  return (unsigned)q_code(x, scale, qmax);
}

template <int BITS>
__device__ __forceinline__ unsigned qt_pack(unsigned a, unsigned b, unsigned c, unsigned d) {
  return BITS == 8 ? q_pack8(a, b, c, d) : q_pack4(a, b, c, d);
}

// Scale and codes of quant block qb from the team's registers. Every thread of the CTA calls it
// once per loop step (the team barrier needs the whole team).
template <int BITS, int UN>
__device__ __forceinline__ void qt_block(const float4 (&v)[UN], float (*red)[Q_CTA / 32], unsigned par, unsigned char* __restrict__ codes,
    float* __restrict__ scales, unsigned qb, unsigned nblocks, unsigned n, unsigned bs, unsigned g, unsigned t, unsigned tpb, u64* flags) {
  const float qmax = BITS == 8 ? 127.0f : 7.0f;
  // fmaxf ignores NaN (found below by the code path) and keeps Inf (the exact path's case).
  float m = 0.0f;
#pragma unroll
  for (int k = 0; k < UN; k++) m = fmaxf(fmaxf(fmaxf(m, fabsf(v[k].x)), fabsf(v[k].y)), fmaxf(fabsf(v[k].z), fabsf(v[k].w)));
  const unsigned width = tpb < 32u ? tpb : 32u;
  for (unsigned o = width >> 1; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (tpb > 32u) {
    // Double-buffered by step parity, so one barrier per block suffices.
    if ((threadIdx.x & 31u) == 0) red[par][threadIdx.x >> 5] = m;
    bar_team(1u + g, tpb);
    const unsigned w0 = (g * tpb) >> 5, nw = tpb >> 5;
    for (unsigned k = 0; k < nw; k++) m = fmaxf(m, red[par][w0 + k]);
  }
  if (qb >= nblocks) return;
  const unsigned start = qb * bs;
  const unsigned lim = min(n - start, bs);
  const float scale = q_scale(m, qmax);
  if (t == 0) scales[qb] = scale;
  const float inv = scale == 0.0f ? 0.0f : __frcp_rn(scale);
  const bool fast = f_isfinite(inv) && f_isfinite(m);
  unsigned w[UN];
  bool redo = !fast;
  if (fast) {
#pragma unroll
    for (int k = 0; k < UN; k++)
      w[k] = qt_pack<BITS>(qt_fast(v[k].x, inv, redo), qt_fast(v[k].y, inv, redo), qt_fast(v[k].z, inv, redo), qt_fast(v[k].w, inv, redo));
  }
  if (redo) {
#pragma unroll
    for (int k = 0; k < UN; k++) {
      const unsigned i = start + 4u * (t + (unsigned)k * tpb);
      w[k] = qt_pack<BITS>(qt_exact(v[k].x, scale, inv, qmax, fast, i, flags), qt_exact(v[k].y, scale, inv, qmax, fast, i + 1u, flags),
          qt_exact(v[k].z, scale, inv, qmax, fast, i + 2u, flags), qt_exact(v[k].w, scale, inv, qmax, fast, i + 3u, flags));
    }
  }
#pragma unroll
  for (int k = 0; k < UN; k++) {
    const unsigned off = 4u * (t + (unsigned)k * tpb);
    if (off >= lim) break;
    const unsigned e = start + off;
    if (BITS == 8) {
      if (off + 4u <= lim) {
        *reinterpret_cast<unsigned*>(codes + e) = w[k];
      } else {
        for (unsigned j = 0; off + j < lim; j++) codes[e + j] = (unsigned char)(w[k] >> (8u * j));
      }
    } else {
      unsigned char* c = codes + (e >> 1);
      if (off + 4u <= lim) {
        *reinterpret_cast<unsigned short*>(c) = (unsigned short)w[k];
      } else {
        // An odd tail's high nibble is 0: its element was loaded as 0.
        c[0] = (unsigned char)w[k];
        if (off + 2u < lim) c[1] = (unsigned char)(w[k] >> 8);
      }
    }
  }
}

// PREFETCH: the next block's loads are issued before this one is coded (twice the registers).
template <int BITS, int UN, bool PREFETCH>
__device__ __forceinline__ void quant_team(const float* __restrict__ src, unsigned char* __restrict__ codes, float* __restrict__ scales, unsigned n,
    unsigned bs, int tpbLog, u64* flags) {
  __shared__ float red[2][Q_CTA / 32];
  const unsigned tpb = 1u << tpbLog;
  const unsigned groups = (unsigned)Q_CTA >> tpbLog;
  const unsigned g = threadIdx.x >> tpbLog, t = threadIdx.x & (tpb - 1u);
  const unsigned nblocks = (n - 1u) / bs + 1u;
  const unsigned stride = gridDim.x * groups;
  unsigned base = blockIdx.x * groups;
  float4 cur[UN];
  if (PREFETCH) qt_load<UN>(cur, src, base + g, nblocks, n, bs, t, tpb);
  for (unsigned par = 0; base < nblocks; base += stride, par ^= 1u) {
    const unsigned qb = base + g;
    if (PREFETCH) {
      float4 nxt[UN];
      qt_load<UN>(nxt, src, qb + stride, nblocks, n, bs, t, tpb);
      qt_block<BITS, UN>(cur, red, par, codes, scales, qb, nblocks, n, bs, g, t, tpb, flags);
#pragma unroll
      for (int k = 0; k < UN; k++) cur[k] = nxt[k];
    } else {
      qt_load<UN>(cur, src, qb, nblocks, n, bs, t, tpb);
      qt_block<BITS, UN>(cur, red, par, codes, scales, qb, nblocks, n, bs, g, t, tpb, flags);
    }
  }
}

#define QUANT_TEAM_KERNEL(name, BITS, UN, PREFETCH, MINB)                                                                                        \
  extern "C" __global__ void __launch_bounds__(Q_CTA, MINB) name(const float* __restrict__ src, unsigned char* __restrict__ codes,             \
      float* __restrict__ scales, unsigned n, unsigned bs, int tpbLog, u64* flags) {                                                           \
    quant_team<BITS, UN, PREFETCH>(src, codes, scales, n, bs, tpbLog, flags);                                                                 \
  }
QUANT_TEAM_KERNEL(quant8_u4p, 8, 4, true, 4)
QUANT_TEAM_KERNEL(quant4_u4p, 4, 4, true, 4)
QUANT_TEAM_KERNEL(quant8_u8, 8, 8, false, 4)
QUANT_TEAM_KERNEL(quant4_u8, 4, 8, false, 4)
QUANT_TEAM_KERNEL(quant8_u8p, 8, 8, true, 2)
QUANT_TEAM_KERNEL(quant4_u8p, 4, 8, true, 2)
QUANT_TEAM_KERNEL(quant8_u4, 8, 4, false, 6)
QUANT_TEAM_KERNEL(quant4_u4, 4, 4, false, 6)

// ---- dequantize: K units of 4 elements per thread, warp tiles of 32·K units ----------------
//
// Lane l of a warp takes units tile·32K + l + 32k, so each code load is one contiguous 128 /
// 64-byte row and each float4 store (and accumulate load) a contiguous 512-byte row. A code
// becomes a float without a conversion instruction: placing (code + 128) (int8) or
// (code + 8) (int4) in the low byte of 1.5·2^23's bit pattern and subtracting 1.5·2^23 + 128
// (+ 8) gives the code exactly; then x = fl(q · scale) and, accumulating, fl(acc + x), as in
// codec/quant.ts. The block of a unit is e >> bsShift for a power-of-two block, else e / bs.
// The invalid codes (-128, -8) are found a word at a time (a zero field after the xor) and
// redone element by element out of the hot path. The last n % 4 elements go to one thread.

__device__ __forceinline__ float dq_byte(unsigned x, unsigned sel) { return __uint_as_float(__byte_perm(x, 0x4B400000u, 0x7650u | sel)); }

// A unit's values from its code word w; `bad` is set where the word holds the invalid code (-128
// / -8): such a unit is redone by dq_unit_checked.
template <int BITS>
__device__ __forceinline__ float4 dq_unit(unsigned w, float s, bool& bad) {
  float4 o;
  if (BITS == 8) {
    const unsigned x = w ^ 0x80808080u;
    bad |= ((x - 0x01010101u) & ~x & 0x80808080u) != 0u;
    const float c = 12583040.0f;  // 1.5·2^23 + 128
    o.x = __fsub_rn(dq_byte(x, 0), c);
    o.y = __fsub_rn(dq_byte(x, 1), c);
    o.z = __fsub_rn(dq_byte(x, 2), c);
    o.w = __fsub_rn(dq_byte(x, 3), c);
  } else {
    const unsigned x = (w & 0xffffu) ^ 0x8888u;
    bad |= ((x - 0x1111u) & ~x & 0x8888u) != 0u;
    const unsigned lo = x & 0x0f0fu, hi = (x >> 4) & 0x0f0fu;  // bytes: nibbles 0, 2 / 1, 3
    const float c = 12582920.0f;  // 1.5·2^23 + 8
    o.x = __fsub_rn(dq_byte(lo, 0), c);
    o.y = __fsub_rn(dq_byte(hi, 0), c);
    o.z = __fsub_rn(dq_byte(lo, 1), c);
    o.w = __fsub_rn(dq_byte(hi, 1), c);
  }
  return make_float4(__fmul_rn(o.x, s), __fmul_rn(o.y, s), __fmul_rn(o.z, s), __fmul_rn(o.w, s));
}

// Element e of the codes, checked (the invalid code is reported and read as 0).
template <int BITS>
__device__ __forceinline__ int dq_code(const unsigned char* codes, unsigned e, u64* flags) {
  if (BITS == 8) {
    const int q = (int)(signed char)codes[e];
    if (q == -128) { dq_bad(e, -128, flags); return 0; }
    return q;
  }
  const int nib = (codes[e >> 1] >> ((e & 1u) * 4u)) & 0xf;
  if (nib == 8) { dq_bad(e, -8, flags); return 0; }
  return (nib ^ 8) - 8;
}

// dst[e] for one element, checked: the slow path for units with an invalid code and the tail.
template <int BITS>
__device__ __forceinline__ void dq_element(float* dst, const unsigned char* codes, float s, float d, unsigned e, int acc, u64* flags) {
  const float x = dq_one(dq_code<BITS>(codes, e, flags), s);
  dst[e] = acc ? __fadd_rn(d, x) : x;
}

template <int BITS, int K>
__device__ __forceinline__ void dequant_tiles(float* __restrict__ dst, const unsigned char* __restrict__ codes, const float* __restrict__ scales,
    unsigned n, unsigned bs, int bsShift, int acc, u64* flags) {
  const unsigned lane = threadIdx.x & 31u;
  const unsigned warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const unsigned nwarps = (gridDim.x * blockDim.x) >> 5;
  const unsigned nfull = n >> 2;
  const unsigned ntiles = (nfull + 32u * K - 1u) / (32u * K);
  for (unsigned tile = warp; tile < ntiles; tile += nwarps) {
    const unsigned u0 = tile * 32u * K + lane;
    unsigned w[K];
    float s[K];
    float4 d[K];
#pragma unroll
    for (int k = 0; k < K; k++) {
      const unsigned u = u0 + 32u * k;
      w[k] = 0u;
      s[k] = 0.0f;
      d[k] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (u < nfull) {
        w[k] = BITS == 8 ? __ldcs(reinterpret_cast<const unsigned*>(codes) + u) : (unsigned)__ldcs(reinterpret_cast<const unsigned short*>(codes) + u);
        const unsigned e = 4u * u;
        s[k] = scales[bsShift >= 0 ? e >> bsShift : e / bs];
        if (acc) d[k] = *reinterpret_cast<const float4*>(dst + e);
      }
    }
    bool bad = false;
#pragma unroll
    for (int k = 0; k < K; k++) {
      const unsigned u = u0 + 32u * k;
      if (u < nfull) {
        float4 o = dq_unit<BITS>(w[k], s[k], bad);
        if (acc) {
          o.x = __fadd_rn(d[k].x, o.x);
          o.y = __fadd_rn(d[k].y, o.y);
          o.z = __fadd_rn(d[k].z, o.z);
          o.w = __fadd_rn(d[k].w, o.w);
        }
        *reinterpret_cast<float4*>(dst + 4u * u) = o;
      }
    }
    if (bad) {
      // Rare (the host rejects such input): redo this thread's units one element at a time,
      // from the accumulator values loaded above.
#pragma unroll
      for (int k = 0; k < K; k++) {
        const unsigned u = u0 + 32u * k;
        if (u < nfull) {
          dq_element<BITS>(dst, codes, s[k], d[k].x, 4u * u, acc, flags);
          dq_element<BITS>(dst, codes, s[k], d[k].y, 4u * u + 1u, acc, flags);
          dq_element<BITS>(dst, codes, s[k], d[k].z, 4u * u + 2u, acc, flags);
          dq_element<BITS>(dst, codes, s[k], d[k].w, 4u * u + 3u, acc, flags);
        }
      }
    }
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    for (unsigned e = 4u * nfull; e < n; e++) dq_element<BITS>(dst, codes, scales[e / bs], acc ? dst[e] : 0.0f, e, acc, flags);
  }
}

#define DEQUANT_TILE_KERNEL(name, BITS, K, MINB)                                                                                                 \
  extern "C" __global__ void __launch_bounds__(256, MINB) name(float* __restrict__ dst, const unsigned char* __restrict__ codes,               \
      const float* __restrict__ scales, unsigned n, unsigned bs, int bsShift, int acc, u64* flags) {                                          \
    dequant_tiles<BITS, K>(dst, codes, scales, n, bs, bsShift, acc, flags);                                                                    \
  }
DEQUANT_TILE_KERNEL(dequant8_k4, 8, 4, 4)
DEQUANT_TILE_KERNEL(dequant4_k4, 4, 4, 4)
DEQUANT_TILE_KERNEL(dequant8_k8, 8, 8, 4)
DEQUANT_TILE_KERNEL(dequant4_k8, 4, 8, 4)
DEQUANT_TILE_KERNEL(dequant8_k4o, 8, 4, 8)
DEQUANT_TILE_KERNEL(dequant4_k4o, 4, 4, 8)
