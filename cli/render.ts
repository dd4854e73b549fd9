import { formatParamMemory, formatStepPhases, type NodeEvent } from '../node/index.ts'

/**
 * The human lines of `zeromesh start` and `zeromesh up`, rendered from the nodes' events
 * (node/events.ts) and from what `up` observes of its workers. Scripts read the events
 * (`zeromesh start --events jsonl`), not these lines.
 */

/** A figure with 4 decimals as the lines have always shown it (NaN arrives as null from JSON). */
function fixed4(x: number | null | undefined): string {
  return x === null ? 'NaN' : `${x?.toFixed(4)}`
}

/** Steps between the `step` lines a node prints: 20 lines per run, and the last step. */
export function stepLineEvery(steps: number): number {
  return Math.max(1, Math.floor(steps / 20))
}

/** Whether a node's human output shows this step (see {@link stepLineEvery}). */
function shownStep(e: Extract<NodeEvent, { type: 'step' }>): boolean {
  return e.step % stepLineEvery(e.steps) === 0 || e.step === e.steps
}

/** The lines for one event of a node (none for the events that only scripts read). */
export function renderNodeEvent(e: NodeEvent): string[] {
  switch (e.type) {
    case 'kernels':
      return [`kernels ready in ${e.seconds.toFixed(1)} s`]
    case 'training':
      return [`training ${e.model} (${e.source}, vocabulary ${e.vocabSize}) on ${e.backend}`]
    case 'started':
      return startedLines(e)
    case 'view':
      return [
        `view ${e.epoch}: ${e.members} member${e.members === 1 ? '' : 's'}${e.rank !== undefined ? `, this node is rank ${e.rank}` : ', this node is not a member'}`
      ]
    case 'paused':
      return [e.paused ? 'lost contact with the majority of the view: paused' : 'majority restored']
    case 'step':
      return shownStep(e)
        ? [`step ${e.step}/${e.steps} loss ${fixed4(e.loss)} (rank ${e.rank} of ${e.worldSize}, ${Math.round(e.tokensPerS ?? 0)} tokens/s)`]
        : []
    case 'recovery':
      return []
    case 'memory':
      return [formatParamMemory(e)]
    case 'phases':
      return [formatStepPhases(e, 'this rank')]
    case 'bytes':
      return []
    case 'done':
      return [trainingDone(e)]
    case 'spare':
      return ['spare: not needed by this run']
    case 'failed':
      return [`training failed: ${e.message}`]
    case 'stopping':
      return ['stopping: leaving the run']
  }
}

/** `training done: 12 steps, loss 3.1234, held-out loss 3.2345`. */
function trainingDone(e: Extract<NodeEvent, { type: 'done' }>): string {
  return `training done: ${e.step} steps, loss ${fixed4(e.loss)}${e.evalLoss === undefined ? '' : `, held-out loss ${fixed4(e.evalLoss)}`}`
}

/** Who the node is, where it listens, and the command that joins others to it. */
function startedLines(e: Extract<NodeEvent, { type: 'started' }>): string[] {
  const dialable = e.multiaddrs.filter(a => !a.includes('/ip4/0.0.0.0/'))
  return [
    `zeromesh ${e.version}: node ${e.peerId} in run ${e.run} (zone ${e.zone}, host ${e.host})`,
    `data dir ${e.dataDir}`,
    ...(e.metricsUrl === undefined ? [] : [`metrics on ${e.metricsUrl}`]),
    ...(e.dashboardUrl === undefined ? [] : [`dashboard on ${e.dashboardUrl}`]),
    'listening on:',
    ...e.multiaddrs.map(a => `  ${a}`),
    'others join with:',
    `  npx zeromesh start --run ${e.run} --secret-file <the same secret> --bootstrap ${dialable[0] ?? e.multiaddrs[0] ?? "<this node's address>"}`
  ]
}

/** What `zeromesh up` runs, for its first line. */
export interface UpPlan {
  nodes: number
  spares: number
  model: string
  device: string
  steps: number
  zeropp: boolean
  outer?: { every: number; streaming: boolean }
  /** Zeroth-order training (`--zo`). */
  zo?: { eps: number }
  dir: string
}

/** `zeromesh up`'s first line. */
export function upBanner(p: UpPlan): string {
  return `zeromesh up: ${p.nodes} training ranks + ${p.spares} spare(s) on loopback, ${p.model} model, ${p.device}, ${p.steps} steps${p.zo !== undefined ? `, zeroth-order (MeZO, ε ${p.zo.eps})` : p.zeropp ? ', ZeRO++' : ', flat ZeRO-3'}${p.outer === undefined ? '' : `, DiLoCo over 2 zone groups every ${p.outer.every} steps${p.outer.streaming ? ' (streaming)' : ''}`} (logs in ${p.dir})`
}

/** The run's state at one status poll of `up`, for its progress line. */
export interface UpProgress {
  step: number
  steps: number
  loss: number | undefined
  tokensPerS: number | undefined
  epoch: number
  ranks: number
  spares: number
  /** What a recovering rank is doing (its status phase), while a recovery runs. */
  recovering?: string
}

/** `up`'s progress line. */
export function progressLine(p: UpProgress): string {
  const line = `step ${p.step}/${p.steps}  loss ${p.loss?.toFixed(4) ?? '-'}  ${p.tokensPerS === undefined ? '-' : Math.round(p.tokensPerS)} tokens/s  view ${p.epoch} (${p.ranks} ranks, ${p.spares} spare)`
  return p.recovering === undefined ? line : `${line}  ${p.recovering}`
}

/** `up`'s line for a recovery a worker reported. */
export function recoveryLine(r: Extract<NodeEvent, { type: 'recovery' }>): string {
  return r.mode === 'replace'
    ? `recovered: a spare took rank ${r.lost.join(', ')} from the erasure-coded snapshots; the run rolled back to step ${r.fromStep} and goes on (${r.ms} ms)`
    : `recovered: no spare, so the ${r.worldSize} survivors rebuilt rank ${r.lost.join(', ')}'s shard from the snapshots and re-partitioned; back to step ${r.fromStep} (${r.ms} ms)`
}

/** How long the first commit after `--kill-at`'s SIGKILL took, and its parts (ms). */
export interface KillTiming {
  nextStep: number
  nextCommitMs: number
  viewChangeMs: number | undefined
  recoveryMs: number
  /** The commit was seen by a status poll, up to `pollMs` late. */
  polled: boolean
  pollMs: number
}

/** `next step committed 1.2 s after the kill: step 6; detection and view change 0.8 s, ...`. */
export function killLine(k: KillTiming): string {
  const s1 = (ms: number): string => (ms / 1000).toFixed(1)
  const parts = [
    ...(k.viewChangeMs === undefined ? [] : [`detection and view change ${s1(k.viewChangeMs)} s`]),
    `recovery ${s1(k.recoveryMs)} s`,
    ...(k.viewChangeMs === undefined ? [] : [`new session and step ${k.nextStep} ${s1(k.nextCommitMs - k.viewChangeMs - k.recoveryMs)} s`])
  ]
  return `next step committed ${s1(k.nextCommitMs)} s after the kill${k.polled ? ` (seen by a status poll: up to ${(k.pollMs / 1000).toFixed(1)} s late)` : ''}: step ${k.nextStep}; ${parts.join(', ')}`
}
