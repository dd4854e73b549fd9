import { ZeromeshError } from '../../../core/index.ts'

/**
 * Why the zone harness cannot build or drive its topology. Match on `name`: a test skips on
 * the first three (the machine cannot host namespaces) and fails on the others.
 */
export class ZonesError extends ZeromeshError {
  static override name = 'ZonesError'
}

/** Network namespaces, veths and qdiscs need root (CAP_NET_ADMIN and CAP_SYS_ADMIN). */
export class NotRootError extends ZonesError {
  static override name = 'NotRootError'
}

/** `ip` or `tc` (iproute2) is not installed. */
export class ToolMissingError extends ZonesError {
  static override name = 'ToolMissingError'
}

/** The kernel or the container refused a namespace, a veth, a bridge or a tbf qdisc. */
export class NamespaceRefusedError extends ZonesError {
  static override name = 'NamespaceRefusedError'
}

/** An `ip` or `tc` command failed after the topology was built (its stderr is in the message). */
export class ZonesCommandError extends ZonesError {
  static override name = 'ZonesCommandError'
}

/** Errors that mean "this machine cannot run the harness" rather than "the harness is broken". */
export const UNAVAILABLE_ERRORS: readonly string[] = [NotRootError.name, ToolMissingError.name, NamespaceRefusedError.name]
