// The entry point of an `--offload cpu` optimizer thread (spawned by host-optim-threads.ts):
// runs host-optim.ts's update rules, the CPU backend's own, on slices of the shard's shared
// memory. One job at a time: a request in, an empty reply out (the result is in the memory).
import { parentPort } from 'node:worker_threads'
import { adamw8bitHost, adamwHost, lion8bitHost, lionHost } from './host-optim.ts'
import type { OptimReply, OptimRequest } from './host-optim-threads.ts'

function run(q: OptimRequest): void {
  switch (q.op) {
    case 'adamw':
      adamwHost(q.w, q.g, q.m, q.v, q.p, null)
      return
    case 'lion':
      lionHost(q.w, q.g, q.m, q.p, null)
      return
    case 'adamw8bit':
      adamw8bitHost(q.w, q.g, q.mc, q.vc, q.sc, q.p, null)
      return
    case 'lion8bit':
      lion8bitHost(q.w, q.g, q.mc, q.sc, q.p, null)
      return
  }
}

parentPort?.on('message', (q: OptimRequest) => {
  let reply: OptimReply
  try {
    run(q)
    reply = { id: q.id, ok: true }
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err))
    reply = { id: q.id, ok: false, error: `${e.name}: ${e.message}` }
  }
  parentPort!.postMessage(reply)
})
