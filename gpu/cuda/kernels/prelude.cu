// Shared by every kernel file (prepended by the compiler, so NVRTC needs no include paths).
// bf16 is carried as raw 16-bit storage; conversions use the PTX round-to-nearest-even
// instruction, which matches f32ToBf16 in gpu/cpu.ts for finite values.
typedef unsigned short bf16;
typedef unsigned long long u64;
typedef long long i64;
// NVRTC has no math.h: define what the kernels use from it.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
__device__ __forceinline__ bool f_isfinite(float x) { return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u; }
__device__ __forceinline__ bool f_isinf(float x) { return (__float_as_uint(x) & 0x7fffffffu) == 0x7f800000u; }

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __uint_as_float(((unsigned)x) << 16); }
__device__ __forceinline__ bf16 f2bf(float f) {
  unsigned short r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
  return r;
}
// Two floats to a packed bf16x2 (lo in the low half).
__device__ __forceinline__ unsigned pack_bf2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ float bf_lo(unsigned v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf_hi(unsigned v) { return __uint_as_float(v & 0xffff0000u); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return f2bf(x); }

// 16-byte vectors: 4 floats or 8 bf16, unpacked to floats.
template <typename T> struct Vec;
template <> struct Vec<float> {
  static const int N = 4;
  __device__ __forceinline__ static void load(const float* p, float* v) {
    float4 x = *reinterpret_cast<const float4*>(p); v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
  }
  __device__ __forceinline__ static void store(float* p, const float* v) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  }
};
template <> struct Vec<bf16> {
  static const int N = 8;
  __device__ __forceinline__ static void load(const bf16* p, float* v) {
    uint4 x = *reinterpret_cast<const uint4*>(p);
    v[0] = bf_lo(x.x); v[1] = bf_hi(x.x); v[2] = bf_lo(x.y); v[3] = bf_hi(x.y);
    v[4] = bf_lo(x.z); v[5] = bf_hi(x.z); v[6] = bf_lo(x.w); v[7] = bf_hi(x.w);
  }
  __device__ __forceinline__ static void store(bf16* p, const float* v) {
    uint4 x; x.x = pack_bf2(v[0], v[1]); x.y = pack_bf2(v[2], v[3]); x.z = pack_bf2(v[4], v[5]); x.w = pack_bf2(v[6], v[7]);
    *reinterpret_cast<uint4*>(p) = x;
  }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Error flags shared with the host (see flags.ts): slot pairs (first = min of index<<32|value, count).
#define FLAG_CE_TARGET 0
#define FLAG_ENC_TOKEN 1
#define FLAG_QUANT_NONFINITE 2
#define FLAG_QUANT_COUNT 3
#define FLAG_DEQUANT_CODE 4
#define FLAG_DEQUANT_COUNT 5
__device__ __forceinline__ void flag_first(u64* flags, int slot, u64 index, unsigned value) {
  atomicMin(flags + slot, (index << 32) | (u64)value);
}
