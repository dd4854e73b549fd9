import { mkdirSync } from 'node:fs'
import { RealClock, Rng, VERSION, createLogger, createMetricsRegistry, type Logger, type MetricsRegistry } from '../core/index.ts'
import { createLibp2pPeerNet, createMembership, loadOrCreateIdentity, type Membership, type View } from '../mesh/index.ts'
import { type StartConfig, readSecret, ConfigError } from './config.ts'
import { serveControl } from './control.ts'
import { loadCorpus } from './data.ts'
import { diskDir } from './disk-tier.ts'
import { defineNodeMetrics, serveMetrics, type MetricsServer, type StepObserver } from './metrics-http.ts'
import { Trainer } from './train/trainer.ts'
import { formatParamMemory, trainingModel, type TrainStatus } from './train/config.ts'

/** `--snapshot k+m` (validated by the config schema). */
function parseSnapshot (spec: string): { k: number, m: number } {
  const [k, m] = spec.split('+').map(Number) as [number, number]
  return { k, m }
}

export interface RunningNode {
  stop(): Promise<void>
  peerId: string
  multiaddrs: string[]
  membership: Membership
  /** This node's metrics (served at `metricsUrl` with --metrics-listen). */
  metrics: MetricsRegistry
  /** `http://host:port/metrics` with --metrics-listen. */
  metricsUrl: string | undefined
  /** With --train: resolves when this node's part of the training ends (done, or spare). */
  training: Promise<TrainStatus> | undefined
}

/** The status a node serves on its control socket. */
/** CPU time of this process so far (user + system), ms. */
function cpuMs (): number {
  const u = process.cpuUsage()
  return Math.round((u.user + u.system) / 1000)
}

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
}

/**
 * Starts one node: identity from the data dir, the libp2p PeerNet, membership, and the control
 * socket. Prints its addresses and a join command, then a line per view change.
 */
export async function startNode (cfg: StartConfig, out: (line: string) => void, log: Logger = createLogger({ level: cfg.logLevel, name: cfg.run })): Promise<RunningNode> {
  const secret = readSecret(cfg.secretFile)
  try {
    mkdirSync(cfg.dataDir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new ConfigError(`cannot create data dir ${cfg.dataDir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  // What has started so far, stopped in reverse if a later step fails.
  const undo: Array<() => Promise<void>> = []
  const unwind = async (): Promise<void> => {
    for (const f of undo.reverse()) await f().catch(() => {})
  }
  try {
    return await startParts(cfg, out, log, secret, undo)
  } catch (err) {
    await unwind()
    throw err
  }
}

async function startParts (cfg: StartConfig, out: (line: string) => void, log: Logger, secret: Uint8Array, undo: Array<() => Promise<void>>): Promise<RunningNode> {
  const clock = new RealClock()
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
  const privateKey = await loadOrCreateIdentity(cfg.dataDir)
  const net = createLibp2pPeerNet({
    runId: cfg.run,
    secret,
    privateKey,
    labels: { zone: cfg.zone, host: cfg.host },
    listen: cfg.listen,
    announce: cfg.announce,
    bootstrap: cfg.bootstrap,
    mdns: cfg.mdns,
    announceIntervalMs: Math.max(200, cfg.heartbeatMs * 2)
  }, { clock, log: log.child({ component: 'mesh:net' }) })
  try {
    await net.start()
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    if (e.code === 'EADDRINUSE' || /EADDRINUSE/.test(e.message)) throw new ConfigError(`cannot listen on ${cfg.listen.join(', ')}: the address is in use`)
    if (e.code === 'EADDRNOTAVAIL' || /EADDRNOTAVAIL/.test(e.message)) throw new ConfigError(`cannot listen on ${cfg.listen.join(', ')}: no such local address`)
    throw err
  }
  undo.push(() => net.stop())
  const membership = createMembership({ heartbeatMs: cfg.heartbeatMs, expect: cfg.expect }, {
    net, clock, rng: Rng.fromSeed(`${cfg.run}/${net.self.id}`), log: log.child({ component: 'mesh:membership' })
  })
  let trainer: Trainer | undefined
  let observer: StepObserver = { step () {} }
  if (cfg.train) {
    const corpus = loadCorpus(cfg.data)
    const model = trainingModel(cfg.model, corpus.vocabSize)
    const { createBackend } = await import('../gpu/index.ts')
    const backend = await createBackend(cfg.device)
    // Before membership starts: a cold NVRTC compile blocks this thread for seconds, which
    // peers would read as a dead node (seen on a fresh GPU host: the worker was dropped and
    // replaced from the snapshots at step 0).
    const t0 = performance.now()
    backend.warmup()
    if (cfg.device === 'cuda') out(`kernels ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    const every = Math.max(1, Math.floor(cfg.steps / 20))
    const T = Math.min(cfg.seq, model.maxT)
    trainer = new Trainer({
      backend,
      net,
      membership,
      clock,
      log: log.child({ component: 'train' }),
      metrics,
      corpus,
      onStep: s => {
        observer.step(s, s.worldSize * cfg.batch * T)
        if (s.step % every === 0 || s.step === s.steps) out(`step ${s.step}/${s.steps} loss ${s.loss?.toFixed(4)} (rank ${s.rank} of ${s.worldSize}, ${Math.round(s.tokensPerS ?? 0)} tokens/s)`)
      }
    }, {
      model,
      B: cfg.batch,
      T,
      steps: cfg.steps,
      lr: cfg.lr,
      weightDecay: 0.1,
      seed: cfg.seed,
      worldSize: cfg.worldSize ?? cfg.expect,
      ...(cfg.maxWorldSize === undefined ? {} : { maxWorldSize: cfg.maxWorldSize }),
      zeroPP: cfg.zeropp,
      dtype: cfg.device === 'cuda' ? 'bf16' : 'f32',
      snapshot: cfg.snapshot === 'off' ? undefined : { ...parseSnapshot(cfg.snapshot), every: cfg.snapshotEvery },
      disk: { dir: diskDir(cfg.dataDir), every: cfg.diskEvery, resume: cfg.resume }
    })
    out(`training ${cfg.model} (${corpus.source}, vocabulary ${corpus.vocabSize}) on ${backend.description}`)
  }
  const t = trainer
  observer = defineNodeMetrics(metrics, { membership, ...(t === undefined ? {} : { training: () => t.status() }) })
  const startedAt = clock.monotonic()
  const status = (): NodeStatus => ({
    version: VERSION,
    run: cfg.run,
    peerId: net.self.id,
    multiaddrs: net.multiaddrs(),
    uptimeS: Math.round((clock.monotonic() - startedAt) / 1000),
    cpuMs: cpuMs(),
    membership: membership.status(),
    training: trainer?.status()
  })
  const server = await serveControl(cfg.dataDir, status)
  undo.push(() => new Promise<void>(resolve => server.close(() => resolve())))
  membership.on('view', (v: View) => {
    const rank = v.members.findIndex(m => m.id === net.self.id)
    out(`view ${v.epoch}: ${v.members.length} member${v.members.length === 1 ? '' : 's'}${rank >= 0 ? `, this node is rank ${rank}` : ', this node is not a member'}`)
  })
  membership.on('paused', p => out(p ? 'lost contact with the majority of the view: paused' : 'majority restored'))
  await membership.start()

  const addrs = net.multiaddrs()
  const dialable = addrs.filter(a => !a.includes('/ip4/0.0.0.0/'))
  out(`zeromesh ${VERSION}: node ${net.self.id} in run ${cfg.run} (zone ${cfg.zone}, host ${cfg.host})`)
  out(`data dir ${cfg.dataDir}`)
  if (metricsServer !== undefined) out(`metrics on ${metricsServer.url}`)
  out('listening on:')
  for (const a of addrs) out(`  ${a}`)
  out('others join with:')
  out(`  npx zeromesh start --run ${cfg.run} --secret-file <the same secret> --bootstrap ${dialable[0] ?? addrs[0] ?? '<this node\'s address>'}`)
  const training = trainer?.run()
  training?.then(s => {
    if (s.role === 'spare') {
      out('spare: not needed by this run')
      return
    }
    if (s.memory !== undefined) out(formatParamMemory(s.memory))
    out(`training done: ${s.step} steps, loss ${s.loss?.toFixed(4)}${s.evalLoss === undefined ? '' : `, held-out loss ${s.evalLoss.toFixed(4)}`}`)
  }, (err: unknown) => out(`training failed: ${err instanceof Error ? err.message : String(err)}`))
  return {
    peerId: net.self.id,
    multiaddrs: addrs,
    membership,
    metrics,
    metricsUrl: metricsServer?.url,
    training,
    async stop () {
      await metricsServer?.close()
      await membership.stop()
      await net.stop()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}
