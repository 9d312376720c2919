// GWE visitors in Debian's Chromium, for test/test_browser_cometd.py: each
// visitor is a browser context of its own (its own cookie jar, as another
// browser would have) with one page, test/browser/ui/cometd.html, whose
// CometD session runs through the balancer.  Its cookies are the browser's:
// nothing here sets or edits one.
//
//   node cometd_sessions.mjs ARTIFACTS_PREFIX [CHROMIUM FLAG...]
//
// Reads one JSON command a line on stdin and answers each with one JSON
// line on stdout, {"ok": true, ...} or {"ok": false, "error", "state"}:
//   {"cmd": "open", "visitor": V, "url": U}   a new context and its page,
//       loaded from U; answers once the page's first handshake and connect
//       succeeded: {"state": the page's gwe.state()}
//   {"cmd": "publish", "visitor": V, "count": N}   N messages, one after
//       the other: {"echoes": [{seq, node, clientId}], "state"}
//   {"cmd": "about", "visitor": V, "count": N}   N GETs of /server/about
//       from the page: {"nodes": the nodes that answered}
//   {"cmd": "wait_handshakes", "visitor": V, "count": K}   until the page
//       has had K successful handshakes and is connected again: {"state"}
//   {"cmd": "state", "visitor": V}   {"state", "cookies": the context's}
//   {"cmd": "quit"}   screenshots every page, closes the browser
// Browser flags after ARTIFACTS_PREFIX are added to chromium.mjs's.  Each
// page's console and errors go to PREFIX-V.console.log, its screenshot at
// quit (or after a failed command) to PREFIX-V.png.  CS_TIMEOUT_MS
// (default 30000) bounds each command.

import fs from 'node:fs';
import readline from 'node:readline';
import { launch } from './chromium.mjs';

const [prefix, ...extraFlags] = process.argv.slice(2);
if (!prefix) {
  process.stderr.write('usage: node cometd_sessions.mjs ARTIFACTS_PREFIX [CHROMIUM FLAG...]\n');
  process.exit(2);
}
const timeout = Number(process.env.CS_TIMEOUT_MS || 30000);
const visitors = new Map();     // name -> {context, page, console}

function answer(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function consoleLine(visitor, text) {
  visitor.console.push(`${new Date().toISOString()} ${text}`);
}

async function pageState(visitor) {
  try {
    return await visitor.page.evaluate(() => window.gwe && window.gwe.state());
  } catch (e) {
    return { unavailable: String(e) };
  }
}

// Connected with K successful handshakes: the page's status after the
// reply to a connect, not merely after sending one.
function waitConnected(visitor, count) {
  return visitor.page.waitForFunction((k) => {
    if (!window.gwe) return false;
    const s = window.gwe.state();
    return s.connected && s.handshakes.filter((h) => h.successful).length >= k;
  }, count, { timeout, polling: 100 });
}

async function open(name, url) {
  if (visitors.has(name)) throw new Error(`visitor ${name} exists`);
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await context.newPage();
  const visitor = { context, page, console: [] };
  visitors.set(name, visitor);
  page.setDefaultTimeout(timeout);
  page.on('console', (m) => consoleLine(visitor, `console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLine(visitor, `pageerror: ${e.stack || e}`));
  page.on('requestfailed', (r) => consoleLine(
    visitor, `requestfailed: ${r.method()} ${r.url()}: ${r.failure() && r.failure().errorText}`));
  page.on('websocket', (ws) => {
    consoleLine(visitor, `websocket opened: ${ws.url()}`);
    ws.on('close', () => consoleLine(visitor, `websocket closed: ${ws.url()}`));
  });
  const resp = await page.goto(url);
  if (!resp || resp.status() !== 200) {
    throw new Error(`GET ${url} -> ${resp ? resp.status() : 'no response'}`);
  }
  await waitConnected(visitor, 1);
  return { state: await pageState(visitor) };
}

function visitorOf(name) {
  const visitor = visitors.get(name);
  if (!visitor) throw new Error(`no visitor ${name}`);
  return visitor;
}

async function screenshot(name, visitor) {
  await visitor.page.screenshot({ path: `${prefix}-${name}.png`, fullPage: true });
}

function saveConsole(name, visitor) {
  fs.writeFileSync(`${prefix}-${name}.console.log`, visitor.console.map((l) => `${l}\n`).join(''));
}

async function run(cmd) {
  switch (cmd.cmd) {
    case 'open':
      return open(cmd.visitor, cmd.url);
    case 'publish': {
      const visitor = visitorOf(cmd.visitor);
      const echoes = await visitor.page.evaluate((n) => window.gwe.publish(n), cmd.count);
      return { echoes, state: await pageState(visitor) };
    }
    case 'about': {
      const visitor = visitorOf(cmd.visitor);
      return { nodes: await visitor.page.evaluate((n) => window.gwe.about(n), cmd.count) };
    }
    case 'wait_handshakes': {
      const visitor = visitorOf(cmd.visitor);
      await waitConnected(visitor, cmd.count);
      return { state: await pageState(visitor) };
    }
    case 'state': {
      const visitor = visitorOf(cmd.visitor);
      return { state: await pageState(visitor), cookies: await visitor.context.cookies() };
    }
    default:
      throw new Error(`unknown command ${cmd.cmd}`);
  }
}

async function quit() {
  for (const [name, visitor] of visitors) {
    await screenshot(name, visitor).catch((e) => consoleLine(visitor, `screenshot: ${e}`));
    saveConsole(name, visitor);
  }
  await browser.close();
}

const browser = await launch(extraFlags);
answer({ ok: true, browser_version: browser.version() });
for await (const line of readline.createInterface({ input: process.stdin })) {
  let cmd = {};
  try {
    cmd = JSON.parse(line);
    if (cmd.cmd === 'quit') break;
    answer({ ok: true, ...(await run(cmd)) });
  } catch (e) {
    const visitor = visitors.get(cmd.visitor);
    const state = visitor ? await pageState(visitor) : null;
    if (visitor) {
      await screenshot(cmd.visitor, visitor).catch(() => {});
      saveConsole(cmd.visitor, visitor);
    }
    answer({ ok: false, cmd: cmd.cmd, error: String(e && e.stack ? e.stack : e), state });
  }
}
await quit();
answer({ ok: true, quit: true });
process.exit(0);                // stdin's reader would keep node running
