// Causal multi-head self-attention over qkv[B, T, 3C] (q, k, v per token, heads of size D).
//
// flash_*: bf16, D = 64, T % 64 == 0. FlashAttention-2 style with mma.sync m16n8k16 (bf16 in,
// f32 accumulate): 64-row tiles, 4 warps × 16 rows, K/V (or Q/dO) tiles double-buffered with
// cp.async. The backward recomputes probabilities from the forward's log-sum-exp and is
// deterministic: dQ (query-outer) and dK/dV (key-outer) are separate kernels, no atomics.
// naive_*: any dtype, any D ≤ 256, any T; one warp per row, for f32 and odd shapes.

#define FA_D 64
#define FA_TILE 64
#define FA_PITCH 72  // bf16 elements per smem row: 144 bytes, so 8 rows hit 32 distinct banks
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

__device__ __forceinline__ void mma16816(float* c, const unsigned* a, unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned* r, const bf16* p) {
  unsigned addr = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
    : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4(unsigned* r, const bf16* p) {
  unsigned addr = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
    : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void cp_async16(bf16* s, const bf16* g) {
  unsigned addr = (unsigned)__cvta_generic_to_shared(s);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(addr), "l"(g));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }

// A 64×64 bf16 tile (rows `ld` elements apart in global) into smem [64][FA_PITCH], NT threads.
template <int NT>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, int ld) {
#pragma unroll
  for (int i = 0; i < 512 / NT; i++) {
    int c = threadIdx.x + NT * i;
    int r = c >> 3, col = (c & 7) * 8;
    cp_async16(s + r * FA_PITCH + col, g + (i64)r * ld + col);
  }
}
// The A fragments (16 rows × 64) of rows [r0, r0+16) straight from global memory.
__device__ __forceinline__ void load_afrag_global(unsigned (*f)[4], const bf16* g, int ld, int lane) {
  int gi = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    const bf16* p0 = g + (i64)gi * ld + kk * 16 + 2 * t4;
    const bf16* p1 = g + (i64)(gi + 8) * ld + kk * 16 + 2 * t4;
    f[kk][0] = *reinterpret_cast<const unsigned*>(p0);
    f[kk][1] = *reinterpret_cast<const unsigned*>(p1);
    f[kk][2] = *reinterpret_cast<const unsigned*>(p0 + 8);
    f[kk][3] = *reinterpret_cast<const unsigned*>(p1 + 8);
  }
}
// acc[nt] (16 × 64) += A (16 × 64, fragments) · Bᵀ where B rows are smem rows (n index) and
// columns the k index: the "row.col" operand read directly with 32-bit loads.
// One ldmatrix.x4 loads the B fragments of two n-tiles: matrices (n-tile, k 0-7), (n-tile, k 8-15),
// (n-tile + 1, k 0-7), (n-tile + 1, k 8-15).
__device__ __forceinline__ void mma_abt(float (*acc)[4], unsigned (*a)[4], const bf16* s, int lane) {
  int m = lane >> 3;
  const bf16* rowp = s + ((m >> 1) * 8 + (lane & 7)) * FA_PITCH + (m & 1) * 8;
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
#pragma unroll
    for (int np = 0; np < 4; np++) {
      unsigned b[4];
      ldsm_x4(b, rowp + np * 16 * FA_PITCH + kk * 16);
      mma16816(acc[2 * np], a[kk], b[0], b[1]);
      mma16816(acc[2 * np + 1], a[kk], b[2], b[3]);
    }
  }
}
// acc[nt] (16 × 64) += P (16 × 64 over the k index, from f32 accumulators) · B where B is a
// smem tile stored [k][n] (rows = k): B fragments via ldmatrix.trans.
__device__ __forceinline__ void mma_pb(float (*acc)[4], float (*p)[4], const bf16* s, int lane) {
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    unsigned a[4];
    a[0] = pack_bf2(p[2 * kk][0], p[2 * kk][1]);
    a[1] = pack_bf2(p[2 * kk][2], p[2 * kk][3]);
    a[2] = pack_bf2(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    a[3] = pack_bf2(p[2 * kk + 1][2], p[2 * kk + 1][3]);
    int m = lane >> 3;
    const bf16* rowp = s + (kk * 16 + (m & 1) * 8 + (lane & 7)) * FA_PITCH + (m >> 1) * 8;
#pragma unroll
    for (int np = 0; np < 4; np++) {
      unsigned b[4];
      ldsm_x4_trans(b, rowp + np * 16);
      mma16816(acc[2 * np], a, b[0], b[1]);
      mma16816(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// Forward. NW warps × 16 query rows per block (grid (T/(16·NW), B·NH)); key/value tiles of 64
// rows stream through smem. Heavy (late) query blocks are scheduled first. A warp skips a key
// tile that lies entirely after its rows (it still joins the block's barriers).
template <int NW>
__device__ __forceinline__ void flash_fwd_body(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ qkv,
    int T, int NH, float scale) {
  __shared__ __align__(16) bf16 Ks[2][FA_TILE * FA_PITCH];
  __shared__ __align__(16) bf16 Vs[2][FA_TILE * FA_PITCH];
  const int NT = NW * 32, BR = NW * 16;
  const int C = NH * FA_D, C3 = 3 * C;
  int qb = gridDim.x - 1 - blockIdx.x;
  int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gi = lane >> 2, t4 = lane & 3;
  const bf16* base = qkv + (i64)b * T * C3 + h * FA_D;
  const bf16* kb = base + C;
  const bf16* vb = base + 2 * C;
  load_tile<NT>(Ks[0], kb, C3);
  load_tile<NT>(Vs[0], vb, C3);
  cp_commit();
  const int wrow = qb * BR + w * 16;  // this warp's first query row
  unsigned qf[4][4];
  load_afrag_global(qf, base + (i64)wrow * C3, C3, lane);
  float o[8][4];
#pragma unroll
  for (int nt = 0; nt < 8; nt++) { o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f; }
  float mr[2] = { -INFINITY, -INFINITY }, lr[2] = { 0.f, 0.f };
  const float sl2 = scale * LOG2E;
  const int q0 = wrow + gi;
  const int nkt = (qb + 1) * BR / FA_TILE;
  for (int j = 0; j < nkt; j++) {
    int buf = j & 1;
    if (j + 1 < nkt) {
      load_tile<NT>(Ks[buf ^ 1], kb + (i64)(j + 1) * FA_TILE * C3, C3);
      load_tile<NT>(Vs[buf ^ 1], vb + (i64)(j + 1) * FA_TILE * C3, C3);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    if (j * FA_TILE <= wrow + 15) {
      float s[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; nt++) { s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f; }
      mma_abt(s, qf, Ks[buf], lane);
      const bool diag = j * FA_TILE + FA_TILE - 1 > wrow;
      float mx[2] = { -INFINITY, -INFINITY };
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          float x = s[nt][e] * sl2;
          if (diag) {
            int key = j * FA_TILE + nt * 8 + 2 * t4 + (e & 1);
            if (key > q0 + (e >> 1) * 8) x = -INFINITY;
          }
          s[nt][e] = x;
          mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        float mn = fmaxf(mr[r], mx[r]);
        float alpha = exp2f(mr[r] - mn);
        mr[r] = mn;
        lr[r] *= alpha;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) { o[nt][2 * r] *= alpha; o[nt][2 * r + 1] *= alpha; }
      }
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          float p = exp2f(s[nt][e] - mr[e >> 1]);
          s[nt][e] = p;
          lr[e >> 1] += p;
        }
      }
      mma_pb(o, s, Vs[buf], lane);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    lr[r] += __shfl_xor_sync(0xffffffffu, lr[r], 1);
    lr[r] += __shfl_xor_sync(0xffffffffu, lr[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    int q = q0 + r * 8;
    float inv = 1.0f / lr[r];
    bf16* orow = out + ((i64)b * T + q) * C + h * FA_D;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
      *reinterpret_cast<unsigned*>(orow + nt * 8 + 2 * t4) = pack_bf2(o[nt][2 * r] * inv, o[nt][2 * r + 1] * inv);
    }
    if (t4 == 0) lse[(i64)bh * T + q] = (mr[r] + log2f(lr[r])) * LN2;
  }
}
extern "C" __global__ void __launch_bounds__(128) flash_fwd_4(bf16* out, float* lse, const bf16* qkv, int T, int NH, float scale) { flash_fwd_body<4>(out, lse, qkv, T, NH, scale); }
extern "C" __global__ void __launch_bounds__(256) flash_fwd_8(bf16* out, float* lse, const bf16* qkv, int T, int NH, float scale) { flash_fwd_body<8>(out, lse, qkv, T, NH, scale); }

// dQ: NW warps × 16 query rows per block; loops over the key tiles up to the block's last row.
template <int NW>
__device__ __forceinline__ void flash_bwd_dq_body(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
    const float* __restrict__ lse, const float* __restrict__ dvec, int T, int NH, float scale) {
  __shared__ __align__(16) bf16 Ks[2][FA_TILE * FA_PITCH];
  __shared__ __align__(16) bf16 Vs[2][FA_TILE * FA_PITCH];
  const int NT = NW * 32, BR = NW * 16;
  const int C = NH * FA_D, C3 = 3 * C;
  int qb = gridDim.x - 1 - blockIdx.x;
  int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gi = lane >> 2, t4 = lane & 3;
  const bf16* base = qkv + (i64)b * T * C3 + h * FA_D;
  const bf16* kb = base + C;
  const bf16* vb = base + 2 * C;
  load_tile<NT>(Ks[0], kb, C3);
  load_tile<NT>(Vs[0], vb, C3);
  cp_commit();
  const int wrow = qb * BR + w * 16;
  unsigned qf[4][4], df[4][4];
  load_afrag_global(qf, base + (i64)wrow * C3, C3, lane);
  load_afrag_global(df, dout + ((i64)b * T + wrow) * C + h * FA_D, C, lane);
  const float sl2 = scale * LOG2E;
  const int q0 = wrow + gi;
  float l2[2], dd[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    l2[r] = lse[(i64)bh * T + q0 + 8 * r] * LOG2E;
    dd[r] = dvec[(i64)bh * T + q0 + 8 * r];
  }
  float dq[8][4];
#pragma unroll
  for (int nt = 0; nt < 8; nt++) { dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f; }
  const int nkt = (qb + 1) * BR / FA_TILE;
  for (int j = 0; j < nkt; j++) {
    int buf = j & 1;
    if (j + 1 < nkt) {
      load_tile<NT>(Ks[buf ^ 1], kb + (i64)(j + 1) * FA_TILE * C3, C3);
      load_tile<NT>(Vs[buf ^ 1], vb + (i64)(j + 1) * FA_TILE * C3, C3);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    if (j * FA_TILE <= wrow + 15) {
      float s[8][4], dp[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
      }
      mma_abt(s, qf, Ks[buf], lane);
      mma_abt(dp, df, Vs[buf], lane);
      const bool diag = j * FA_TILE + FA_TILE - 1 > wrow;
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          float p = exp2f(s[nt][e] * sl2 - l2[e >> 1]);
          if (diag) {
            int key = j * FA_TILE + nt * 8 + 2 * t4 + (e & 1);
            if (key > q0 + (e >> 1) * 8) p = 0.f;
          }
          s[nt][e] = p * (dp[nt][e] - dd[e >> 1]);
        }
      }
      mma_pb(dq, s, Ks[buf], lane);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    bf16* row = dqkv + ((i64)b * T + q0 + 8 * r) * C3 + h * FA_D;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
      *reinterpret_cast<unsigned*>(row + nt * 8 + 2 * t4) = pack_bf2(dq[nt][2 * r] * scale, dq[nt][2 * r + 1] * scale);
    }
  }
}
extern "C" __global__ void __launch_bounds__(128) flash_bwd_dq_4(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse, const float* dvec, int T, int NH, float scale) { flash_bwd_dq_body<4>(dqkv, dout, qkv, lse, dvec, T, NH, scale); }
extern "C" __global__ void __launch_bounds__(256) flash_bwd_dq_8(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse, const float* dvec, int T, int NH, float scale) { flash_bwd_dq_body<8>(dqkv, dout, qkv, lse, dvec, T, NH, scale); }

// dK, dV: NW warps × 16 key rows per block; loops over 64-row query tiles from the block's
// first key on. A warp skips a query tile that lies entirely before its keys.
template <int NW>
__device__ __forceinline__ void flash_bwd_dkdv_body(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
    const float* __restrict__ lse, const float* __restrict__ dvec, int T, int NH, float scale) {
  __shared__ __align__(16) bf16 Qs[2][FA_TILE * FA_PITCH];
  __shared__ __align__(16) bf16 Ds[2][FA_TILE * FA_PITCH];
  __shared__ float Ls[2][FA_TILE], Dv[2][FA_TILE];
  const int NT = NW * 32, BK = NW * 16;
  const int C = NH * FA_D, C3 = 3 * C;
  const int nqt = T / FA_TILE;
  int kbk = blockIdx.x;
  int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, gi = lane >> 2, t4 = lane & 3;
  const bf16* base = qkv + (i64)b * T * C3 + h * FA_D;
  const bf16* dob = dout + (i64)b * T * C + h * FA_D;
  const float* lrow = lse + (i64)bh * T;
  const float* drow = dvec + (i64)bh * T;
  const int i0 = kbk * BK / FA_TILE;
  load_tile<NT>(Qs[0], base + (i64)i0 * FA_TILE * C3, C3);
  load_tile<NT>(Ds[0], dob + (i64)i0 * FA_TILE * C, C);
  cp_commit();
  if (threadIdx.x < FA_TILE) {
    Ls[0][threadIdx.x] = lrow[i0 * FA_TILE + threadIdx.x] * LOG2E;
    Dv[0][threadIdx.x] = drow[i0 * FA_TILE + threadIdx.x];
  }
  const int wkey = kbk * BK + w * 16;  // this warp's first key row
  unsigned kf[4][4], vf[4][4];
  load_afrag_global(kf, base + C + (i64)wkey * C3, C3, lane);
  load_afrag_global(vf, base + 2 * C + (i64)wkey * C3, C3, lane);
  const float sl2 = scale * LOG2E;
  const int k0 = wkey + gi;
  float dk[8][4], dv[8][4];
#pragma unroll
  for (int nt = 0; nt < 8; nt++) {
    dk[nt][0] = dk[nt][1] = dk[nt][2] = dk[nt][3] = 0.f;
    dv[nt][0] = dv[nt][1] = dv[nt][2] = dv[nt][3] = 0.f;
  }
  for (int i = i0; i < nqt; i++) {
    int buf = (i - i0) & 1;
    if (i + 1 < nqt) {
      load_tile<NT>(Qs[buf ^ 1], base + (i64)(i + 1) * FA_TILE * C3, C3);
      load_tile<NT>(Ds[buf ^ 1], dob + (i64)(i + 1) * FA_TILE * C, C);
      cp_commit();
      if (threadIdx.x < FA_TILE) {
        Ls[buf ^ 1][threadIdx.x] = lrow[(i + 1) * FA_TILE + threadIdx.x] * LOG2E;
        Dv[buf ^ 1][threadIdx.x] = drow[(i + 1) * FA_TILE + threadIdx.x];
      }
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    if (i * FA_TILE + FA_TILE - 1 >= wkey) {
      float s[8][4], dp[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
      }
      mma_abt(s, kf, Qs[buf], lane);   // Sᵀ: keys × queries
      mma_abt(dp, vf, Ds[buf], lane);  // dPᵀ = V · dOᵀ
      const bool diag = i * FA_TILE < wkey + 15;
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          int qc = nt * 8 + 2 * t4 + (e & 1);
          float p = exp2f(s[nt][e] * sl2 - Ls[buf][qc]);
          if (diag && i * FA_TILE + qc < k0 + (e >> 1) * 8) p = 0.f;
          s[nt][e] = p;
          dp[nt][e] = p * (dp[nt][e] - Dv[buf][qc]);
        }
      }
      mma_pb(dv, s, Ds[buf], lane);   // dV += Pᵀ · dO
      mma_pb(dk, dp, Qs[buf], lane);  // dK += dSᵀ · Q
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
    bf16* row = dqkv + ((i64)b * T + k0 + 8 * r) * C3 + h * FA_D;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
      *reinterpret_cast<unsigned*>(row + C + nt * 8 + 2 * t4) = pack_bf2(dk[nt][2 * r] * scale, dk[nt][2 * r + 1] * scale);
      *reinterpret_cast<unsigned*>(row + 2 * C + nt * 8 + 2 * t4) = pack_bf2(dv[nt][2 * r], dv[nt][2 * r + 1]);
    }
  }
}
extern "C" __global__ void __launch_bounds__(128) flash_bwd_dkdv_4(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse, const float* dvec, int T, int NH, float scale) { flash_bwd_dkdv_body<4>(dqkv, dout, qkv, lse, dvec, T, NH, scale); }
extern "C" __global__ void __launch_bounds__(256) flash_bwd_dkdv_8(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse, const float* dvec, int T, int NH, float scale) { flash_bwd_dkdv_body<8>(dqkv, dout, qkv, lse, dvec, T, NH, scale); }

// D[b, h, t] = Σ_d dout · out (the softmax backward's row term). One warp per row.
template <typename T>
__device__ __forceinline__ void attn_dvec(float* __restrict__ dvec, const T* __restrict__ dout, const T* __restrict__ out, int B, int T_, int NH, int D) {
  i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= (i64)B * NH * T_) return;
  int t = (int)(row % T_);
  int bh = (int)(row / T_);
  int b = bh / NH, h = bh % NH;
  i64 o = ((i64)b * T_ + t) * NH * D + (i64)h * D;
  float acc = 0.f;
  for (int d = lane; d < D; d += 32) acc = fmaf(to_f(dout[o + d]), to_f(out[o + d]), acc);
  acc = warp_sum(acc);
  if (lane == 0) dvec[row] = acc;
}
extern "C" __global__ void attn_dvec_f32(float* dvec, const float* dout, const float* out, int B, int T_, int NH, int D) { attn_dvec<float>(dvec, dout, out, B, T_, NH, D); }
extern "C" __global__ void attn_dvec_bf16(float* dvec, const bf16* dout, const bf16* out, int B, int T_, int NH, int D) { attn_dvec<bf16>(dvec, dout, out, B, T_, NH, D); }

// ---- naive (reference-shaped) kernels: one warp per row, lanes own dims lane + 32k ----------
#define NV_K 8
template <typename T>
__device__ __forceinline__ float warp_dot(const T* a, const T* b, int D, int lane) {
  float acc = 0.f;
  for (int d = lane; d < D; d += 32) acc = fmaf(to_f(a[d]), to_f(b[d]), acc);
  return warp_sum(acc);
}

template <typename T>
__device__ __forceinline__ void naive_fwd(T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ qkv, int B, int T_, int NH, int D, float scale) {
  i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= (i64)B * NH * T_) return;
  int t = (int)(row % T_), bh = (int)(row / T_), b = bh / NH, h = bh % NH;
  const int C = NH * D, C3 = 3 * C;
  const T* q = qkv + ((i64)b * T_ + t) * C3 + (i64)h * D;
  float acc[NV_K];
#pragma unroll
  for (int k = 0; k < NV_K; k++) acc[k] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int j = 0; j <= t; j++) {
    const T* kr = qkv + ((i64)b * T_ + j) * C3 + C + (i64)h * D;
    float s = warp_dot(q, kr, D, lane) * scale;
    float mn = fmaxf(m, s);
    float alpha = expf(m - mn), p = expf(s - mn);
    l = l * alpha + p;
    m = mn;
#pragma unroll
    for (int k = 0; k < NV_K; k++) {
      int d = lane + 32 * k;
      if (d < D) acc[k] = acc[k] * alpha + p * to_f(kr[C + d]);
    }
  }
  T* o = out + ((i64)b * T_ + t) * C + (i64)h * D;
#pragma unroll
  for (int k = 0; k < NV_K; k++) {
    int d = lane + 32 * k;
    if (d < D) o[d] = from_f<T>(acc[k] / l);
  }
  if (lane == 0) lse[row] = m + logf(l);
}
extern "C" __global__ void naive_fwd_f32(float* out, float* lse, const float* qkv, int B, int T_, int NH, int D, float scale) { naive_fwd<float>(out, lse, qkv, B, T_, NH, D, scale); }
extern "C" __global__ void naive_fwd_bf16(bf16* out, float* lse, const bf16* qkv, int B, int T_, int NH, int D, float scale) { naive_fwd<bf16>(out, lse, qkv, B, T_, NH, D, scale); }

// dq for one query row (warp); the row's D term comes from attn_dvec.
template <typename T>
__device__ __forceinline__ void naive_bwd_dq(T* __restrict__ dqkv, const T* __restrict__ dout, const T* __restrict__ qkv, const float* __restrict__ lse,
    const float* __restrict__ dvec, int B, int T_, int NH, int D, float scale) {
  i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= (i64)B * NH * T_) return;
  int t = (int)(row % T_), bh = (int)(row / T_), b = bh / NH, h = bh % NH;
  const int C = NH * D, C3 = 3 * C;
  const T* q = qkv + ((i64)b * T_ + t) * C3 + (i64)h * D;
  const T* dy = dout + ((i64)b * T_ + t) * C + (i64)h * D;
  float L = lse[row], Dr = dvec[row];
  float acc[NV_K];
#pragma unroll
  for (int k = 0; k < NV_K; k++) acc[k] = 0.f;
  for (int j = 0; j <= t; j++) {
    const T* kr = qkv + ((i64)b * T_ + j) * C3 + C + (i64)h * D;
    float p = expf(warp_dot(q, kr, D, lane) * scale - L);
    float ds = p * (warp_dot(dy, kr + C, D, lane) - Dr) * scale;
#pragma unroll
    for (int k = 0; k < NV_K; k++) {
      int d = lane + 32 * k;
      if (d < D) acc[k] = fmaf(ds, to_f(kr[d]), acc[k]);
    }
  }
  T* o = dqkv + ((i64)b * T_ + t) * C3 + (i64)h * D;
#pragma unroll
  for (int k = 0; k < NV_K; k++) {
    int d = lane + 32 * k;
    if (d < D) o[d] = from_f<T>(acc[k]);
  }
}
extern "C" __global__ void naive_bwd_dq_f32(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* dvec, int B, int T_, int NH, int D, float scale) { naive_bwd_dq<float>(dqkv, dout, qkv, lse, dvec, B, T_, NH, D, scale); }
extern "C" __global__ void naive_bwd_dq_bf16(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse, const float* dvec, int B, int T_, int NH, int D, float scale) { naive_bwd_dq<bf16>(dqkv, dout, qkv, lse, dvec, B, T_, NH, D, scale); }

// dk, dv for one key row (warp), summing over queries i >= j in order.
template <typename T>
__device__ __forceinline__ void naive_bwd_dkdv(T* __restrict__ dqkv, const T* __restrict__ dout, const T* __restrict__ qkv, const float* __restrict__ lse,
    const float* __restrict__ dvec, int B, int T_, int NH, int D, float scale) {
  i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= (i64)B * NH * T_) return;
  int j = (int)(row % T_), bh = (int)(row / T_), b = bh / NH, h = bh % NH;
  const int C = NH * D, C3 = 3 * C;
  const T* kr = qkv + ((i64)b * T_ + j) * C3 + C + (i64)h * D;
  float ak[NV_K], av[NV_K];
#pragma unroll
  for (int k = 0; k < NV_K; k++) { ak[k] = 0.f; av[k] = 0.f; }
  for (int i = j; i < T_; i++) {
    const T* q = qkv + ((i64)b * T_ + i) * C3 + (i64)h * D;
    const T* dy = dout + ((i64)b * T_ + i) * C + (i64)h * D;
    i64 qi = (i64)bh * T_ + i;
    float p = expf(warp_dot(q, kr, D, lane) * scale - lse[qi]);
    float ds = p * (warp_dot(dy, kr + C, D, lane) - dvec[qi]) * scale;
#pragma unroll
    for (int k = 0; k < NV_K; k++) {
      int d = lane + 32 * k;
      if (d < D) { ak[k] = fmaf(ds, to_f(q[d]), ak[k]); av[k] = fmaf(p, to_f(dy[d]), av[k]); }
    }
  }
  T* o = dqkv + ((i64)b * T_ + j) * C3 + (i64)h * D;
#pragma unroll
  for (int k = 0; k < NV_K; k++) {
    int d = lane + 32 * k;
    if (d < D) { o[C + d] = from_f<T>(ak[k]); o[2 * C + d] = from_f<T>(av[k]); }
  }
}
extern "C" __global__ void naive_bwd_dkdv_f32(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* dvec, int B, int T_, int NH, int D, float scale) { naive_bwd_dkdv<float>(dqkv, dout, qkv, lse, dvec, B, T_, NH, D, scale); }
extern "C" __global__ void naive_bwd_dkdv_bf16(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse, const float* dvec, int B, int T_, int NH, int D, float scale) { naive_bwd_dkdv<bf16>(dqkv, dout, qkv, lse, dvec, B, T_, NH, D, scale); }
