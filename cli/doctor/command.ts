import { z } from 'zod'
import { START_OPTIONS, defaultDataDir, option, shapeOf } from '../../node/index.ts'
import { usageText, type Command } from '../command.ts'
import { parseCommandLine, readOptions } from '../flags.ts'
import { formatCheck, runDoctor, verdict } from './checks.ts'

/** The options of `zeromesh doctor`. */
export const DOCTOR_OPTIONS = {
  device: option(START_OPTIONS.device.schema, { help: 'the backend this node will use; with cuda an unavailable GPU fails' }),
  dataDir: option(z.string().min(1).optional(), { arg: '<dir>', help: 'must be writable', defaultText: '~/.zeromesh/doctor' }),
  listen: option(z.string().min(1).optional(), { arg: '<addr>', help: 'a listen multiaddr whose TCP port must be free' }),
  bootstrap: option(z.array(z.string()).default([]), { arg: '<addr>', help: 'a peer to reach by TCP; repeat for several' }),
  snapshotGib: option(z.number().min(0).max(4096).default(1), { arg: '<n>', help: "memory to hold peers' snapshot fragments, GiB" }),
  node: option(z.string().min(1).optional(), { arg: '<dir>', help: "a running node's data dir: check its reachability, relays and paths too" }),
  json: option(z.boolean().default(false), { help: 'print the checks as JSON' })
}
const doctorSchema = z.strictObject(shapeOf(DOCTOR_OPTIONS))

/** `zeromesh doctor`. */
export const doctorCommand: Command = {
  summary: 'check this host before it joins a run (Node, CPU/GPU backends, memory, disk, ports, peers)',
  usage: () =>
    usageText(
      'zeromesh doctor [--device cpu|cuda] [--data-dir <dir>] [--listen <addr>] [--bootstrap <addr>]... [--snapshot-gib N] [--node <dir>] [--json]',
      [DOCTOR_OPTIONS],
      {
        notes: ['One line per check (ok / warn / fail) and a verdict. Exit status 1 if any check fails.']
      }
    ),
  run: async (args, io) => {
    const { values } = parseCommandLine(args, [DOCTOR_OPTIONS])
    const o = readOptions(DOCTOR_OPTIONS, doctorSchema, values)
    const results = await runDoctor(
      {
        device: o.device,
        dataDir: o.dataDir ?? defaultDataDir('doctor'),
        ...(o.listen === undefined ? {} : { listen: o.listen }),
        ...(o.node === undefined ? {} : { node: o.node }),
        bootstrap: o.bootstrap,
        snapshotBytes: o.snapshotGib * 2 ** 30,
        timeoutMs: 3000
      },
      r => {
        if (!o.json) io.out(formatCheck(r))
      }
    )
    const v = verdict(results)
    io.out(o.json ? JSON.stringify({ ok: v.ok, verdict: v.line, checks: results }, null, 2) : v.line)
    return v.ok ? 0 : 1
  }
}
