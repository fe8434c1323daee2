/**
 * The live dashboard at / of metrics_listen: one static page (no names in it: every name arrives
 * as JSON and is put in the page as text, never as HTML), the bundled uPlot library, and
 * /api/dashboard polled once a second. Works with no internet access.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** uPlot's script and stylesheet, read from the installed package once. */
let assets: { js: string; css: string } | null = null;
export function chartAssets(): { js: string; css: string } {
  assets ??= {
    js: fs.readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8'),
    css: fs.readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8'),
  };
  return assets;
}

const STYLE = `
body{font:14px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:.8em 1.5em;display:flex;flex-wrap:wrap;gap:1.5em;align-items:baseline}
header h1{font-size:1.2em;margin:0}
header span{opacity:.85}
main{padding:1em 1.5em}
.tiles{display:flex;flex-wrap:wrap;gap:.8em;margin-bottom:1em}
.tile{background:#fff;border-radius:6px;padding:.6em 1em;min-width:9em;box-shadow:0 1px 2px #0002}
.tile b{display:block;font-size:1.5em}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:1em}
.chart{background:#fff;border-radius:6px;padding:.5em;box-shadow:0 1px 2px #0002}
.chart h2{font-size:1em;margin:.2em .4em}
section{margin-top:1.2em}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0002}
td,th{padding:.3em .7em;border-bottom:1px solid #e4e6ea;text-align:right;white-space:nowrap}
td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}
th{background:#eceef2;cursor:pointer}
tr.saturated td{background:#ffe1e1}
tr.saturated td:first-child{border-left:4px solid #d22}
tr.selected td{outline:1px solid #36c}
.bar{display:inline-block;height:.7em;background:#4a8;vertical-align:middle;margin-right:.4em}
tr.saturated .bar{background:#d22}
.controls{display:flex;gap:.8em;align-items:center;margin:.5em 0}
.reasons{display:flex;gap:1em;flex-wrap:wrap}
.reasons table{width:auto;min-width:20em}
.muted{color:#667}
`;

const SCRIPT = String.raw`
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var text = function (el, value) { el.textContent = value == null ? '' : String(value); return el; };
  var cell = function (tr, value) { var td = document.createElement('td'); text(td, value); tr.appendChild(td); return td; };
  var fmt = function (x, digits) { return x == null ? '' : Number(x).toLocaleString('en-US', { maximumFractionDigits: digits == null ? 1 : digits }); };
  var state = { sort: 'usage', search: '', limit: 50, selected: null, poolHistory: [], since: 0, points: [] };
  var charts = {};
  var CHARTS = [
    { id: 'throughput', title: 'Transactions and queries per second', series: [['xacts_per_s', 'transactions/s', '#36c'], ['queries_per_s', 'queries/s', '#4a8']] },
    { id: 'latency', title: 'Transaction and wait time (ms)', series: [['xact_avg_ms', 'transaction avg', '#36c'], ['xact_p99_ms', 'transaction p99', '#93c'], ['wait_avg_ms', 'wait avg', '#c83'], ['wait_p99_ms', 'wait p99', '#d22']] },
    { id: 'clients', title: 'Clients', series: [['clients_active', 'active', '#36c'], ['clients_waiting', 'waiting', '#d22']] },
    { id: 'servers', title: 'Servers against pool_size (all pools)', series: [['servers_active', 'active', '#36c'], ['servers_idle', 'idle', '#4a8'], ['servers_login', 'connecting', '#c83'], ['pool_size', 'pool_size', '#222']] },
    { id: 'errors', title: 'Errors, refused logins and session-token logins per second', series: [['client_errors_per_s', 'client errors/s', '#d22'], ['login_failures_per_s', 'refused logins/s', '#c83'], ['session_logins_per_s', 'session logins/s', '#4a8'], ['session_failures_per_s', 'session failures/s', '#93c']] }
  ];

  function makeChart(spec) {
    var box = $('chart-' + spec.id);
    var opts = {
      width: Math.max(300, box.clientWidth - 16), height: 200,
      series: [{}].concat(spec.series.map(function (s) { return { label: s[1], stroke: s[2], width: 2, points: { show: false } }; })),
      axes: [{}, { size: 60 }],
      scales: { x: { time: true } }
    };
    var empty = [[]].concat(spec.series.map(function () { return []; }));
    return new uPlot(opts, empty, box);
  }

  function seriesData(spec, points) {
    return [points.map(function (p) { return p.t; })].concat(spec.series.map(function (s) { return points.map(function (p) { return p[s[0]]; }); }));
  }

  function drawCharts() {
    CHARTS.forEach(function (spec) {
      var points = state.points;
      if (spec.id === 'servers' && state.selected) points = state.poolHistory;
      charts[spec.id].setData(seriesData(spec, points));
    });
    text($('servers-title'), state.selected ? 'Servers against pool_size: ' + state.selected.database + ' / ' + state.selected.user + ' (since selected; click again for all pools)' : 'Servers against pool_size (all pools)');
  }

  function duration(s) {
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + Math.floor(s % 60) + 's';
  }

  function renderInfo(info, now) {
    text($('version'), 'Tessera ' + info.version);
    text($('node'), 'Node.js ' + info.node);
    text($('uptime'), 'up ' + duration(info.uptime_seconds));
    text($('config'), info.config_file || '(no config file)');
    text($('workers'), info.workers + (info.workers === 1 ? ' process' : ' workers'));
    text($('t-xacts'), fmt(now.xacts_per_s));
    text($('t-queries'), fmt(now.queries_per_s));
    text($('t-xacts-total'), fmt(now.transactions_total, 0));
    text($('t-p99'), fmt(now.xact_p99_ms, 2));
    text($('t-wait'), fmt(now.wait_p99_ms, 2));
    text($('t-clients'), fmt(now.clients, 0) + ' / ' + fmt(now.max_client_conn, 0));
    text($('t-waiting'), fmt(now.clients_waiting, 0));
    text($('t-servers'), fmt(now.servers_active, 0) + ' / ' + fmt(now.pool_size, 0));
    text($('t-saturated'), fmt(now.saturated_pools, 0));
    text($('t-errors'), fmt(now.client_errors_total, 0));
    text($('t-refused'), fmt(now.login_failures_total, 0));
    text($('t-sessions'), fmt(now.session_logins.ok, 0) + ' ok / ' + fmt(now.session_logins.failed, 0) + ' failed');
  }

  function renderReasons(id, counts) {
    var body = $(id);
    body.replaceChildren();
    Object.keys(counts).sort(function (a, b) { return counts[b] - counts[a] || (a < b ? -1 : 1); }).forEach(function (reason) {
      var tr = document.createElement('tr');
      cell(tr, reason); cell(tr, fmt(counts[reason], 0));
      if (!counts[reason]) tr.className = 'muted';
      body.appendChild(tr);
    });
  }

  function renderPools(pools) {
    var body = $('pools-body');
    body.replaceChildren();
    pools.rows.forEach(function (p) {
      var tr = document.createElement('tr');
      tr.dataset.database = p.database;
      tr.dataset.user = p.user;
      if (p.saturated) tr.className = 'saturated';
      if (state.selected && state.selected.database === p.database && state.selected.user === p.user) tr.className += ' selected';
      cell(tr, p.database);
      cell(tr, p.user);
      cell(tr, p.mode);
      var usage = cell(tr, '');
      var bar = document.createElement('span');
      bar.className = 'bar';
      bar.style.width = Math.min(100, Math.round(p.usage * 100)) / 2 + 'px';
      usage.appendChild(bar);
      usage.appendChild(document.createTextNode(p.servers_active + ' / ' + p.pool_size + (p.reserve_size ? ' (+' + p.reserve_size + ')' : '')));
      cell(tr, p.servers_idle);
      cell(tr, p.servers_login);
      cell(tr, p.clients_active);
      cell(tr, p.clients_waiting);
      cell(tr, fmt(p.max_wait_seconds, 2));
      cell(tr, fmt(p.xacts_per_s));
      cell(tr, fmt(p.transactions, 0));
      tr.addEventListener('click', function () {
        var same = state.selected && state.selected.database === p.database && state.selected.user === p.user;
        state.selected = same ? null : { database: p.database, user: p.user };
        state.poolHistory = [];
        drawCharts();
      });
      body.appendChild(tr);
      if (state.selected && state.selected.database === p.database && state.selected.user === p.user) {
        state.poolHistory.push({ t: Date.now() / 1000, servers_active: p.servers_active, servers_idle: p.servers_idle, servers_login: p.servers_login, pool_size: p.pool_size });
        if (state.poolHistory.length > 300) state.poolHistory.shift();
      }
    });
    text($('pools-count'), 'showing ' + pools.rows.length + ' of ' + pools.matched + (pools.matched !== pools.total ? ' matching (' + pools.total + ' pools)' : ' pools'));
  }

  function refresh() {
    var q = new URLSearchParams({ since: String(state.since), sort: state.sort, search: state.search, limit: String(state.limit) });
    if (state.selected) { q.set('pool_database', state.selected.database); q.set('pool_user', state.selected.user); }
    return fetch('api/dashboard?' + q.toString(), { cache: 'no-store' }).then(function (r) { return r.json(); }).then(function (d) {
      state.points = state.points.concat(d.points).slice(-300);
      if (d.points.length) state.since = d.points[d.points.length - 1].t;
      renderInfo(d.info, d.now);
      renderReasons('login-failures', d.now.login_failures);
      renderReasons('client-errors', d.now.client_errors);
      renderPools(d.pools);
      drawCharts();
      text($('status'), 'updated ' + new Date().toLocaleTimeString());
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    }).catch(function (err) { text($('status'), 'cannot reach Tessera: ' + err.message); });
  }

  CHARTS.forEach(function (spec) { charts[spec.id] = makeChart(spec); });
  $('search').addEventListener('input', function (e) { state.search = e.target.value; refresh(); });
  $('sort').addEventListener('change', function (e) { state.sort = e.target.value; refresh(); });
  $('limit').addEventListener('change', function (e) { state.limit = Number(e.target.value); refresh(); });
  document.querySelectorAll('th[data-sort]').forEach(function (th) {
    th.addEventListener('click', function () { state.sort = th.dataset.sort; $('sort').value = state.sort; refresh(); });
  });
  refresh();
  setInterval(refresh, 1000);
})();
`;

const tile = (id: string, label: string) => `<div class="tile"><span>${label}</span><b id="${id}">–</b></div>`;
const chart = (id: string, title: string) => `<div class="chart"><h2${id === 'servers' ? ' id="servers-title"' : ''}>${title}</h2><div id="chart-${id}"></div></div>`;

/** The page itself: fixed text only (names come later, as text nodes). */
export function dashboardPage(): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tessera</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="assets/uPlot.min.css"><style>${STYLE}</style></head>
<body>
<header><h1>Tessera</h1><span id="version"></span><span id="node"></span><span id="uptime"></span><span id="workers"></span><span>config: <span id="config"></span></span><span id="status" class="muted"></span></header>
<main>
<div class="tiles">
${tile('t-xacts', 'transactions/s')}${tile('t-queries', 'queries/s')}${tile('t-xacts-total', 'transactions')}${tile('t-p99', 'transaction p99 ms')}${tile('t-wait', 'wait p99 ms')}
${tile('t-clients', 'clients / max_client_conn')}${tile('t-waiting', 'clients waiting')}${tile('t-servers', 'servers active / pool_size')}${tile('t-saturated', 'saturated pools')}
${tile('t-errors', 'client errors')}${tile('t-refused', 'refused logins')}${tile('t-sessions', 'session-token logins')}
</div>
<div class="charts">
${chart('throughput', 'Transactions and queries per second')}${chart('latency', 'Transaction and wait time (ms)')}${chart('clients', 'Clients')}${chart('servers', 'Servers against pool_size (all pools)')}${chart('errors', 'Errors, refused logins and session-token logins per second')}
</div>
<section><h2>Pools</h2>
<div class="controls"><input id="search" type="search" placeholder="search database or user" aria-label="search pools">
<label>sort <select id="sort"><option value="usage">usage (saturated first)</option><option value="waiting">clients waiting</option><option value="clients">clients</option><option value="xacts">transactions/s</option><option value="name">name</option></select></label>
<label>show <select id="limit"><option>20</option><option selected>50</option><option>200</option><option>1000</option></select></label>
<span id="pools-count" class="muted"></span></div>
<table id="pools"><thead><tr><th data-sort="name">database</th><th data-sort="name">user</th><th>mode</th><th data-sort="usage">servers active / pool_size</th><th>idle</th><th>connecting</th><th data-sort="clients">clients</th><th data-sort="waiting">waiting</th><th data-sort="waiting">max wait s</th><th data-sort="xacts">transactions/s</th><th>transactions</th></tr></thead>
<tbody id="pools-body"></tbody></table></section>
<section class="reasons"><div><h2>Refused logins by reason</h2><table><tbody id="login-failures"></tbody></table></div>
<div><h2>Client errors by reason</h2><table><tbody id="client-errors"></tbody></table></div></section>
<p class="muted">Prometheus: <a href="metrics">/metrics</a> · health: <a href="healthz">/healthz</a> <a href="readyz">/readyz</a></p>
</main>
<script src="assets/uPlot.iife.min.js"></script>
<script>${SCRIPT}</script>
</body></html>`;
}
