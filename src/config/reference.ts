// Renders the configuration reference in README.md from the schema, so the two cannot drift.
// Regenerate README's block with:  node --import tsx src/config/reference.ts --write
// (test/unit/config.test.ts fails when README is stale.)
import fs from 'node:fs';
import path from 'node:path';
import { ConfigSchema, DatabaseSchema, UserSchema } from './schema.js';

export const START = '<!-- config-reference:start (generated from src/config/schema.ts) -->';
export const END = '<!-- config-reference:end -->';

interface Prop {
  default?: unknown;
  description?: string;
  type?: string;
  anyOf?: { const?: unknown; type?: string }[];
  minimum?: number;
  maximum?: number;
}

function typeOf(p: Prop): string {
  if (p.anyOf) {
    const consts = p.anyOf.filter((a) => a.const !== undefined).map((a) => JSON.stringify(a.const));
    return consts.length === p.anyOf.length ? consts.join(' \\| ') : p.anyOf.map((a) => a.type ?? 'array').join(' or ');
  }
  return p.type ?? 'object';
}

function table(props: Record<string, Prop>, skip: string[] = []): string {
  const rows = Object.entries(props)
    .filter(([name]) => !skip.includes(name))
    .map(([name, p]) => {
      const def = p.default === undefined ? '' : `\`${JSON.stringify(p.default)}\``;
      return `| \`${name}\` | ${typeOf(p)} | ${def} | ${p.description ?? ''} |`;
    });
  return ['| setting | type | default | meaning |', '|---|---|---|---|', ...rows].join('\n');
}

export function configReference(): string {
  const top = (ConfigSchema as unknown as { properties: Record<string, Prop> }).properties;
  const db = (DatabaseSchema as unknown as { properties: Record<string, Prop> }).properties;
  const users = (UserSchema as unknown as { properties: Record<string, Prop> }).properties;
  return [
    START,
    '',
    table(top, ['$schema', 'databases', 'users']),
    '',
    '`databases` maps the name a client asks for (`"*"` is the fallback) to:',
    '',
    table(db),
    '',
    '`users` maps a client user name to:',
    '',
    table(users),
    '',
    END,
  ].join('\n');
}

/** README with its reference block replaced by the current one. */
export function withReference(readme: string): string {
  const a = readme.indexOf(START);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error('README.md has no config reference markers');
  return readme.slice(0, a) + configReference() + readme.slice(b + END.length);
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname) && process.argv.includes('--write')) {
  const file = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../README.md');
  fs.writeFileSync(file, withReference(fs.readFileSync(file, 'utf8')));
}
