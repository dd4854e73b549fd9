// Deterministic reductions: Σx² (gradient norm) and column sums over rows (matmul dbias,
// layernorm dweight/dbias). Two stages with a fixed partition, so results are bitwise
// reproducible for a given shape: no floating-point atomics.

template <typename T>
__device__ __forceinline__ void sumsq_partial(const T* __restrict__ x, i64 n, float* __restrict__ partial) {
  __shared__ float sh[32];
  float acc = 0.0f;
  i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    float v = to_f(x[i]);
    acc = fmaf(v, v, acc);
  }
  acc = warp_sum(acc);
  int w = threadIdx.x >> 5, l = threadIdx.x & 31;
  if (l == 0) sh[w] = acc;
  __syncthreads();
  if (w == 0) {
    float v = l < (int)(blockDim.x >> 5) ? sh[l] : 0.0f;
    v = warp_sum(v);
    if (l == 0) partial[blockIdx.x] = v;
  }
}
extern "C" __global__ void sumsq_partial_f32(const float* x, i64 n, float* partial) { sumsq_partial<float>(x, n, partial); }
extern "C" __global__ void sumsq_partial_bf16(const bf16* x, i64 n, float* partial) { sumsq_partial<bf16>(x, n, partial); }

// One block: out[0] = Σ partial[0..count) in a fixed tree order.
extern "C" __global__ void sum_final(const float* __restrict__ partial, int count, float* __restrict__ out) {
  __shared__ float sh[32];
  float acc = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = warp_sum(acc);
  int w = threadIdx.x >> 5, l = threadIdx.x & 31;
  if (l == 0) sh[w] = acc;
  __syncthreads();
  if (w == 0) {
    float v = l < (int)(blockDim.x >> 5) ? sh[l] : 0.0f;
    v = warp_sum(v);
    if (l == 0) out[0] = v;
  }
}

// Stage 1 of the column sums. Block (32, 8): threadIdx.x owns two adjacent columns of a
// 64-column tile, threadIdx.y a strided subset of this block's rows. Writes
// part1[r, c] = Σ dout[n, c] and, when `inp` is given (layernorm), part2[r, c] =
// Σ dout[n, c] · (inp[n, c] − mean[n]) · rstd[n].
template <typename T>
__device__ __forceinline__ void colsum_partial(const T* __restrict__ dout, const T* __restrict__ inp,
    const float* __restrict__ mean, const float* __restrict__ rstd, int N, int C, int rowsPer,
    float* __restrict__ part1, float* __restrict__ part2) {
  __shared__ float s1[8][64];
  __shared__ float s2[8][64];
  int tx = threadIdx.x, ty = threadIdx.y;
  int c0 = blockIdx.x * 64 + 2 * tx;
  int r = blockIdx.y;
  int n0 = r * rowsPer;
  int n1 = n0 + rowsPer < N ? n0 + rowsPer : N;
  float a0 = 0.f, a1 = 0.f, b0 = 0.f, b1 = 0.f;
  bool has2 = inp != nullptr;
  for (int n = n0 + ty; n < n1; n += 8) {
    const T* row = dout + (i64)n * C;
    float g0 = c0 < C ? to_f(row[c0]) : 0.f;
    float g1 = c0 + 1 < C ? to_f(row[c0 + 1]) : 0.f;
    a0 += g0; a1 += g1;
    if (has2) {
      const T* xr = inp + (i64)n * C;
      float m = mean[n], rs = rstd[n];
      if (c0 < C) b0 = fmaf(g0, (to_f(xr[c0]) - m) * rs, b0);
      if (c0 + 1 < C) b1 = fmaf(g1, (to_f(xr[c0 + 1]) - m) * rs, b1);
    }
  }
  s1[ty][2 * tx] = a0; s1[ty][2 * tx + 1] = a1;
  s2[ty][2 * tx] = b0; s2[ty][2 * tx + 1] = b1;
  __syncthreads();
  int t = ty * 32 + tx;
  if (t < 64) {
    float x = 0.f, y = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) { x += s1[k][t]; y += s2[k][t]; }
    int c = blockIdx.x * 64 + t;
    if (c < C) {
      part1[(i64)r * C + c] = x;
      if (has2) part2[(i64)r * C + c] = y;
    }
  }
}
extern "C" __global__ void colsum_partial_f32(const float* dout, const float* inp, const float* mean, const float* rstd, int N, int C, int rowsPer, float* p1, float* p2) { colsum_partial<float>(dout, inp, mean, rstd, N, C, rowsPer, p1, p2); }
extern "C" __global__ void colsum_partial_bf16(const bf16* dout, const bf16* inp, const float* mean, const float* rstd, int N, int C, int rowsPer, float* p1, float* p2) { colsum_partial<bf16>(dout, inp, mean, rstd, N, C, rowsPer, p1, p2); }

// Vector form of stage 1 (C % width == 0, 16-byte aligned rows): threadIdx.x owns one 16-byte
// vector (8 bf16 or 4 f32 columns) of a 32-vector column tile, threadIdx.y a row subset.
template <typename T>
__device__ __forceinline__ void colsum_partial_vec(const T* __restrict__ dout, const T* __restrict__ inp,
    const float* __restrict__ mean, const float* __restrict__ rstd, int N, int C, int rowsPer,
    float* __restrict__ part1, float* __restrict__ part2) {
  const int VN = Vec<T>::N;
  __shared__ float s1[8][256];
  __shared__ float s2[8][256];
  int tx = threadIdx.x, ty = threadIdx.y;
  int c0 = (blockIdx.x * 32 + tx) * VN;
  int r = blockIdx.y;
  int n0 = r * rowsPer;
  int n1 = n0 + rowsPer < N ? n0 + rowsPer : N;
  float a[8], b[8];
#pragma unroll
  for (int j = 0; j < 8; j++) { a[j] = 0.f; b[j] = 0.f; }
  bool has2 = inp != nullptr;
  if (c0 < C) {
    for (int n = n0 + ty; n < n1; n += 8) {
      float g[8];
      Vec<T>::load(dout + (i64)n * C + c0, g);
#pragma unroll
      for (int j = 0; j < VN; j++) a[j] += g[j];
      if (has2) {
        float xv[8];
        Vec<T>::load(inp + (i64)n * C + c0, xv);
        float m = mean[n], rs = rstd[n];
#pragma unroll
        for (int j = 0; j < VN; j++) b[j] = fmaf(g[j], (xv[j] - m) * rs, b[j]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < VN; j++) { s1[ty][tx * VN + j] = a[j]; s2[ty][tx * VN + j] = b[j]; }
  __syncthreads();
  int t = ty * 32 + tx;
  for (int cc = t; cc < 32 * VN; cc += 256) {
    float x = 0.f, y = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) { x += s1[k][cc]; y += s2[k][cc]; }
    int c = blockIdx.x * 32 * VN + cc;
    if (c < C) {
      part1[(i64)r * C + c] = x;
      if (has2) part2[(i64)r * C + c] = y;
    }
  }
}
extern "C" __global__ void colsum_partial_vec_f32(const float* dout, const float* inp, const float* mean, const float* rstd, int N, int C, int rowsPer, float* p1, float* p2) { colsum_partial_vec<float>(dout, inp, mean, rstd, N, C, rowsPer, p1, p2); }
extern "C" __global__ void colsum_partial_vec_bf16(const bf16* dout, const bf16* inp, const float* mean, const float* rstd, int N, int C, int rowsPer, float* p1, float* p2) { colsum_partial_vec<bf16>(dout, inp, mean, rstd, N, C, rowsPer, p1, p2); }

// Stage 2: dst1[c] += Σ_r part1[r, c] (and dst2 from part2), rows in order.
extern "C" __global__ void colsum_final(const float* __restrict__ part1, const float* __restrict__ part2, int R, int C,
    float* __restrict__ dst1, float* __restrict__ dst2) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float x = 0.f;
  for (int r = 0; r < R; r++) x += part1[(i64)r * C + c];
  dst1[c] += x;
  if (dst2 != nullptr) {
    float y = 0.f;
    for (int r = 0; r < R; r++) y += part2[(i64)r * C + c];
    dst2[c] += y;
  }
}
