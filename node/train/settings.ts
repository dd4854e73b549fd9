import { randomBytes } from 'node:crypto'
import type { Collective, Member } from '../../mesh/index.ts'
import { launchName, RUN_NONCE_BYTES, sameLaunch } from '../../snapshot/index.ts'
import { OPTIMIZERS, TrainingError, type TrainConfig } from './config.ts'

/**
 * Settings agreement: when a roster forms, its ranks all-gather the settings that must be equal
 * on every rank (one u32 word each) and stop, naming the setting and the nodes, when they are
 * not. Without it, ranks started with another `--lr`, `--seed` or `--batch` silently trained
 * different models, and a rank with fewer `--steps` left the others hanging.
 */

/** One compared setting: the flag a person sets, and its value as a u32 word. */
interface Setting {
  flag: string
  word: (c: TrainConfig) => number
  show: (w: number) => string
}

const f32bits = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0]!
const bitsf32 = (w: number): number => new Float32Array(new Uint32Array([w]).buffer)[0]!
const int = (get: (c: TrainConfig) => number): Pick<Setting, 'word' | 'show'> => ({ word: c => get(c) >>> 0, show: w => String(w) })
const real = (get: (c: TrainConfig) => number): Pick<Setting, 'word' | 'show'> => ({
  word: c => f32bits(get(c)),
  show: w => String(Number(bitsf32(w).toPrecision(6)))
})
const bool = (get: (c: TrainConfig) => boolean): Pick<Setting, 'word' | 'show'> => ({ word: c => (get(c) ? 1 : 0), show: w => (w === 1 ? 'on' : 'off') })

const SETTINGS: readonly Setting[] = [
  { flag: '--steps', ...int(c => c.steps) },
  { flag: '--seed', ...int(c => c.seed) },
  { flag: '--batch', ...int(c => c.B) },
  { flag: '--seq', ...int(c => c.T) },
  { flag: '--lr', ...real(c => c.lr) },
  { flag: 'weight decay', ...real(c => c.weightDecay) },
  { flag: '--zeropp', ...bool(c => c.zeroPP) },
  { flag: '--optimizer', word: c => OPTIMIZERS.indexOf(c.optimizer ?? 'adamw'), show: w => OPTIMIZERS[w] ?? `optimizer ${w}` },
  {
    flag: '--zo (--zo-eps)',
    word: c => (c.zo === undefined ? 0 : f32bits(c.zo.eps)),
    show: w => (w === 0 ? 'off' : `on (ε ${Number(bitsf32(w).toPrecision(6))})`)
  },
  // An offloaded rank's optimizer runs on the host (f64 arithmetic, rounded to f32), a device's in
  // f32 kernels: a replacement replaying a lost rank's steps must run where that rank did.
  { flag: '--offload', word: c => (c.offload === undefined ? 0 : 1), show: w => (w === 1 ? 'cpu' : 'none') },
  { flag: '--device (dtype)', word: c => (c.dtype === 'bf16' ? 1 : 0), show: w => (w === 1 ? 'bf16 (cuda)' : 'f32 (cpu)') },
  { flag: 'vocabulary (--data, --tokenizer)', ...int(c => c.model.vocabSize) },
  { flag: '--model (width)', ...int(c => c.model.C) },
  { flag: '--model (layers)', ...int(c => c.model.nLayer) },
  { flag: '--model (heads)', ...int(c => c.model.nHead) },
  { flag: '--model (context)', ...int(c => c.model.maxT) },
  { flag: '--outer-every', ...int(c => c.outer?.every ?? 0) },
  { flag: '--outer-zones', ...int(c => c.outer?.zones ?? 0) },
  { flag: '--outer-lr', ...real(c => c.outer?.lr ?? 0) },
  { flag: '--streaming', ...bool(c => c.outer?.streaming ?? false) },
  // The run identity (run id, shape, seed, settings) as a last resort: what the rows above miss.
  {
    flag: 'run identity (--run, --init-from and the rest)',
    word: c => (c.identity === undefined ? 0 : new DataView(c.identity.buffer, c.identity.byteOffset).getUint32(0, true)),
    show: w => w.toString(16).padStart(8, '0')
  }
]

/** The label of the settings all-gather. */
export const SETTINGS_LABEL = 'settings'

/** This rank's settings words. */
export function settingsWords(cfg: TrainConfig): Uint32Array {
  return Uint32Array.from(SETTINGS.map(s => s.word(cfg)))
}

/**
 * The first setting on which the gathered words of the roster differ from rank 0's, as one line
 * naming the setting, the values and the nodes; undefined when they all agree.
 */
export function settingsMismatch(all: Uint32Array, roster: readonly Member[]): string | undefined {
  const n = SETTINGS.length
  for (let i = 0; i < n; i++) {
    const base = all[i]!
    const odd = roster.map((_, r) => r).filter(r => all[r * n + i] !== base)
    if (odd.length === 0) continue
    const s = SETTINGS[i]!
    const who = (r: number): string => `rank ${r} (${roster[r]!.host}, zone ${roster[r]!.zone})`
    const others = odd.map(r => `${s.show(all[r * n + i]!)} on ${who(r)}`).join(', ')
    return `the ranks were started with different settings: ${s.flag} is ${s.show(base)} on ${who(0)} but ${others}; start every node of the run with the same settings`
  }
  return undefined
}

/** Words of the run nonce behind the settings: a flag (1: the rank's nonce is the run's already; 0: a fresh proposal), then the nonce. */
const NONCE_WORDS = 1 + RUN_NONCE_BYTES / 4

/**
 * The run nonce from the gathered words of a roster: the one the ranks that have one share
 * (a run's first roster has none: rank 0's fresh proposal is taken). Ranks holding different
 * nonces were started as different launches of one run (the same run id and secret): a
 * TrainingError names them.
 */
export function agreedNonce(all: Uint32Array, roster: readonly Member[]): Uint8Array {
  const n = SETTINGS.length + NONCE_WORDS
  const nonceOf = (r: number): Uint8Array => new Uint8Array(all.slice(r * n + SETTINGS.length + 1, (r + 1) * n).buffer)
  const holders = roster.map((_, r) => r).filter(r => all[r * n + SETTINGS.length] === 1)
  if (holders.length === 0) return nonceOf(0)
  const first = nonceOf(holders[0]!)
  const odd = holders.filter(r => !sameLaunch(nonceOf(r), first))
  if (odd.length > 0) {
    const who = (r: number): string => `rank ${r} (${roster[r]!.host}, zone ${roster[r]!.zone}, launch ${launchName(nonceOf(r))})`
    throw new TrainingError(
      `the ranks come from different launches of this run: ${who(holders[0]!)} but ${odd.map(who).join(', ')}; ` +
        'their states must not be mixed. Stop the nodes of one launch (or give the new one another --run)'
    )
  }
  return first
}

/**
 * Gathers every rank's settings and throws a TrainingError naming the first that differs;
 * returns the run nonce the ranks agree on ({@link agreedNonce}; `nonce`: the one this rank
 * already holds for the run, if any).
 */
export async function agreeSettings(
  cfg: TrainConfig,
  collective: Collective,
  roster: readonly Member[],
  nonce: Uint8Array | undefined,
  signal?: AbortSignal
): Promise<Uint8Array> {
  const mine = new Uint32Array(SETTINGS.length + NONCE_WORDS)
  mine.set(settingsWords(cfg))
  mine[SETTINGS.length] = nonce === undefined ? 0 : 1
  mine.set(new Uint32Array(Uint8Array.from(nonce ?? randomBytes(RUN_NONCE_BYTES)).buffer), SETTINGS.length + 1)
  const all = (await collective.allGather(mine, roster.length * mine.length, { step: 0, label: SETTINGS_LABEL, ...(signal === undefined ? {} : { signal }) }))
    .data
  const n = mine.length
  const settings = new Uint32Array(roster.length * SETTINGS.length)
  for (let r = 0; r < roster.length; r++) settings.set(all.subarray(r * n, r * n + SETTINGS.length), r * SETTINGS.length)
  const why = settingsMismatch(settings, roster)
  if (why !== undefined) throw new TrainingError(why)
  return agreedNonce(all, roster)
}
