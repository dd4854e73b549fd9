/**
 * core: clock, seeded rng, typed errors, limits, logger and metrics plumbing.
 * Depends on nothing else in zeromesh.
 */
export { type Clock, type TimerId, RealClock, ManualClock, ClockEvent, flushMicrotasks, sleepOn } from './clock.ts'
export { createThreadPool, type PoolReply, type PoolRequest, spareThreads, type ThreadPool, type ThreadPoolInit, threadExecArgv } from './thread-pool.ts'
export { type StallWatcher, type StallWatchOptions, watchStalls } from './loop-stall.ts'
export { Rng, type Seed, seedFromEnv } from './rng.ts'
export {
  ZeromeshError,
  InvalidArgumentError,
  LimitExceededError,
  AbortError,
  ProtocolError,
  type ProtocolAction,
  throwIfAborted,
  settleOnAbort
} from './errors.ts'
export { protocolError, protocolCodes, type ProtocolErrorFactory } from './errors.ts'
export { checkCap, CORE_LIMITS } from './limits.ts'
export { type Range, shardRange, assembleFlat } from './shard.ts'
export { type Logger, type LogLevel, type LoggerInit, createLogger, silentLogger, componentLogger } from './log.ts'
export {
  type MetricsRegistry,
  type Counter,
  type Gauge,
  type Histogram,
  createMetricsRegistry,
  defineCounter,
  defineGauge,
  defineHistogram
} from './metrics.ts'
export { VERSION } from './version.ts'
export { makeDirs, readFileCapped, writeFileDurableSync } from './files.ts'
