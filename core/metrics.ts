import client from 'prom-client'
import { InvalidArgumentError } from './errors.ts'

/**
 * Metrics plumbing on prom-client: the Prometheus text format is what operators already
 * scrape, and prom-client's per-instance `Registry` lets many simulated or test nodes live in
 * one process without sharing the global default registry.
 */
export type MetricsRegistry = client.Registry
export type Counter<L extends string = string> = client.Counter<L>
export type Gauge<L extends string = string> = client.Gauge<L>
export type Histogram<L extends string = string> = client.Histogram<L>

/** Unit suffixes a metric name must end with (the unit is part of the name, as Prometheus recommends; `_nats` for a cross-entropy loss). */
const UNIT_SUFFIXES = ['_total', '_seconds', '_bytes', '_ratio', '_info', '_count', '_elements', '_steps', '_peers', '_fragments', '_nats']
const NAME_RE = /^zeromesh_[a-z][a-z0-9_]*$/

/** A fresh registry for one node. */
export function createMetricsRegistry(): MetricsRegistry {
  return new client.Registry()
}

function checkName(name: string): void {
  if (!NAME_RE.test(name) || !UNIT_SUFFIXES.some(s => name.endsWith(s))) {
    throw new InvalidArgumentError(`metric name '${name}' must match ${NAME_RE} and end in one of ${UNIT_SUFFIXES.join(', ')}`)
  }
}

interface MetricInit<L extends string> {
  name: string
  help: string
  labelNames?: readonly L[]
  /** Called before every scrape: a metric that mirrors a value owned elsewhere sets it here. */
  collect?: () => void
}

/** Registers a counter (name checked for prefix and unit suffix). */
export function defineCounter<L extends string = string>(registry: MetricsRegistry, init: MetricInit<L>): Counter<L> {
  checkName(init.name)
  return new client.Counter<L>({
    name: init.name,
    help: init.help,
    labelNames: init.labelNames ?? [],
    registers: [registry],
    ...(init.collect === undefined ? {} : { collect: init.collect })
  })
}

/** Registers a gauge (name checked for prefix and unit suffix). */
export function defineGauge<L extends string = string>(registry: MetricsRegistry, init: MetricInit<L>): Gauge<L> {
  checkName(init.name)
  return new client.Gauge<L>({
    name: init.name,
    help: init.help,
    labelNames: init.labelNames ?? [],
    registers: [registry],
    ...(init.collect === undefined ? {} : { collect: init.collect })
  })
}

/** Registers a histogram (name checked for prefix and unit suffix). */
export function defineHistogram<L extends string = string>(registry: MetricsRegistry, init: MetricInit<L> & { buckets?: number[] }): Histogram<L> {
  checkName(init.name)
  return new client.Histogram<L>({
    name: init.name,
    help: init.help,
    labelNames: init.labelNames ?? [],
    buckets: init.buckets ?? client.exponentialBuckets(0.0005, 2, 16),
    registers: [registry]
  })
}
