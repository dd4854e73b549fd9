/**
 * The Backend interface: the only way the trainer touches tensors.
 *
 * Two implementations pass the same op-level tests: `cpu` (plain TypeScript over typed arrays,
 * the reference, used by CI and CPU-only workers) and `cuda` (koffi → CUDA driver API, NVRTC
 * kernels, cuBLAS(Lt) GEMMs). CUDA results are checked against CPU with a stated tolerance,
 * llm.c-style (exact for the quantizers).
 *
 * Conventions (all ops):
 * - Tensors are dense, row-major, contiguous. `shape` is informative; ops take explicit sizes
 *   where the layout is not implied (B, T, C, number of heads, ...).
 * - Activations use the llm.c layout: `[B, T, C]`; linear weights are `[OC, C]` and
 *   `matmulForward` computes `out = inp @ weightᵀ + bias`.
 * - "acc" parameters are accumulated into (`+=`), everything else is overwritten. Gradients
 *   of parameters always accumulate, so micro-batches can be summed without extra kernels.
 * - Ops on one backend run in issue order on its default stream; `read` and `synchronize`
 *   wait for everything issued before them (they block the thread). `download` copies to the
 *   host on a second stream and `fence` marks a point in the stream: both return a
 *   {@link Fence} that a caller awaits without blocking the thread.
 * - Every op validates dtypes and sizes before touching memory and throws
 *   `InvalidArgumentError` naming the op and the argument on a mismatch.
 * - Compute dtype: `f32` everywhere on CPU; the CUDA backend also runs the activation ops and
 *   GEMMs in `bf16` (f32 accumulation). Master weights, optimizer state, layernorm statistics,
 *   losses and attention log-sum-exp rows are always `f32`.
 */

import type { ZoSeed } from './zo.ts'

export type TensorDType = 'f32' | 'bf16' | 'i32' | 'u8'

export const TENSOR_DTYPE_BYTES: Readonly<Record<TensorDType, number>> = Object.freeze({ f32: 4, bf16: 2, i32: 4, u8: 1 })

/** A device tensor (or a view into one). Opaque outside its backend. */
export interface Tensor {
  readonly dtype: TensorDType
  readonly shape: readonly number[]
  /** Number of elements (product of shape). */
  readonly length: number
}

/** Host typed array matching a dtype: f32 → Float32Array, bf16 → Uint16Array (raw bits), i32 → Int32Array, u8 → Uint8Array. */
export type HostArray = Float32Array | Uint16Array | Int32Array | Uint8Array

/**
 * A point in a backend's work: passed once the device has done everything issued before it
 * (and, for a download, the copy). The CPU backend works synchronously: its fences are passed
 * when made. Fences are how a caller waits for the device without blocking its event loop.
 */
export interface Fence {
  /** True once passed; never blocks. Raises what the device reported for the work (DeviceError, a kernel's flagged error). */
  passed(): boolean
  /** Resolves once passed (at once when it has, aborted or not), polling without blocking the thread; rejects with the device's error, or an AbortError when aborted first. */
  wait(options?: { signal?: AbortSignal }): Promise<void>
}

export interface AdamWParams {
  lr: number
  beta1: number
  beta2: number
  eps: number
  weightDecay: number
  /** 1-based step number used for bias correction. */
  step: number
  /** Gradients are multiplied by this before use (loss scaling / clipping / averaging). */
  gradScale: number
}

/**
 * Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"): one moment, a
 * sign update. c = β1·m + (1 − β1)·g; w ← w − lr·(sign(c) + λ·w); m ← β2·m + (1 − β2)·g.
 */
export interface LionParams {
  lr: number
  beta1: number
  beta2: number
  weightDecay: number
  /** Gradients are multiplied by this before use. */
  gradScale: number
}

export interface GemmParams {
  /** Row-major C[m, n] = alpha * op(A)[m, k] · op(B)[k, n] + beta * C. */
  a: Tensor
  b: Tensor
  c: Tensor
  m: number
  n: number
  k: number
  /** op(A) = Aᵀ when set; A is stored [k, m] then. */
  transA?: boolean
  /** op(B) = Bᵀ when set; B is stored [n, k] then. */
  transB?: boolean
  alpha?: number
  beta?: number
  /** Batched: `batch` independent products, consecutive matrices `stride*` elements apart. */
  batch?: number
  strideA?: number
  strideB?: number
  strideC?: number
}

export interface Backend {
  readonly kind: 'cpu' | 'cuda'
  /** One line for logs and `zeromesh doctor`: device name, memory, versions. */
  readonly description: string

  // ---- memory -------------------------------------------------------------------------------
  /** Allocates a zero-filled tensor. Throws LimitExceededError / a typed OOM error, never crashes. */
  alloc(dtype: TensorDType, shape: readonly number[]): Tensor
  /** A view of `shape` elements starting at element `offset` of `base`; shares memory, same dtype. */
  view(base: Tensor, offset: number, shape: readonly number[]): Tensor
  /** Releases an allocation (views: no-op). Using a freed tensor is a programmer error. */
  free(t: Tensor): void
  /** Copies host data into `t` starting at element `offset` (default 0). */
  write(t: Tensor, src: HostArray, offset?: number): void
  /** Copies `t` to a new host array (waits for pending work). */
  read(t: Tensor): HostArray
  fill(t: Tensor, value: number): void
  /** dst = src (same dtype and length). */
  copy(dst: Tensor, src: Tensor): void
  /** Waits for all issued work. */
  synchronize(): void
  /** A fence for all work issued so far. */
  fence(): Fence
  /**
   * Host memory that the device copies into asynchronously: page-locked (`cuMemHostAlloc`) on
   * CUDA, a plain typed array on the CPU. Zero-filled. Released by {@link freeHost} or dispose;
   * pinned bytes are capped (LimitExceededError).
   */
  hostAlloc(dtype: TensorDType, length: number): HostArray
  /**
   * Makes an array of shared memory (a SharedArrayBuffer, whole: the CPU backend's `shared`
   * tensors, which worker threads update) a destination of {@link download} and a fast source
   * of {@link write}: page-locked by registration on CUDA, nothing to do on the CPU.
   * {@link freeHost} undoes it; the memory stays the caller's.
   */
  hostRegister(a: HostArray): void
  /** Releases an array from {@link hostAlloc} or {@link hostRegister} (a no-op for anything else on the CPU backend). */
  freeHost(a: HostArray): void
  /**
   * Starts copying `src`, as it is after all work issued before, into `dst` (an array from
   * this backend's {@link hostAlloc} of src's host type) at element `dstOffset`. Work issued
   * afterwards runs alongside the copy and may overwrite `src` at once (CUDA stages a device
   * copy first and copies to the host on a stream of its own). Read `dst` only once the
   * returned fence has passed.
   */
  download(dst: HostArray, src: Tensor, dstOffset?: number): Fence
  /** Frees everything; the backend is unusable afterwards. */
  dispose(): void
  /**
   * Prepares every kernel now (CUDA: NVRTC compile or cubin-cache load, which blocks the thread
   * for seconds on a cold cache) instead of on first use. Call it before joining a mesh, so a
   * compile never stalls heartbeats. The CPU backend has nothing to prepare.
   */
  warmup(): void

  // ---- generic math -------------------------------------------------------------------------
  gemm(p: GemmParams): void
  /** dst(acc) += src, same dtype and length. */
  add(dst: Tensor, src: Tensor): void
  /** out = a + b (residual forward). */
  residualForward(out: Tensor, a: Tensor, b: Tensor): void
  /** t *= s. */
  scale(t: Tensor, s: number): void
  /** Σ t² in f64 on CPU / f32 tree reduction on CUDA (for gradient-norm clipping). */
  sumSquares(t: Tensor): number
  /** f32 ↔ bf16 (round to nearest even). Same length. */
  cast(dst: Tensor, src: Tensor): void

  // ---- GPT ops (llm.c semantics) -------------------------------------------------------------
  /** out[B,T,C] = wte[tokens[b,t]] + wpe[t]. tokens: i32[B*T]. */
  encoderForward(out: Tensor, tokens: Tensor, wte: Tensor, wpe: Tensor, B: number, T: number, C: number): void
  /** dwte(acc), dwpe(acc) from dout[B,T,C]. */
  encoderBackward(dwte: Tensor, dwpe: Tensor, dout: Tensor, tokens: Tensor, B: number, T: number, C: number): void
  /** out = (inp - mean) * rstd * weight + bias over the last dim C; mean, rstd: f32[N]. */
  layernormForward(out: Tensor, mean: Tensor, rstd: Tensor, inp: Tensor, weight: Tensor, bias: Tensor, N: number, C: number): void
  /** dinp(acc), dweight(acc), dbias(acc). */
  layernormBackward(
    dinp: Tensor,
    dweight: Tensor,
    dbias: Tensor,
    dout: Tensor,
    inp: Tensor,
    weight: Tensor,
    mean: Tensor,
    rstd: Tensor,
    N: number,
    C: number
  ): void
  /** out[N,OC] = inp[N,C] @ weight[OC,C]ᵀ + bias[OC] (bias may be null). */
  matmulForward(out: Tensor, inp: Tensor, weight: Tensor, bias: Tensor | null, N: number, C: number, OC: number): void
  /** dinp (overwritten) = dout @ weight; dweight(acc) += doutᵀ @ inp; dbias(acc) += Σ dout. */
  matmulBackward(dinp: Tensor, dweight: Tensor, dbias: Tensor | null, dout: Tensor, inp: Tensor, weight: Tensor, N: number, C: number, OC: number): void
  /** GELU, tanh approximation (GPT-2). */
  geluForward(out: Tensor, inp: Tensor): void
  /** dinp (overwritten) = gelu'(inp) * dout. */
  geluBackward(dinp: Tensor, inp: Tensor, dout: Tensor): void
  /**
   * Causal multi-head self-attention. qkv[B,T,3C] holds q, k, v concatenated per token
   * (heads of size C/NH inside each); out[B,T,C]; lse: f32[B,NH,T] receives each query row's
   * log-sum-exp of its scaled scores (the backward recomputes probabilities from it).
   */
  attentionForward(out: Tensor, lse: Tensor, qkv: Tensor, B: number, T: number, C: number, NH: number): void
  /** dqkv (overwritten) from dout, given the forward's qkv, out and lse. */
  attentionBackward(dqkv: Tensor, dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, B: number, T: number, C: number, NH: number): void
  /**
   * Fused softmax + cross-entropy over logits[N, Vp] using the first V columns (Vp ≥ V is the
   * padded row stride). losses: f32[N]. If `dlogits` is given (it may alias `logits`), writes
   * (softmax - onehot(target)) * dlossScale into its first V columns and 0 into the padding.
   * targets: i32[N]; a target outside [0, V) is an error the op reports, not undefined behaviour.
   */
  crossEntropy(losses: Tensor, dlogits: Tensor | null, logits: Tensor, targets: Tensor, N: number, V: number, Vp: number, dlossScale: number): void
  /**
   * Fused AdamW on f32 params/grads/m/v (same length). If `paramsLowp` (bf16) is given, it
   * receives the updated params cast to bf16 in the same pass.
   */
  adamw(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, p: AdamWParams, paramsLowp?: Tensor | null): void
  /**
   * Fused Lion on f32 params/grads/m (same length), every operation an f32 one in the order of
   * {@link LionParams} (no fused multiply-add), so backends agree bit for bit. `paramsLowp` as
   * in adamw.
   */
  lion(params: Tensor, grads: Tensor, m: Tensor, p: LionParams, paramsLowp?: Tensor | null): void
  /**
   * Fused 8-bit AdamW (gpu/adam8.ts: the format and the order of operations): params/grads f32
   * [n], m and v u8 codes [n], scales f32 [2·ceil(n / ADAM8_BLOCK)] (m's and v's absmax of
   * each block, interleaved). Dequantizes each block, updates it in f32 and requantizes it;
   * backends agree bit for bit. `paramsLowp` as in adamw.
   */
  adamw8bit(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, scales: Tensor, p: AdamWParams, paramsLowp?: Tensor | null): void
  /**
   * Fused 8-bit Lion (gpu/adam8.ts: the format and the order of operations): params/grads f32
   * [n], m u8 codes [n], scales f32 [ceil(n / ADAM8_BLOCK)] (m's absmax of each block).
   * Dequantizes each block, runs {@link lion}'s f32 update on it and requantizes m; backends
   * agree bit for bit. `paramsLowp` as in adamw.
   */
  lion8bit(params: Tensor, grads: Tensor, m: Tensor, scales: Tensor, p: LionParams, paramsLowp?: Tensor | null): void
  /**
   * Zeroth-order perturbation (gpu/zo.ts): params[i] += s·scale, s = −1 where
   * `zoNegative(seed, offset + i)`, else +1 (`offset`: the index of params[0] in the flat
   * layout). One f32 addition per element, so backends agree bit for bit. `paramsLowp` as in adamw.
   */
  addSigns(params: Tensor, scale: number, seed: ZoSeed, offset: number, paramsLowp?: Tensor | null): void

  // ---- collectives' quantizers (codec/quant.ts format, byte-identical) -----------------------
  /**
   * Blockwise absmax quantization of src (f32). scales: f32[ceil(n/blockSize)]; codes: u8
   * [n] for int8 (two's complement) or [ceil(n/2)] for int4 (low nibble first).
   */
  quantize(codes: Tensor, scales: Tensor, src: Tensor, bits: 8 | 4, blockSize: number): void
  /** dst (f32) = dequantized codes; with `accumulate`, dst += dequantized. */
  dequantize(dst: Tensor, codes: Tensor, scales: Tensor, bits: 8 | 4, blockSize: number, accumulate: boolean): void
}
