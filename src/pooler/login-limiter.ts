/**
 * The attack detector for session-token logins: an address with more than `maxFailures` failed
 * logins within a minute is refused for `banMs`. Guessing tokens or session ids from one address
 * therefore stops quickly, whatever the database's own per-session lockout says.
 */
const WINDOW_MS = 60_000;

interface Record {
  windowStart: number;
  failures: number;
  bannedUntil: number;
}

export class LoginLimiter {
  private readonly byAddress = new Map<string, Record>();

  constructor(
    private readonly maxFailures: number,
    private readonly banMs: number,
  ) {}

  isBanned(address: string, now = Date.now()): boolean {
    return this.maxFailures > 0 && (this.byAddress.get(address)?.bannedUntil ?? 0) > now;
  }

  recordFailure(address: string, now = Date.now()): void {
    if (this.maxFailures === 0) return;
    let r = this.byAddress.get(address);
    if (!r || now - r.windowStart > WINDOW_MS) {
      r = { windowStart: now, failures: 0, bannedUntil: r?.bannedUntil ?? 0 };
      this.byAddress.set(address, r);
    }
    r.failures++;
    if (r.failures > this.maxFailures) r.bannedUntil = now + this.banMs;
  }

  /** Forgets addresses whose window and ban are over (the janitor calls this). */
  prune(now = Date.now()): void {
    for (const [address, r] of this.byAddress) {
      if (now - r.windowStart > WINDOW_MS && r.bannedUntil <= now) this.byAddress.delete(address);
    }
  }
}
