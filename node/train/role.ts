import { InvalidArgumentError } from '../../core/index.ts'

/**
 * The trainer's roles and how it moves between them, as a table:
 *
 *   waiting --placed--> rank | spare      (the first full view gives the roster)
 *   spare   --placed--> rank | spare      (a view dropped a rank: the roster was replanned)
 *   spare   --grow----> grow              (the ranks announced a growth this node can apply)
 *   spare   --finished-> end              (the run ended without this node)
 *   rank    --finished-> end              (every step trained, or the run ended without it)
 *   rank    --grow----> grow              (every rank agreed to grow after a step)
 *   rank    --interrupted-> retry         (the session failed in a way the run recovers from)
 *   retry   --placed--> rank | spare      (replanned after a view change, or the same roster)
 *   grow    --placed--> rank | spare      (the roster grew)
 *
 * A rank that finished every step announces the end of the run on its way out (`announce`).
 * Errors that end the run are thrown by the roles' handlers; they are not events.
 */
export type Role = 'waiting' | 'spare' | 'rank' | 'retry' | 'grow' | 'end'

/** What a role's handler reports when it is over. */
export type RoleEvent = { type: 'placed'; onRoster: boolean } | { type: 'grow' } | { type: 'interrupted' } | { type: 'finished'; announce?: boolean }

const placed = (e: RoleEvent): Role => (e.type === 'placed' && e.onRoster ? 'rank' : 'spare')

const TRANSITIONS: Readonly<Record<Role, Partial<Record<RoleEvent['type'], (e: RoleEvent) => Role>>>> = Object.freeze({
  waiting: { placed },
  spare: { placed, grow: () => 'grow', finished: () => 'end' },
  rank: { finished: () => 'end', grow: () => 'grow', interrupted: () => 'retry' },
  retry: { placed },
  grow: { placed },
  end: {}
})

/** The role after `event` in `role`; an event the role cannot report is a programmer error. */
export function nextRole(role: Role, event: RoleEvent): Role {
  const to = TRANSITIONS[role][event.type]
  if (to === undefined) throw new InvalidArgumentError(`trainer role ${role} has no transition on ${event.type}`)
  return to(event)
}
