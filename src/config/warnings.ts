/**
 * Config warnings (settings Tessera does not implement, ...) are worth saying once: at start-up,
 * and again at a RELOAD only when they changed. One memory for the process, so the start-up and
 * the reload paths share it.
 */
let lastSaid = new Set<string>();

/** The warnings not said the last time; remembers `warnings` as the current set. */
export function newWarnings(warnings: readonly string[]): string[] {
  const fresh = warnings.filter((w) => !lastSaid.has(w));
  lastSaid = new Set(warnings);
  return fresh;
}
