/**
 * The zone harness: Linux network namespaces as hosts, one bridge per zone, a tbf-shaped uplink
 * per zone (topology.ts), real `zeromesh start` nodes on those hosts (nodes.ts) and a TCP
 * transfer to measure a path (transfer.ts). Used by test/zones/ and bench/zones.ts; needs root
 * and iproute2 (docs/ARCHITECTURE.md, "Test infrastructure: the zone harness").
 */
export { ZonesError, NotRootError, ToolMissingError, NamespaceRefusedError, ZonesCommandError, UNAVAILABLE_ERRORS } from './errors.ts'
export { ZONES_LIMITS } from './limits.ts'
export { NAMESPACE_PREFIX, sweepStale, findTools, type Tools } from './commands.ts'
export { createZones, zonesUnavailable, tbfArgs, parseUplink, type Zones, type ZonesInit, type ZoneSpec, type ZoneHost, type UplinkBytes } from './topology.ts'
export { startZoneNodes, trainFlags, isStartFlag, type ZoneNodes, type ZoneNodesInit, type ZoneNode, type StampedEvent, type TrainFlags } from './nodes.ts'
export { tcpTransfer, type Transfer } from './transfer.ts'
export { countByPort, splitRules, parseSplit, type PortCounters, type PortSplit } from './counters.ts'
export { createNat, routerRules, type NatTopology, type NatInit, type NatHost, type NatKind } from './nat.ts'
