/**
 * What operators look at, in headless Chromium (as web-dashboard.test.ts): the jobs of a real
 * dispatcher run by two real agents (dist/bin/node-agent.mjs) — progress bars that move as
 * tasks finish, a job's failed tasks first with where they ran and their exit codes, the
 * results download (refused without the log-in link) — and per node the console's last lines
 * (sent as netconsole datagrams, escaped on the page), its boot as a waterfall of the stages
 * a real boot-script fetch and agent hello recorded, its health check (the cluster file's,
 * run by its agent) and black-hole evidence (tasks that fail only on it), and the reason of
 * its state.
 * Screenshots go to test/artifacts/.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startTestDispatcher, testMac, type TestDispatcher } from '../lab/in-process-dispatcher.js';
import { AGENT_BIN, ROOT } from '../lab/paths.js';
import { agentFor, startAgent, waitFor, type AgentProcess } from '../integration/agents/harness.js';
import { startNetconsole, type RunningNetconsole } from '../../dispatcher/src/console/netconsole.js';
import type { JobView } from '../../dispatcher/src/api/jobs/schemas.js';
import type { NodeDetail } from '../../dispatcher/src/api/schemas.js';
import { CHROMIUM_ARGS } from '../lab/chromium.js';

const ARTIFACTS = join(ROOT, 'test/artifacts');
const MAC_A = testMac(0x51);
const MAC_B = testMac(0x52);
/** The address node A's kernel "sends" its netconsole datagrams from (any 127/8 address is local). */
const NODE_A_IP = '127.0.0.51';
const HOSTILE = '<img src=x onerror="window.__pwned=1">';
/** What node B's failing health check prints. */
const SICK = '<b>tmpfs</b> full';

describe('status page: jobs, consoles and boots', () => {
  let d: TestDispatcher;
  let net: RunningNetconsole;
  let ctx: BrowserContext;
  let profile: string;
  let work: string;
  const agents: AgentProcess[] = [];
  let jobId: number;
  let nameA: string;
  let nameB: string;

  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const r = await fetch(d.url + path, {
      method,
      headers: { authorization: `Bearer ${d.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
    return (await r.json()) as T;
  };
  const counts = async () => (await api<JobView>('GET', `/api/v1/jobs/${jobId}`)).counts;
  /** The bar of the job's row on the page, as its data attributes say. */
  const pageBar = (page: Page) =>
    page
      .locator(`#jobs tr[data-job="${jobId}"] .jbar`)
      .evaluate((b) => ({ ...(b as unknown as { dataset: Record<string, string> }).dataset }));
  const openGate = (x: number) => writeFileSync(join(work, `gate-${x}`), '');

  /** A kernel console datagram from node A's address to the netconsole receiver. */
  async function kernelLine(text: string): Promise<void> {
    const s = createSocket('udp4');
    await new Promise<void>((ok) => s.bind({ address: NODE_A_IP, port: 0 }, ok));
    await new Promise<void>((ok, ko) => s.send(Buffer.from(text + '\n'), net.port!, '127.0.0.1', (e) => (e ? ko(e) : ok())));
    s.close();
  }

  /** What iPXE does: the boot script, then the kernel and initrd it names; the agent then proves itself with the script's token. */
  async function bootThroughHttp(mac: string): Promise<string> {
    const script = await (await fetch(`${d.url}/boot.ipxe?mac=${encodeURIComponent(mac)}`)).text();
    for (const kind of ['kernel', 'initrd']) {
      const url = new RegExp(`^${kind}\\s+(?:--name\\s+\\S+\\s+)?(\\S+)`, 'm').exec(script)?.[1];
      if (!url) throw new Error(`no ${kind} line in the boot script:\n${script}`);
      const u = new URL(url);
      const r = await fetch(d.url + u.pathname + u.search);
      expect(r.status, url).toBe(200);
      await r.arrayBuffer();
    }
    const token = /lc\.token=(\S+)/.exec(script)?.[1];
    if (!token) throw new Error(`no lc.token in the boot script:\n${script}`);
    return token;
  }

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    if (!existsSync(AGENT_BIN)) execFileSync('make', ['build'], { cwd: ROOT, stdio: 'inherit' });
    work = mkdtempSync(join(tmpdir(), 'lc-web-ops-'));
    // Node B's health check fails while the file `sick` exists; node A's always passes.
    const clusterFile = join(work, 'cluster.yaml');
    writeFileSync(
      clusterFile,
      [
        'enrollment: auto',
        'suspectAfter: 3',
        'healthCheck: {command: "true", intervalSeconds: 60}',
        'healthChecks:',
        `  - {labels: [rack-b], intervalSeconds: 1, timeoutSeconds: 1, command: "test ! -e ${work}/sick || { echo '${SICK}'; exit 1; }"}`,
        'nodes:',
        `  - {name: nodea, mac: "${MAC_A}"}`,
        `  - {name: nodeb, mac: "${MAC_B}", labels: [rack-b]}`,
        '',
      ].join('\n'),
    );
    d = await startTestDispatcher({ heartbeatSeconds: 1, clusterFile });
    // The receiver the dispatcher runs on port 6666, on a free port: other tests may hold 6666.
    net = await startNetconsole(d.core, { port: 0, host: '127.0.0.1' });
    const bootToken = await bootThroughHttp(MAC_A);
    agents.push(
      startAgent([
        ...['--dispatcher', d.url, '--token', bootToken, '--mac', MAC_A, '--dispatcher-key', join(d.dataDir, 'identity.pub')],
        ...['--work-dir', join(work, 'agent-a'), '--slots', '2'],
      ]),
      agentFor(d, MAC_B, ['--slots', '2']),
    );
    await waitFor('two agents connected', () => d.agents.isConnected(MAC_A) && d.agents.isConnected(MAC_B), 30_000).catch((e) => {
      throw new Error(`${(e as Error).message}: ${agents.map((a) => a.out.join('\n')).join('\n---\n')}`);
    });
    nameA = d.core.nodes.byMac(MAC_A)!.name;
    nameB = d.core.nodes.byMac(MAC_B)!.name;
    // The dispatcher's DHCP would have leased it this address; netconsole files its lines by it.
    d.core.nodes.setIp(MAC_A, NODE_A_IP);
    profile = mkdtempSync(join(tmpdir(), 'lc-op-chromium-'));
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1360, height: 900 },
      acceptDownloads: true,
    });
  }, 90_000);

  afterAll(async () => {
    await ctx?.close();
    for (const a of agents) await a.kill('SIGKILL');
    await net?.stop();
    await d?.stop();
    if (profile) rmSync(profile, { recursive: true, force: true });
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const rowState = (page: Page, name: string) => page.locator(`#nodes tbody tr[data-name="${name}"] .state`).textContent();

  async function openPage(): Promise<Page> {
    const page = await ctx.newPage();
    await page.goto(d.url + '/');
    await page.waitForSelector('body[data-ready="1"]', { timeout: 15_000 });
    return page;
  }

  it('lists a job with a progress bar that moves as its tasks finish, without a reload', async () => {
    // Six tasks on four slots: x=0..3 wait for their gate file, x=4 and 5 fail with exit 3.
    const job = await api<JobView>('POST', '/api/v1/jobs', {
      name: HOSTILE,
      command: `if [ {x} -ge 4 ]; then echo "boom {x}" >&2; exit 3; fi; while [ ! -e ${work}/gate-{x} ]; do sleep 0.05; done; echo ok {x}`,
      params: Array.from({ length: 6 }, (_, x) => ({ x })),
      timeoutSeconds: 120,
    });
    jobId = job.id;
    const page = await openPage();
    await page.evaluate('window.__sameDocument = true');
    await expect.poll(() => page.locator(`#jobs tr[data-job="${jobId}"]`).count()).toBe(1);
    // The name is shown as text, never as HTML.
    expect(await page.locator(`#jobs tr[data-job="${jobId}"] .jname`).innerText()).toContain(HOSTILE);
    expect(await page.locator('#jobs img').count()).toBe(0);

    await waitFor('four tasks running', async () => (await counts()).running === 4 || undefined, 30_000);
    await expect.poll(() => pageBar(page), { timeout: 5000 }).toMatchObject({ running: '4', queued: '2', done: '0' });

    // One task finishes: the bar shows it, and the next queued task (x=4) fails at once.
    const t0 = Date.now();
    openGate(0);
    await expect.poll(async () => (await pageBar(page)).done, { timeout: 5000, interval: 20 }).toBe('1');
    const updateMs = Date.now() - t0;
    for (const x of [1, 2, 3]) openGate(x);
    await expect.poll(() => pageBar(page), { timeout: 15_000 }).toMatchObject({ done: '4', failed: '2', running: '0', queued: '0' });
    expect(await counts()).toMatchObject({ done: 4, failed: 2 });
    await expect.poll(() => page.locator(`#jobs tr[data-job="${jobId}"]`).getAttribute('data-state')).toBe('done');
    // Each part of the bar is as wide as its share.
    const widths = await page
      .locator(`#jobs tr[data-job="${jobId}"] .jbar i`)
      .evaluateAll((parts) =>
        parts.map((p) => [(p as unknown as { className: string }).className, (p as unknown as { style: { width: string } }).style.width]),
      );
    expect(widths).toEqual([
      ['done', '66.67%'],
      ['failed', '33.33%'],
    ]);
    expect(await page.evaluate('window.__sameDocument')).toBe(true);
    console.log(`RESULT name=web_job_progress update_ms=${updateMs}`);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-jobs.png'), fullPage: true });
    await page.close();
  }, 60_000);

  it('without the log-in link, shows the job but no results download, and the route refuses it', async () => {
    const page = await openPage();
    await page.locator(`#jobs tr[data-job="${jobId}"]`).click();
    await expect.poll(() => page.locator('#j-tasks tbody tr[data-task]').count()).toBe(6);
    expect(await page.locator('#j-downloads a').count()).toBe(0);
    expect(await page.locator('#j-downloads').innerText()).toContain('log-in link');
    const refused = await page.evaluate<{ status: number; body: string }>(
      `fetch('/api/v1/jobs/${jobId}/results?format=csv').then(async (r) => ({ status: r.status, body: await r.text() }))`,
    );
    expect(refused.status).toBe(401);
    expect(refused.body).toContain('DSP_ERR_UNAUTHORIZED');
    await page.close();
  });

  it("shows a job's failed tasks first, where each ran, attempts and exit codes; downloads its results", async () => {
    const page = await ctx.newPage();
    await page.goto(d.url + '/login?token=' + encodeURIComponent(d.token));
    await page.waitForSelector('body[data-ready="1"]');
    await expect.poll(() => page.locator('#who').innerText()).toContain('admin');
    await page.locator(`#jobs tr[data-job="${jobId}"]`).click();
    await expect.poll(() => page.locator('#j-tasks tbody tr[data-task]').count()).toBe(6);
    const rows = await page.locator('#j-tasks tbody tr[data-task]').evaluateAll((trs) =>
      trs.map((tr) => {
        const cells = Array.from((tr as unknown as { cells: ArrayLike<{ textContent: string }> }).cells, (c) => c.textContent);
        return {
          state: (tr as unknown as { dataset: { state: string } }).dataset.state,
          index: cells[0],
          where: cells[2],
          attempts: cells[3],
          exit: cells[4],
        };
      }),
    );
    expect(rows.map((r) => r.state)).toEqual(['failed', 'failed', 'done', 'done', 'done', 'done']);
    expect(rows.map((r) => r.index!.split(' ')[0])).toEqual(['#4', '#5', '#0', '#1', '#2', '#3']);
    for (const r of rows) {
      expect([nameA, nameB]).toContain(r.where);
      expect(r.attempts).toBe('1');
      expect(r.exit).toBe(r.state === 'failed' ? '3' : '0');
    }
    // With the log-in link, each failure says what happened and the end of its stderr.
    await expect.poll(() => page.locator('#j-tasks tr.sub').count()).toBe(2);
    const why = await page.locator('#j-tasks tr.sub').first().innerText();
    expect(why).toMatch(new RegExp(`attempt 1 on (${nameA}|${nameB}): exit 3`));
    expect(why).toContain('stderr: boom 4');
    expect(await page.locator('#j-name').innerText()).toContain('done');

    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#j-downloads a[data-download="csv"]').click()]);
    expect(download.suggestedFilename()).toBe(`job-${jobId}-results.csv`);
    expect(readFileSync((await download.path())!, 'utf8')).toMatch(/^task_id,index,x,state,exit_code,/);
    const [jsonl] = await Promise.all([page.waitForEvent('download'), page.locator('#j-downloads a[data-download="jsonl"]').click()]);
    const lines = readFileSync((await jsonl.path())!, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { index: number; state: string; result: { exitCode: number; stdout: string } });
    expect(lines.map((l) => [l.index, l.state, l.result.exitCode])).toEqual([
      [0, 'done', 0],
      [1, 'done', 0],
      [2, 'done', 0],
      [3, 'done', 0],
      [4, 'failed', 3],
      [5, 'failed', 3],
    ]);
    expect(lines[2]!.result.stdout).toBe('ok 2\n');
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-job.png') });
    await page.close();
  }, 30_000);

  it("shows a node's console lines as text, live, and its boot as a waterfall", async () => {
    await kernelLine(HOSTILE);
    await kernelLine('\x1b[31mOops: general protection fault\x1b[0m');
    await waitFor('lines stored', async () => {
      const r = (await (await fetch(`${d.url}/api/v1/nodes/${nameA}/console`)).json()) as { lines: unknown[] };
      return r.lines.length === 2 || undefined;
    });
    const page = await openPage();
    await page.locator(`#nodes tbody tr[data-name="${nameA}"]`).click();
    await expect.poll(() => page.locator('#d-console li .line').allInnerTexts()).toEqual([HOSTILE, 'Oops: general protection fault']);
    expect(await page.locator('#detail img').count()).toBe(0);
    expect(await page.locator('#d-console li').first().getAttribute('data-source')).toBe('kernel');
    // A line that comes while the node is shown is added to it.
    await kernelLine('Kernel panic - not syncing: Fatal exception');
    await expect.poll(() => page.locator('#d-console li .line').last().innerText()).toBe('Kernel panic - not syncing: Fatal exception');
    expect(await page.evaluate('window.__pwned')).toBeUndefined();

    // The boot: stages in order, each bar starting where the time axis puts it.
    const stages = await page.locator('#d-boots details[open] .wf-row[data-stage]').evaluateAll((rows) =>
      rows.map((r) => ({
        stage: (r as unknown as { dataset: { stage: string } }).dataset.stage,
        left: Number.parseFloat((r.querySelector('.wf-bar') as unknown as { style: { left: string } }).style.left),
      })),
    );
    expect(stages.map((s) => s.stage)).toEqual(['http.script', 'http.kernel', 'http.initrd', 'agent.hello']);
    expect(stages[0]!.left).toBe(0);
    expect(stages.at(-1)!.left).toBe(100);
    for (let i = 1; i < stages.length; i++) expect(stages[i]!.left).toBeGreaterThanOrEqual(stages[i - 1]!.left);
    expect(await page.locator('#d-boots details[open] .wf-axis .wf-tick').count()).toBe(5);

    // Power as last known: the node's hello says it is on.
    const view = await api<NodeDetail & Record<string, unknown>>('GET', `/api/v1/nodes/${nameA}`);
    expect(view.power?.state).toBe('on');
    expect(await page.locator('#d-ops dd[data-field="power"]').innerText()).toMatch(/^on\b/);
    // Allocated and free resources, as the agent reported them at hello.
    expect(view.resources).toBeDefined();
    const cores = view.resources!.cores;
    expect(await page.locator('#d-ops dd[data-field="cores"]').innerText()).toContain(
      `${cores.allocated} allocated, ${cores.total - cores.allocated} free of ${cores.total}`,
    );
    expect(await page.locator('#d-ops dd[data-field="limits"]').innerText()).toBe(
      view.resources!.enforced ? 'enforced (cgroup v2)' : 'not enforced on this node',
    );
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-node-console.png') });
    await page.close();
  }, 30_000);

  it('fits a phone-sized screen with its jobs, a job and a node open', async () => {
    const page = await ctx.newPage();
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(d.url + '/');
    await page.waitForSelector('body[data-ready="1"]');
    await expect.poll(() => page.locator(`#jobs tr[data-job="${jobId}"]`).count()).toBe(1);
    const overflow = () => page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
    expect(await overflow()).toBeLessThanOrEqual(1);
    await page.locator(`#jobs tr[data-job="${jobId}"]`).click();
    await expect.poll(() => page.locator('#j-tasks tbody tr[data-task]').count()).toBe(6);
    expect(await overflow()).toBeLessThanOrEqual(1);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-job-phone.png') });
    await page.keyboard.press('Escape');
    await page.locator(`#nodes tbody tr[data-name="${nameA}"]`).click();
    await expect.poll(() => page.locator('#d-boots .wf-row[data-stage]').count()).toBeGreaterThan(0);
    expect(await overflow()).toBeLessThanOrEqual(1);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-node-phone.png') });
    await page.close();
  });

  it('shows a failing health check, its output as text, as the reason of the drain; and its recovery', async () => {
    const page = await openPage();
    writeFileSync(join(work, 'sick'), '');
    await waitFor('node B drained by its health check', () => d.core.nodes.byMac(MAC_B)!.state === 'draining', 15_000);
    await expect.poll(() => page.locator(`#nodes tbody tr[data-name="${nameB}"] .flag`).allInnerTexts()).toContain('health failed');
    await page.locator(`#nodes tbody tr[data-name="${nameB}"]`).click();
    await expect.poll(() => page.locator('#d-ops dd[data-field="health check"]').innerText()).toMatch(/^failed/);
    expect(await page.locator('#d-ops dd[data-field="health check"] pre').innerText()).toContain(SICK);
    await expect.poll(() => page.locator('#d-ops dd[data-field="why draining"]').innerText()).toBe(`health: ${SICK}`);
    expect(await page.locator('#detail b').count()).toBe(0);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-node-health.png') });
    // Node A's check passes.
    const a = await api<NodeDetail>('GET', `/api/v1/nodes/${nameA}`);
    expect(a.health?.ok).toBe(true);
    // Well again: undrained, and the page follows.
    rmSync(join(work, 'sick'));
    await expect.poll(() => page.locator('#d-ops dd[data-field="health check"]').innerText(), { timeout: 15_000 }).toMatch(/^passed/);
    await expect.poll(() => rowState(page, nameB)).toBe('ready');
    await page.close();
  }, 40_000);

  it("shows a black-hole node as suspect, with the evidence, while the job's tasks succeed elsewhere", async () => {
    const page = await openPage();
    // Every task fails on node B (its work dir says which node it is on) and succeeds on A.
    await api<JobView>('POST', '/api/v1/jobs', {
      command: 'case "$LC_WORK_DIR" in *agent-525400000052*) echo "libfoo.so: not found" >&2; exit 127;; esac; echo ok',
      params: Array.from({ length: 40 }, (_, x) => ({ x })),
    });
    await waitFor('node B drained as suspect', () => d.core.nodes.byMac(MAC_B)!.state === 'draining', 30_000);
    await expect.poll(() => page.locator(`#nodes tbody tr[data-name="${nameB}"] .flag`).allInnerTexts()).toContain('suspect');
    await page.locator(`#nodes tbody tr[data-name="${nameB}"]`).click();
    await expect
      .poll(() => page.locator('#d-ops dd[data-field="suspect"]').innerText())
      .toMatch(new RegExp(`^3 failed attempts in a row \\(task \\d+ exit 127, .*\\); the same jobs succeeded on ${nameA}`));
    await expect.poll(() => page.locator('#d-ops dd[data-field="why draining"]').innerText()).toMatch(/^suspect: /);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-node-suspect.png') });
    await page.close();
  }, 40_000);

  it('says why a node is in its state (an operator drain, with its reason)', async () => {
    await api('POST', `/api/v1/nodes/${nameA}/drain`, {});
    const { events } = await api<{ events: { data: { to?: string; reason?: string } | null }[] }>(
      'GET',
      `/api/v1/events?kind=node.state&node=${nameA}`,
    );
    const reason = events.filter((e) => e.data?.to === 'draining').at(-1)?.data?.reason;
    expect(reason).toBeTruthy();
    const page = await openPage();
    await page.locator(`#nodes tbody tr[data-name="${nameA}"]`).click();
    await expect.poll(() => page.locator('#d-ops dd[data-field="why draining"]').innerText()).toBe(reason);
    await page.close();
  });
});
