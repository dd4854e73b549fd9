import { validateErasureParams } from '../codec/index.ts'
import type { PeerId, View } from '../mesh/index.ts'
import { PlacementError } from './errors.ts'

/**
 * Checks (k, m) against a view: codec's rules (k >= 1, m >= 1, k + m <= 255) and k + m
 * distinct holders besides the owner, so k + m <= view size - 1. Throws PlacementError.
 */
export function validateStripeParams(k: number, m: number, viewSize: number): void {
  try {
    validateErasureParams(k, m)
  } catch (err) {
    throw new PlacementError((err as Error).message, { k, m })
  }
  if (k + m > viewSize - 1) {
    throw new PlacementError(`k + m = ${k + m} fragments need as many holders besides the owner, but the view has ${viewSize} members`, { k, m, viewSize })
  }
}

/**
 * Where a stripe's fragments go: 'spread' over hosts and zones, or 'zone': hosts of the owner's
 * own zone first (cheap links; a whole zone lost takes its ranks' snapshots with it, which the
 * DiLoCo tier survives because every zone holds the outer state), other zones only for the
 * fragments the zone has no room for.
 */
export type PlacementScope = 'zone' | 'spread'

/**
 * The holders of rank `owner`'s stripe in `view`: entry i holds fragment i. Deterministic in
 * (view members, owner, k, m), so every node computes the same answer without asking.
 *
 * Greedy over the other members, each pick minimizing (fragments already on that host,
 * fragments already in that zone, position in the ring after the owner). The owner's own host
 * and zone count as already holding one fragment (losing the owner's machine should cost as
 * few fragments as possible). So hosts are spread first, then zones, and where the topology
 * has fewer hosts than k + m they are shared as evenly as possible. Starting the ring after
 * the owner spreads the load of all stripes over all members. With scope 'zone', a member
 * outside the owner's zone is taken only when none inside is left.
 */
export function placeStripe(view: View, owner: number, k: number, m: number, scope: PlacementScope = 'spread'): PeerId[] {
  const members = view.members
  const P = members.length
  if (!Number.isSafeInteger(owner) || owner < 0 || owner >= P) throw new PlacementError(`owner rank ${owner} is not in a view of ${P}`, { owner, viewSize: P })
  validateStripeParams(k, m, P)
  const hostCount = new Map<string, number>()
  const zoneCount = new Map<string, number>()
  const hostKey = (zone: string, host: string): string => `${zone}\n${host}`
  const self = members[owner]!
  hostCount.set(hostKey(self.zone, self.host), 1)
  zoneCount.set(self.zone, 1)
  const candidates = Array.from({ length: P - 1 }, (_, i) => (owner + 1 + i) % P)
  const taken = new Set<number>()
  const out: PeerId[] = []
  for (let f = 0; f < k + m; f++) {
    let best = -1
    let bestHost = Infinity
    let bestZone = Infinity
    let bestOut = Infinity
    for (const r of candidates) {
      if (taken.has(r)) continue
      const mem = members[r]!
      const h = hostCount.get(hostKey(mem.zone, mem.host)) ?? 0
      const z = zoneCount.get(mem.zone) ?? 0
      const out = scope === 'zone' && mem.zone !== self.zone ? 1 : 0
      if (out < bestOut || (out === bestOut && (h < bestHost || (h === bestHost && z < bestZone)))) {
        bestOut = out
        best = r
        bestHost = h
        bestZone = z
      }
    }
    const mem = members[best]!
    taken.add(best)
    hostCount.set(hostKey(mem.zone, mem.host), bestHost + 1)
    zoneCount.set(mem.zone, bestZone + 1)
    out.push(mem.id)
  }
  return out
}
