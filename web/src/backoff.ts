// Reconnect delays: capped exponential backoff with full jitter.

/** The next delay: ceiling min(prev * 2, max) (at least `base`), drawn uniformly below it. */
export function nextBackoff(prevCeiling: number, base = 500, max = 15_000, random: () => number = Math.random): { ceiling: number; delay: number } {
  const ceiling = Math.min(Math.max(prevCeiling * 2, base), max);
  return { ceiling, delay: random() * ceiling };
}
