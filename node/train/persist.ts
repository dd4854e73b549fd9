import type { Backend, Tensor } from '../../gpu/index.ts'
import { copyState, encodeState, SNAPSHOT_LIMITS, stateBytes, type Adam8Arrays, type OuterArrays, type RankState } from '../../snapshot/index.ts'
import { stateOptimizer } from './config.ts'
import { appliesAt, copyOuter, outerSchedule } from './outer.ts'
import { persistDiskState } from '../disk-tier.ts'
import type { TrainerEnv, RunState } from './state.ts'
import type { HostSpace } from './host-reserve.ts'

/**
 * Without the DiLoCo tier, every this-many-th snapshot step is an anchor: a kept capture, so
 * a recovery rolls back at most this many snapshots (`snapshot.every` steps each) behind the
 * newest (docs/LIMITS.md).
 */
export const ANCHOR_EVERY_SNAPSHOTS = 8

/** Where a rank's optimizer state lives (its backend's tensors) and the host space a save downloads it into. */
export interface SaveSource {
  be: Backend
  master: Tensor
  /** The first moment: f32, or u8 codes for the 8-bit optimizers. */
  m: Tensor
  /** AdamW's second moment (f32, or u8 codes for 8-bit AdamW; undefined for Lion and 8-bit Lion). */
  v: Tensor | undefined
  /** The 8-bit optimizers' block absmaxes (undefined for the others). */
  scales: Tensor | undefined
  /** A zeroth-order run (`--zo`): the saved state is the weights alone (`m` is not read). */
  weightsOnly?: boolean
  /**
   * Host arrays from `space` (page-locked on a device), taken on the first save of the session:
   * f32 moments, or (the 8-bit optimizers) `adam8` with `m` and `v` empty.
   */
  host: { master: Float32Array; m: Float32Array; v: Float32Array; adam8: Adam8Arrays | undefined } | undefined
  /** Where `host` comes from: the trainer's reserve (allocated before the node joined) or the backend. */
  space: HostSpace
  /**
   * The save whose download is still in flight, or whose copies (a large state's capture and
   * disk tier copies, made piece by piece) still read `host`: the next one waits for none, it
   * is skipped (or waits, when it must not be).
   */
  pending: Promise<void> | undefined
  /** The backend's downloads run asynchronously (learned from the first save: its fences had not passed when issued). */
  async: boolean
  /** A snapshot this source captured is still being placed. */
  placing: boolean
  /** The DiLoCo tier's state (host arrays the trainer updates at outer steps), copied at each save. */
  outer: OuterArrays | undefined
}

/** The optimizer state of one rank at a committed step, as snapshots and the disk tier store it. */
export function rankState(
  rank: number,
  P: number,
  epoch: number,
  step: number,
  weights: Float32Array,
  adamM: Float32Array,
  adamV: Float32Array,
  outer?: OuterArrays,
  identity?: Uint8Array,
  nonce?: Uint8Array,
  optimizer?: RankState['optimizer'],
  adam8?: Adam8Arrays
): RankState {
  const st: RankState = { rank, worldSize: P, epoch, step, dataCursor: step, weights, adamM, adamV, rng: new Uint8Array(0) }
  if (outer !== undefined) st.outer = outer
  if (identity !== undefined) st.identity = identity
  if (nonce !== undefined) st.nonce = nonce
  if (optimizer !== undefined) st.optimizer = optimizer
  if (adam8 !== undefined) st.adam8 = adam8
  return st
}

/**
 * After step `s` commits: an erasure-coded snapshot (every `snapshot.every` steps, the first
 * step of a roster and the last step) and a disk tier file (every `disk.every` steps).
 *
 * Some snapshots are *kept* (capture.ts: never superseded): the roster's first step, the last,
 * the DiLoCo tier's stage steps and, without that tier, an anchor every
 * {@link ANCHOR_EVERY_SNAPSHOTS} snapshots. Ordinary captures may be superseded at different
 * steps on different ranks when placement lags, so only the kept ones are sure to be common to
 * every rank: the newest of them complete everywhere becomes the holders' recovery point
 * (pinned in their stores) and bounds how far a recovery rolls back. A kept capture waits for
 * an earlier kept one still queued (`room()`): the step stalls instead of losing the anchor.
 * Until this rank's newest kept capture is the recovery point (every rank placed it), its
 * ordinary captures are skipped: a fast rank's newer versions would push the anchor out of
 * the versions holders and manifest books keep before it is pinned, and they are of no use to
 * a recovery anyway while the slower ranks have not caught up.
 *
 * The state is downloaded from the backend as it is now (the next step may go on at once) into
 * `src.host`; the snapshot's capture and the disk tier's encoding copy it from there once the
 * download has passed: at once on the CPU, on the device when the copy stream is done. A save
 * due while the previous one is still downloading is skipped (the capturer would supersede
 * it anyway: placement keeps at most one snapshot waiting), unless it must not be: then the
 * returned promise says the step has to wait for it before the state changes (undefined: go on).
 */
export function saveCommitted(
  env: TrainerEnv,
  rs: RunState,
  at: { rank: number; P: number; epoch: number; s: number; diskAs?: { rank: number; P: number } | null },
  src: SaveSource
): Promise<void> | undefined {
  const { cfg } = env
  const { s } = at
  // `diskAs`: the rank and world size the disk tier file names (zone groups: the first group
  // writes, as the ranks of a world of its size; null: this rank writes none).
  const diskId = at.diskAs === undefined ? { rank: at.rank, P: at.P } : at.diskAs
  const disk = cfg.disk !== undefined && cfg.disk.every > 0 && (s + 1) % cfg.disk.every === 0 && diskId !== null ? cfg.disk : undefined
  // The first step of a session is always captured (a roster's own recovery point), and
  // the last one (the state the run ends with).
  // Zone groups (the DiLoCo tier) snapshot the step that begins each outer stage, all of them
  // the same steps: zone groups are apart by up to a stage, and a recovery needs a step every
  // group placed in one stage (outer.ts, zoneRecoveryPoints), which holders then keep as their
  // recovery point. Steps in between would only push those out of the newest versions kept.
  const stage = cfg.outer !== undefined && appliesAt(outerSchedule(cfg.outer), s + 1)
  const every = cfg.snapshot?.every ?? 1
  const due = cfg.outer === undefined ? (s + 1) % every === 0 : stage
  const anchor = cfg.outer === undefined && (s + 1) % (every * ANCHOR_EVERY_SNAPSHOTS) === 0
  let snap = rs.snapshots !== undefined && (due || s === rs.rosterStart || s + 1 === cfg.steps)
  if (!snap && disk === undefined) return undefined
  const keep = snap && (s === rs.rosterStart || s + 1 === cfg.steps || stage || anchor)
  if (snap && !keep && rs.keptStep > (rs.snapshots!.recoveryPoint()?.version ?? 0)) {
    env.deps.log.debug({ step: s + 1, kept: rs.keptStep }, 'snapshot skipped: the newest kept one is not yet placed by every rank')
    snap = false
    if (disk === undefined) return undefined
  }
  const mandatory = keep || disk !== undefined
  if (src.pending !== undefined) {
    // A roster's first state, the run's last and a disk tier file are never skipped: the step
    // waits for the download ahead of them instead.
    if (mandatory) return src.pending.then(() => saveCommitted(env, rs, at, src))
    env.deps.log.debug({ step: s + 1 }, 'snapshot skipped: the previous one is still downloading from the device or being copied')
    return undefined
  }
  // A device rank's state goes to the host only when placement can take it: a copy made while
  // the previous snapshot is still being placed would be superseded or wait, and each costs the
  // trainer's thread a copy of the whole state.
  if (src.async && src.placing && !mandatory) {
    env.deps.log.debug({ step: s + 1 }, 'snapshot skipped: the previous one is still being placed')
    return undefined
  }
  const { be } = src
  const host = (src.host ??= hostArrays(src))
  const a8 = host.adam8
  // A zeroth-order state is the weights alone (host.m and host.v are empty then).
  const fences = [
    be.download(host.master, src.master),
    ...(a8 === undefined
      ? [...(host.m.length === 0 ? [] : [be.download(host.m, src.m)]), ...(src.v === undefined ? [] : [be.download(host.v, src.v)])]
      : [be.download(a8.m, src.m), ...(src.v === undefined ? [] : [be.download(a8.v, src.v)]), be.download(a8.scales, src.scales!)])
  ]
  const now = fences.every(f => f.passed())
  // The outer state as it is at this commit: used as it is when the save happens now (the
  // capture copies it), copied when a device's download lands later (an outer step may change it first).
  const outer = src.outer === undefined || now ? src.outer : copyOuter(src.outer)
  // Returns, for a large state, the copies still reading `host` (they go on piece by piece).
  const save = (): Promise<void> | undefined => {
    const st = rankState(at.rank, at.P, at.epoch, s + 1, host.master, host.m, host.v, outer, env.cfg.identity, rs.nonce, stateOptimizer(env.cfg), a8)
    const reading: Array<Promise<void>> = []
    if (snap && rs.snapshots !== undefined) {
      const c0 = env.deps.clock.monotonic()
      const ticket = rs.snapshots.capture(st, { keep })
      if (ticket.copied !== undefined) reading.push(ticket.copied)
      if (keep) rs.keptStep = s + 1
      env.deps.log.debug({ step: s + 1, keep, copyMs: Math.round(env.deps.clock.monotonic() - c0) }, 'snapshot captured')
      src.placing = true
      void ticket.done.then(o => {
        env.deps.log.debug({ step: o.step, status: o.status }, 'snapshot capture settled')
        // A skipped capture copied nothing: the kept one ahead of it is still in flight.
        if (o.status !== 'skipped') src.placing = false
        if (o.status === 'placed') rs.st.snapshotStep = Math.max(rs.st.snapshotStep ?? 0, o.step)
      })
    }
    // The disk tier writes in the background, one file after another; the session waits
    // for the last write before it ends.
    if (disk !== undefined && diskId !== null) {
      const sealed = sealedForDisk(
        env,
        rankState(diskId.rank, diskId.P, at.epoch, s + 1, host.master, host.m, host.v, undefined, env.cfg.identity, rs.nonce, stateOptimizer(env.cfg), a8)
      )
      if (sealed.copied !== undefined) reading.push(sealed.copied)
      rs.disk.writes = rs.disk.writes
        .then(async () => {
          await persistDiskState(disk.dir, s + 1, await sealed.bytes)
          rs.disk.step = s + 1
        })
        .catch((err: unknown) => {
          env.deps.log.warn({ err: (err as Error).message, step: s + 1 }, 'disk tier: persisting the state failed')
        })
    }
    return reading.length === 0 ? undefined : Promise.all(reading).then(() => {})
  }
  // A large state's copies go on after save() returned: the next save waits for them (or is
  // skipped), and the host arrays stay allocated until they are done.
  const track = (reading: Promise<void> | undefined): void => {
    if (reading === undefined) return
    const p = reading.finally(() => {
      if (src.pending === p) src.pending = undefined
    })
    src.pending = p
  }
  // The CPU backend's downloads are done when issued: the save happens now, as it always did.
  // A kept capture waits until no earlier kept one is queued (the step waits with it).
  const room = (): Promise<void> | undefined => {
    const r = keep ? rs.snapshots?.room() : undefined
    if (r !== undefined) env.deps.log.debug({ step: s + 1 }, 'kept snapshot waits for the previous kept one to be placed')
    return r
  }
  if (now) {
    const r = room()
    if (r !== undefined) return r.then(() => track(save()))
    track(save())
    return undefined
  }
  src.async = true
  src.pending = Promise.all(fences.map(f => f.wait()))
    .then(room)
    .then(save)
    .catch((err: unknown) => {
      env.deps.log.warn({ err: (err as Error).message, step: s + 1 }, 'save: downloading the state from the device failed')
    })
    .finally(() => {
      src.pending = undefined
    })
  return undefined
}

/**
 * Frees the saves' host arrays (the session is over), once a save still downloading is done:
 * the returned promise, or undefined when nothing was in flight (no await, so a CPU rank's
 * schedule does not change).
 */
export function endSaves(src: SaveSource): Promise<void> | undefined {
  if (src.pending !== undefined) return src.pending.then(() => endSaves(src))
  if (src.host === undefined) return undefined
  const { master, m, v, adam8 } = src.host
  src.space.give('save.master', master)
  if (adam8 !== undefined) {
    src.space.give('save.m8', adam8.m)
    if (src.v !== undefined) src.space.give('save.v8', adam8.v)
    src.space.give('save.scales', adam8.scales)
  } else if (m.length > 0) {
    src.space.give('save.m', m)
    if (src.v !== undefined) src.space.give('save.v', v)
  }
  src.host = undefined
}

/** The host arrays of `src`'s saves, from its space. */
function hostArrays(src: SaveSource): NonNullable<SaveSource['host']> {
  const n = src.master.length
  const empty = new Float32Array(0)
  const master = src.space.take('save.master', n)
  if (src.scales !== undefined) {
    // 8-bit Lion keeps no v: its codes are empty.
    const v = src.v === undefined ? new Uint8Array(0) : src.space.take('save.v8', n)
    const adam8 = { m: src.space.take('save.m8', n), v, scales: src.space.take('save.scales', src.scales.length) }
    return { master, m: empty, v: empty, adam8 }
  }
  if (src.weightsOnly === true) return { master, m: empty, v: empty, adam8: undefined }
  return { master, m: src.space.take('save.m', n), v: src.v === undefined ? empty : src.space.take('save.v', n), adam8: undefined }
}

/**
 * The disk tier's sealed state of `st`: encoded at once when small (every simulated state);
 * a large one is copied piece by piece (as a capture is) into a buffer of the snapshot coder,
 * whose threads add the checksum, so the trainer's thread never holds a whole state's copy.
 * `copied` (large states only) resolves once `st`'s buffers are no longer read.
 */
function sealedForDisk(env: TrainerEnv, st: RankState): { bytes: Uint8Array | Promise<Uint8Array>; copied?: Promise<void> } {
  const total = stateBytes(st)
  const coder = env.deps.snapshotCoder
  const chunkBytes = SNAPSHOT_LIMITS.captureChunkBytes
  if (total <= chunkBytes || coder === undefined) return { bytes: encodeState(st) }
  const { clock } = env.deps
  const copy = copyState(st, coder.alloc(total), { chunkBytes, turn: () => clock.turn() })
  const bytes = copy.then(async out => {
    await coder.seal(out)
    return out
  })
  return {
    bytes,
    copied: copy.then(
      () => {},
      () => {}
    )
  }
}

/** What an error that ends the run says about the disk tier (the way back with --resume). */
export function diskHint(env: TrainerEnv, rs: RunState): string {
  const d = env.cfg.disk
  if (d === undefined || d.every === 0) return ' (the disk tier is off here: --disk-every N turns it on)'
  return rs.disk.step === undefined ? ` (no step persisted yet; every ${d.every} steps)` : ` (newest step on this node's disk: ${rs.disk.step})`
}
