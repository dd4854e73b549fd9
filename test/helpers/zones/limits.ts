/** Caps and defaults of the zone harness (test/helpers/zones/); each is checked before anything is built. */
export const ZONES_LIMITS = Object.freeze({
  /** Zones of one topology (each is a /24 of 10.99.0.0/16 and a bridge). */
  maxZones: 16,
  /** Hosts (namespaces) per zone. */
  maxHostsPerZone: 32,
  /** Zone names: lowercase letters and digits, starting with a letter (they become namespace and host names). */
  zoneName: /^[a-z][a-z0-9]{0,11}$/,
  /** The slowest and fastest uplink a tbf here is asked to shape (bits/s). */
  minUplinkBitsPerS: 100_000,
  maxUplinkBitsPerS: 100_000_000_000,
  /** tbf queue: packets wait at most this long before they are dropped (ms), unless configured. */
  defaultQueueMs: 50,
  /** tbf bucket: at least this many bytes, or 4 ms at the rate (the kernel needs rate/HZ). */
  minBurstBytes: 64 * 1024,
  /** One `ip`/`tc` command (ms); a command past it is killed and reported. */
  commandTimeoutMs: 10_000,
  /** Node processes per host. */
  maxNodesPerHost: 8,
  /** A worker's start-up (its `started` event), in ms. */
  startTimeoutMs: 30_000
})
