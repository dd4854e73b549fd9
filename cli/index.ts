/**
 * cli: the `zeromesh` commands (start, up, status, sim, doctor, export, sample), their flags, help and
 * human output. The top layer: it drives node/ and sim/ and nothing imports it but bench/.
 */
export { main } from './main.ts'
export { UsageError } from './flags.ts'
export { up, UpError, type UpOptions, type UpPoll, type UpKillReport } from './up/run.ts'
export { countGpus } from './up/workers.ts'
export { loadStartConfig } from './start.ts'
export {
  EXPORT_LIMITS,
  ExportError,
  exportModel,
  assembleModel,
  formatExport,
  type ExportOptions,
  type ExportResult,
  type AssembleOptions,
  type AssembledModel
} from './export/model.ts'
export { SAMPLE_LIMITS, SampleError, sample, loadSampleModel, modelLogits, type SampleRequest, type SampleResult, type SampleSource } from './sample/run.ts'
export { runDoctor, verdict, formatCheck, type CheckResult, type CheckLevel, type DoctorOptions } from './doctor/checks.ts'
export { formatStatus } from './status-format.ts'
export { renderNodeEvent } from './render.ts'
