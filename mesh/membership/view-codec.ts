import { z } from 'zod'
import { createEnvelopeCodec } from '../../codec/index.ts'
import type { View } from './types.ts'

/** The gossip topic of heartbeats (see heartbeat-codec.ts). */
export const HB_TOPIC = 'membership/hb'
/** The gossip topic of Paxos messages and commits (see {@link createViewCodec}). */
export const VIEW_TOPIC = 'membership/view'

const peerIdSchema = z.string().min(1).max(128)
const memberSchema = z.strictObject({
  id: peerIdSchema,
  zone: z.string().min(1).max(64),
  host: z.string().min(1).max(253),
  trains: z.literal(false).optional()
})
const u53 = z.int().nonnegative()
/** A view lineage (see View.lineage): the membership draws one of at most 32 characters. */
export const lineageSchema = z.string().min(1).max(64)

/** The schema of a view of at most `maxMembers` distinct members. */
export function viewSchema(maxMembers: number): z.ZodType<View> {
  return z
    .strictObject({ epoch: u53.min(1), members: z.array(memberSchema).min(1).max(maxMembers), lineage: lineageSchema.optional() })
    .refine(v => new Set(v.members.map(m => m.id)).size === v.members.length, { message: 'duplicate member ids' })
}

/** The schema of an acceptor record (see AcceptorRecord) whose accepted view has at most `maxMembers` members. */
export function acceptorRecordSchema(maxMembers: number) {
  const ballot = z.strictObject({ round: u53, proposer: peerIdSchema })
  return z.strictObject({
    lineage: lineageSchema.optional(),
    acceptor: z.strictObject({
      epoch: u53.min(1),
      promised: ballot.optional(),
      accepted: z.strictObject({ ballot, view: viewSchema(maxMembers) }).optional()
    }),
    maxRound: u53
  })
}

/**
 * The envelope codec of the view topic: the Paxos messages (prepare, promise, nack, accept,
 * accepted) and the commit of a chosen view, each a strict schema; a view lists at most
 * `maxMembers` distinct members.
 */
export function createViewCodec(maxMembers: number) {
  const view = viewSchema(maxMembers)
  return createEnvelopeCodec({
    prepare: z.strictObject({ epoch: u53.min(1), round: u53, genesis: z.array(memberSchema).max(maxMembers).optional() }),
    promise: z.strictObject({
      epoch: u53,
      round: u53,
      proposer: peerIdSchema,
      acceptedRound: u53.optional(),
      acceptedBy: peerIdSchema.optional(),
      accepted: view.optional()
    }),
    nack: z.strictObject({ epoch: u53, round: u53, proposer: peerIdSchema, promisedRound: u53 }),
    accept: z.strictObject({ epoch: u53.min(1), round: u53, view }),
    accepted: z.strictObject({ epoch: u53, round: u53, proposer: peerIdSchema }),
    commit: z.strictObject({ view })
  })
}

/** The codec {@link createViewCodec} makes. */
export type ViewCodec = ReturnType<typeof createViewCodec>
/** A decoded message of the view topic. */
export type ViewEnvelope = ReturnType<ViewCodec['decode']>
/** The message types of the view topic. */
export type ViewMessageType = Parameters<ViewCodec['encode']>[0]
