// Fused softmax + cross-entropy (+ its gradient, in place allowed): one block per row.
// Pass 1: online max / Σexp over the first V columns; pass 2 writes
// (softmax − onehot(target)) · dlossScale and zeroes the padding [V, Vp).

template <bool FAST> __device__ __forceinline__ float ce_exp(float x) { return FAST ? __expf(x) : expf(x); }

template <typename T, bool FAST>
__device__ __forceinline__ void ce_body(float* __restrict__ losses, T* dlogits, const T* logits, const int* __restrict__ targets,
    int V, int Vp, float dscale, int vec, u64* flags) {
  __shared__ float shm[32], shs[32];
  __shared__ float sh_lse, sh_tlogit;
  int row = blockIdx.x;
  const T* x = logits + (i64)row * Vp;
  int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, nw = blockDim.x >> 5;
  int target = targets[row];
  bool bad = target < 0 || target >= V;
  if (tid == 0) {
    sh_tlogit = bad ? 0.f : to_f(x[target]);
    if (bad) flag_first(flags, FLAG_CE_TARGET, (u64)row, (unsigned)target);
  }
  float m = -INFINITY, s = 0.f;
  const int VN = Vec<T>::N;
  if (vec) {
    int nu = Vp / VN;
    for (int u = tid; u < nu; u += blockDim.x) {
      float v[8];
      Vec<T>::load(x + u * VN, v);
#pragma unroll
      for (int j = 0; j < VN; j++) {
        if (u * VN + j < V) {
          float z = v[j];
          if (z > m) { s = s * ce_exp<FAST>(m - z) + 1.f; m = z; } else s += ce_exp<FAST>(z - m);
        }
      }
    }
  } else {
    for (int c = tid; c < V; c += blockDim.x) {
      float z = to_f(x[c]);
      if (z > m) { s = s * ce_exp<FAST>(m - z) + 1.f; m = z; } else s += ce_exp<FAST>(z - m);
    }
  }
  // (max, sum) pairs: warp then block.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    float mm = fmaxf(m, m2);
    s = (m == -INFINITY ? 0.f : s * ce_exp<FAST>(m - mm)) + (m2 == -INFINITY ? 0.f : s2 * ce_exp<FAST>(m2 - mm));
    m = mm;
  }
  if (lane == 0) { shm[w] = m; shs[w] = s; }
  __syncthreads();
  if (w == 0) {
    m = lane < nw ? shm[lane] : -INFINITY;
    s = lane < nw ? shs[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
      float mm = fmaxf(m, m2);
      s = (m == -INFINITY ? 0.f : s * ce_exp<FAST>(m - mm)) + (m2 == -INFINITY ? 0.f : s2 * ce_exp<FAST>(m2 - mm));
      m = mm;
    }
    if (lane == 0) {
      float lse = m + logf(s);
      sh_lse = lse;
      losses[row] = bad ? __int_as_float(0x7fc00000) : lse - sh_tlogit;
    }
  }
  __syncthreads();
  if (dlogits == nullptr) return;
  float lse = sh_lse;
  T* d = dlogits + (i64)row * Vp;
  if (vec) {
    int nu = Vp / VN;
    for (int u = tid; u < nu; u += blockDim.x) {
      float v[8];
      Vec<T>::load(x + u * VN, v);
#pragma unroll
      for (int j = 0; j < VN; j++) {
        int c = u * VN + j;
        v[j] = c < V ? (ce_exp<FAST>(v[j] - lse) - (c == target ? 1.f : 0.f)) * dscale : 0.f;
      }
      Vec<T>::store(d + u * VN, v);
    }
  } else {
    for (int c = tid; c < Vp; c += blockDim.x) {
      float g = c < V ? (ce_exp<FAST>(to_f(x[c]) - lse) - (c == target ? 1.f : 0.f)) * dscale : 0.f;
      d[c] = from_f<T>(g);
    }
  }
}
extern "C" __global__ void ce_f32(float* losses, float* dlogits, const float* logits, const int* targets, int V, int Vp, float dscale, int vec, u64* flags) { ce_body<float, false>(losses, dlogits, logits, targets, V, Vp, dscale, vec, flags); }
extern "C" __global__ void ce_bf16(float* losses, bf16* dlogits, const bf16* logits, const int* targets, int V, int Vp, float dscale, int vec, u64* flags) { ce_body<bf16, true>(losses, dlogits, logits, targets, V, Vp, dscale, vec, flags); }
