/**
 * Result-set encoders for the admin console: RowDescription ('T'), DataRow ('D') and
 * CommandComplete ('C'), all in text format.
 *
 * Column types follow PgBouncer's tuple descriptors, one letter per column:
 *   s  text                       i  int4
 *   q  int8                       N  numeric (PgBouncer's uint64 statistics)
 *   T  a Date, sent as text 'YYYY-MM-DD HH:MM:SS' in local time, as PgBouncer does
 */

export const enum TypeOid {
  Int8 = 20,
  Int4 = 23,
  Text = 25,
  Numeric = 1700,
}

export type ColumnType = 's' | 'i' | 'q' | 'N' | 'T';

export interface Column {
  name: string;
  type: ColumnType;
}

/** A cell before formatting; null/undefined are SQL NULL, booleans are 1/0 as PgBouncer prints them. */
export type Cell = string | number | bigint | boolean | Date | null | undefined;

const TYPE_INFO: Record<ColumnType, { oid: TypeOid; size: number }> = {
  s: { oid: TypeOid.Text, size: -1 },
  T: { oid: TypeOid.Text, size: -1 },
  i: { oid: TypeOid.Int4, size: 4 },
  q: { oid: TypeOid.Int8, size: 8 },
  N: { oid: TypeOid.Numeric, size: -1 },
};

/**
 * Columns from a PgBouncer-style descriptor: columns('ssi', 'a', 'b', 'c').
 * Throws when the descriptor and names disagree (a programming error).
 */
export function columns(desc: string, ...names: string[]): Column[] {
  if (desc.length !== names.length) throw new Error(`column descriptor "${desc}" has ${desc.length} types for ${names.length} names`);
  return names.map((name, i) => {
    const type = desc[i] as ColumnType;
    if (!(type in TYPE_INFO)) throw new Error(`bad column type "${type}" in "${desc}"`);
    return { name, type };
  });
}

function frame(type: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

export function rowDescription(cols: readonly Column[]): Buffer {
  const parts: Buffer[] = [];
  const count = Buffer.allocUnsafe(2);
  count.writeInt16BE(cols.length);
  parts.push(count);
  for (const c of cols) {
    const info = TYPE_INFO[c.type];
    const meta = Buffer.allocUnsafe(18);
    meta.writeInt32BE(0, 0); // table OID
    meta.writeInt16BE(0, 4); // column attribute number
    meta.writeInt32BE(info.oid, 6); // type OID
    meta.writeInt16BE(info.size, 10); // type size
    meta.writeInt32BE(-1, 12); // type modifier
    meta.writeInt16BE(0, 16); // format: text
    parts.push(Buffer.from(c.name + '\0', 'utf8'), meta);
  }
  return frame('T', Buffer.concat(parts));
}

/** Local time 'YYYY-MM-DD HH:MM:SS', PgBouncer's format for connect_time/request_time. */
export function formatTime(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** The text of one cell, or null for SQL NULL. */
export function formatCell(value: Cell, type: ColumnType): string | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : formatTime(value);
  if (typeof value === 'boolean') return value ? '1' : '0';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return null;
    // Integer columns get integers, whatever arithmetic produced the value.
    return type === 's' ? String(value) : String(Math.trunc(value));
  }
  return String(value);
}

export function dataRow(values: readonly (string | null)[]): Buffer {
  const parts: Buffer[] = [];
  const count = Buffer.allocUnsafe(2);
  count.writeInt16BE(values.length);
  parts.push(count);
  for (const v of values) {
    const len = Buffer.allocUnsafe(4);
    if (v === null) {
      len.writeInt32BE(-1);
      parts.push(len);
    } else {
      const bytes = Buffer.from(v, 'utf8');
      len.writeInt32BE(bytes.length);
      parts.push(len, bytes);
    }
  }
  return frame('D', Buffer.concat(parts));
}

export function commandComplete(tag: string): Buffer {
  return frame('C', Buffer.from(tag + '\0', 'utf8'));
}

/** RowDescription + one DataRow per row + CommandComplete SHOW. Rows are cell arrays in column order. */
export function resultSet(cols: readonly Column[], rows: Iterable<readonly Cell[]>, tag = 'SHOW'): Buffer {
  const parts = [rowDescription(cols)];
  for (const row of rows) {
    if (row.length !== cols.length) throw new Error(`row has ${row.length} cells for ${cols.length} columns`);
    parts.push(dataRow(row.map((v, i) => formatCell(v, cols[i].type))));
  }
  parts.push(commandComplete(tag));
  return Buffer.concat(parts);
}
