// corral's web page in a real browser: log in, see the demo VM, start it, watch it turn
// running (live, without a reload), back it up and watch the job succeed. A screenshot is
// saved after every step. Started by run.sh, which provides the server and the environment:
//   CORRAL_URL, CORRAL_USER, CORRAL_PASSWORD, E2E_ARTIFACTS, CHROMIUM (optional)
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const need = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`e2e: ${name} is not set (run e2e/run.sh)`);
    process.exit(2);
  }
  return v;
};
const base = need('CORRAL_URL').replace(/\/$/, '');
const user = need('CORRAL_USER');
const password = need('CORRAL_PASSWORD');
const artifacts = need('E2E_ARTIFACTS');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const VM = 'demo';

mkdirSync(artifacts, { recursive: true });

// Chromium's sandbox cannot start as root (CI runs as root); only then is it turned off.
// The browser only ever visits our own server on loopback.
const args = process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [];
const browser = await chromium.launch({ executablePath, args, headless: true });
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(30_000);

// Any script error or CSP violation in the page fails the run.
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('response', (r) => {
  if (r.status() >= 400) problems.push(`${r.status()} for ${r.url()}`);
});
page.on('console', (m) => {
  if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
});
// Our confirm() dialogs: answered with `answer`, and remembered.
let answer = true;
const dialogs = [];
page.on('dialog', async (d) => {
  dialogs.push(d.message());
  await (answer ? d.accept() : d.dismiss());
});

let n = 0;
const started = Date.now();
// Runs one step; screenshots `on` (the main tab unless told) after it, or on failure.
async function step(name, fn, on = page) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (e) {
    const file = path.join(artifacts, `failed-${name}.png`);
    await on.screenshot({ path: file, fullPage: true }).catch(() => {});
    console.error(`e2e: FAILED at "${name}": ${e.message}\ne2e: screenshot ${file}\ne2e: page ${on.url()}`);
    console.error(`e2e: ${n} passed, 1 failed`);
    await browser.close();
    process.exit(1);
  }
  n += 1;
  const file = path.join(artifacts, `${String(n).padStart(2, '0')}-${name}.png`);
  await on.screenshot({ path: file, fullPage: true });
  console.log(`e2e: ok   ${name} (${Date.now() - t0} ms) → ${file}`);
}

const row = () => page.locator(`tr[data-vm="${VM}"]`);
const stateIs = (want, timeout, on = page) =>
  on.waitForFunction(
    ([vm, s]) => {
      const el = document.querySelector(`tr[data-vm="${vm}"] [data-field="state"]`);
      return el && el.textContent.trim() === s;
    },
    [VM, want],
    { timeout },
  );

await step('login-page', async () => {
  await page.goto(`${base}/login`);
  await page.getByLabel('User name').waitFor();
});

await step('logged-in', async () => {
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await Promise.all([page.waitForURL(`${base}/`), page.getByRole('button', { name: 'Log in' }).click()]);
  await page.getByRole('heading', { name: 'Virtual machines' }).waitFor();
});

await step('dashboard-demo-stopped', async () => {
  await row().waitFor();
  await stateIs('stopped', 5_000);
  // The live feed is connected before we act, so what follows arrives through it.
  await page.waitForFunction(() => document.documentElement.dataset.live === 'open');
});

// A second tab on the dashboard: it hears of the start only through the live feed.
const watcher = await context.newPage();
watcher.on('pageerror', (e) => problems.push(`page error (second tab): ${e.message}`));
await watcher.goto(`${base}/`);
await watcher.waitForFunction(() => document.documentElement.dataset.live === 'open');

let navigations = 0;
page.on('framenavigated', (f) => {
  if (f === page.mainFrame()) navigations += 1;
});

await step('demo-running', async () => {
  await row().getByRole('button', { name: `Start ${VM}` }).click();
  await stateIs('running', 90_000);
  if (navigations !== 0) throw new Error('starting reloaded the page; the script should have called the API');
  await page.locator('#notices').getByText(`start of ${VM}: done`).waitFor();
});

await step(
  'second-tab-sees-running',
  async () => {
    await stateIs('running', 30_000, watcher);
  },
  watcher,
);
await watcher.close();

await step('backup-started', async () => {
  await row().getByRole('button', { name: `Backup ${VM}` }).click();
  await page.locator('#notices').getByText(new RegExp(`backup of ${VM}: job \\d+ started`)).waitFor();
});

let jobId = '';
await step('backup-succeeded-on-dashboard', async () => {
  // The dashboard's recent jobs table gets the job from the live feed and follows it.
  const jobRow = page.locator('table[data-jobs] tbody tr', { hasText: 'backup' }).first();
  await jobRow.waitFor();
  jobId = await jobRow.getAttribute('data-job');
  await page.waitForFunction(
    (id) => {
      const r = document.querySelector(`table[data-jobs] tr[data-job="${id}"]`);
      return r && ['succeeded', 'failed', 'interrupted'].includes(r.dataset.state);
    },
    jobId,
    { timeout: 300_000 },
  );
  const state = await jobRow.getAttribute('data-state');
  if (state !== 'succeeded') {
    const msg = await jobRow.locator('[data-field="message"]').textContent();
    throw new Error(`backup job ${jobId} ended ${state}: ${msg}`);
  }
});

await step('jobs-page', async () => {
  await page.getByRole('link', { name: 'Jobs', exact: true }).first().click();
  await page.getByRole('heading', { name: 'Jobs' }).waitFor();
  const r = page.locator(`tr[data-job="${jobId}"]`);
  const state = await r.getAttribute('data-state');
  if (state !== 'succeeded') throw new Error(`the jobs page shows job ${jobId} as ${state}`);
  const percent = await r.locator('[data-field="percent"]').textContent();
  if (percent.trim() !== '100%') throw new Error(`job ${jobId} shows ${percent} done`);
});

await step('vm-page', async () => {
  await page.goto(`${base}/vms/${VM}`);
  await page.getByRole('heading', { name: 'Backups' }).waitFor();
  const backups = await page.locator('table.backups tbody tr').count();
  if (backups < 1) throw new Error('the VM page lists no backup');
  // The guest's boot messages reach the console log within seconds under TCG: reload until
  // the page shows them.
  const deadline = Date.now() + 90_000;
  while (!(await page.locator('pre.console').count())) {
    if (Date.now() > deadline) throw new Error('the VM page never showed the serial console');
    await page.waitForTimeout(1_000);
    await page.reload();
  }
});

await step('vm-graphs', async () => {
  // The daemon samples every second here: the VM page's graphs have drawn lines by now
  // (reload until the CPU graph has one).
  const deadline = Date.now() + 60_000;
  const drawn = () => page.locator('section[aria-labelledby="resources"] figure.graph svg path.line').count();
  while ((await drawn()) < 1) {
    if (Date.now() > deadline) throw new Error('the VM page never drew a resource graph');
    await page.waitForTimeout(1_000);
    await page.reload();
  }
  const figures = await page.locator('figure.graph figcaption').allTextContents();
  for (const want of ['CPU', 'Memory', 'Disk', 'Network']) {
    if (!figures.some((t) => t.includes(want))) throw new Error(`no ${want} graph on the VM page: ${figures}`);
  }
  await page.locator('#resources').scrollIntoViewIfNeeded();
});

await step('force-stop-asks-first', async () => {
  const head = page.locator(`section[data-vm="${VM}"]`);
  const state = () => head.locator('[data-field="state"]').textContent();
  // Said no to: nothing happens.
  answer = false;
  await head.getByRole('button', { name: `Force stop ${VM}` }).click();
  if (!dialogs.length || !dialogs.at(-1).includes('lost')) throw new Error(`no data-loss warning: ${dialogs}`);
  await page.waitForTimeout(1_000);
  if ((await state()) !== 'running') throw new Error(`refusing the confirmation still acted: ${await state()}`);
  // Said yes to: QEMU is ended, and the page shows it.
  answer = true;
  await head.getByRole('button', { name: `Force stop ${VM}` }).click();
  await page.waitForFunction(
    (vm) => document.querySelector(`section[data-vm="${vm}"] [data-field="state"]`).textContent === 'stopped',
    VM,
  );
  if (dialogs.length !== 2) throw new Error(`expected two confirmations, saw ${dialogs.length}`);
});

await step('host-page', async () => {
  await page.getByRole('link', { name: 'Host', exact: true }).first().click();
  await page.getByRole('heading', { name: 'Resource use' }).waitFor();
  const graphs = await page.locator('figure.graph').count();
  if (graphs < 3) throw new Error(`the host page shows ${graphs} graphs`);
});

await step('alerts-page', async () => {
  await page.getByRole('link', { name: 'Alerts', exact: true }).first().click();
  await page.getByRole('heading', { name: 'Alerts', exact: true }).first().waitFor();
});

await browser.close();
if (problems.length) {
  console.error(`e2e: FAILED: the page reported problems:\n  ${problems.join('\n  ')}`);
  console.error(`e2e: ${n - 1} passed, 1 failed`);
  process.exit(1);
}
console.log(`e2e: all steps passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${artifacts}`);
console.log(`e2e: ${n} passed, 0 failed`);
