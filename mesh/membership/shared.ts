import type { PeerId } from '../peernet.ts'
import { HeartbeatCodec } from './heartbeat-codec.ts'
import { memberOf, type Member } from './types.ts'
import { createViewCodec, type ViewCodec, type ViewEnvelope } from './view-codec.ts'

/** A frozen member list with its ids in rank order and each id's rank. */
export interface SharedMembers {
  members: Member[]
  ids: PeerId[]
  rank: Map<PeerId, number>
}

/**
 * What the memberships of one process may share to go faster: a simulation runs 1000 of them
 * and hands one gossip buffer to every receiver. Nothing in it changes what a membership does,
 * only how often it decodes, validates or copies. A caller that runs many nodes (the
 * simulator's world) makes one with {@link createMembershipShared} and passes it to each;
 * a membership created without one gets its own.
 */
export interface MembershipShared {
  /** The view codec for a member cap (building its zod schemas is the largest cost of starting a node). */
  codec(maxMembers: number): ViewCodec
  /** Decoded view messages by buffer, for memberships with this member cap; decoded messages are never changed. */
  decoded(maxMembers: number): WeakMap<Uint8Array, ViewEnvelope>
  /**
   * The frozen, shared copy of a member list (and its ids and ranks): 1000 nodes installing
   * one 1000-member view would otherwise copy a million members.
   */
  members(list: Member[]): SharedMembers
  /** The heartbeat scratch buffer and the last heartbeat decoded. */
  readonly heartbeats: HeartbeatCodec
  /**
   * The last promise a send got back from a network that has since fulfilled: a network that
   * answers every send with one settled promise (SimNet) then costs no handler per heartbeat.
   */
  fulfilledSend: Promise<void> | undefined
}

/** A fresh {@link MembershipShared}: give it to every membership of one simulated world. */
export function createMembershipShared(): MembershipShared {
  const codecs = new Map<number, ViewCodec>()
  const caches = new Map<number, WeakMap<Uint8Array, ViewEnvelope>>()
  const lists = new WeakMap<readonly Member[], SharedMembers>()
  return {
    codec(maxMembers) {
      let codec = codecs.get(maxMembers)
      if (codec === undefined) codecs.set(maxMembers, (codec = createViewCodec(maxMembers)))
      return codec
    },
    decoded(maxMembers) {
      let cache = caches.get(maxMembers)
      if (cache === undefined) caches.set(maxMembers, (cache = new WeakMap()))
      return cache
    },
    members(list) {
      let s = lists.get(list)
      if (s === undefined) {
        const members = Object.freeze(list.map(m => Object.freeze(memberOf(m.id, m)))) as Member[]
        const ids = members.map(m => m.id)
        s = { members, ids, rank: new Map(ids.map((id, i) => [id, i])) }
        lists.set(list, s)
        lists.set(members, s)
      }
      return s
    },
    heartbeats: new HeartbeatCodec(),
    fulfilledSend: undefined
  }
}
