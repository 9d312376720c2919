// Drives httpd's balancer-manager in a real browser, as an admin would:
// Debian's Chromium (/usr/bin/chromium, never a downloaded build) under
// playwright-core.  test/test_browser.py runs it and then checks from the
// outside (HTTP requests through the balancer) that what it did took effect.
//
//   node balancer_manager.mjs BASE_URL BALANCER MEMBER_URL SCREENSHOT [ACTION]
//
//   BASE_URL    http://127.0.0.1:PORT (the manager is BASE_URL/balancer-manager)
//   BALANCER    the balancer's name without balancer://, e.g. gwe
//   MEMBER_URL  the member to act on, as the manager lists it,
//               e.g. http://127.0.0.1:9081/server
//   SCREENSHOT  where to write a PNG of the manager page at the end
//   ACTION      drain (default: ticks Drain, w_status_N) or disable
//               (ticks Disabled, w_status_D)
//
// Steps; after the first page load, only through the pages' own links and
// forms, as an admin clicks them (so every request carries the page's nonce
// and the Referer the browser sends):
//   1. open BASE_URL/balancer-manager (typed, as in the address bar: httpd
//      logs AH10187 "cross-site access (null)" for a request without a
//      Referer, even one without parameters), read the balancer's Method;
//   2. follow the balancer's link to its edit form, read <select b_lbm>
//      (its options and the selected one);
//   3. select byrequests, submit, reopen the form and read the Method column
//      and the selected option back; the same with gwesticky;
//   4. follow the member's link to its edit form, tick ACTION's "On" radio,
//      submit;
//   5. reopen the member's page: read its Status column and radio back,
//      take a full-page screenshot.
//
// Prints one JSON object on stdout: {"ok": true, ...what it read...}, or
// {"ok": false, "step", "error", ...} (exit status 1).  Every POST the page
// sent is listed with its Referer and body size: httpd 2.4.71 drops the
// parameters unless the Referer's host is the request's server name
// (AH10187), and reads at most 1024 bytes of the body.
//
// Environment: CHROMIUM (default /usr/bin/chromium), BM_TIMEOUT_MS
// (default 15000, per action), BM_PAUSE (if set: after each lbmethod
// switch, print "PAUSED lbmethod=NAME" on stderr and wait for a line on
// stdin, for the caller to check the server meanwhile).

import readline from 'node:readline';
import { launch } from './chromium.mjs';

const ACTIONS = {
  drain: { radio: 'w_status_N', flag: 'Drn' },
  disable: { radio: 'w_status_D', flag: 'Dis' },
};

function usage(msg) {
  process.stderr.write(`${msg}\nusage: node balancer_manager.mjs BASE_URL BALANCER ` +
                       `MEMBER_URL SCREENSHOT [drain|disable]\n`);
  process.exit(2);
}

const [baseArg, balancer, member, screenshot, actionArg = 'drain'] =
  process.argv.slice(2);
if (!baseArg || !balancer || !member || !screenshot) usage('missing arguments');
const action = ACTIONS[actionArg];
if (!action) usage(`unknown action ${actionArg}`);
const base = baseArg.replace(/\/+$/, '');
const managerUrl = `${base}/balancer-manager`;
const timeout = Number(process.env.BM_TIMEOUT_MS || 15000);

const result = {
  ok: false, manager: managerUrl, balancer, member, action: actionArg,
  screenshot, steps: [], posts: [], http_errors: [],
};
let step = 'launch';

// The balancer's row on the manager page: {method, ...} read from the table
// after its "LoadBalancer Status for balancer://NAME" heading, and its
// members' rows {url: {route, status, ...}} from the table after that.
async function readBalancer(page) {
  return page.evaluate((name) => {
    const link = [...document.querySelectorAll('h3 a')]
      .find((a) => a.textContent.trim() === `balancer://${name}`);
    if (!link) return null;
    const tables = [];
    for (let el = link.closest('h3').nextElementSibling;
      el && el.tagName !== 'H3' && tables.length < 2; el = el.nextElementSibling) {
      if (el.tagName === 'TABLE') tables.push(el);
    }
    const rows = (table) => {
      const trs = [...table.querySelectorAll('tr')];
      const head = [...trs[0].querySelectorAll('th')].map((th) => th.textContent.trim());
      return trs.slice(1).map((tr) => Object.fromEntries(
        [...tr.querySelectorAll('td')].map((td, i) => [head[i], td.textContent.trim()])));
    };
    const info = tables[0] ? rows(tables[0])[0] : {};
    const members = {};
    for (const row of tables[1] ? rows(tables[1]) : []) members[row['Worker URL']] = row;
    return { method: info.Method, info, members };
  }, balancer);
}

async function mustReadBalancer(page) {
  const b = await readBalancer(page);
  if (!b) throw new Error(`balancer://${balancer} is not on the page ${page.url()}`);
  return b;
}

// Follow a link and wait for the page it loads.
async function follow(page, locator) {
  await Promise.all([page.waitForNavigation(), locator.click()]);
}

// Click the Submit button of the form holding `field`, and wait for the page.
async function submitFormOf(page, field) {
  const form = page.locator('form').filter({ has: page.locator(`[name="${field}"]`) });
  await Promise.all([
    page.waitForNavigation(),
    form.locator('input[type="submit"]').click(),
  ]);
}

// Every manager page links the balancer (?b=NAME&nonce=...) and its members
// (?b=NAME&w=URL&nonce=...): follow those, as an admin clicks them, so that
// each request carries the page's nonce and a Referer.
const balancerLink = (page) =>
  page.getByRole('link', { name: `balancer://${balancer}`, exact: true });
const memberLink = (page) =>
  page.getByRole('link', { name: member, exact: true })
    .and(page.locator(`a[href*="b=${balancer}&w="]`));

// Open the balancer's edit form; return its <select b_lbm> (options and the
// one selected) and the Method column of the page it is on.
async function balancerEditForm(page) {
  await follow(page, balancerLink(page));
  const select = page.locator('select[name="b_lbm"]');
  await select.waitFor();
  const form = await select.evaluate((s) => ({
    options: [...s.options].map((o) => o.value),
    selected: s.options[s.selectedIndex] ? s.options[s.selectedIndex].value : null,
  }));
  form.method = (await mustReadBalancer(page)).method;
  return form;
}

// With BM_PAUSE set: say "PAUSED label" on stderr and wait for a line on
// stdin, so that the caller can look at the server in this state.
let stdinLines = null;
async function pause(label) {
  if (!process.env.BM_PAUSE) return;
  if (!stdinLines) {
    stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  }
  process.stderr.write(`PAUSED ${label}\n`);
  const { done } = await stdinLines.next();
  if (done) throw new Error(`stdin closed while paused at ${label}`);
}

async function setLbmethod(page, lbmethod) {
  step = `lbmethod ${lbmethod}`;
  const before = await balancerEditForm(page);
  if (!before.options.includes(lbmethod)) {
    throw new Error(`lbmethod ${lbmethod} not offered: ${before.options.join(', ')}`);
  }
  await page.locator('select[name="b_lbm"]').selectOption(lbmethod);
  await submitFormOf(page, 'b_lbm');
  // The answer to the POST is a manager page; then a fresh GET of the
  // edit form, so that what is read is what httpd keeps.
  const answered = (await mustReadBalancer(page)).method;
  const now = await balancerEditForm(page);
  result.steps.push({ step, answered, method: now.method, selected: now.selected });
  if (now.method !== lbmethod || now.selected !== lbmethod) {
    throw new Error(`after choosing ${lbmethod}: Method shows ${now.method}, ` +
                    `the form selects ${now.selected}`);
  }
  await pause(`lbmethod=${lbmethod}`);
  return now.method;
}

async function main() {
  const browser = await launch();
  result.browser_version = browser.version();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.setDefaultNavigationTimeout(timeout);
  page.on('request', (req) => {
    if (req.method() === 'POST') {
      result.posts.push({
        url: req.url(),
        referer: req.headers().referer || null,
        bytes: Buffer.byteLength(req.postData() || ''),
        body: req.postData(),
      });
    }
  });
  page.on('response', (resp) => {
    if (resp.status() >= 400) result.http_errors.push(`${resp.status()} ${resp.url()}`);
  });

  try {
    // 1. The manager page: the balancer and its Method.
    step = 'open manager';
    const resp = await page.goto(managerUrl);
    if (!resp || resp.status() !== 200) {
      throw new Error(`GET ${managerUrl} -> ${resp ? resp.status() : 'no response'}`);
    }
    result.title = await page.title();
    const first = await mustReadBalancer(page);
    result.lbmethod_page = first.method;
    if (!first.members[member]) {
      throw new Error(`member ${member} not listed: ${Object.keys(first.members).join(', ')}`);
    }
    result.member_status_before = first.members[member].Status;

    // 2. The balancer's edit form: gwesticky offered and selected.
    step = 'balancer edit form';
    const form = await balancerEditForm(page);
    result.lbmethod_options = form.options;
    result.lbmethod_selected = form.selected;
    result.edit_form_url = page.url();

    // 3. Switch to byrequests and back, through the form.
    result.lbmethod_switched_to = await setLbmethod(page, 'byrequests');
    result.lbmethod_switched_back = await setLbmethod(page, 'gwesticky');

    // 4. The member's edit form: tick the action's "On" radio, submit.
    step = `member ${actionArg}`;
    await follow(page, memberLink(page));
    const radio = page.locator(`input[type="radio"][name="${action.radio}"][value="1"]`);
    await radio.check();
    result.member_form = await page.locator('form').filter({ has: radio }).evaluate(
      (f) => Object.fromEntries(new FormData(f).entries()));
    await submitFormOf(page, action.radio);
    const answered = await mustReadBalancer(page);
    result.member_status_answered = answered.members[member] && answered.members[member].Status;

    // 5. A fresh GET of the member's page: the status tables and its form
    // as httpd has them now; its picture.
    step = 'screenshot';
    await follow(page, memberLink(page));
    const last = await mustReadBalancer(page);
    result.final_url = page.url();
    result.lbmethod_final = last.method;
    result.member_status = last.members[member] && last.members[member].Status;
    result.member_radio_on = await page.locator(
      `input[type="radio"][name="${action.radio}"][value="1"]`).isChecked();
    result.members = Object.fromEntries(Object.entries(last.members).map(
      ([url, row]) => [url, { route: row.Route, status: row.Status }]));
    await page.screenshot({ path: screenshot, fullPage: true });
    if (!result.member_status || !result.member_status.split(/\s+/).includes(action.flag)) {
      throw new Error(`member status is "${result.member_status}", ` +
                      `expected it to show ${action.flag}`);
    }
    if (!result.member_radio_on) throw new Error(`${action.radio} is not On after the submit`);
    result.ok = true;
  } catch (e) {
    result.step = step;
    result.error = String(e && e.stack ? e.stack : e);
    result.url = page.url();
    try {
      await page.screenshot({ path: screenshot, fullPage: true });
    } catch (e2) {
      result.screenshot_error = String(e2);
    }
  } finally {
    await browser.close();
  }
}

try {
  await main();
} catch (e) {
  result.step = step;
  result.error = String(e && e.stack ? e.stack : e);
}
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
process.exit(result.ok ? 0 : 1);
