import { pino, type Logger as PinoLogger, type DestinationStream } from 'pino'

/**
 * Structured logger. We use pino: JSON lines with context in objects rather than in message text,
 * child loggers for per-component namespaces, built-in redaction so run secrets never reach a
 * log, and the lowest overhead of the Node loggers when a level is disabled.
 */
export type Logger = PinoLogger

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface LoggerInit {
  /** Minimum level written; default 'info'. */
  level?: LogLevel
  /** Node or process name put on every line. */
  name?: string
  /** Where lines go; default stderr, so stdout stays free for JSON results. */
  destination?: DestinationStream
}

/** Keys whose values are replaced by "[redacted]" wherever they appear one level deep. */
const REDACT = ['secret', 'runSecret', 'privateKey', '*.secret', '*.runSecret', '*.privateKey']

/** Creates the root logger of a process. */
export function createLogger(init: LoggerInit = {}): Logger {
  const options = {
    level: init.level ?? 'info',
    base: init.name === undefined ? {} : { node: init.name },
    redact: { paths: REDACT, censor: '[redacted]' }
  }
  return pino(options, init.destination ?? pino.destination(2))
}

/** A logger that writes nothing (tests, benchmarks). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}

/** Per-component child logger: `componentLogger(log, 'mesh:gossip')`. */
export function componentLogger(parent: Logger, component: string): Logger {
  return parent.child({ component })
}
