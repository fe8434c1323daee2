// /metrics read by a real text-format parser: the official Prometheus Python client's
// (Debian's python3-prometheus-client, installed by .ci/run), which rejects malformed lines.
import { spawnSync, spawn } from 'node:child_process';

const PARSER = `
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
num = lambda v: v if math.isfinite(v) else str(v)
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {"type": family.type, "help": family.documentation,
                        "samples": [[s.name, s.labels, num(s.value)] for s in family.samples]}
print(json.dumps(out))
`;

/** JSON has no NaN or Inf: the parser sends them as Python's words. */
const nonFinite = (_key: string, v: unknown) => (v === 'nan' ? NaN : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : v);

/** True when python3 can import prometheus_client (else the tests that need it are skipped). */
export const HAS_PROM_PARSER = spawnSync('/usr/bin/python3', ['-c', 'import prometheus_client.parser'], { stdio: 'ignore' }).status === 0;

export interface Family {
  type: string;
  help: string;
  samples: [name: string, labels: Record<string, string>, value: number][];
}

/**
 * Family names as the parser gives them (a counter's without its _total); samples keep their
 * full names. Rejects when the parser rejects the text.
 */
export function parseExposition(text: string): Promise<Record<string, Family>> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/python3', ['-c', PARSER], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out, nonFinite)) : reject(new Error(`the Prometheus parser rejected /metrics:\n${err}`))));
    child.stdin.end(text);
  });
}

/** Every sample named `name` (e.g. tessera_transactions_total), with its labels and value. */
export function samples(families: Record<string, Family>, name: string): { labels: Record<string, string>; value: number }[] {
  const found: { labels: Record<string, string>; value: number }[] = [];
  for (const f of Object.values(families)) for (const [n, labels, value] of f.samples) if (n === name) found.push({ labels, value });
  return found;
}

/** The one sample of `name` whose labels include `labels`; throws when there is none. */
export function value(families: Record<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const hit = samples(families, name).find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (!hit) throw new Error(`no sample ${name}${JSON.stringify(labels)} in /metrics`);
  return hit.value;
}
