import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { defineCounter, defineGauge, defineHistogram, type Counter, type Gauge, type MetricsRegistry } from '../core/index.ts'
import { capPerAddress, type Membership } from '../mesh/index.ts'
import { ConfigError, type HostPort } from './config.ts'
import type { TrainStatus } from './train/config.ts'

/**
 * A node's Prometheus endpoint (`zeromesh start --metrics-listen host:port`): plain HTTP,
 * `GET /metrics` answers the node's registry in the Prometheus text format; any other path
 * is 404, any other method 405. Requests are never read past their headers, and the
 * connection count, header size and request time are capped (METRICS_HTTP_LIMITS), so a
 * scraper, or anything else that finds the port, costs a bounded amount.
 */

/** Caps of the metrics endpoint (docs/LIMITS.md). */
export const METRICS_HTTP_LIMITS = Object.freeze({
  /** Open connections at once; more are closed on arrival. */
  maxConnections: 64,
  /** Open connections from one address (so slow clients on one host cannot take every slot from a scraper on another). */
  maxPerAddress: 8,
  /** Bytes of request line and headers; more is answered 431 and the connection closed. */
  maxHeaderBytes: 8192,
  /** Time to receive the headers (ms). */
  headersTimeoutMs: 5000,
  /** Time for a whole request (ms). */
  requestTimeoutMs: 10_000,
  /** Idle time of a kept-alive connection between scrapes (ms). */
  keepAliveTimeoutMs: 5000
})

export const METRICS_PATH = '/metrics'

export interface MetricsServer {
  /** `http://host:port/metrics`, with the port actually bound. */
  url: string
  port: number
  /** Closes the listener and every open connection. Idempotent. */
  close(): Promise<void>
}

/** `http://host:port/metrics` (IPv6 hosts bracketed). */
export function metricsUrl(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}${METRICS_PATH}`
}

/**
 * Serves `registry` on `listen`. A port in use, a missing local address or an unresolvable
 * host is a {@link ConfigError} naming the address (one line on the CLI, exit 2).
 */
export async function serveMetrics(listen: HostPort, registry: MetricsRegistry): Promise<MetricsServer> {
  const L = METRICS_HTTP_LIMITS
  const server: Server = createServer(
    {
      maxHeaderSize: L.maxHeaderBytes,
      headersTimeout: L.headersTimeoutMs,
      requestTimeout: L.requestTimeoutMs,
      keepAliveTimeout: L.keepAliveTimeoutMs
    },
    (req, res) => {
      const path = (req.url ?? '').split('?', 1)[0]
      // Anything but a scrape: answer and close, without reading a body that may follow.
      if (path !== METRICS_PATH) {
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' }).end(`not found: metrics are at ${METRICS_PATH}\n`)
        return
      }
      if (req.method !== 'GET') {
        res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET', connection: 'close' }).end('method not allowed: use GET\n')
        return
      }
      registry.metrics().then(
        text => {
          res.writeHead(200, { 'content-type': registry.contentType }).end(text)
        },
        (err: unknown) => {
          res
            .writeHead(500, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' })
            .end(`collecting metrics failed: ${err instanceof Error ? err.message : String(err)}\n`)
        }
      )
    }
  )
  server.maxConnections = L.maxConnections
  capPerAddress(server, L.maxPerAddress)
  const bound = await bindHttp(server, listen, 'metrics')
  return { url: metricsUrl(listen.host, bound.port), ...bound }
}

/** An HTTP server bound to its address: the port it got, and a close that ends every connection. */
export interface BoundHttp {
  port: number
  /** Closes the listener and every open connection. Idempotent. */
  close(): Promise<void>
}

/**
 * Binds `server` to `listen`. A port in use, a missing local address or an unresolvable host
 * is a {@link ConfigError} naming the address and `what` is served (one line on the CLI, exit 2).
 */
export async function bindHttp(server: Server, listen: HostPort, what: string): Promise<BoundHttp> {
  const where = `${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'EADDRINUSE'
          ? 'the address is in use'
          : err.code === 'EADDRNOTAVAIL'
            ? 'no such local address'
            : err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN'
              ? 'the host name does not resolve'
              : err.code === 'EACCES'
                ? 'permission denied'
                : (err.code ?? err.message)
      reject(new ConfigError(`cannot serve ${what} on ${where}: ${why}`))
    })
    server.listen(listen.port, listen.host, () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  let closed: Promise<void> | undefined
  return {
    port,
    close() {
      closed ??= new Promise<void>(resolve => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
      return closed
    }
  }
}

/** The parts of the trainer's status the metrics read. */
export type TrainFigures = Pick<
  TrainStatus,
  'role' | 'step' | 'steps' | 'loss' | 'tokensPerS' | 'worldSize' | 'bytes' | 'snapshotStep' | 'recoveries' | 'snapshotBytes'
>

/** What a node's metrics read from; each is read at scrape time. */
export interface NodeMetricSources {
  membership: { status(): Pick<ReturnType<Membership['status']>, 'epoch' | 'members'> }
  /** The trainer's status, with --train. */
  training?: () => TrainFigures
}

/** What the trainer reports per committed step, for the counters that accumulate it. */
export interface StepObserver {
  /** After each committed step: `tokens` trained in it by all ranks together. */
  step(s: TrainFigures, tokens: number): void
}

const TIERS = ['host', 'zone', 'wan'] as const
const ROLES = ['waiting', 'rank', 'spare', 'done', 'failed'] as const
const MODES = ['replace', 'shrink'] as const

/**
 * Defines a node's metrics on `registry`: the view always; training progress, loss, bytes per
 * tier, snapshot and recovery figures with `sources.training`. Values owned by membership and
 * the trainer are read when scraped (`collect`), so nothing is copied between scrapes.
 * Returns the hook for the per-step counters and histogram.
 */
export function defineNodeMetrics(registry: MetricsRegistry, sources: NodeMetricSources): StepObserver {
  const { membership, training } = sources
  // A value not known yet (no loss before the first step) is left out of the scrape rather
  // than reported as 0 or NaN (prom-client writes NaN as `Nan`, which strict parsers refuse).
  const gauge = (name: string, help: string, read: () => number | undefined): void => {
    const g: Gauge = defineGauge(registry, {
      name,
      help,
      collect: () => {
        const v = read()
        if (v === undefined || Number.isNaN(v)) g.remove()
        else g.set(v)
      }
    })
  }
  gauge('zeromesh_view_epoch_count', 'Epoch of the view this node has installed (views decided so far in the run)', () => membership.status().epoch)
  gauge('zeromesh_view_members_peers', 'Members of the view this node has installed', () => membership.status().members.length)
  if (training === undefined) return { step() {} }

  const role: Gauge<'role'> = defineGauge(registry, {
    name: 'zeromesh_train_role_info',
    help: "This node's part in training: 1 for the current role, 0 for the others",
    labelNames: ['role'],
    collect: () => {
      const now = training().role
      for (const r of ROLES) role.set({ role: r }, r === now ? 1 : 0)
    }
  })
  gauge('zeromesh_train_committed_steps', 'Training steps committed so far (every rank finished them)', () => training().step)
  gauge('zeromesh_train_target_steps', 'Training steps the run is configured to reach', () => training().steps)
  gauge(
    'zeromesh_train_loss_nats',
    'Mean training loss over the ranks at the last committed step (cross-entropy; absent before the first)',
    () => training().loss
  )
  gauge('zeromesh_train_world_size_count', 'Ranks training under the current roster', () => training().worldSize)
  gauge('zeromesh_train_snapshot_steps', "Step of this rank's newest snapshot placed on its peers (absent before the first)", () => training().snapshotStep)
  gauge(
    'zeromesh_train_last_recovery_seconds',
    'Duration of the newest recovery: agreeing on the recovery point and loading state from the snapshots (absent before the first)',
    () => {
      const last = training().recoveries.at(-1)
      return last === undefined ? undefined : last.ms / 1000
    }
  )
  // Totals the trainer owns, exposed as counters: each scrape adds what grew since the last.
  const seenBytes = { host: 0, zone: 0, wan: 0 }
  const sent: Counter<'tier'> = defineCounter(registry, {
    name: 'zeromesh_train_sent_bytes_total',
    help: 'Bytes this node sent for training (collectives), by network tier',
    labelNames: ['tier'],
    collect: () => {
      const b = training().bytes
      for (const tier of TIERS) {
        sent.inc({ tier }, Math.max(0, b[tier] - seenBytes[tier]))
        seenBytes[tier] = Math.max(seenBytes[tier], b[tier])
      }
    }
  })
  const seenSnapshot = { host: 0, zone: 0, wan: 0 }
  const placed: Counter<'tier'> = defineCounter(registry, {
    name: 'zeromesh_train_snapshot_placed_bytes_total',
    help: 'Snapshot fragment bytes this node stored on holders, by the network tier of the link to the holder',
    labelNames: ['tier'],
    collect: () => {
      const b = training().snapshotBytes
      if (b === undefined) return
      for (const tier of TIERS) {
        placed.inc({ tier }, Math.max(0, b[tier] - seenSnapshot[tier]))
        seenSnapshot[tier] = Math.max(seenSnapshot[tier], b[tier])
      }
    }
  })
  let seenRecoveries = 0
  const recovered: Counter<'mode'> = defineCounter(registry, {
    name: 'zeromesh_train_recoveries_total',
    help: 'Recoveries from lost ranks this node took part in, by mode',
    labelNames: ['mode'],
    collect: () => {
      const all = training().recoveries
      for (const mode of MODES) recovered.inc({ mode }, 0)
      for (const r of all.slice(seenRecoveries)) recovered.inc({ mode: r.mode })
      seenRecoveries = Math.max(seenRecoveries, all.length)
    }
  })
  const tokens = defineCounter(registry, {
    name: 'zeromesh_train_tokens_total',
    help: 'Tokens trained by all ranks together in committed steps (rate() of it is tokens/s)'
  })
  const stepSeconds = defineHistogram(registry, {
    name: 'zeromesh_train_step_seconds',
    help: 'Duration of a committed training step',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
  })
  return {
    step(s, n) {
      tokens.inc(n)
      // The trainer reports throughput as tokens / step time; invert it for the step time.
      if (s.tokensPerS !== undefined && s.tokensPerS > 0) stepSeconds.observe(n / s.tokensPerS)
    }
  }
}
