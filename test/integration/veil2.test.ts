// Veil2's shared sessions through Tessera, against test/support/veil2-shaped.sql (Veil2's
// signatures, nonce rules and backend state that survives DISCARD; see that file): the three
// credential forms, two users alternating over one backend, the DISCARD leak, transaction mode
// refused at load, KILL_SESSION's answer, and what Tessera says when the session SQL fails.
// Each with the "veil2" preset and with the explicit configuration README showed before it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import postgres from 'postgres';
import { PG_BIN, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, run, until, capturedLogs, type RunningTessera } from '../support/tessera.js';
import { psqlFile } from '../support/sql.js';
import { errorOf } from '../support/config-error.js';
import { parseConfig } from '../../src/config/load.js';
import { SessionCredentials, authentToken } from '../../src/client/index.js';

const DB = 'tessera_veil2_test';
const POOL = { user: 'demouser', password: 'pass' };
const PASSWORDS = { Bob: 'passwd2', Carol: 'passwd3' } as const;
const CORPS = { Bob: 1010, Carol: 1020 } as const;
/** What each sees of demo.parties (the rows of their own corp). */
const ROWS = { Bob: 13, Carol: 9 } as const;
type Who = keyof typeof PASSWORDS;

/** The two ways to configure Veil2: the preset, and the session SQL spelled out. */
const CONFIGS: Record<string, Record<string, unknown>> = {
  preset: { preset: 'veil2' },
  explicit: {
    open_connection: 'select success, errmsg from veil2.open_connection($1::bigint, $2::integer, $3::text)',
    close_connection: 'select veil2.close_connection()',
  },
};

let cluster: Cluster;

async function createSession(who: Who): Promise<{ id: string; token: string }> {
  const c = new pg.Client({ host: cluster.host, port: cluster.port, database: DB, ...POOL });
  await c.connect();
  try {
    const { rows } = await c.query('select session_id, session_token from veil2.create_session($1, $2, 4, $3)', [who, 'plaintext', CORPS[who]]);
    return { id: rows[0].session_id, token: rows[0].session_token };
  } finally {
    await c.end();
  }
}

/** A session of `who`, authenticated through Tessera with the password (nonce 1); tokens from nonce 2. */
async function login(t: RunningTessera, who: Who): Promise<{ id: string; token: string; creds: SessionCredentials }> {
  const s = await createSession(who);
  const first = await connect(via(t, `${s.id}:1:${PASSWORDS[who]}`));
  assert.is(await parties(first), ROWS[who]);
  await first.end();
  return { id: s.id, token: s.token, creds: new SessionCredentials(s.id, s.token, { firstNonce: 2 }) };
}

function via(t: RunningTessera, password?: string, extra: pg.ClientConfig = {}): pg.ClientConfig {
  return { host: '127.0.0.1', port: t.port, database: 'vpd', user: 'web', password, ...extra };
}

const parties = async (c: pg.Client): Promise<number> => (await c.query('select count(*)::int as n from demo.parties')).rows[0].n;
const backendPid = async (c: pg.Client): Promise<number> => (await c.query('select pg_backend_pid() as p')).rows[0].p;

function tessera(sessionTokens: Record<string, unknown>, entry: Record<string, unknown> = {}): Promise<RunningTessera> {
  return startTessera({
    session_tokens: { max_failures: 1000, ...sessionTokens },
    databases: { vpd: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', ...POOL, pool_size: 1, ...entry }) },
  });
}

test.before(async () => {
  cluster = await sharedCluster();
  await cluster.query(`drop database if exists ${DB} with (force)`);
  await cluster.query(`create database ${DB}`);
  await psqlFile(cluster, DB, 'test/support/veil2-shaped.sql');
});

test.after(async () => {
  await cluster.query(`drop database if exists ${DB} with (force)`).catch(() => {});
  await cluster.query('drop role if exists veil2_outsider').catch(() => {});
});

for (const [name, sessionTokens] of Object.entries(CONFIGS)) {
  test(`${name}: the three credential forms log in, and Veil2's nonce rules hold`, async () => {
    const t = await tessera(sessionTokens);
    try {
      const { creds, token } = await login(t, 'Bob'); // the password form, nonce 1
      const viaPassword = await connect(via(t, creds.asPassword()));
      assert.is(await parties(viaPassword), ROWS.Bob);
      await viaPassword.end();
      const viaOptions = await connect(via(t, undefined, { options: creds.asOptions() }));
      assert.is(await parties(viaOptions), ROWS.Bob);
      await viaOptions.end();
      // Raw startup parameters (postgres.js sends its `connection` entries as such).
      const sql = postgres({ host: '127.0.0.1', port: t.port, database: 'vpd', username: 'web', connection: creds.asStartupParams(), max: 1, onnotice: () => {} });
      try {
        assert.is((await sql`select count(*)::int as n from demo.parties`)[0].n, ROWS.Bob);
      } finally {
        await sql.end();
      }
      // A nonce already used (with its right token: a replay), one below the lowest and one
      // beyond the highest + 64: NONCEFAIL, as Veil2 answers.
      const next = creds.next();
      for (const nonce of [2, 0, next.nonce + 200]) {
        const err = await rejection(connect(via(t, `${next.sessionId}:${nonce}:${authentToken(token, nonce)}`)));
        assert.is(err.code, '28P01');
        assert.match(err.message, 'NONCEFAIL');
      }
      // A wrong token: AUTHFAIL.
      const wrong = await rejection(connect(via(t, `${next.sessionId}:${next.nonce}:not-the-token`)));
      assert.match(wrong.message, 'AUTHFAIL');
    } finally {
      await t.stop();
    }
  });

  test(`${name}: Bob and Carol alternate over pool_size 1, each seeing only their own rows`, async () => {
    const t = await tessera(sessionTokens);
    try {
      const bob = await login(t, 'Bob');
      const carol = await login(t, 'Carol');
      const pids = new Set<number>();
      for (let round = 0; round < 3; round++) {
        for (const [who, s] of [['Bob', bob], ['Carol', carol]] as const) {
          const c = await connect(via(t, s.creds.asPassword()));
          assert.is(await parties(c), ROWS[who], `${who}, round ${round}`);
          pids.add(await backendPid(c));
          await c.end();
        }
      }
      assert.is(pids.size, 1, 'one backend served them all, reused after each release');
    } finally {
      await t.stop();
    }
  });

  for (const statement of ['discard all', 'discard temp', `do $$ begin execute 'discard temp'; end $$`]) {
    test(`${name}: Bob runs ${statement.split(' ')[0] === 'do' ? 'DISCARD TEMP inside a DO block' : statement.toUpperCase()} and leaves; Carol on the next login sees her rows only`, async () => {
      const t = await tessera(sessionTokens);
      try {
        const bob = await login(t, 'Bob');
        const carol = await login(t, 'Carol');
        const b = await connect(via(t, bob.creds.asPassword()));
        assert.is(await parties(b), ROWS.Bob);
        const bobsBackend = await backendPid(b);
        await b.query(statement);
        await b.end();
        const c = await connect(via(t, carol.creds.asPassword()));
        assert.is(await parties(c), ROWS.Carol, 'none of Bob\'s privileges reached Carol');
        assert.is.not(await backendPid(c), bobsBackend, 'Bob\'s backend was closed, not reused');
        await c.end();
      } finally {
        await t.stop();
      }
    });
  }
}

test('preset: the reset keeps Veil2\'s temp table across logins and still drops the client\'s temp objects', async () => {
  const t = await tessera({ preset: 'veil2' });
  try {
    const bob = await login(t, 'Bob');
    const carol = await login(t, 'Carol');
    const b = await connect(via(t, bob.creds.asPassword()));
    const tableOf = async (c: pg.Client) => (await c.query(`select 'veil2_ancestor_privileges'::regclass::oid::int as o`)).rows[0].o;
    const kept = await tableOf(b);
    await b.query('create temp table bobs_notes (x int); create temp view bobs_view as select 1; create function pg_temp.bobs_fn() returns int language sql as $$ select 1 $$');
    await b.end();
    const c = await connect(via(t, carol.creds.asPassword()));
    assert.is(await tableOf(c), kept, 'the same temp table: no catalog writes per login');
    const { rows } = await c.query(`select to_regclass('pg_temp.bobs_notes') as t, to_regclass('pg_temp.bobs_view') as v, (select count(*)::int from pg_proc where proname = 'bobs_fn') as f`);
    assert.equal(rows[0], { t: null, v: null, f: 0 });
    assert.is(await parties(c), ROWS.Carol);
    await c.end();
  } finally {
    await t.stop();
  }
});

test('explicit configuration: a client calling into veil2 itself has its backend closed when it leaves', async () => {
  const t = await tessera(CONFIGS.explicit);
  try {
    const bob = await login(t, 'Bob');
    const b = await connect(via(t, bob.creds.asPassword()));
    const before = await backendPid(b);
    await b.query('select count(*) from veil2.session_privileges()');
    await b.end();
    const again = await connect(via(t, bob.creds.asPassword()));
    assert.is.not(await backendPid(again), before);
    await again.end();
    assert.ok(capturedLogs.some((l) => l.includes('server closed instead of reused') && l.includes('a call into schema veil2')));
  } finally {
    await t.stop();
  }
});

test('transaction mode is refused at load, naming the key, before any nonce is spent', async () => {
  const entry = (extra: Record<string, unknown>) => ({ host: '127.0.0.1', dbname: DB, auth_type: 'session_token', user: 'demouser', ...extra });
  const preset = errorOf(() => parseConfig({ auth_type: 'trust', session_tokens: { preset: 'veil2' }, databases: { vpd: entry({ pool_mode: 'transaction' }) } }, 'proxy.config.json', '/tmp'));
  assert.is(preset, 'proxy.config.json: databases.vpd.pool_mode: must be "session": transaction mode re-binds each backend with a ticket, and the session SQL has none (Veil2 has no tickets)');
  const global = errorOf(() => parseConfig({ auth_type: 'trust', pool_mode: 'transaction', session_tokens: CONFIGS.explicit, databases: { vpd: entry({}) } }, 'proxy.config.json', '/tmp'));
  assert.match(global, /^proxy\.config\.json: pool_mode: must be "session": .*\(set session_tokens\.issue_ticket, redeem_ticket and revoke_tickets\)$/);
  const role = errorOf(() => parseConfig({ auth_type: 'trust', session_tokens: { preset: 'veil2' }, users: { demouser: { pool_mode: 'transaction' } }, databases: { vpd: entry({}) } }, 'f', '/tmp'));
  assert.match(role, /^f: users\.demouser\.pool_mode: must be "session"/);
  // Nothing was asked of the database: Bob's first nonce is still good.
  const t = await tessera({ preset: 'veil2' });
  try {
    await login(t, 'Bob');
  } finally {
    await t.stop();
  }
});

for (const [name, sessionTokens] of Object.entries(CONFIGS)) {
test(`${name}: KILL_SESSION disconnects Bob's clients, and the console says the session lives on`, async () => {
  const t = await startTessera(
    {
      auth_type: 'plain',
      admin_users: 'admin',
      session_tokens: { ...sessionTokens, max_failures: 1000 },
      databases: { vpd: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', ...POOL }) },
    },
    '"admin" "admin-pass"\n',
  );
  try {
    const bob = await login(t, 'Bob');
    const b = await connect(via(t, bob.creds.asPassword()));
    const gone = new Promise<Error>((resolve) => b.once('error', resolve));
    const admin = await connect({ host: '127.0.0.1', port: t.port, user: 'admin', password: 'admin-pass', database: 'pgbouncer' });
    const err = (await rejection(admin.query(`KILL_SESSION ${bob.id}`))) as Error & { code?: string; hint?: string };
    assert.is(err.code, '0A000');
    const why = name === 'preset' ? 'Veil2 has no function that ends a session' : 'session_tokens.kill_session is empty';
    assert.is(err.message, `KILL_SESSION disconnected 1 client(s) but could not end the session: ${why}, so it lives on until it expires`);
    assert.match(err.hint ?? '', name === 'preset' ? 'update veil2.sessions set expires = now()' : 'Set session_tokens.kill_session');
    assert.match(String((await gone).message), 'KILL_SESSION');
    await admin.end();
    // As said: the session still opens connections.
    const again = await connect(via(t, bob.creds.asPassword()));
    assert.is(await parties(again), ROWS.Bob);
    await again.end();
  } finally {
    await t.stop();
  }
});
}

test('a session SQL error: Tessera logs PostgreSQL\'s message and SQLSTATE, never a bound value; the client gets a clear FATAL', async () => {
  // The token cast to integer: PostgreSQL's message quotes the value it could not read.
  const t = await tessera({ open_connection: 'select success, errmsg from veil2.open_connection($1::bigint, $2::integer, $3::integer::text)' });
  try {
    const s = await createSession('Bob');
    const secret = 'passwd2-secret-value';
    const err = await rejection(connect(via(t, `${s.id}:1:${secret}`)));
    assert.is(err.code, '28000');
    assert.is(err.message, 'session login failed: session_tokens.open_connection raised SQLSTATE 22P02 (the server\'s message is in Tessera\'s log)');
    const line = await until('the log line', async () => capturedLogs.find((l) => l.includes('session_tokens.open_connection failed on the server') && l.includes('22P02')));
    assert.match(line, 'invalid input syntax for type integer');
    assert.not.match(line, secret);
    assert.ok(!capturedLogs.some((l) => l.includes(secret)), 'the value is in no log line');
  } finally {
    await t.stop();
  }
});

test('start-up: a pool role that cannot call Veil2\'s functions is named in a warning', async () => {
  await cluster.query('drop role if exists veil2_outsider');
  await cluster.query(`create role veil2_outsider login password 'outsider'`);
  const t = await startTessera({
    session_tokens: { preset: 'veil2' },
    databases: { vpd: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: 'veil2_outsider', password: 'outsider' }) },
  });
  try {
    const line = await until('the warning', async () => capturedLogs.find((l) => l.includes('cannot execute the session functions') && l.includes('veil2_outsider')));
    assert.match(line, 'veil2.open_connection(bigint,integer,text)');
    assert.match(line, 'grant veil_user to veil2_outsider');
  } finally {
    await t.stop();
  }
});

if (PG_BIN) {
  test('psql: PGPASSWORD and PGOPTIONS forms with the preset', async () => {
    const t = await tessera({ preset: 'veil2' });
    try {
      const { creds } = await login(t, 'Carol');
      const args = ['-X', '-At', '-h', '127.0.0.1', '-p', String(t.port), '-U', 'web', '-d', 'vpd', '-c', 'select count(*) from demo.parties'];
      const viaPassword = await run(`${PG_BIN}/psql`, args, { env: { PGPASSWORD: creds.asPassword() } });
      assert.is(viaPassword.stdout.trim(), String(ROWS.Carol), viaPassword.stderr);
      const viaOptions = await run(`${PG_BIN}/psql`, args, { env: { PGOPTIONS: creds.asOptions(), PGPASSWORD: '' } });
      assert.is(viaOptions.stdout.trim(), String(ROWS.Carol), viaOptions.stderr);
    } finally {
      await t.stop();
    }
  });
} else {
  test.skip('psql: PGPASSWORD and PGOPTIONS forms with the preset (psql not installed)', () => {});
}

test.run();
