import { resolve } from 'node:path'
import { z } from 'zod'
import { RealClock } from '../core/index.ts'
import {
  START_OPTIONS,
  defaultDataDir,
  encodeNodeEvent,
  option,
  shapeOf,
  startNode,
  startSchema,
  type EmitEvent,
  type RunningNode,
  type StartConfig
} from '../node/index.ts'
import type { Command, Io } from './command.ts'
import { usageText } from './command.ts'
import { parseCommandLine, readConfigFile, readOptions } from './flags.ts'
import { renderNodeEvent } from './render.ts'

/**
 * `zeromesh start`: one node. Its options are the node's (node/config.ts) plus how the command
 * itself reads and prints: a config file, and lines for people or JSON events for programs.
 */
export const START_CLI_OPTIONS = {
  events: option(z.enum(['text', 'jsonl']).default('text'), {
    arg: '<text|jsonl>',
    help: 'what stdout carries: lines for people, or one JSON event per line (node/events.ts) for programs such as `zeromesh up`',
    section: 'output and settings:'
  }),
  config: option(z.string().min(1).optional(), {
    arg: '<file.json>',
    help: 'the settings above as one JSON object keyed by name (secretFile, heartbeatMs, ...); flags win over ZEROMESH_* variables, which win over the file, which wins over the defaults'
  })
}
const startCliSchema = z.strictObject(shapeOf(START_CLI_OPTIONS))

/** The node's configuration and the command's own settings. */
function loadStart(flags: Record<string, unknown>, env: Record<string, string | undefined>): { cfg: StartConfig; events: 'text' | 'jsonl' } {
  const own = readOptions(START_CLI_OPTIONS, startCliSchema, flags, { env })
  const file = own.config === undefined ? undefined : readConfigFile(own.config)
  const cfg = readOptions(START_OPTIONS, startSchema, flags, { env, ...(file === undefined ? {} : { file, fileName: own.config }) })
  return { cfg: { ...cfg, dataDir: resolve(cfg.dataDir ?? defaultDataDir(cfg.run)) }, events: own.events }
}

/**
 * Builds and validates a node's configuration. `flags` are parseArgs values by flag name;
 * `env` is process.env (ZEROMESH_RUN, ZEROMESH_SECRET_FILE, ZEROMESH_BOOTSTRAP=a,b, ...);
 * ZEROMESH_CONFIG or `--config` names a JSON file. A problem is a ConfigError of one line.
 */
export function loadStartConfig(flags: Record<string, unknown>, env: Record<string, string | undefined> = process.env): StartConfig {
  return loadStart(flags, env).cfg
}

/** The events of a node as `--events` asks: JSON lines, or the rendered human lines. */
function printer(events: 'text' | 'jsonl', io: Io): EmitEvent {
  return events === 'jsonl'
    ? e => io.out(encodeNodeEvent(e))
    : e => {
        for (const line of renderNodeEvent(e)) io.out(line)
      }
}

/**
 * Resolves when the node should leave: SIGINT or SIGTERM, the parent gone (under `zeromesh up`),
 * or with --exit-when-done the end of its training. The exit code is 1 when training failed.
 */
function untilLeave(cfg: StartConfig, node: RunningNode): Promise<number> {
  let leaving = false
  return new Promise<number>(resolve => {
    const stop = (code: number): void => {
      leaving = true
      resolve(code)
    }
    process.once('SIGINT', () => stop(0))
    process.once('SIGTERM', () => stop(0))
    // Started by `zeromesh up`: leave when the parent goes away (this process is re-parented).
    if (process.env['ZEROMESH_EXIT_WITH_PARENT'] === '1') {
      const parent = process.ppid
      const clock = new RealClock()
      const watch = (): void => {
        if (leaving) return
        if (process.ppid !== parent) stop(0)
        else clock.setTimeout(watch, 500)
      }
      watch()
    }
    if (cfg.exitWhenDone && node.training !== undefined) {
      // A spare stays in the run (it may be needed) until it is told to stop.
      node.training.then(
        s => {
          if (s.role !== 'spare') stop(0)
        },
        () => stop(1)
      )
    }
  })
}

/** `zeromesh start`. */
export const startCommand: Command = {
  summary: 'start a node and join (or begin) a run',
  usage: () =>
    usageText('zeromesh start --run <id> --secret-file <file> [--bootstrap <multiaddr>]... [flags]', [START_OPTIONS, START_CLI_OPTIONS], { env: true }),
  run: async (args, io) => {
    const { values } = parseCommandLine(args, [START_OPTIONS, START_CLI_OPTIONS])
    const { cfg, events } = loadStart(values, process.env)
    const emit = printer(events, io)
    const node = await startNode(cfg, emit)
    const code = await untilLeave(cfg, node)
    emit({ type: 'stopping' })
    // A clean leave takes well under a second; a transport stuck on a dead peer must not
    // keep the process alive (and orphaned, under `zeromesh up`).
    const clock = new RealClock()
    const stopped = await Promise.race([node.stop().then(() => true), clock.sleep(5000).then(() => false)])
    if (!stopped) {
      io.err('zeromesh: the node did not stop within 5 s; exiting anyway')
      process.exit(code)
    }
    // Stopping aborted the trainer; it ends within its next wait. One that does not (a long
    // synchronous step) must not keep the process, and its peers' view of it, alive.
    const ended =
      node.training === undefined ||
      (await Promise.race([
        node.training.then(
          () => true,
          () => true
        ),
        clock.sleep(5000).then(() => false)
      ]))
    if (!ended) {
      io.err('zeromesh: the trainer did not stop within 5 s of leaving the run; exiting anyway')
      process.exit(code)
    }
    return code
  }
}
