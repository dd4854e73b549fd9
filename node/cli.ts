import { parseArgs, type ParseArgsOptionsConfig } from 'node:util'
import { RealClock, VERSION, ZeromeshError } from '../core/index.ts'
import { ConfigError, START_FLAG_OPTIONS, defaultDataDir, loadStartConfig } from './config.ts'
import { ControlError, fetchStatus } from './control.ts'
import { formatStatus } from './status-format.ts'

/**
 * The `zeromesh` command line. Each command is one entry in COMMANDS; errors print one line
 * (no stack) and exit non-zero: 2 for usage errors, 1 for failures.
 */

/** A usage error: bad command, flag or value. Printed as one line, exit code 2. */
export class UsageError extends ZeromeshError {
  static override name = 'UsageError'
}

interface Io { out: (line: string) => void, err: (line: string) => void }

interface Command {
  summary: string
  usage: string
  run: (args: string[], io: Io) => Promise<number>
}

const COMMANDS: Record<string, Command> = {
  start: {
    summary: 'start a node and join (or begin) a run',
    usage: [
      'zeromesh start --run <id> --secret-file <file> [--bootstrap <multiaddr>]... [flags]',
      '',
      '  --run <id>             run id (1-64 of A-Z a-z 0-9 . _ -)            ZEROMESH_RUN',
      '  --secret-file <file>   file holding the run secret (>= 16 bytes)       ZEROMESH_SECRET_FILE',
      '  --bootstrap <addr>     a member\'s multiaddr ending in /p2p/<id>; repeat ZEROMESH_BOOTSTRAP=a,b',
      '  --listen <addr>        listen multiaddr (default /ip4/0.0.0.0/tcp/0)  ZEROMESH_LISTEN',
      '  --announce <addr>      address to announce instead (NAT, public IP)   ZEROMESH_ANNOUNCE',
      '  --zone <name>          failure/bandwidth domain (default "default")   ZEROMESH_ZONE',
      '  --host <name>          machine name (default the hostname)           ZEROMESH_HOST',
      '  --data-dir <dir>       identity key and control socket (default ~/.zeromesh/<run>)',
      '  --expect <n>           nodes needed before the first view forms (default 1); set it',
      '                         above half the nodes you start so two first views cannot form',
      '  --heartbeat-ms <ms>    heartbeat period (default 500)',
      '  --mdns                 discover peers on the LAN',
      '  --log-level <level>    structured logs on stderr (default warn)',
      '  --metrics-listen <host:port>',
      '                         serve Prometheus metrics at http://<host:port>/metrics (default',
      '                         off; e.g. 127.0.0.1:9464; port 0 picks a free one)',
      '',
      'training (with --train; the first --world-size members train, the rest are spares):',
      '  --device cpu|cuda      backend (default cpu)                           ZEROMESH_DEVICE',
      '  --model <name>         mini | small | gpt2-124m (default mini)',
      '  --data <file>          text or llm.c .bin tokens (default: the Brown Corpus)',
      '  --steps <n>            steps to train (default 200)',
      '  --world-size <n>       training ranks (default --expect)',
      '  --max-world-size <n>   grow the run up to n ranks as nodes join, at a step boundary (default: never grow)',
      '  --batch <n> --seq <n>  sequences per rank per step and their length (default 4, 64)',
      '  --lr <x> --seed <n>    AdamW learning rate (default 0.003) and run seed (default 1)',
      '  --zeropp               ZeRO++ (int8 weights, zone-local backward gather, int4 gradients)',
      '  --snapshot k+m|off     erasure-coded snapshot of every rank after every step (default 2+1)',
      '  --snapshot-every <n>   snapshot every n steps instead (default 1): a loss then re-runs up to',
      '                         n-1 more steps, for less snapshot traffic',
      '  --disk-every <n>       write this rank\'s state to <data dir>/train every n steps',
      '                         (default 10; 0: never); `zeromesh export` reads these files',
      '  --resume               continue from the newest step every rank has on disk',
      '  --exit-when-done       leave the run and exit once training ends',
      '  --config <file.json>   the same settings as JSON (flags > env > file > defaults)'
    ].join('\n'),
    run: async (args, io) => {
      const { values } = parseStrict(args, START_FLAG_OPTIONS)
      const cfg = loadStartConfig(values)
      const { startNode } = await import('./start.ts')
      const node = await startNode(cfg, io.out)
      let code = 0
      let leaving = false
      await new Promise<void>(resolve => {
        const stop = (): void => { leaving = true; resolve() }
        process.once('SIGINT', stop)
        process.once('SIGTERM', stop)
        // Started by `zeromesh up`: leave when the parent goes away (this process is re-parented).
        if (process.env['ZEROMESH_EXIT_WITH_PARENT'] === '1') {
          const parent = process.ppid
          const clock = new RealClock()
          const watch = (): void => {
            if (leaving) return
            if (process.ppid !== parent) stop()
            else clock.setTimeout(watch, 500)
          }
          watch()
        }
        if (cfg.exitWhenDone && node.training !== undefined) {
          // A spare stays in the run (it may be needed) until it is told to stop.
          node.training.then(s => { if (s.role !== 'spare') stop() }, () => { code = 1; stop() })
        }
      })
      io.out('stopping: leaving the run')
      // A clean leave takes well under a second; a transport stuck on a dead peer must not
      // keep the process alive (and orphaned, under `zeromesh up`).
      const clock = new RealClock()
      const stopped = await Promise.race([node.stop().then(() => true), clock.sleep(5000).then(() => false)])
      if (!stopped) {
        io.err('zeromesh: the node did not stop within 5 s; exiting anyway')
        process.exit(code)
      }
      return code
    }
  },
  up: {
    summary: 'train on a local mesh of worker processes (the main job): progress, and node loss with --kill-at',
    usage: [
      'zeromesh up [--nodes 4] [--spares 1] [--device cpu|cuda] [--steps N] [--kill-at STEP] [flags]',
      '',
      '  --nodes <n>        training ranks, one process each (default 4)',
      '  --spares <n>       extra processes that stand by to replace a rank (default 1)',
      '  --device cpu|cuda  backend (default cpu)',
      '  --steps <n>        steps to train (default 100)',
      '  --kill-at <step>   SIGKILL a training worker once the run reaches this step',
      '  --model <name>     mini | small | gpt2-124m (default mini)',
      '  --data <file>      text or llm.c .bin tokens (default: the Brown Corpus)',
      '  --zeropp           ZeRO++ instead of flat ZeRO-3',
      '  --snapshot-every <n>',
      '                     erasure-coded snapshots every n steps instead of every step (default 1)',
      '  --batch <n>        sequences per rank per step (default 4)',
      '  --seq <n>          sequence length (default 64)',
      '  --seed <n>         run seed (default 1)',
      '  --timeout <s>      give up after this many seconds (default 1800)',
      '  --keep             keep the run directory with the worker logs'
    ].join('\n'),
    run: async (args, io) => {
      const { values } = parseStrict(args, {
        nodes: { type: 'string' },
        spares: { type: 'string' },
        device: { type: 'string' },
        steps: { type: 'string' },
        'kill-at': { type: 'string' },
        'snapshot-every': { type: 'string' },
        model: { type: 'string' },
        data: { type: 'string' },
        zeropp: { type: 'boolean' },
        batch: { type: 'string' },
        seq: { type: 'string' },
        seed: { type: 'string' },
        timeout: { type: 'string' },
        keep: { type: 'boolean' }
      })
      const int = (name: string, v: string | undefined, dflt: number, min: number, max: number): number => {
        if (v === undefined) return dflt
        const n = Number(v)
        if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in [${min}, ${max}], got '${v}'`)
        return n
      }
      const device = values.device ?? 'cpu'
      if (device !== 'cpu' && device !== 'cuda') throw new UsageError(`--device must be cpu or cuda, got '${device}'`)
      const model = values.model ?? 'mini'
      if (!['mini', 'small', 'gpt2-124m'].includes(model)) throw new UsageError(`--model must be mini, small or gpt2-124m, got '${model}'`)
      const steps = int('steps', values.steps, 100, 1, 10_000_000)
      const killAt = values['kill-at'] === undefined ? undefined : int('kill-at', values['kill-at'], 0, 1, steps - 1)
      const { up } = await import('./up.ts')
      const tty = process.stderr.isTTY === true
      return await up({
        nodes: int('nodes', values.nodes, 4, 1, 64),
        spares: int('spares', values.spares, 1, 0, 16),
        device,
        steps,
        killAt,
        ...(values['snapshot-every'] === undefined ? {} : { snapshotEvery: int('snapshot-every', values['snapshot-every'], 1, 1, 10_000_000) }),
        model,
        data: values.data,
        zeropp: values.zeropp === true,
        seed: int('seed', values.seed, 1, 0, 2 ** 31),
        batch: int('batch', values.batch, 4, 1, 4096),
        seq: int('seq', values.seq, 64, 2, 1024),
        timeoutMs: int('timeout', values.timeout, 1800, 1, 7 * 86400) * 1000,
        keep: values.keep === true,
        out: io.out,
        ...(tty ? { progress: (l: string) => process.stderr.write(`\r${l.padEnd(100)}`) } : {})
      })
    }
  },
  export: {
    summary: 'write the trained model as safetensors, from the training nodes\' disk tiers',
    usage: [
      'zeromesh export --out <file.safetensors> --data-dir <dir> [--data-dir <dir>]... [flags]',
      '',
      '  --out <file>       the safetensors file to write (replaced atomically)',
      '  --data-dir <dir>   a training node\'s data dir (or its train/ folder); repeat until every',
      '                     rank is covered: each node writes only the ranks it held',
      '  --model <name>     mini | small | gpt2-124m: what the run trained (default mini)',
      '  --data <file>      the run\'s --data, for the vocabulary (default: the Brown Corpus)',
      '  --step <n>         export this step (default: the newest step every rank has)',
      '',
      'Reads <data dir>/train/step-*.zms (written every --disk-every steps by `zeromesh start',
      '--train`), verifies every file, joins the ranks\' weight shards and writes F32 tensors',
      'named as in the GPT layout (wte, wpe, h.<layer>.<tensor>, lnfw, lnfb) with the step, world',
      'size and model shape in __metadata__. Exit status 1 when the dirs lack a rank or a file',
      'is damaged, 2 for bad flags.'
    ].join('\n'),
    run: async (args, io) => {
      const { values } = parseStrict(args, {
        out: { type: 'string' },
        'data-dir': { type: 'string', multiple: true },
        model: { type: 'string' },
        data: { type: 'string' },
        step: { type: 'string' }
      })
      if (values.out === undefined || values.out === '') throw new UsageError('export needs --out <file.safetensors>')
      const dirs = values['data-dir'] ?? []
      if (dirs.length === 0) throw new UsageError('export needs --data-dir <dir> (repeat it for every training node)')
      const { EXPORT_LIMITS, exportModel, formatExport } = await import('./export.ts')
      if (dirs.length > EXPORT_LIMITS.maxDataDirs) throw new UsageError(`export takes at most ${EXPORT_LIMITS.maxDataDirs} --data-dir, got ${dirs.length}`)
      const model = values.model ?? 'mini'
      if (model !== 'mini' && model !== 'small' && model !== 'gpt2-124m') throw new UsageError(`--model must be mini, small or gpt2-124m, got '${model}'`)
      let step: number | undefined
      if (values.step !== undefined) {
        step = Number(values.step)
        if (values.step.trim() === '' || !Number.isSafeInteger(step) || step < 0) throw new UsageError(`--step must be an integer >= 0, got '${values.step}'`)
      }
      const result = await exportModel({
        out: values.out,
        dataDirs: dirs,
        model,
        ...(values.data === undefined ? {} : { data: values.data }),
        ...(step === undefined ? {} : { step })
      })
      for (const line of formatExport(result)) io.out(line)
      return 0
    }
  },
  sim: {
    summary: 'run a failure scenario on the deterministic simulator',
    usage: [
      'zeromesh sim <scenario.json> [--seed N] [--nodes N] [--report out.json] [--svg out.svg] [--quiet]',
      '',
      '  <scenario.json>   a scenario file (see sim/scenarios/ for examples); with "workload": "train"',
      '                    the real trainer runs on every simulated node with a compute cost model',
      '  --seed N          override the scenario\'s seed (a run is reproduced exactly by its seed)',
      '  --nodes N         override the node count',
      '  --report <file>   write the full report as JSON',
      '  --svg <file>      write a timeline of node states, views and faults',
      '  --quiet           no progress bar',
      '',
      'Exit status 0 when every assertion of the scenario holds, 1 when one fails.'
    ].join('\n'),
    run: async (args, io) => {
      const { values, positionals } = parseArgs({
        args,
        options: { seed: { type: 'string' }, nodes: { type: 'string' }, report: { type: 'string' }, svg: { type: 'string' }, quiet: { type: 'boolean' } },
        strict: true,
        allowPositionals: true
      })
      if (positionals.length !== 1) throw new UsageError('sim needs exactly one scenario file')
      const int = (name: string, v: string | undefined, min: number): number | undefined => {
        if (v === undefined) return undefined
        const n = Number(v)
        if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got '${v}'`)
        return n
      }
      const seed = int('seed', values.seed, 0)
      const nodes = int('nodes', values.nodes, 1)
      const { loadScenario, runScenario, formatReport, timelineSvg } = await import('../sim/index.ts')
      const { readTrainScenario, runTrainScenario, formatTrainReport } = await import('../sim/train-run.ts')
      const train = readTrainScenario(positionals[0]!)
      if (train !== undefined) {
        // The training workload: the real trainer on every simulated node (see sim/train-run.ts).
        if (values.svg !== undefined) throw new UsageError('--svg draws membership timelines; training scenarios have no timeline yet')
        const tbar = values.quiet === true ? undefined : progressBar(process.stderr, 'of the training steps')
        const r = await runTrainScenario(train, { ...(seed === undefined ? {} : { seed }), ...(nodes === undefined ? {} : { nodes }), ...(tbar === undefined ? {} : { progress: tbar.update }) })
        tbar?.done()
        io.out(formatTrainReport(r))
        if (values.report !== undefined) (await import('node:fs')).writeFileSync(values.report, JSON.stringify(r, null, 2) + '\n')
        if (!r.ok) io.out(`replay: npx zeromesh sim ${positionals[0]} --seed ${r.seed}${nodes === undefined ? '' : ` --nodes ${nodes}`}`)
        return r.ok ? 0 : 1
      }
      const scenario = loadScenario(positionals[0]!)
      const bar = values.quiet === true ? undefined : progressBar(process.stderr)
      const report = await runScenario(scenario, { ...(seed === undefined ? {} : { seed }), ...(nodes === undefined ? {} : { nodes }), ...(bar === undefined ? {} : { progress: bar.update }) })
      bar?.done()
      io.out(formatReport(report))
      const { writeFileSync } = await import('node:fs')
      if (values.report !== undefined) writeFileSync(values.report, JSON.stringify(report, null, 2) + '\n')
      if (values.svg !== undefined) writeFileSync(values.svg, timelineSvg(report))
      if (!report.ok) io.out(`replay: npx zeromesh sim ${positionals[0]} --seed ${report.seed}${nodes === undefined ? '' : ` --nodes ${nodes}`}`)
      return report.ok ? 0 : 1
    }
  },
  doctor: {
    summary: 'check this host before it joins a run (Node, CPU/GPU backends, memory, disk, ports, peers)',
    usage: [
      'zeromesh doctor [--device cpu|cuda] [--data-dir <dir>] [--listen <addr>] [--bootstrap <addr>]... [--snapshot-gib N] [--json]',
      '',
      '  --device cpu|cuda   the backend this node will use; with cuda an unavailable GPU fails (default cpu)',
      '  --data-dir <dir>    must be writable (default ~/.zeromesh/doctor)',
      '  --listen <addr>     a listen multiaddr whose TCP port must be free',
      '  --bootstrap <addr>  a peer to reach by TCP; repeat for several',
      '  --snapshot-gib N    memory to hold peers\' snapshot fragments (default 1)',
      '  --json              print the checks as JSON',
      '',
      'One line per check (ok / warn / fail) and a verdict. Exit status 1 if any check fails.'
    ].join('\n'),
    run: async (args, io) => {
      const { values } = parseStrict(args, {
        device: { type: 'string' },
        'data-dir': { type: 'string' },
        listen: { type: 'string' },
        bootstrap: { type: 'string', multiple: true },
        'snapshot-gib': { type: 'string' },
        json: { type: 'boolean' }
      })
      const device = values.device ?? 'cpu'
      if (device !== 'cpu' && device !== 'cuda') throw new UsageError(`--device must be cpu or cuda, got '${device}'`)
      const gibs = Number(values['snapshot-gib'] ?? 1)
      if (!(gibs >= 0 && gibs <= 4096)) throw new UsageError(`--snapshot-gib must be a number in [0, 4096], got '${values['snapshot-gib']}'`)
      const { runDoctor, verdict, formatCheck } = await import('./doctor.ts')
      const json = values.json === true
      const results = await runDoctor({
        device,
        dataDir: values['data-dir'] ?? defaultDataDir('doctor'),
        ...(values.listen === undefined ? {} : { listen: values.listen }),
        bootstrap: values.bootstrap ?? [],
        snapshotBytes: gibs * 2 ** 30,
        timeoutMs: 3000
      }, r => { if (!json) io.out(formatCheck(r)) })
      const v = verdict(results)
      io.out(json ? JSON.stringify({ ok: v.ok, verdict: v.line, checks: results }, null, 2) : v.line)
      return v.ok ? 0 : 1
    }
  },
  status: {
    summary: 'show the view and health seen by a running node',
    usage: [
      'zeromesh status [--data-dir <dir> | --run <id>] [--json]',
      '',
      '  --data-dir <dir>   the node\'s data dir (default ~/.zeromesh/<run>)',
      '  --run <id>         run id, to find the default data dir',
      '  --json             print the raw status object'
    ].join('\n'),
    run: async (args, io) => {
      const { values } = parseStrict(args, { 'data-dir': { type: 'string' }, run: { type: 'string' }, json: { type: 'boolean' } })
      const dataDir = values['data-dir'] ?? (values.run !== undefined ? defaultDataDir(values.run) : undefined)
      if (dataDir === undefined) throw new UsageError('status needs --data-dir <dir> or --run <id>')
      const status = await fetchStatus(dataDir)
      io.out(values.json === true ? JSON.stringify(status, null, 2) : formatStatus(status))
      return 0
    }
  },
  version: {
    summary: 'print the zeromesh version',
    usage: 'zeromesh version',
    run: async (args, io) => {
      parseStrict(args, {})
      io.out(VERSION)
      return 0
    }
  }
}

function parseStrict<O extends ParseArgsOptionsConfig> (args: string[], options: O): ReturnType<typeof parseArgs<{ args: string[], options: O, strict: true, allowPositionals: false }>> {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

/** A one-line progress bar (over simulated time, or steps) on a terminal; plain percentages elsewhere. */
function progressBar (stream: NodeJS.WriteStream, what = 'of simulated time'): { update: (f: number) => void, done: () => void } {
  let last = -1
  return {
    update (f: number) {
      const pct = Math.floor(f * 100)
      if (pct === last) return
      if (stream.isTTY) {
        const w = 30
        const filled = Math.round(f * w)
        stream.write(`\r[${'#'.repeat(filled)}${'.'.repeat(w - filled)}] ${String(pct).padStart(3)}% ${what}`)
      } else if (pct % 25 === 0) {
        stream.write(`${pct}% ${what}\n`)
      }
      last = pct
    },
    done () {
      if (stream.isTTY) stream.write('\n')
    }
  }
}

function help (): string {
  const width = Math.max(...Object.keys(COMMANDS).map(c => c.length))
  return [
    `zeromesh ${VERSION}: a fault-tolerant training mesh`,
    '',
    'usage: zeromesh <command> [flags]',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'flags:',
    '  --version  print the version',
    '  --help     show this help (also: zeromesh <command> --help)'
  ].join('\n')
}

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function main (argv: string[], io: Io = { out: l => process.stdout.write(l + '\n'), err: l => process.stderr.write(l + '\n') }): Promise<number> {
  try {
    const [first, ...rest] = argv
    if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
      io.out(help())
      return first === undefined ? 2 : 0
    }
    if (first === '--version' || first === '-v') {
      if (rest.length > 0) throw new UsageError(`--version takes no arguments, got '${rest[0]}'`)
      io.out(VERSION)
      return 0
    }
    const cmd = COMMANDS[first]
    if (cmd === undefined || !Object.hasOwn(COMMANDS, first)) {
      throw new UsageError(`unknown command '${first}' (run 'zeromesh --help' for the list)`)
    }
    if (rest.includes('--help') || rest.includes('-h')) {
      io.out(`${cmd.usage}\n\n${cmd.summary}`)
      return 0
    }
    return await cmd.run(rest, io)
  } catch (err) {
    const e = err as Error & { code?: string }
    // Usage errors: bad commands, flags, configuration and scenario files. One line, exit 2.
    if (err instanceof UsageError || err instanceof ConfigError || e.name === 'ScenarioError' || e.code?.startsWith('ERR_PARSE_ARGS') === true) {
      io.err(`zeromesh: ${e.message}`)
      return 2
    }
    if (err instanceof ControlError || err instanceof ZeromeshError) {
      io.err(`zeromesh: ${err.message}`)
      return 1
    }
    io.err(`zeromesh: ${e.name}: ${e.message}`)
    return 1
  }
}
