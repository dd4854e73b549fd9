import type { z } from 'zod'

/**
 * A command's options as one spec: per option its schema (type, range, default: what the value
 * may be) and the words help shows. The validating schema is `z.strictObject(shapeOf(spec))`;
 * the command line reads the flag `--kebab-case` of each camelCase key, `ZEROMESH_KEBAB_CASE`
 * from the environment and the key itself from a `--config` file (cli/flags.ts), so a new
 * option is written once.
 */
export interface OptionSpec<S extends z.ZodType = z.ZodType> {
  schema: S
  /** The value's placeholder in help (`<n>`, `<file>`); absent for switches. */
  arg?: string
  /** What the option does, for help. */
  help: string
  /** Help's words for a default the schema does not hold (computed at start-up, or another option). */
  defaultText?: string
  /** A heading in help above this option and the ones after it. */
  section?: string
  /** The message when a required option is missing (default: `--flag is required`). */
  required?: string
}

/** Options by schema key (camelCase). */
export type OptionsSpec = Record<string, OptionSpec>

/** One option: `schema` with its help. */
export function option<S extends z.ZodType>(schema: S, about: Omit<OptionSpec<S>, 'schema'>): OptionSpec<S> {
  return { schema, ...about }
}

/** The zod object shape of a spec: each key with its option's schema. */
export function shapeOf<T extends OptionsSpec>(spec: T): { [K in keyof T]: T[K]['schema'] } {
  return Object.fromEntries(Object.entries(spec).map(([k, o]) => [k, o.schema])) as { [K in keyof T]: T[K]['schema'] }
}
