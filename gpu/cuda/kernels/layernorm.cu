// LayerNorm forward and the backward's dinp (dweight/dbias come from reduce.cu's column sums).
// One warp per row; statistics in f32, two passes (mean, then Σ(x−mean)²), eps 1e-5 as in
// gpu/cpu.ts. The vector path keeps the row in registers (C a multiple of 32·vector width).
#define LN_EPS 1e-5f
#define LN_MAXV 8

template <typename T>
__device__ __forceinline__ void ln_fwd(T* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd, const T* __restrict__ inp,
    const T* __restrict__ weight, const T* __restrict__ bias, int N, int C, int vec) {
  int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= N) return;
  const T* x = inp + (i64)row * C;
  T* o = out + (i64)row * C;
  const int VN = Vec<T>::N;
  if (vec) {
    int nch = C / (32 * VN);
    float v[LN_MAXV][8];
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < LN_MAXV; k++) if (k < nch) {
      Vec<T>::load(x + (k * 32 + lane) * VN, v[k]);
#pragma unroll
      for (int j = 0; j < VN; j++) s += v[k][j];
    }
    float m = warp_sum(s) / C;
    float q = 0.f;
#pragma unroll
    for (int k = 0; k < LN_MAXV; k++) if (k < nch) {
#pragma unroll
      for (int j = 0; j < VN; j++) { float d = v[k][j] - m; q = fmaf(d, d, q); }
    }
    float r = 1.0f / sqrtf(warp_sum(q) / C + LN_EPS);
#pragma unroll
    for (int k = 0; k < LN_MAXV; k++) if (k < nch) {
      int c = (k * 32 + lane) * VN;
      float w[8], b[8], y[8];
      Vec<T>::load(weight + c, w);
      Vec<T>::load(bias + c, b);
#pragma unroll
      for (int j = 0; j < VN; j++) y[j] = (v[k][j] - m) * r * w[j] + b[j];
      Vec<T>::store(o + c, y);
    }
    if (lane == 0) { mean[row] = m; rstd[row] = r; }
  } else {
    float s = 0.f;
    for (int c = lane; c < C; c += 32) s += to_f(x[c]);
    float m = warp_sum(s) / C;
    float q = 0.f;
    for (int c = lane; c < C; c += 32) { float d = to_f(x[c]) - m; q = fmaf(d, d, q); }
    float r = 1.0f / sqrtf(warp_sum(q) / C + LN_EPS);
    for (int c = lane; c < C; c += 32) o[c] = from_f<T>((to_f(x[c]) - m) * r * to_f(weight[c]) + to_f(bias[c]));
    if (lane == 0) { mean[row] = m; rstd[row] = r; }
  }
}
extern "C" __global__ void ln_fwd_f32(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b, int N, int C, int vec) { ln_fwd<float>(out, mean, rstd, inp, w, b, N, C, vec); }
extern "C" __global__ void ln_fwd_bf16(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* w, const bf16* b, int N, int C, int vec) { ln_fwd<bf16>(out, mean, rstd, inp, w, b, N, C, vec); }

// dinp[row] += (w·dy − mean(w·dy) − norm·mean(w·dy·norm)) · rstd
template <typename T>
__device__ __forceinline__ void ln_bwd(T* __restrict__ dinp, const T* __restrict__ dout, const T* __restrict__ inp, const T* __restrict__ weight,
    const float* __restrict__ mean, const float* __restrict__ rstd, int N, int C, int vec) {
  int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= N) return;
  const T* x = inp + (i64)row * C;
  const T* dy = dout + (i64)row * C;
  T* dx = dinp + (i64)row * C;
  float m = mean[row], r = rstd[row];
  const int VN = Vec<T>::N;
  if (vec) {
    int nch = C / (32 * VN);
    float dn[LN_MAXV][8], nm[LN_MAXV][8];
    float a = 0.f, b = 0.f;
#pragma unroll
    for (int k = 0; k < LN_MAXV; k++) if (k < nch) {
      int c = (k * 32 + lane) * VN;
      float xv[8], gv[8], wv[8];
      Vec<T>::load(x + c, xv); Vec<T>::load(dy + c, gv); Vec<T>::load(weight + c, wv);
#pragma unroll
      for (int j = 0; j < VN; j++) {
        nm[k][j] = (xv[j] - m) * r;
        dn[k][j] = wv[j] * gv[j];
        a += dn[k][j];
        b = fmaf(dn[k][j], nm[k][j], b);
      }
    }
    a = warp_sum(a) / C;
    b = warp_sum(b) / C;
#pragma unroll
    for (int k = 0; k < LN_MAXV; k++) if (k < nch) {
      int c = (k * 32 + lane) * VN;
      float d[8];
      Vec<T>::load(dx + c, d);
#pragma unroll
      for (int j = 0; j < VN; j++) d[j] += (dn[k][j] - a - nm[k][j] * b) * r;
      Vec<T>::store(dx + c, d);
    }
  } else {
    float a = 0.f, b = 0.f;
    for (int c = lane; c < C; c += 32) {
      float n_ = (to_f(x[c]) - m) * r;
      float d = to_f(weight[c]) * to_f(dy[c]);
      a += d; b = fmaf(d, n_, b);
    }
    a = warp_sum(a) / C;
    b = warp_sum(b) / C;
    for (int c = lane; c < C; c += 32) {
      float n_ = (to_f(x[c]) - m) * r;
      float d = to_f(weight[c]) * to_f(dy[c]);
      dx[c] = from_f<T>(to_f(dx[c]) + (d - a - n_ * b) * r);
    }
  }
}
extern "C" __global__ void ln_bwd_f32(float* dinp, const float* dout, const float* inp, const float* w, const float* mean, const float* rstd, int N, int C, int vec) { ln_bwd<float>(dinp, dout, inp, w, mean, rstd, N, C, vec); }
extern "C" __global__ void ln_bwd_bf16(bf16* dinp, const bf16* dout, const bf16* inp, const bf16* w, const float* mean, const float* rstd, int N, int C, int vec) { ln_bwd<bf16>(dinp, dout, inp, w, mean, rstd, N, C, vec); }
