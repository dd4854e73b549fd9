// Token + position embedding, forward and backward. The wte gradient is deterministic: the
// block of each token's first occurrence sums that token's rows in position order (no atomics).

template <typename T>
__device__ __forceinline__ void encoder_fwd(T* __restrict__ out, const int* __restrict__ tok, const T* __restrict__ wte,
    const T* __restrict__ wpe, int BT, int T_, int C, int V, int vec, u64* flags) {
  i64 stride = (i64)gridDim.x * blockDim.x;
  i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  const int VN = Vec<T>::N;
  if (vec) {
    int cu = C / VN;
    i64 n = (i64)BT * cu;
    for (i64 u = tid; u < n; u += stride) {
      int bt = (int)(u / cu), c = (int)(u % cu) * VN;
      int k = tok[bt];
      if (k < 0 || k >= V) { if (c == 0) flag_first(flags, FLAG_ENC_TOKEN, bt, (unsigned)k); k = 0; }
      float a[8], b[8];
      Vec<T>::load(wte + (i64)k * C + c, a);
      Vec<T>::load(wpe + (i64)(bt % T_) * C + c, b);
#pragma unroll
      for (int j = 0; j < VN; j++) a[j] += b[j];
      Vec<T>::store(out + (i64)bt * C + c, a);
    }
  } else {
    i64 n = (i64)BT * C;
    for (i64 i = tid; i < n; i += stride) {
      int bt = (int)(i / C), c = (int)(i % C);
      int k = tok[bt];
      if (k < 0 || k >= V) { if (c == 0) flag_first(flags, FLAG_ENC_TOKEN, bt, (unsigned)k); k = 0; }
      out[i] = from_f<T>(to_f(wte[(i64)k * C + c]) + to_f(wpe[(i64)(bt % T_) * C + c]));
    }
  }
}
extern "C" __global__ void encoder_fwd_f32(float* out, const int* tok, const float* wte, const float* wpe, int BT, int T_, int C, int V, int vec, u64* flags) { encoder_fwd<float>(out, tok, wte, wpe, BT, T_, C, V, vec, flags); }
extern "C" __global__ void encoder_fwd_bf16(bf16* out, const int* tok, const bf16* wte, const bf16* wpe, int BT, int T_, int C, int V, int vec, u64* flags) { encoder_fwd<bf16>(out, tok, wte, wpe, BT, T_, C, V, vec, flags); }

// dwpe[t, c] += Σ_b dout[b, t, c], b in order.
template <typename T>
__device__ __forceinline__ void encoder_bwd_wpe(float* __restrict__ dwpe, const T* __restrict__ dout, int B, int T_, int C) {
  i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (i64)T_ * C) return;
  float acc = 0.f;
  for (int b = 0; b < B; b++) acc += to_f(dout[(i64)b * T_ * C + i]);
  dwpe[i] += acc;
}
extern "C" __global__ void encoder_bwd_wpe_f32(float* dwpe, const float* dout, int B, int T_, int C) { encoder_bwd_wpe<float>(dwpe, dout, B, T_, C); }
extern "C" __global__ void encoder_bwd_wpe_bf16(float* dwpe, const bf16* dout, int B, int T_, int C) { encoder_bwd_wpe<bf16>(dwpe, dout, B, T_, C); }

// One block (256 threads) per position i. If token tok[i] occurs before i, the block exits;
// otherwise it sums dout over every position j >= i holding the same token, in order, and adds
// the sum to that token's dwte row.
#define EB_THREADS 256
#define EB_CH 4
template <typename T>
__device__ __forceinline__ void encoder_bwd_wte(float* __restrict__ dwte, const T* __restrict__ dout, const int* __restrict__ tok, int N, int C, int V, u64* flags) {
  __shared__ int list[EB_THREADS];
  __shared__ int warpCount[EB_THREADS / 32];
  int i = blockIdx.x;
  int ti = tok[i];
  if (ti < 0 || ti >= V) {
    if (threadIdx.x == 0) flag_first(flags, FLAG_ENC_TOKEN, (u64)i, (unsigned)ti);
    return;
  }
  int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  for (int jt = 0; jt < i; jt += EB_THREADS) {
    int j = jt + tid;
    int hit = (j < i && tok[j] == ti) ? 1 : 0;
    if (__syncthreads_or(hit)) return;
  }
  for (int cg = 0; cg < C; cg += EB_THREADS * EB_CH) {
    float acc[EB_CH];
#pragma unroll
    for (int k = 0; k < EB_CH; k++) acc[k] = 0.f;
    for (int jt = i; jt < N; jt += EB_THREADS) {
      int j = jt + tid;
      bool m = j < N && tok[j] == ti;
      unsigned ballot = __ballot_sync(0xffffffffu, m);
      if (lane == 0) warpCount[w] = __popc(ballot);
      __syncthreads();
      int off = 0, total = 0;
      for (int k = 0; k < EB_THREADS / 32; k++) { int c = warpCount[k]; if (k < w) off += c; total += c; }
      if (m) list[off + __popc(ballot & ((1u << lane) - 1u))] = j;
      __syncthreads();
      for (int e = 0; e < total; e++) {
        const T* row = dout + (i64)list[e] * C;
#pragma unroll
        for (int k = 0; k < EB_CH; k++) {
          int c = cg + tid + k * EB_THREADS;
          if (c < C) acc[k] += to_f(row[c]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int k = 0; k < EB_CH; k++) {
      int c = cg + tid + k * EB_THREADS;
      if (c < C) dwte[(i64)ti * C + c] += acc[k];
    }
  }
}
extern "C" __global__ void encoder_bwd_wte_f32(float* dwte, const float* dout, const int* tok, int N, int C, int V, u64* flags) { encoder_bwd_wte<float>(dwte, dout, tok, N, C, V, flags); }
extern "C" __global__ void encoder_bwd_wte_bf16(float* dwte, const bf16* dout, const int* tok, int N, int C, int V, u64* flags) { encoder_bwd_wte<bf16>(dwte, dout, tok, N, C, V, flags); }
