// Reed-Solomon over GF(2^8), polynomial 0x11d: the code of codec/gf256.ts, so fragments equal
// those of the CPU coders byte for byte. One operation serves encode and reconstruct:
//   for r < R:  frag[dst[r]] = XOR over i < sources of coef[r][i] * frag[src[i]]
// over a stripe whose fragment j starts at base + j * stride. The host chooses the matrix
// (parity rows of the generator, or rows of an inverted submatrix) and launches rounds of up
// to RS_ROWS rows.
//
// Multiplication by a constant c is linear over GF(2): c * x = XOR over set bits b of c of
// (x * 2^b), and x * 2 on four packed bytes is a shift plus a conditional XOR of 0x1d
// (the AES "xtime" of FIPS-197 section 4.2.1 with this field's polynomial). Each source word is
// doubled 7 times once, and each of its powers is XORed into every row whose coefficient has
// that bit: no tables, no shared memory, ~2 integer instructions per row and bit for 4 bytes.
// The coefficients sit in the kernel parameters (constant bank, uniform across the warp).

#define RS_ROWS 4
#define RS_MAX_SOURCES 256

struct RsArgs {
  u64 base;    // stripe start
  u64 stride;  // bytes between fragments
  u64 n;       // units per fragment: 16-byte vectors (rs_mul_v16) or bytes (rs_mul_b)
  int sources; // sources (k)
  int pad;
  unsigned char src[RS_MAX_SOURCES];         // source fragment indices
  unsigned char dst[RS_ROWS];                // output fragment indices
  unsigned char pad2[4];
  unsigned char coef[RS_ROWS][RS_MAX_SOURCES];  // coef[r][i]
};
// The host (gpu/cuda/erasure.ts) writes this layout byte by byte: src at 32, dst at 288, coef
// at 296 (every member is naturally aligned after the one before, so no hidden padding).
static_assert(sizeof(RsArgs) == 1320, "RsArgs layout");

// x * 2 in GF(2^8) for each byte of x.
__device__ __forceinline__ unsigned gf_x2(unsigned x) { return ((x & 0x7f7f7f7fu) << 1) ^ (((x >> 7) & 0x01010101u) * 0x1du); }

// acc[r][w] ^= coef[r][i] * x[w] for the W words of one source.
template <int R, int W> __device__ __forceinline__ void gf_mac(const RsArgs& a, int i, const unsigned (&x)[W], unsigned (&acc)[R][W]) {
  unsigned c[R];
#pragma unroll
  for (int r = 0; r < R; r++) c[r] = a.coef[r][i];
  unsigned p[W];
#pragma unroll
  for (int w = 0; w < W; w++) p[w] = x[w];
#pragma unroll
  for (int b = 0; b < 8; b++) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      const unsigned mask = 0u - ((c[r] >> b) & 1u);
#pragma unroll
      for (int w = 0; w < W; w++) acc[r][w] ^= p[w] & mask;
    }
    if (b < 7) {
#pragma unroll
      for (int w = 0; w < W; w++) p[w] = gf_x2(p[w]);
    }
  }
}

// 16 bytes per thread and step: needs base and stride multiples of 16.
template <int R> __device__ void rs_mul_v16(const RsArgs& a) {
  const u64 step = (u64)gridDim.x * blockDim.x;
  for (u64 v = (u64)blockIdx.x * blockDim.x + threadIdx.x; v < a.n; v += step) {
    unsigned acc[R][4];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0u;
#pragma unroll 4
    for (int i = 0; i < a.sources; i++) {
      const uint4 q = __ldg(reinterpret_cast<const uint4*>(a.base + (u64)a.src[i] * a.stride) + v);
      const unsigned x[4] = {q.x, q.y, q.z, q.w};
      gf_mac<R, 4>(a, i, x, acc);
    }
#pragma unroll
    for (int r = 0; r < R; r++)
      reinterpret_cast<uint4*>(a.base + (u64)a.dst[r] * a.stride)[v] = make_uint4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
  }
}

// One byte per thread and step: any base, stride and length.
template <int R> __device__ void rs_mul_b(const RsArgs& a) {
  const u64 step = (u64)gridDim.x * blockDim.x;
  for (u64 v = (u64)blockIdx.x * blockDim.x + threadIdx.x; v < a.n; v += step) {
    unsigned acc[R][1];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r][0] = 0u;
    for (int i = 0; i < a.sources; i++) {
      const unsigned x[1] = {reinterpret_cast<const unsigned char*>(a.base + (u64)a.src[i] * a.stride)[v]};
      gf_mac<R, 1>(a, i, x, acc);
    }
#pragma unroll
    for (int r = 0; r < R; r++) reinterpret_cast<unsigned char*>(a.base + (u64)a.dst[r] * a.stride)[v] = (unsigned char)acc[r][0];
  }
}

extern "C" __global__ void rs_mul1_v16(const __grid_constant__ RsArgs a) { rs_mul_v16<1>(a); }
extern "C" __global__ void rs_mul2_v16(const __grid_constant__ RsArgs a) { rs_mul_v16<2>(a); }
extern "C" __global__ void rs_mul3_v16(const __grid_constant__ RsArgs a) { rs_mul_v16<3>(a); }
extern "C" __global__ void rs_mul4_v16(const __grid_constant__ RsArgs a) { rs_mul_v16<4>(a); }
extern "C" __global__ void rs_mul1_b(const __grid_constant__ RsArgs a) { rs_mul_b<1>(a); }
extern "C" __global__ void rs_mul2_b(const __grid_constant__ RsArgs a) { rs_mul_b<2>(a); }
extern "C" __global__ void rs_mul3_b(const __grid_constant__ RsArgs a) { rs_mul_b<3>(a); }
extern "C" __global__ void rs_mul4_b(const __grid_constant__ RsArgs a) { rs_mul_b<4>(a); }
