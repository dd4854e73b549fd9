import { z } from 'zod'

/**
 * What a running node reports about itself, as events: its start-up, views, training steps,
 * recoveries and the end of training. `zeromesh start` renders them as lines for people, or
 * with `--events jsonl` writes one JSON object per line on stdout, which `zeromesh up` reads
 * from its workers. Each event has one strict schema here; a line that fails it is rejected
 * as a whole.
 */

/** Caps of the event channel (docs/LIMITS.md). */
export const NODE_EVENT_LIMITS = Object.freeze({
  /** One JSON event line; a longer line is dropped before it is parsed. */
  maxLineBytes: 64 * 1024,
  /** Multiaddrs in a `started` event, and ranks in a `recovery` event. */
  maxListLength: 1024
})

const count = z.int().min(0)
/** A figure that may be unknown (absent) or not a number (NaN travels as JSON null). */
const figure = z.number().nullable().optional()
const list = <T extends z.ZodType>(item: T): z.ZodArray<T> => z.array(item).max(NODE_EVENT_LIMITS.maxListLength)
const tierBytes = z.strictObject({ host: z.number().min(0), zone: z.number().min(0), wan: z.number().min(0) })

const EVENT_SCHEMAS = [
  /** The CUDA kernels compiled (before the node joins the mesh). */
  z.strictObject({ type: z.literal('kernels'), seconds: z.number().min(0) }),
  /** This node will train: the model, the data and the backend. */
  z.strictObject({ type: z.literal('training'), model: z.string(), source: z.string(), vocabSize: z.int().min(1), backend: z.string() }),
  /** The node is up: who it is and where it listens. */
  z.strictObject({
    type: z.literal('started'),
    version: z.string(),
    peerId: z.string(),
    run: z.string(),
    zone: z.string(),
    host: z.string(),
    dataDir: z.string(),
    metricsUrl: z.string().optional(),
    dashboardUrl: z.string().optional(),
    multiaddrs: list(z.string())
  }),
  /** A view was installed; `rank` is this node's, absent when it is not a member. */
  z.strictObject({ type: z.literal('view'), epoch: count, members: count, rank: count.optional() }),
  /** Contact with the majority of the view was lost (true) or restored (false). */
  z.strictObject({ type: z.literal('paused'), paused: z.boolean() }),
  /** A training step committed; `sent`: the bytes this rank's training collectives sent so far, by tier (headers included). */
  z.strictObject({
    type: z.literal('step'),
    step: count,
    steps: count,
    loss: figure,
    rank: count.optional(),
    worldSize: count,
    tokensPerS: figure,
    sent: tierBytes.optional()
  }),
  /** A recovery this node took part in; `worldSize` is the run's after it. */
  z.strictObject({
    type: z.literal('recovery'),
    mode: z.enum(['replace', 'shrink']),
    lost: list(count),
    fromStep: count,
    ms: z.number().min(0),
    worldSize: count
  }),
  /** The parameter memory a rank measured (bytes). */
  z.strictObject({
    type: z.literal('memory'),
    shard: z.number().min(0),
    model: z.number().min(0),
    inFlightPeak: z.number().min(0),
    full: z.number().min(0),
    hostShard: z.boolean().optional()
  }),
  /** Where this rank's steps spent their time (mean ms per step, TrainStatus.phases), before `done`. */
  z.strictObject({
    type: z.literal('phases'),
    compute: z.number().min(0),
    wire: z.number().min(0),
    optimizer: z.number().min(0),
    snapshot: z.number().min(0)
  }),
  /** Bytes this node sent for training (collectives) and snapshot bytes it placed, by tier, before `done`. */
  z.strictObject({ type: z.literal('bytes'), sent: tierBytes, snapshot: tierBytes }),
  /** This rank finished training; `evalLoss` is the final weights' held-out loss. */
  z.strictObject({ type: z.literal('done'), step: count, loss: figure, evalLoss: figure }),
  /** Training ended without this node (a spare that was not needed). */
  z.strictObject({ type: z.literal('spare') }),
  /** Training failed on this node. */
  z.strictObject({ type: z.literal('failed'), message: z.string() }),
  /** The node is leaving the run. */
  z.strictObject({ type: z.literal('stopping') })
] as const

/** The schema of every node event. */
export const nodeEventSchema = z.discriminatedUnion('type', EVENT_SCHEMAS)

/** One event of a running node. */
export type NodeEvent = z.output<typeof nodeEventSchema>

/** An event as one JSON line (no newline). NaN figures become null. */
export function encodeNodeEvent(e: NodeEvent): string {
  return JSON.stringify(e)
}

/** A line read as an event, or why it is not one. */
export type ParsedEvent = { ok: true; event: NodeEvent } | { ok: false; error: string }

/** Parses one line of a node's `--events jsonl` output against {@link nodeEventSchema}. */
export function parseNodeEvent(line: string): ParsedEvent {
  const bytes = Buffer.byteLength(line)
  if (bytes > NODE_EVENT_LIMITS.maxLineBytes) return { ok: false, error: `a line of ${bytes} bytes exceeds ${NODE_EVENT_LIMITS.maxLineBytes}` }
  let json: unknown
  try {
    json = JSON.parse(line)
  } catch (err) {
    return { ok: false, error: `not JSON (${(err as Error).message})` }
  }
  const parsed = nodeEventSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    return { ok: false, error: `${issue.path.length > 0 ? `${issue.path.join('.')}: ` : ''}${issue.message}` }
  }
  return { ok: true, event: parsed.data }
}
