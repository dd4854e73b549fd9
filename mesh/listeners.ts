/** A tiny typed listener registry (one per event name); listeners' exceptions are isolated. */
export class Listeners<Events extends object> {
  private readonly map = new Map<keyof Events, Set<(detail: never) => void>>()
  private readonly onError: (err: unknown) => void

  constructor(onError: (err: unknown) => void = () => {}) {
    this.onError = onError
  }

  on<E extends keyof Events>(event: E, listener: (detail: Events[E]) => void): () => void {
    let set = this.map.get(event)
    if (set === undefined) this.map.set(event, (set = new Set()))
    set.add(listener as (detail: never) => void)
    return () => {
      set.delete(listener as (detail: never) => void)
    }
  }

  emit<E extends keyof Events>(event: E, detail: Events[E]): void {
    for (const l of this.map.get(event) ?? []) {
      try {
        ;(l as (d: Events[E]) => void)(detail)
      } catch (err) {
        this.onError(err)
      }
    }
  }
}
