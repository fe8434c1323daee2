// The Debian drivers against transaction mode with fewer backends than connections (issue 15):
// their own setup SETs (pgjdbc's extra_float_digits, ...) and the application's SETs follow each
// connection instead of pinning it. A driver that is not installed is skipped, and says so.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, run, type RunningTessera } from '../support/tessera.js';
import { needing, tool } from '../support/tools.js';

let cluster: Cluster;
let t: RunningTessera;
const user = ROLES.trust.user;
let dir = '';

test.before(async () => {
  cluster = await sharedCluster();
  // Two backends for four or five connections; a pinned connection would fail after 3 s.
  t = await startTessera({ pool_mode: 'transaction', default_pool_size: 2, query_wait_timeout: 3, databases: { '*': clusterEntry(cluster) } });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-drivers-'));
});

test.after(async () => {
  await t?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs a script file with `cmd`; its stdout, trimmed, one line per result. */
async function script(cmd: string, args: string[], name: string, body: string): Promise<string[]> {
  const file = path.join(dir, name);
  fs.writeFileSync(file, body);
  const r = await run(cmd, [...args, file], { timeoutMs: 120000 });
  assert.is(r.code, 0, `${cmd} failed:\n${r.stderr}\n${r.stdout}`);
  return r.stdout.trim().split('\n');
}

// Each connection i: startup application_name drv-i, options -c statement_timeout=(1100+i);
// SET work_mem to (i+1)MB; then rounds in which every connection reads its own values back;
// then RESET ALL returns it to its startup values.
const pythonBody = (driver: 'psycopg2' | 'psycopg') => `
import ${driver} as drv
conns = []
for i in range(4):
    c = drv.connect(host='127.0.0.1', port=${'${PORT}'}, user='${user}', dbname='${TEST_DB}', application_name='drv-%d' % i, options='-c statement_timeout=%d' % (1100 + i))
    c.autocommit = True
    conns.append(c)
for i, c in enumerate(conns):
    c.cursor().execute("set work_mem = '%dMB'" % (i + 1))
bad = 0
for r in range(20):
    for i, c in enumerate(conns):
        cur = c.cursor()
        cur.execute("select current_setting('application_name'), current_setting('statement_timeout'), current_setting('work_mem')")
        if cur.fetchone() != ('drv-%d' % i, '%dms' % (1100 + i), '%dMB' % (i + 1)):
            bad += 1
print('mismatches', bad)
for i, c in enumerate(conns):
    cur = c.cursor()
    cur.execute("set statement_timeout = 5; reset all")
    cur.execute("select current_setting('statement_timeout'), current_setting('work_mem')")
    print(*cur.fetchone())
`;

for (const driver of ['psycopg2', 'psycopg'] as const) {
  needing(`python3:${driver}`)(`${driver}: 4 connections over 2 backends keep their own startup values and SETs; RESET ALL returns to them`, async () => {
    const out = await script(tool(`python3:${driver}`), [], `${driver}_test.py`, pythonBody(driver).replace('${PORT}', String(t.port)));
    assert.equal(out, ['mismatches 0', '1100ms 4MB', '1101ms 4MB', '1102ms 4MB', '1103ms 4MB']);
  });
}

const javaBody = () => `
import java.sql.*;
import java.util.*;
public class Main {
  public static void main(String[] args) throws Exception {
    List<Connection> conns = new ArrayList<>();
    for (int i = 0; i < 5; i++) {
      Properties p = new Properties();
      p.setProperty("user", "${user}");
      p.setProperty("ApplicationName", "jdbc-" + i);
      p.setProperty("sslmode", "disable");
      conns.add(DriverManager.getConnection("jdbc:postgresql://127.0.0.1:${t.port}/${TEST_DB}", p));
    }
    int bad = 0;
    for (int r = 0; r < 20; r++) {
      for (int i = 0; i < conns.size(); i++) {
        try (PreparedStatement ps = conns.get(i).prepareStatement("select current_setting('application_name'), current_setting('extra_float_digits'), ?::int + 1")) {
          ps.setInt(1, r);
          try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            if (!rs.getString(1).equals("jdbc-" + i) || !rs.getString(2).equals("3") || rs.getInt(3) != r + 1) bad++;
          }
        }
      }
    }
    System.out.println("mismatches " + bad);
    for (Connection c : conns) c.close();
  }
}
`;

needing('java', 'pgjdbc')('pgjdbc: 5 connections over 2 backends all work (its SET extra_float_digits = 3 no longer pins)', async () => {
  const out = await script(tool('java'), ['-cp', tool('pgjdbc')], 'Main.java', javaBody());
  assert.equal(out, ['mismatches 0']);
});

const rubyBody = () => `
require 'pg'
conns = (0...4).map { |i| PG.connect(host: '127.0.0.1', port: ${t.port}, user: '${user}', dbname: '${TEST_DB}', application_name: "rb-#{i}") }
conns.each_with_index { |c, i| c.exec("set search_path = pg_catalog, s#{i}") }
bad = 0
20.times do
  conns.each_with_index do |c, i|
    row = c.exec("select current_setting('application_name') a, current_setting('search_path') s").first
    bad += 1 unless row['a'] == "rb-#{i}" && row['s'] == "pg_catalog, s#{i}"
  end
end
puts "mismatches #{bad}"
conns.each { |c| c.exec('reset search_path'); puts c.exec("select current_setting('search_path') s").first['s'] }
`;

needing('ruby-pg')('ruby-pg: 4 connections over 2 backends keep their own SET search_path; RESET returns the default', async () => {
  const out = await script(tool('ruby-pg'), [], 'test.rb', rubyBody());
  assert.equal(out, ['mismatches 0', ...Array(4).fill('"$user", public')]);
});

test.run();
