import type { Collective, Member } from '../../mesh/index.ts'
import { TrainingError, type TrainConfig } from './config.ts'

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

/** Gathers every rank's settings and throws a TrainingError naming the first that differs. */
export async function agreeSettings(cfg: TrainConfig, collective: Collective, roster: readonly Member[], signal?: AbortSignal): Promise<void> {
  const mine = settingsWords(cfg)
  const all = (await collective.allGather(mine, roster.length * mine.length, { step: 0, label: SETTINGS_LABEL, ...(signal === undefined ? {} : { signal }) }))
    .data
  const why = settingsMismatch(all, roster)
  if (why !== undefined) throw new TrainingError(why)
}
