/**
 * sim: the deterministic discrete-event engine and SimNet (a PeerNet over simulated links with
 * faults). Protocol code from mesh/ runs on it unchanged. Never imported by production paths.
 */
export { Simulation, NodeClock } from './engine.ts'
export {
  createSimNetwork,
  DEFAULT_TOPOLOGY,
  DEFAULT_NIC,
  DEFAULT_UPLINK,
  FABRIC_CHUNK_BYTES,
  type SimNetwork,
  type LinkCapacity,
  type LinkProfile,
  type Tier,
  type Topology
} from './net.ts'
export { randomMembershipRun, type RandomRunOptions, type RunResult } from './membership-run.ts'
export { MembershipWorld, type WorldNode, type WorldInit, type ViewEvent } from './world.ts'
export {
  scenarioSchema,
  topologySchema,
  topologyOf,
  parseScenario,
  loadScenario,
  runScenario,
  ScenarioError,
  type Scenario,
  type ScenarioReport,
  type FaultReport
} from './scenario.ts'
export { formatReport, timelineSvg } from './report.ts'
export { membershipReportHtml, trainReportHtml } from './report-html.ts'
export { parseTrainScenario, readTrainScenario, runTrainScenario, formatTrainReport, trainRun } from './train-run.ts'
