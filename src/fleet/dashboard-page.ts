/** The dashboard's page and script: static text, filled in the browser from /events (server-sent events). */

export const PAGE_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vhdcrypt fleet</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; } td, th { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left; }
progress { width: 220px; } .code { font-family: monospace; color: #b00020; } #conn { color: #888; }
</style></head>
<body>
<h1>vhdcrypt fleet: <span id="queue"></span> <small id="conn">connecting</small></h1>
<h2>Jobs by state</h2><table id="counts"></table>
<h2>Throughput</h2><div id="rate"></div><svg id="chart" width="600" height="120" viewBox="0 0 600 120" role="img" aria-label="bytes per second over time"></svg>
<h2>Running</h2><table id="running"><thead><tr><th>job</th><th>operation</th><th>progress</th><th>MB/s</th><th>worker</th><th>destination</th></tr></thead><tbody></tbody></table>
<h2>Failures</h2><table id="failed"><thead><tr><th>job</th><th>code</th><th>message</th><th>attempts</th><th>source</th></tr></thead><tbody></tbody></table>
<script src="/app.js"></script>
</body></html>
`;

export const APP_JS = `'use strict';
const $ = (id) => document.getElementById(id);
const cell = (tr, text, cls) => { const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; };
const mb = (b) => (b / 1e6).toFixed(1);
function render(s) {
  $('queue').textContent = s.status.queue;
  const counts = $('counts'); counts.replaceChildren();
  for (const [state, n] of Object.entries(s.status.counts)) { const tr = document.createElement('tr'); tr.dataset.state = state; cell(tr, state); cell(tr, String(n), 'n'); counts.appendChild(tr); }
  const eta = s.status.etaSeconds === null ? '' : ', ETA ' + Math.ceil(s.status.etaSeconds) + ' s';
  $('rate').textContent = mb(s.status.bytesPerSecond) + ' MB/s, ' + mb(s.status.bytesRemaining) + ' MB left' + eta;
  const run = $('running').tBodies[0]; run.replaceChildren();
  for (const j of s.status.running) {
    const tr = document.createElement('tr'); tr.dataset.jobId = j.id;
    cell(tr, j.id); cell(tr, j.operation);
    const td = cell(tr, ''); const p = document.createElement('progress'); p.max = Math.max(j.bytesTotal, 1); p.value = j.bytesDone; td.appendChild(p);
    td.appendChild(document.createTextNode(' ' + (j.bytesTotal ? Math.floor((100 * j.bytesDone) / j.bytesTotal) : 0) + '%'));
    cell(tr, mb(j.rate)); cell(tr, j.worker || ''); cell(tr, j.destination); run.appendChild(tr);
  }
  const failed = $('failed').tBodies[0]; failed.replaceChildren();
  for (const j of s.status.failed) {
    const tr = document.createElement('tr'); tr.dataset.jobId = j.id;
    cell(tr, j.id); cell(tr, j.code, 'code'); cell(tr, j.message); cell(tr, String(j.attempts)); cell(tr, j.source); failed.appendChild(tr);
  }
  const h = s.history, svg = $('chart');
  const max = Math.max(1, ...h.map((x) => x.bytesPerSecond));
  const pts = h.map((x, i) => (i * 600) / Math.max(1, h.length - 1) + ',' + (118 - (x.bytesPerSecond / max) * 110)).join(' ');
  svg.replaceChildren();
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', pts); line.setAttribute('fill', 'none'); line.setAttribute('stroke', '#1565c0'); line.setAttribute('stroke-width', '2');
  svg.appendChild(line);
}
const es = new EventSource('/events');
es.onopen = () => { $('conn').textContent = 'live'; };
es.onerror = () => { $('conn').textContent = 'reconnecting'; };
es.onmessage = (e) => render(JSON.parse(e.data));
`;
