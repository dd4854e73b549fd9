import { connect, createServer, type Socket } from 'node:net'
import { AbortError, ZeromeshError, type Clock } from '../core/index.ts'
import { MESH_LIMITS } from './limits.ts'

/**
 * TCP hole punching: both ends of a pair connect() to each other at the same time, each from a
 * port it chose and told the other. Each SYN leaving a NAT opens a mapping for exactly that
 * remote address and port; the other end's SYN, arriving after it, belongs to that mapping and
 * is let in, and TCP's simultaneous open turns the two half-open sockets into one connection.
 * The first SYN usually meets a NAT that has no mapping yet and is dropped (or refused, by a
 * public host that has not called connect() yet), so each end keeps trying every `retryMs`.
 *
 * Where it works: NATs that keep a connection's source port (Linux masquerade does when the
 * port is free, as most home routers do), so the port an end binds is the port its peer must
 * aim at. A NAT that picks a random port per connection (symmetric) defeats the prediction;
 * the caller then keeps the relay. libp2p's own hole punching (DCUtR) cannot do this for TCP
 * on Node: Node cannot set SO_REUSEPORT on a client socket, so js-libp2p's dials never leave
 * from its listening port and the addresses it exchanges are not ones a punch can reach
 * (libp2p/js-libp2p#2620; libp2p/test-plans#864 marks js TCP hole punching as failing).
 * Binding a fresh port per punch, as here, needs no port reuse at all.
 */

/** The punch did not produce a connection before its deadline (the NAT maps ports unpredictably, or filters). */
export class PunchFailedError extends ZeromeshError {
  static override name = 'PunchFailedError'
}

/** Both ends of one punch: where this end binds and where the other end said it binds. */
export interface PunchPlan {
  localHost: string
  localPort: number
  remoteHost: string
  remotePort: number
}

/** A TCP port that is free on `host` now (the OS picks it; the caller binds it next). */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, host, () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => resolve(port))
    })
  })
}

/**
 * Connects from plan.localHost:localPort to plan.remoteHost:remotePort again and again until a
 * connection opens, `deadlineMs` passes (PunchFailedError) or `signal` fires (AbortError).
 * The other end does the same with the plan mirrored.
 */
export async function simultaneousOpen(
  plan: PunchPlan,
  opts: { clock: Clock; signal?: AbortSignal; deadlineMs?: number; attemptMs?: number; retryMs?: number }
): Promise<Socket> {
  const { clock, signal } = opts
  const L = MESH_LIMITS.punch
  const deadline = clock.monotonic() + (opts.deadlineMs ?? L.deadlineMs)
  let last = 'no attempt'
  let tries = 0
  while (clock.monotonic() < deadline) {
    if (signal?.aborted === true) throw new AbortError('punch aborted')
    tries++
    try {
      return await attempt(plan, clock, Math.min(opts.attemptMs ?? L.attemptMs, Math.max(1, deadline - clock.monotonic())), signal)
    } catch (err) {
      if (err instanceof AbortError) throw err
      last = (err as NodeJS.ErrnoException).code ?? (err as Error).message
    }
    const wait = Math.min(opts.retryMs ?? L.retryMs, deadline - clock.monotonic())
    if (wait > 0) await clock.sleep(wait, signal === undefined ? {} : { signal })
  }
  throw new PunchFailedError(
    `no connection from ${plan.localHost}:${plan.localPort} to ${plan.remoteHost}:${plan.remotePort} after ${tries} tries (last: ${last})`
  )
}

/** One connect(); rejects on its error, after `ms`, or when `signal` fires. */
function attempt(plan: PunchPlan, clock: Clock, ms: number, signal?: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: plan.remoteHost, port: plan.remotePort, localAddress: plan.localHost, localPort: plan.localPort })
    let done = false
    const finish = (err?: Error): void => {
      if (done) return
      done = true
      clock.clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      s.off('error', finish)
      if (err === undefined) {
        resolve(s)
      } else {
        s.destroy()
        reject(err)
      }
    }
    const onAbort = (): void => finish(new AbortError('punch aborted'))
    const timer = clock.setTimeout(() => finish(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), ms)
    signal?.addEventListener('abort', onAbort, { once: true })
    s.once('connect', () => finish())
    s.once('error', finish)
  })
}
