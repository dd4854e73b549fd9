import {
  AbortError,
  RealClock,
  makeDirs,
  Rng,
  VERSION,
  createLogger,
  createMetricsRegistry,
  watchStalls,
  type Logger,
  type MetricsRegistry
} from '../core/index.ts'
import {
  createLibp2pPeerNet,
  createMembership,
  fileAcceptorStore,
  loadOrCreateIdentity,
  type Connectivity,
  type Libp2pPeerNet,
  type Membership,
  type View
} from '../mesh/index.ts'
import { createSnapshotService, createThreadCoder, type SnapshotCoder } from '../snapshot/index.ts'
import { type StartConfig, readSecret, ConfigError } from './config.ts'
import { serveControl } from './control.ts'
import { loadCorpus } from './data.ts'
import { diskDir } from './disk-tier.ts'
import { defineNodeMetrics, serveMetrics, type MetricsServer, type StepObserver } from './metrics-http.ts'
import type { NodeEvent } from './events.ts'
import { Trainer } from './train/trainer.ts'
import { DashboardRecorder } from './dashboard/model.ts'
import { startProgressGossip } from './dashboard/gossip.ts'
import { serveDashboard, type DashboardServer } from './dashboard/server.ts'
import { defaultLr, runIdentity, runModelConfig, type TrainConfig, type TrainStatus } from './train/config.ts'

/** `--snapshot k+m` (validated by the config schema). */
function parseSnapshot(spec: string): { k: number; m: number } {
  const [k, m] = spec.split('+').map(Number) as [number, number]
  return { k, m }
}

/** A started node: its identity and parts, and `stop` to leave the run. */
export interface RunningNode {
  stop(): Promise<void>
  peerId: string
  multiaddrs: string[]
  membership: Membership
  /** This node's metrics (served at `metricsUrl` with --metrics-listen). */
  metrics: MetricsRegistry
  /** `http://host:port/metrics` with --metrics-listen. */
  metricsUrl: string | undefined
  /** `http://host:port/` with --http. */
  dashboardUrl: string | undefined
  /** With --train: resolves when this node's part of the training ends (done, or spare). */
  training: Promise<TrainStatus> | undefined
}

/** CPU time of this process so far (user + system), ms. */
function cpuMs(): number {
  const u = process.cpuUsage()
  return Math.round((u.user + u.system) / 1000)
}

/** The status a node serves on its control socket. */
export interface NodeStatus {
  version: string
  run: string
  peerId: string
  multiaddrs: string[]
  uptimeS: number
  /** CPU time this process has used (user + system), ms: benchmarks compare it across runs. */
  cpuMs: number
  membership: ReturnType<Membership['status']>
  training: TrainStatus | undefined
  /** Reachability, relays and the path to each peer (mesh/peernet.ts Connectivity). */
  network: Connectivity | undefined
}

/** Receives a node's events (node/events.ts) as they happen. */
export type EmitEvent = (e: NodeEvent) => void

/**
 * Starts one node: identity from the data dir, the libp2p PeerNet, membership, the control
 * socket and, with --train, the trainer. Reports its start-up (addresses included), every view
 * change and the training's progress through `emit`.
 */
export async function startNode(cfg: StartConfig, emit: EmitEvent, log: Logger = createLogger({ level: cfg.logLevel, name: cfg.run })): Promise<RunningNode> {
  const secret = readSecret(cfg.secretFile)
  try {
    makeDirs(cfg.dataDir)
  } catch (err) {
    throw new ConfigError(`cannot create data dir ${cfg.dataDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  // What has started so far, stopped in reverse if a later step fails.
  const undo: Array<() => Promise<void>> = []
  const unwind = async (): Promise<void> => {
    for (const f of undo.reverse()) await f().catch(() => {})
  }
  try {
    return await startParts(cfg, emit, log, secret, undo)
  } catch (err) {
    await unwind()
    throw err
  }
}

async function startParts(cfg: StartConfig, emitOut: EmitEvent, log: Logger, secret: Uint8Array, undo: Array<() => Promise<void>>): Promise<RunningNode> {
  const clock = new RealClock()
  // The dashboard's recorder sees every event this node reports (made once the net is up).
  let recorder: DashboardRecorder | undefined
  const emit: EmitEvent = e => {
    recorder?.event(e)
    emitOut(e)
  }
  // One registry per node. The PeerNet and membership take no `metrics` option; the trainer's
  // collectives and snapshot service do, but the trainer builds them without one, so training
  // figures are read from its status when scraped (defineNodeMetrics).
  const metrics = createMetricsRegistry()
  // Bound first, so a metrics port in use fails before the node joins the mesh.
  let metricsServer: MetricsServer | undefined
  if (cfg.metricsListen !== undefined) {
    const server = await serveMetrics(cfg.metricsListen, metrics)
    metricsServer = server
    undo.push(() => server.close())
  }
  // The acceptor record of this identity's last process, read before the node joins (a
  // corrupt one stops the start with the file named: without it this node cannot vote safely).
  const records = fileAcceptorStore(cfg.dataDir)
  const record = records.load()
  const net = await startNet(cfg, secret, clock, log)
  undo.push(() => net.stop())
  const membership = createMembership(
    { heartbeatMs: cfg.heartbeatMs, expect: cfg.expect, acceptorStore: { load: () => record, save: r => records.save(r) } },
    {
      net,
      clock,
      rng: Rng.fromSeed(`${cfg.run}/${net.self.id}`),
      log: log.child({ component: 'mesh:membership' })
    }
  )
  // Snapshot checksums and coding run on worker threads, off the trainer's event loop; the
  // threads start now (a spare's first recovery must not wait for them) and end with the node.
  const snapshotCoder = cfg.train && cfg.snapshot !== 'off' ? createThreadCoder() : undefined
  if (snapshotCoder !== undefined) undo.push(async () => snapshotCoder.stop())
  snapshotCoder?.start()
  let observer: StepObserver = { step() {} }
  const trainer = cfg.train
    ? await createTrainer(cfg, { net, membership, clock, log, metrics, snapshotCoder }, emit, (s, tokens) => observer.step(s, tokens))
    : undefined
  observer = defineNodeMetrics(metrics, { membership, ...(trainer === undefined ? {} : { training: () => trainer.status() }) })
  const startedAt = clock.monotonic()
  const status = (): NodeStatus => ({
    version: VERSION,
    run: cfg.run,
    peerId: net.self.id,
    multiaddrs: net.multiaddrs(),
    uptimeS: Math.round((clock.monotonic() - startedAt) / 1000),
    cpuMs: cpuMs(),
    membership: membership.status(),
    training: trainer?.status(),
    network: net.connectivity?.()
  })
  const server = await serveControl(cfg.dataDir, status)
  undo.push(() => new Promise<void>(resolve => server.close(() => resolve())))
  const dash = await startDashboard(cfg, { net, membership, clock, log, trainer })
  recorder = dash?.recorder
  if (dash !== undefined) undo.push(() => dash.stop())
  membership.on('view', (v: View) => {
    const rank = v.members.findIndex(m => m.id === net.self.id)
    emit({ type: 'view', epoch: v.epoch, members: v.members.length, ...(rank >= 0 ? { rank } : {}) })
  })
  // Once this node's part of the training is over, the ranks leaving is the run ending, not a
  // lost majority: a spare does not report it as one.
  let trainingOver = false
  membership.on('paused', p => {
    if (!(p && trainingOver)) emit({ type: 'paused', paused: p })
  })
  const holder = await startHolder(cfg, { net, membership, clock, log })
  if (holder !== undefined) undo.push(() => holder.stop())
  // Synchronous work long enough for the others to miss this node's heartbeats (docs/LIMITS.md).
  const stalls = watchStalls({ onStall: ms => log.warn({ stallMs: ms, phase: trainer?.status().phase }, 'event loop stalled') })
  undo.push(async () => stalls.stop())
  await membership.start()

  const addrs = net.multiaddrs()
  emit({
    type: 'started',
    version: VERSION,
    peerId: net.self.id,
    run: cfg.run,
    zone: cfg.zone,
    host: cfg.host,
    dataDir: cfg.dataDir,
    ...(metricsServer === undefined ? {} : { metricsUrl: metricsServer.url }),
    ...(dash?.server === undefined ? {} : { dashboardUrl: dash.server.url }),
    multiaddrs: addrs
  })
  // Leaving the run ends the training too: without this, a trainer whose mesh just stopped
  // under it went on retrying its recovery for minutes.
  const leaving = new AbortController()
  const training = trainer?.run(leaving.signal)
  training?.then(
    () => (trainingOver = true),
    () => (trainingOver = true)
  )
  if (training !== undefined) reportEnd(training, emit)
  return {
    peerId: net.self.id,
    multiaddrs: addrs,
    membership,
    metrics,
    metricsUrl: metricsServer?.url,
    dashboardUrl: dash?.server?.url,
    training,
    async stop() {
      leaving.abort(new AbortError('the node is leaving the run'))
      await holder?.stop()
      await metricsServer?.close()
      await dash?.stop()
      await membership.stop()
      await net.stop()
      snapshotCoder?.stop()
      stalls.stop()
      log.info({ longestStallMs: stalls.longestMs() }, 'longest event loop stall')
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}

/**
 * The dashboard's parts: with --train or --http, a recorder of the node's events and views
 * and of every training node's gossiped progress; each tick it samples this node, gossips its
 * progress while some node serves a page (dashboard/gossip.ts: so any node's page shows every
 * rank) and updates the open pages. With --http, the page's server.
 */
async function startDashboard(
  cfg: StartConfig,
  parts: { net: Libp2pPeerNet; membership: Membership; clock: RealClock; log: Logger; trainer: Trainer | undefined }
): Promise<{ recorder: DashboardRecorder; server: DashboardServer | undefined; stop: () => Promise<void> } | undefined> {
  if (!cfg.train && cfg.http === undefined) return undefined
  const { net, membership, clock, trainer } = parts
  let server: DashboardServer | undefined
  const recorder = new DashboardRecorder({
    clock,
    run: cfg.run,
    self: { id: net.self.id, zone: cfg.zone, host: cfg.host },
    config: runSettings(cfg),
    dashboard: () => server?.url,
    membership: () => membership.status(),
    worldSize: () => (trainer === undefined ? undefined : trainer.status().worldSize || cfg.worldSize),
    ...(trainer === undefined ? {} : { training: () => trainer.status(), placement: () => trainer.placement() })
  })
  membership.on('view', v => recorder.view(v))
  if (cfg.http !== undefined) server = await serveDashboard(cfg.http, recorder)
  const gossip = startProgressGossip({ net, clock, recorder, serving: server !== undefined, onTick: () => server?.push() })
  return {
    recorder,
    server,
    async stop() {
      gossip.stop()
      await server?.close()
    }
  }
}

/**
 * A node that does not train (no --train) in a training run still holds snapshot fragments
 * for the ranks: it is a member of the view, so placement may pick it. Without this, every
 * placement that picked it failed (a warning per rank per step) and those snapshots never
 * completed. Its placement scope must be the trainers' (the holder checks every put against it).
 */
async function startHolder(
  cfg: StartConfig,
  parts: { net: Libp2pPeerNet; membership: Membership; clock: RealClock; log: Logger }
): Promise<{ stop: () => Promise<void> } | undefined> {
  if (cfg.train || cfg.snapshot === 'off') return undefined
  const { k, m } = parseSnapshot(cfg.snapshot)
  const service = createSnapshotService(
    { k, m, autoRestripe: false, placement: cfg.snapshotPlacement ?? (cfg.outerEvery === undefined ? 'spread' : 'zone') },
    { net: parts.net, clock: parts.clock, log: parts.log.child({ component: 'snapshot' }) }
  )
  await service.start()
  const v = parts.membership.view()
  if (v !== undefined) service.setView(v)
  const off = parts.membership.on('view', view => service.setView(view))
  return {
    async stop() {
      off()
      await service.stop()
    }
  }
}

/** The run's settings the dashboard shows (never the secret, nor paths). */
function runSettings(cfg: StartConfig): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = { run: cfg.run, zone: cfg.zone, host: cfg.host, 'heartbeat ms': cfg.heartbeatMs }
  if (!cfg.train) return out
  const keep = [
    'device',
    'model',
    'steps',
    'worldSize',
    'batch',
    'seq',
    'lr',
    'optimizer',
    'zo',
    'offload',
    'deviceMemory',
    'seed',
    'zeropp',
    'snapshot',
    'snapshotEvery',
    'outerEvery',
    'diskEvery'
  ] as const
  for (const k of keep) {
    const v = cfg[k]
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v
  }
  return out
}

/** The libp2p PeerNet of this node, started; a listen address in use is a {@link ConfigError}. */
async function startNet(cfg: StartConfig, secret: Uint8Array, clock: RealClock, log: Logger): Promise<Libp2pPeerNet> {
  const privateKey = await loadOrCreateIdentity(cfg.dataDir)
  const net = createLibp2pPeerNet(
    {
      runId: cfg.run,
      secret,
      privateKey,
      // A node without --train says so: the roster and the spares are drawn from the others.
      labels: { zone: cfg.zone, host: cfg.host, ...(cfg.train ? {} : { trains: false }) },
      listen: cfg.listen,
      announce: cfg.announce,
      bootstrap: cfg.bootstrap,
      mdns: cfg.mdns,
      announceIntervalMs: Math.max(200, cfg.heartbeatMs * 2)
    },
    { clock, log: log.child({ component: 'mesh:net' }) }
  )
  try {
    await net.start()
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'EADDRINUSE' || /EADDRINUSE/.test(e.message)) throw new ConfigError(`cannot listen on ${cfg.listen.join(', ')}: the address is in use`)
    if (e.code === 'EADDRNOTAVAIL' || /EADDRNOTAVAIL/.test(e.message)) throw new ConfigError(`cannot listen on ${cfg.listen.join(', ')}: no such local address`)
    throw err
  }
  return net
}

/** What the trainer of a node is built on. */
interface TrainerParts {
  net: Libp2pPeerNet
  membership: Membership
  clock: RealClock
  log: Logger
  metrics: MetricsRegistry
  snapshotCoder: SnapshotCoder | undefined
}

/**
 * The trainer of a `--train` node, its backend warmed up. Emits a `step` event per committed
 * step, preceded by a `recovery` event for each recovery recorded since the last one.
 */
async function createTrainer(cfg: StartConfig, parts: TrainerParts, emit: EmitEvent, observe: (s: TrainStatus, tokens: number) => void): Promise<Trainer> {
  const corpus = loadCorpus(cfg.data, cfg.tokenizer)
  // --init-from: the checkpoint's shape (checked, tensor by tensor, before the node trains).
  const model = await runModelConfig({ model: cfg.model, data: cfg.data, tokenizer: cfg.tokenizer, initFrom: cfg.initFrom })
  const { createBackend } = await import('../gpu/index.ts')
  const backend = await createBackend(cfg.device, cfg.deviceMemory === undefined ? {} : { deviceMemoryBytes: cfg.deviceMemory })
  // Before membership starts: a cold NVRTC compile blocks this thread for seconds, which
  // peers would read as a dead node (seen on a fresh GPU host: the worker was dropped and
  // replaced from the snapshots at step 0).
  const t0 = parts.clock.monotonic()
  backend.warmup()
  if (cfg.device === 'cuda') emit({ type: 'kernels', seconds: (parts.clock.monotonic() - t0) / 1000 })
  const T = Math.min(cfg.seq, model.maxT)
  const recoveries = recoveryReporter(emit)
  const trainer = new Trainer(
    {
      backend,
      net: parts.net,
      membership: parts.membership,
      clock: parts.clock,
      log: parts.log.child({ component: 'train' }),
      metrics: parts.metrics,
      ...(parts.snapshotCoder === undefined ? {} : { snapshotCoder: parts.snapshotCoder }),
      corpus,
      onStep: s => {
        observe(s, s.worldSize * cfg.batch * T)
        recoveries(s)
        emit({
          type: 'step',
          step: s.step,
          steps: s.steps,
          loss: s.loss,
          ...(s.rank === undefined ? {} : { rank: s.rank }),
          worldSize: s.worldSize,
          tokensPerS: s.tokensPerS,
          sent: s.bytes
        })
      }
    },
    withIdentity(cfg.run, {
      model,
      B: cfg.batch,
      T,
      steps: cfg.steps,
      lr: cfg.lr ?? defaultLr(cfg.optimizer, cfg.zo),
      ...(cfg.optimizer === 'adamw' ? {} : { optimizer: cfg.optimizer }),
      ...(cfg.zo ? { zo: { eps: cfg.zoEps } } : {}),
      ...(cfg.offload === 'cpu' ? { offload: cfg.offloadThreads === undefined ? {} : { threads: cfg.offloadThreads } } : {}),
      weightDecay: 0.1,
      seed: cfg.seed,
      ...(cfg.initFrom === undefined ? {} : { initFrom: cfg.initFrom }),
      worldSize: cfg.worldSize ?? cfg.expect,
      ...(cfg.maxWorldSize === undefined ? {} : { maxWorldSize: cfg.maxWorldSize }),
      zeroPP: cfg.zeropp,
      ...(cfg.outerEvery === undefined
        ? {}
        : {
            outer: {
              every: cfg.outerEvery,
              zones: cfg.outerZones,
              quant: cfg.outerQuant,
              streaming: cfg.streaming,
              lr: cfg.outerLr,
              momentum: cfg.outerMomentum
            }
          }),
      ...(cfg.snapshotPlacement === undefined ? {} : { snapshotPlacement: cfg.snapshotPlacement }),
      dtype: cfg.device === 'cuda' ? 'bf16' : 'f32',
      snapshot: cfg.snapshot === 'off' ? undefined : { ...parseSnapshot(cfg.snapshot), every: cfg.snapshotEvery },
      disk: { dir: diskDir(cfg.dataDir), every: cfg.diskEvery, resume: cfg.resume }
    })
  )
  emit({
    type: 'training',
    model: cfg.initFrom === undefined ? cfg.model : `${cfg.initFrom} (--init-from)`,
    source: corpus.source,
    vocabSize: corpus.vocabSize,
    backend: backend.description
  })
  // Page-locked host arrays for the saves, now too: allocated at the first save, they held the
  // thread long enough for the others to drop this node (host-reserve.ts).
  await trainer.prepare()
  return trainer
}

/** `c` with the run's identity (written into every state it saves, checked on --resume). */
function withIdentity(run: string, c: TrainConfig): TrainConfig {
  return { ...c, identity: runIdentity(run, c) }
}

/** Emits the recoveries in a trainer status that were not emitted before (they only grow). */
function recoveryReporter(emit: EmitEvent): (s: TrainStatus) => void {
  let emitted = 0
  return s => {
    for (const r of s.recoveries.slice(emitted)) emit({ type: 'recovery', mode: r.mode, lost: r.lost, fromStep: r.fromStep, ms: r.ms, worldSize: s.worldSize })
    emitted = s.recoveries.length
  }
}

/** Emits how this node's part of the training ended: spare, or memory and done, or failed. */
function reportEnd(training: Promise<TrainStatus>, emit: EmitEvent): void {
  training.then(
    s => {
      if (s.role === 'spare') {
        emit({ type: 'spare' })
        return
      }
      if (s.memory !== undefined) emit({ type: 'memory', ...s.memory })
      if (s.phases !== undefined) emit({ type: 'phases', ...s.phases })
      emit({ type: 'bytes', sent: s.bytes, snapshot: s.snapshotBytes ?? { host: 0, zone: 0, wan: 0 } })
      emit({ type: 'done', step: s.step, loss: s.loss, evalLoss: s.evalLoss })
    },
    (err: unknown) => {
      // Aborted because the node is leaving (SIGINT, SIGTERM): not a failure of the training.
      if (err instanceof Error && err.name === 'AbortError') return
      emit({ type: 'failed', message: err instanceof Error ? err.message : String(err) })
    }
  )
}
