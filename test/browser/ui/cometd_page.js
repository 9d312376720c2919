// A GWE page's CometD session, for test/test_browser_cometd.py: the
// official client (npm package cometd) handshakes with /server/cometd
// through the balancer, re-handshakes when a node forgets it ("402::Unknown
// client"), and echoes what it publishes on /gwe/echo: the demo node
// answers a publish with its data, its clientId and the node's name.
//
// window.gwe, for the test (through Playwright):
//   state()        what the page saw: the transport in use, its status,
//                  every handshake reply, whether the last connect since
//                  the last handshake succeeded, failures, echoes
//   publish(n)     publishes n messages one after the other, each once the
//                  last one's echo came back; resolves to the echoes
//                  [{seq, node, clientId}], rejects on the first failure
//   about(n)       n GETs of /server/about, as a GWE page's own requests
//                  to its node beside CometD; resolves to the nodes that
//                  answered
import { CometD } from './cometd/cometd.js';

const ECHO = '/gwe/echo';
const ECHO_TIMEOUT_MS = 15000;
const wanted = new URLSearchParams(location.search).get('transport') || 'websocket';

const cometd = new CometD();
const state = {
  wanted, handshakes: [], connected: false, connects: 0, failures: [], echoes: 0,
  pending: null,
};
const waiting = new Map();      // seq -> {resolve, reject, timer}
let nextSeq = 1;

function transport() {
  const t = cometd.getTransport();
  return t ? t.type : null;
}

function snapshot() {
  return {
    ...state,
    status: cometd.getStatus(),
    clientId: cometd.getClientId() || null,
    transport: transport(),
    cookie: document.cookie,
  };
}

function show() {
  const s = snapshot();
  const last = s.handshakes[s.handshakes.length - 1] || {};
  const rows = [
    ['transport', `${s.transport} (asked: ${s.wanted})`],
    ['status', s.status],
    ['connected', s.connected],
    ['clientId', s.clientId],
    ['node', last.node],
    ['handshakes', s.handshakes.length],
    ['connects', s.connects],
    ['echoes', s.echoes],
    ['failures', s.failures.map((f) => `${f.channel} ${f.error}`).join('; ')],
    ['cookie', s.cookie],
  ];
  const table = document.getElementById('state');
  table.replaceChildren(...rows.map(([name, value]) => {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    const td = document.createElement('td');
    th.textContent = name;
    td.textContent = value === undefined || value === null ? '' : String(value);
    tr.append(th, td);
    return tr;
  }));
}

function failure(message) {
  const f = message.failure || {};
  return {
    channel: message.channel,
    error: message.error || f.reason || (f.httpCode ? `HTTP ${f.httpCode}` : 'failed'),
    transport: transport(),
  };
}

cometd.addListener('/meta/handshake', (m) => {
  state.connected = false;
  state.handshakes.push({
    successful: m.successful, clientId: m.clientId || null, node: m.node || null,
    reestablish: !!m.reestablish, transport: transport(),
    error: m.successful ? null : failure(m).error,
  });
  console.log(`handshake ${m.successful ? 'ok' : 'failed'}: clientId=${m.clientId} ` +
              `node=${m.node} transport=${transport()}`);
  show();
});
cometd.addListener('/meta/connect', (m) => {
  state.connected = !!m.successful;
  if (m.successful) state.connects += 1;
  show();
});
cometd.addListener('/meta/unsuccessful', (m) => {
  state.failures.push(failure(m));
  console.log(`unsuccessful ${m.channel}: ${failure(m).error}`);
  show();
});
cometd.addListener(ECHO, (m) => {
  const w = waiting.get(m.data && m.data.seq);
  if (!w) return;
  waiting.delete(m.data.seq);
  clearTimeout(w.timer);
  state.echoes += 1;
  w.resolve({ seq: m.data.seq, node: m.node || null, clientId: m.clientId || null });
});

function publishOne() {
  const seq = nextSeq++;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      waiting.delete(seq);
      reject(new Error(`no echo of message ${seq} within ${ECHO_TIMEOUT_MS} ms`));
    }, ECHO_TIMEOUT_MS);
    waiting.set(seq, { resolve, reject, timer });
    // The callback runs for a failed publish only: a successful one is
    // answered by its echo (a message with data, which goes to listeners).
    cometd.publish(ECHO, { seq }, (reply) => {
      if (reply.successful || !waiting.has(seq)) return;
      waiting.delete(seq);
      clearTimeout(timer);
      reject(new Error(`message ${seq}: ${failure(reply).error}`));
    });
  });
}

async function publish(count) {
  const echoes = [];
  for (let i = 0; i < count; i += 1) {
    state.pending = count - i;
    echoes.push(await publishOne());
  }
  state.pending = null;
  show();
  return echoes;
}

async function about(count) {
  const nodes = [];
  for (let i = 0; i < count; i += 1) {
    const resp = await fetch('/server/about', { cache: 'no-store' });
    nodes.push(resp.ok ? (await resp.json()).node : `HTTP ${resp.status}`);
  }
  return nodes;
}

window.gwe = { state: snapshot, publish, about };

if (wanted === 'long-polling') cometd.unregisterTransport('websocket');
cometd.configure({
  url: new URL('/server/cometd', location.href).href,
  logLevel: 'info',
});
show();
cometd.handshake();
