/** The membership module (mesh/membership/), under the path the collectives import it by. */
export * from './membership/index.ts'
