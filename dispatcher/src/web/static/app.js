// @ts-check
// lilcluster status page: live over server-sent events (/api/v1/stream), plain DOM, no framework.
// Every value from the API goes into the page through textContent, never as HTML.
// Type-checked as JavaScript (tsconfig.json beside it; `make typecheck`): the API's types come
// from ../../api/schemas.ts through the JSDoc below, so a renamed field fails the check.
'use strict';
/** @typedef {import('../../api/schemas.js').NodeView} NodeView */
/** @typedef {import('../../api/schemas.js').NodeDetail} NodeDetail */
/** @typedef {import('../../api/schemas.js').StatusView} StatusView */
/** @typedef {import('../../api/schemas.js').ActionResult} ActionResult */
/** @typedef {import('@sinclair/typebox').Static<typeof import('../../api/schemas.js').ClusterEventSchema>} ClusterEvent */
/** @typedef {import('@sinclair/typebox').Static<typeof import('../../api/schemas.js').ErrorBody>} ErrorBody */
/** @typedef {StatusView['throughput']} Throughput */
/** @typedef {{ nodes: NodeView[], status: StatusView, events: ClusterEvent[] }} Snapshot  `snapshot` on /api/v1/stream */
/** @typedef {{ nodes: NodeView[], removed: string[], status?: StatusView, events: ClusterEvent[] }} Update  `update` on /api/v1/stream */
/** @typedef {{ ts: number, stage: string, detail?: Record<string, unknown> | null }} BootStage */
/** @typedef {{ boot: number, stages: BootStage[] }} Boot */
/** @typedef {{ boots?: Boot[], stages?: (BootStage & { boot: number })[] }} BootsReply  /api/v1/boots (older dispatchers: flat stages) */
/** @typedef {{ system?: { manufacturer?: string, model?: string }, os?: { distro?: string, kernel?: string, arch?: string } }} Inventory  the parts of the agent's inventory shown here */
/** @typedef {import('../../api/jobs/schemas.js').JobView} JobView */
/** @typedef {import('../../api/jobs/schemas.js').TaskSummary} TaskSummary */
/** @typedef {import('../../api/jobs/schemas.js').TaskDetail} TaskDetail */
/** @typedef {import('../../api/console/schemas.js').ConsoleReply} ConsoleReply */
/** @typedef {import('../../api/console/schemas.js').ConsoleLineView} ConsoleLine */
/** @typedef {import('../../api/boot-servers/schemas.js').BootServerView} BootServerView */
/**
 * Node view fields that come with power control, health checks, black-hole detection and task
 * resources: each is shown when the dispatcher sends it and hidden when it does not.
 * @typedef {{
 *   power?: { state: string, at: number, by?: string | null } | null,
 *   unreachable?: { since: number, reason: string },
 *   health?: { ok: boolean, output: string, at: number, checkedAt?: number } | null,
 *   suspect?: Suspect,
 *   resources?: { cores: Alloc, memoryMiB: Alloc, gpus?: Alloc, enforced: boolean } | null,
 * }} OpsFields
 */
/** @typedef {{ total: number, allocated: number }} Alloc */
/**
 * Why a node was drained as suspect: its failed attempts in a row, and where their jobs succeeded.
 * @typedef {{
 *   at: number,
 *   failures: { taskId: number, attempt: number, jobId: number, exitCode: number | null, error?: string }[],
 *   succeededElsewhere: { jobId: number, nodes: string[] }[],
 * }} Suspect
 */
(() => {
  /** The page's elements are all in index.html, so a query never misses. @type {(sel: string) => HTMLElement} */
  const $ = (sel) => /** @type {HTMLElement} */ (document.querySelector(sel));
  const tbody = $('#nodes tbody');
  const st = {
    /** @type {Map<string, NodeView>} mac → node view */
    nodes: new Map(),
    /** @type {Map<string, HTMLTableRowElement>} mac → <tr> */
    rows: new Map(),
    /** @type {StatusView | null} */
    status: null,
    skew: 0, // server clock − browser clock, ms
    admin: false,
    filter: '',
    /** @type {string | null} mac of the node shown in the dialog */
    detail: null,
    /** @type {{ mac: string, state: string, text: string } | null} why the node in the dialog is in its state */
    reason: null,
    events: 0,
  };
  const MAX_EVENTS = 200;

  /**
   * @template {keyof HTMLElementTagNameMap} K
   * @param {K} tag
   * @param {Record<string, any> | null} [attrs] `class`, `on<event>` listeners, other attributes
   * @param {...(Node | string | number | null | undefined)} children
   * @returns {HTMLElementTagNameMap[K]}
   */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  const now = () => Date.now() + st.skew;
  /** @param {unknown} v */
  const dash = (v) => (v === null || v === undefined || v === '' ? '–' : String(v));
  /** @param {number | null | undefined} ms */
  function dur(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm';
    const h = Math.floor(m / 60);
    if (h < 24) return h + 'h' + (m % 60 ? (m % 60) + 'm' : '');
    return Math.floor(h / 24) + 'd' + (h % 24 ? (h % 24) + 'h' : '');
  }
  /** @param {number | null} ts */
  const ago = (ts) => (ts ? dur(now() - ts) + ' ago' : '–');
  /** @param {number | null | undefined} v */
  const mib = (v) => (v === null || v === undefined ? '–' : v >= 1024 ? (v / 1024).toFixed(1) + ' GiB' : Math.round(v) + ' MiB');
  /** @param {number} ts */
  const time = (ts) => new Date(ts).toLocaleTimeString();
  const collator = new Intl.Collator(undefined, { numeric: true });
  /** @type {(a: { name: string }, b: { name: string }) => number} */
  const byName = (a, b) => collator.compare(a.name, b.name);

  // ---------------------------------------------------------------- nodes table
  /** @param {NodeView} v */
  function cells(v) {
    const name = el('td', { class: 'name' }, v.name, v.enrollment === 'pending' ? el('span', { class: 'pending' }, 'pending') : null);
    const state = el(
      'td',
      {},
      el('span', { class: 'state ' + v.state, title: 'since ' + new Date(v.stateSince).toLocaleString() }, v.state),
      ...flags(v),
    );
    const mem = v.memUsedMiB !== null && v.memoryMiB ? mib(v.memUsedMiB) + ' / ' + mib(v.memoryMiB) : mib(v.memoryMiB);
    const tasks = el('td', {}, v.connected ? v.tasks.length + '/' + dash(v.slots) : '–');
    const progress = v.tasks.filter((t) => t.progress !== null);
    if (progress.length) {
      const avg = progress.reduce((a, t) => a + /** @type {number} */ (t.progress), 0) / progress.length;
      tasks.append(
        el('span', { class: 'prog', title: Math.round(avg * 100) + '%' }, el('i', { style: 'width:' + Math.round(avg * 100) + '%' })),
      );
    }
    return [
      name,
      state,
      el('td', { class: 'opt' }, v.mac),
      el('td', { class: 'opt' }, dash(v.ip)),
      el(
        'td',
        { class: 'opt', title: v.image?.stale ? 'a newer build of its image exists (dispatcherctl images rollout)' : '' },
        dash(v.imageVersion) + (v.image?.stale ? ' *' : ''),
      ),
      el('td', { class: 'opt2 cpu', title: dash(v.cpu) }, dash(v.cpu)),
      el('td', { class: 'num opt' }, dash(v.cores)),
      el('td', { class: 'opt' }, mem),
      el('td', { class: 'num' }, v.load1 === null ? '–' : v.load1.toFixed(2)),
      tasks,
      el('td', { class: 'opt up' }, uptime(v)),
      el('td', { class: 'opt hb' }, v.connected ? ago(v.lastHeartbeat) : v.lastHeartbeat ? ago(v.lastHeartbeat) : '–'),
    ];
  }
  /** Short marks beside the state: what an operator must look at on this node. @param {NodeView} v */
  function flags(v) {
    const o = ops(v);
    const out = [];
    // Off with a state that says otherwise (the state column already says `off`).
    if (o.power?.state === 'off' && v.state !== 'off')
      out.push(el('span', { class: 'flag', title: 'last known power state' }, 'power off'));
    if (o.unreachable) out.push(el('span', { class: 'flag bad', title: o.unreachable.reason }, 'unreachable'));
    if (o.suspect) out.push(el('span', { class: 'flag bad', title: suspectText(o.suspect) }, 'suspect'));
    if (o.health && !o.health.ok) out.push(el('span', { class: 'flag bad', title: o.health.output }, 'health failed'));
    return out;
  }
  /** @param {NodeView} v @returns {OpsFields} */
  const ops = (v) => /** @type {NodeView & OpsFields} */ (v);
  /** The black-hole evidence in a sentence. @param {Suspect} e */
  function suspectText(e) {
    const f = e.failures || [];
    const what = f
      .slice(0, 5)
      .map((x) => 'task ' + x.taskId + ' ' + (x.error || 'exit ' + dash(x.exitCode)))
      .join(', ');
    const elsewhere = [...new Set((e.succeededElsewhere || []).flatMap((j) => j.nodes))];
    return (
      f.length +
      ' failed attempts in a row' +
      (what ? ' (' + what + (f.length > 5 ? ', …' : '') + ')' : '') +
      (elsewhere.length ? '; the same jobs succeeded on ' + elsewhere.slice(0, 8).join(', ') : '')
    );
  }
  /** @param {NodeView} v */
  function uptime(v) {
    if (v.uptimeS === null) return '–';
    return dur(v.uptimeS * 1000 + (v.lastHeartbeat ? now() - v.lastHeartbeat : 0));
  }
  /** @param {NodeView} v */
  function matches(v) {
    if (!st.filter) return true;
    const hay = [v.name, v.state, v.mac, v.ip, v.imageVersion, v.cpu, ...(v.labels || []), v.enrollment === 'pending' ? 'pending' : '']
      .join(' ')
      .toLowerCase();
    return st.filter.split(/\s+/).every((w) => hay.includes(w));
  }
  /** @param {NodeView} v */
  function row(v) {
    const tr = el('tr', { 'data-mac': v.mac, 'data-name': v.name, 'data-state': v.state });
    tr.append(...cells(v));
    tr.addEventListener('click', () => openDetail(v.mac));
    tr.classList.toggle('hidden', !matches(v));
    return tr;
  }
  /** @param {NodeView} v */
  function upsert(v) {
    const old = st.rows.get(v.mac);
    st.nodes.set(v.mac, v);
    const tr = row(v);
    if (old) {
      if (old.dataset.name === v.name) {
        old.replaceWith(tr);
        st.rows.set(v.mac, tr);
        return;
      }
      old.remove();
    }
    st.rows.set(v.mac, tr);
    // Keep the table sorted by name: insert before the first row that sorts after it.
    let before = null;
    for (const r of /** @type {HTMLCollectionOf<HTMLTableRowElement>} */ (tbody.children))
      if (byName({ name: /** @type {string} */ (r.dataset.name) }, v) > 0) {
        before = r;
        break;
      }
    tbody.insertBefore(tr, before);
  }
  /** @param {string} mac */
  function remove(mac) {
    st.rows.get(mac)?.remove();
    st.rows.delete(mac);
    st.nodes.delete(mac);
  }
  /** @param {NodeView[]} nodes */
  function renderAll(nodes) {
    st.nodes.clear();
    st.rows.clear();
    const frag = document.createDocumentFragment();
    for (const v of [...nodes].sort(byName)) {
      st.nodes.set(v.mac, v);
      const tr = row(v);
      st.rows.set(v.mac, tr);
      frag.append(tr);
    }
    tbody.replaceChildren(frag);
  }
  function afterNodes() {
    $('#empty').classList.toggle('hidden', st.nodes.size > 0);
    const shown = [...st.rows.values()].filter((r) => !r.classList.contains('hidden')).length;
    $('#node-total').textContent = st.filter ? shown + ' of ' + st.nodes.size : String(st.nodes.size);
  }
  // Relative times move on their own; refresh them without waiting for data.
  setInterval(() => {
    for (const [mac, tr] of st.rows) {
      const v = st.nodes.get(mac);
      if (!v || tr.classList.contains('hidden')) continue;
      /** @type {HTMLElement} */ (tr.querySelector('.hb')).textContent = v.lastHeartbeat ? ago(v.lastHeartbeat) : '–';
      /** @type {HTMLElement} */ (tr.querySelector('.up')).textContent = uptime(v);
    }
  }, 2000);
  $('#filter').addEventListener('input', (e) => {
    st.filter = /** @type {HTMLInputElement} */ (e.target).value.trim().toLowerCase();
    for (const [mac, tr] of st.rows) tr.classList.toggle('hidden', !matches(/** @type {NodeView} */ (st.nodes.get(mac))));
    afterNodes();
  });

  // ---------------------------------------------------------------- summary, chart, events
  /** @param {StatusView} s */
  function renderStatus(s) {
    st.status = s;
    st.skew = s.now - Date.now();
    const counts = $('#node-counts');
    counts.replaceChildren();
    for (const [state, n] of Object.entries(s.nodes.byState))
      if (n) counts.append(el('span', {}, el('b', {}, n), ' ', el('span', { class: 'state ' + state }, state)));
    if (!s.nodes.total) counts.append(el('span', { class: 'muted' }, 'none yet'));
    if (s.nodes.pending) counts.append(el('span', {}, el('b', {}, s.nodes.pending), ' waiting for approval'));
    if (s.nodes.denied)
      counts.append(el('span', { title: 'unknown machines refused (enrollment: deny)' }, el('b', {}, s.nodes.denied), ' refused'));
    const tc = $('#task-counts');
    tc.replaceChildren();
    if (s.tasks)
      for (const k of /** @type {const} */ (['queued', 'running', 'done', 'failed']))
        tc.append(el('span', {}, el('b', {}, s.tasks[k].toLocaleString()), ' ' + k));
    else tc.append(el('span', { class: 'muted' }, 'no figures from the dispatch engine'));
    const disp = [
      el('span', {}, 'v' + s.version),
      el('span', {}, 'up ' + dur(s.uptimeS * 1000)),
      el('span', {}, s.network.address + (s.network.interface ? ' (' + s.network.interface + ')' : '')),
      el('span', {}, 'DHCP ' + s.network.dhcp),
      el('span', {}, 'store ' + s.store.avgCommitMs.toFixed(1) + ' ms/commit'),
    ];
    if (s.store.failure) disp.push(el('span', { class: 'state lost', title: s.store.failure }, 'store failing'));
    $('#disp').replaceChildren(...disp);
    chart(s.throughput);
    jobsMaybeMoved(s);
    const op = $('#operation');
    const running = s.operations[0];
    op.classList.toggle('hidden', !running);
    if (running) {
      const busy = running.nodes.filter((n) => n.phase === 'draining' || n.phase === 'rebooting').map((n) => n.name + ' ' + n.phase);
      op.replaceChildren(
        el('h2', {}, 'Rolling reboot #' + running.id),
        el('div', {}, running.message + (busy.length ? ' — ' + busy.join(', ') : '')),
      );
    }
  }
  /** @param {Throughput} tp */
  function chart(tp) {
    const pts = tp.points;
    const box = $('#chart');
    if (!pts.length) {
      box.replaceChildren(el('span', { class: 'muted' }, 'collecting…'));
      $('#tp-label').textContent = '';
      return;
    }
    const max = Math.max(1, ...pts.map((p) => p.completed));
    const W = 300,
      H = 48,
      n = Math.max(pts.length, 30),
      bw = W / n;
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('preserveAspectRatio', 'none');
    pts.forEach((p, i) => {
      const h = (p.completed / max) * (H - 2);
      const r = document.createElementNS(ns, 'rect');
      r.setAttribute('x', String((n - pts.length + i) * bw + 0.5));
      r.setAttribute('y', String(H - h));
      r.setAttribute('width', String(Math.max(1, bw - 1)));
      r.setAttribute('height', String(Math.max(h, p.completed ? 1 : 0)));
      const t = document.createElementNS(ns, 'title');
      t.textContent = p.completed + ' tasks in ' + tp.intervalS + ' s to ' + time(p.ts);
      r.append(t);
      svg.append(r);
    });
    box.replaceChildren(svg);
    const last = pts.slice(-Math.round(300 / tp.intervalS));
    const perMin = (last.reduce((a, p) => a + p.completed, 0) / (last.length * tp.intervalS)) * 60;
    $('#tp-label').textContent = Math.round(perMin).toLocaleString() + ' tasks/min';
  }
  /** @param {ClusterEvent[]} events @param {boolean} replace */
  function renderEvents(events, replace) {
    const list = $('#events');
    if (replace) list.replaceChildren();
    for (const e of events) {
      list.prepend(
        el(
          'li',
          { 'data-kind': e.kind },
          el('time', { datetime: new Date(e.ts).toISOString() }, time(e.ts)),
          el('span', { class: 'k' }, e.kind),
          el('span', {}, e.message),
        ),
      );
    }
    while (list.children.length > MAX_EVENTS) /** @type {ChildNode} */ (list.lastChild).remove();
  }

  // ---------------------------------------------------------------- jobs
  const JOB_ROWS = 50;
  const TASK_ROWS = 200;
  const job = {
    /** @type {JobView[]} */
    list: [],
    /** status.tasks as last seen: a change means some job moved */
    key: '',
    loading: false,
    again: false,
    /** @type {number | null} id of the job shown in its dialog */
    open: null,
    /** @type {Map<number, TaskDetail>} failed tasks' details (admin), by task id */
    details: new Map(),
  };
  const COUNT_KINDS = /** @type {const} */ (['done', 'failed', 'running', 'queued', 'cancelled']);
  /** A bar of a job's tasks by state, each part as wide as its share. @param {JobView['counts']} c */
  function progressBar(c) {
    const said = COUNT_KINDS.filter((k) => c[k])
      .map((k) => c[k] + ' ' + k)
      .join(', ');
    const bar = el('span', { class: 'jbar', role: 'img', title: said || 'no tasks', 'aria-label': 'tasks: ' + (said || 'none') });
    for (const k of COUNT_KINDS) {
      bar.dataset[k] = String(c[k]);
      if (!c[k]) continue;
      const part = el('i', { class: k });
      part.style.width = ((c[k] / Math.max(1, c.total)) * 100).toFixed(2) + '%';
      bar.append(part);
    }
    return bar;
  }
  /** @param {JobView} j */
  const jobTitle = (j) => j.name || commandText(j.command);
  /** A command as one line (api/jobs/schemas.ts commandText). @param {JobView['command']} cmd */
  function commandText(cmd) {
    return typeof cmd === 'string'
      ? cmd
      : cmd.map((a) => (/^[\w@%+=:,./{}-]+$/.test(a) ? a : "'" + a.replaceAll("'", "'\\''") + "'")).join(' ');
  }
  /** @param {JobView} j */
  function jobRow(j) {
    const c = j.counts;
    const tr = el(
      'tr',
      { 'data-job': j.id, 'data-state': j.state },
      el('td', { class: 'name jname', title: commandText(j.command) }, '#' + j.id + ' ', jobTitle(j)),
      el('td', {}, el('span', { class: 'jstate ' + j.state }, j.state)),
      el('td', { class: 'wide' }, progressBar(c)),
      el('td', { class: 'num' }, c.done + '/' + c.total),
      el('td', { class: 'num' + (c.failed ? ' bad' : '') }, c.failed),
      el('td', { class: 'num opt' }, c.running),
      el('td', { class: 'num opt' }, c.queued),
      el('td', { class: 'opt' }, ago(j.submittedAt)),
    );
    tr.addEventListener('click', () => openJob(j.id));
    return tr;
  }
  function renderJobs() {
    const tb = $('#jobs tbody');
    tb.replaceChildren(...job.list.map(jobRow));
    $('#jobs-empty').classList.toggle('hidden', job.list.length > 0);
    const active = job.list.filter((j) => j.state === 'active').length;
    $('#job-total').textContent = job.list.length ? (active ? active + ' active, ' : '') + job.list.length + ' shown' : '';
  }
  /** Reloads the jobs list (and the open job): one request at a time, the last ask repeated once. */
  async function refreshJobs() {
    if (job.loading) {
      job.again = true;
      return;
    }
    job.loading = true;
    try {
      const r = await fetch('/api/v1/jobs?limit=' + JOB_ROWS);
      if (r.ok) {
        /** @type {{ jobs: JobView[] }} */
        const d = await r.json();
        job.list = d.jobs;
        renderJobs();
      }
      if (job.open !== null) await loadJob(job.open);
    } catch {
      /* the next status update asks again */
    } finally {
      job.loading = false;
      if (job.again) {
        job.again = false;
        void refreshJobs();
      }
    }
  }
  /** Task counts move when any job moves: the summary that comes with the live feed says when. @param {StatusView} s */
  function jobsMaybeMoved(s) {
    const key = JSON.stringify(s.tasks);
    if (key === job.key) return;
    job.key = key;
    void refreshJobs();
  }
  // A job submitted or finished between two summaries still shows within a few seconds.
  setInterval(() => {
    if (document.visibilityState === 'visible' && (job.open !== null || job.list.some((j) => j.state === 'active'))) void refreshJobs();
  }, 5000);

  const jobDialog = /** @type {HTMLDialogElement} */ ($('#job'));
  jobDialog.addEventListener('close', () => {
    job.open = null;
    job.details.clear();
  });
  /** @param {number} id */
  async function openJob(id) {
    job.open = id;
    job.details.clear();
    $('#j-name').textContent = 'job #' + id;
    $('#j-progress').replaceChildren();
    $('#j-fields').replaceChildren();
    $('#j-downloads').replaceChildren();
    $('#j-tasks tbody').replaceChildren();
    $('#j-note').textContent = 'loading…';
    if (!jobDialog.open) jobDialog.showModal();
    await loadJob(id);
  }
  /** @param {string} mac */
  const nodeName = (mac) => {
    const v = st.nodes.get(mac);
    return v ? v.name : mac;
  };
  /** The open job: its figures, downloads and tasks, failures first. @param {number} id */
  async function loadJob(id) {
    try {
      const jr = await fetch('/api/v1/jobs/' + id);
      if (!jr.ok) throw new Error(await errorText(jr));
      /** @type {JobView} */
      const j = await jr.json();
      // Failed tasks first (all of them up to a page), then the others in order.
      const [failed, all] = await Promise.all(
        ['state=failed&', ''].map(async (q) => {
          const r = await fetch('/api/v1/jobs/' + id + '/tasks?' + q + 'limit=' + TASK_ROWS);
          if (!r.ok) throw new Error(await errorText(r));
          return /** @type {{ tasks: TaskSummary[] }} */ (await r.json()).tasks;
        }),
      );
      if (job.open !== id) return;
      renderJob(j, failed, all);
      // Tasks that failed, and tasks that succeeded only after failing elsewhere (--retries).
      if (st.admin) await loadFailureDetails(id, [...failed, ...all.filter((t) => t.attempts > 1 && t.state === 'done')]);
    } catch (err) {
      if (job.open === id) $('#j-note').textContent = 'unavailable: ' + /** @type {Error} */ (err).message;
    }
  }
  /** @param {Response} r */
  async function errorText(r) {
    /** @type {Partial<ErrorBody>} */
    const b = await r.json().catch(() => ({}));
    return b.error ? b.error.message + (b.error.hint ? ' — ' + b.error.hint : '') : r.status + ' ' + r.statusText;
  }
  /** @param {JobView} j @param {TaskSummary[]} failed @param {TaskSummary[]} all */
  function renderJob(j, failed, all) {
    $('#j-name').replaceChildren('job #' + j.id + ' ', el('span', { class: 'jstate ' + j.state }, j.state));
    const c = j.counts;
    $('#j-progress').replaceChildren(
      progressBar(c),
      el(
        'div',
        { class: 'counts jcounts' },
        ...COUNT_KINDS.filter((k) => c[k] || k === 'done').map((k) => el('span', { 'data-count': k }, el('b', {}, c[k]), ' ' + k)),
        el('span', { class: 'muted' }, 'of ' + c.total),
      ),
    );
    const f = $('#j-fields');
    f.replaceChildren();
    /** @type {(k: string, val: unknown) => void} */
    const row = (k, val) => f.append(el('dt', {}, k), el('dd', {}, dash(val)));
    if (j.name) row('name', j.name);
    row('command', commandText(j.command));
    row('submitted', new Date(j.submittedAt).toLocaleString());
    if (j.finishedAt) row('finished', new Date(j.finishedAt).toLocaleString() + ' (took ' + dur(j.finishedAt - j.submittedAt) + ')');
    row('attempts allowed', j.maxAttempts);
    // retries and resources come with `submit --retries` and enforced task resources.
    const more = /** @type {{ retries?: number, resources?: { cores: number, memoryMiB: number, gpus: number } | null }} */ (j);
    if (more.retries) row('retries', more.retries + ' after a non-zero exit, each on another node');
    const res = more.resources;
    if (res)
      row(
        'each task takes',
        [res.cores + (res.cores === 1 ? ' core' : ' cores'), res.memoryMiB ? mib(res.memoryMiB) : '', res.gpus ? res.gpus + ' GPU' : '']
          .filter(Boolean)
          .join(', '),
      );
    row('timeout', dur(j.timeoutSeconds * 1000));
    const rq = j.requirements;
    const needs = [
      rq.labels.length ? 'labels ' + rq.labels.join(',') : '',
      rq.minCores > 1 ? rq.minCores + '+ cores' : '',
      rq.minMemoryMiB ? mib(rq.minMemoryMiB) + '+ memory' : '',
      rq.image ? 'image ' + rq.image : '',
    ].filter(Boolean);
    if (needs.length) row('requires', needs.join(', '));
    const dl = $('#j-downloads');
    if (st.admin)
      dl.replaceChildren(
        ...['csv', 'jsonl'].map((fmt) =>
          el(
            'a',
            { class: 'button', href: '/api/v1/jobs/' + j.id + '/results?format=' + fmt, download: '', 'data-download': fmt },
            'Results (' + fmt.toUpperCase() + ')',
          ),
        ),
        el(
          'a',
          { class: 'button', href: '/api/v1/jobs/' + j.id + '/outputs.tar', download: '', 'data-download': 'tar' },
          'Output files (tar)',
        ),
      );
    else
      dl.replaceChildren(
        el(
          'span',
          { class: 'muted', 'data-download': 'none' },
          'Results download: tasks’ output may hold secrets, so it needs the log-in link.',
        ),
      );
    const failedIds = new Set(failed.map((t) => t.id));
    const tasks = [...failed, ...all.filter((t) => !failedIds.has(t.id))];
    const tb = $('#j-tasks tbody');
    tb.replaceChildren();
    for (const t of tasks) {
      tb.append(taskRow(t));
      const d = job.details.get(t.id);
      if (d) tb.append(failureRow(d));
    }
    const shownOf = c.total > tasks.length ? tasks.length + ' of ' + c.total + ', ' : '';
    $('#j-note').textContent = tasks.length ? shownOf + 'failures first' : 'none';
  }
  /** @param {TaskSummary} t */
  function taskRow(t) {
    const where = t.nodes.length ? t.nodes.map(nodeName).join(', ') : t.ranOn ? nodeName(t.ranOn) : '';
    const params = t.params
      ? Object.entries(t.params)
          .map(([k, x]) => k + '=' + x)
          .join(' ')
      : '';
    return el(
      'tr',
      { 'data-task': t.id, 'data-state': t.state },
      el('td', { class: 'num' }, '#' + t.index, el('span', { class: 'muted' }, ' (' + t.id + ')')),
      el(
        'td',
        {},
        el('span', { class: 'tstate ' + t.state }, t.state),
        t.progress !== null && t.state === 'running' ? ' ' + Math.round(t.progress * 100) + '%' : null,
      ),
      el('td', { class: 'where' }, dash(where)),
      el('td', { class: 'num' }, t.attempts || '–'),
      el('td', { class: 'num exit' + (t.exitCode ? ' bad' : '') }, dash(t.exitCode)),
      el('td', { class: 'num' }, t.durationMs === null ? '–' : (t.durationMs / 1000).toFixed(2) + 's'),
      el('td', { class: 'params', title: params }, params),
    );
  }
  /** What went wrong with a failed task, attempt by attempt (admin: the detail may show output). @param {TaskDetail} d */
  function failureRow(d) {
    const lines = d.failures.map((f) => 'attempt ' + f.attempt + (f.mac ? ' on ' + nodeName(f.mac) : '') + ': ' + f.reason);
    const r = d.result;
    if (r) {
      // oom and memPeakKiB come with enforced task resources.
      const mem = /** @type {{ oom?: boolean, memPeakKiB?: number | null }} */ (r);
      const how = mem.oom
        ? 'killed for memory (oom)' + (mem.memPeakKiB ? ', peak ' + mib(mem.memPeakKiB / 1024) : '')
        : r.timedOut
          ? 'timed out'
          : r.signal
            ? 'killed by ' + r.signal
            : r.error
              ? r.error
              : 'exit ' + dash(r.exitCode);
      lines.push('attempt ' + r.attempt + (r.mac ? ' on ' + nodeName(r.mac) : '') + ': ' + how);
      const tail = r.stderr.trimEnd().split('\n').slice(-3).join('\n');
      if (tail && (r.exitCode !== 0 || mem.oom || r.timedOut || r.signal || r.error)) lines.push('stderr: ' + tail);
    }
    return el(
      'tr',
      { class: 'sub', 'data-detail': d.id },
      el('td', {}),
      el('td', { colspan: 6 }, el('pre', { class: 'why' }, lines.join('\n'))),
    );
  }
  /** Details of the first failed tasks: each attempt, where, and the end of stderr. @param {number} id @param {TaskSummary[]} failed */
  async function loadFailureDetails(id, failed) {
    const want = failed.slice(0, 20).filter((t) => !job.details.has(t.id));
    if (!want.length) return;
    const got = await Promise.all(
      want.map(async (t) => {
        const r = await fetch('/api/v1/tasks/' + t.id);
        return r.ok ? /** @type {TaskDetail} */ (await r.json()) : null;
      }),
    );
    if (job.open !== id) return;
    for (const d of got) {
      if (!d) continue;
      job.details.set(d.id, d);
      const tr = $('#j-tasks tbody').querySelector('tr[data-task="' + d.id + '"]');
      if (tr && !tr.nextElementSibling?.matches('tr.sub')) tr.after(failureRow(d));
    }
  }

  // ---------------------------------------------------------------- live feed
  /** @param {string} kind @param {string} text */
  function setConn(kind, text) {
    const c = $('#conn');
    c.className = 'conn ' + kind;
    c.textContent = text;
  }
  function connect() {
    const es = new EventSource('/api/v1/stream');
    es.addEventListener('open', () => setConn('live', 'live'));
    es.addEventListener('error', () => setConn('down', 'reconnecting…'));
    es.addEventListener('snapshot', (m) => {
      /** @type {Snapshot} */
      const d = JSON.parse(m.data);
      renderAll(d.nodes);
      renderStatus(d.status);
      renderEvents(d.events, true);
      afterNodes();
      setConn('live', 'live');
      document.body.dataset.ready = '1';
    });
    es.addEventListener('update', (m) => {
      /** @type {Update} */
      const d = JSON.parse(m.data);
      for (const v of d.nodes) upsert(v);
      for (const mac of d.removed) remove(mac);
      if (d.status) renderStatus(d.status);
      if (d.events.length) renderEvents(d.events, false);
      if (d.nodes.length || d.removed.length) afterNodes();
      if (st.detail && d.nodes.some((v) => v.mac === st.detail)) renderDetail(/** @type {NodeView} */ (st.nodes.get(st.detail)));
    });
  }

  // ---------------------------------------------------------------- session and actions
  function renderWho() {
    const who = $('#who');
    who.replaceChildren(
      st.admin
        ? el('span', {}, 'admin · ', el('a', { href: '/logout' }, 'log out'))
        : el('span', { title: 'the dispatcher prints a log-in link when it starts' }, 'read-only (actions need the log-in link)'),
    );
  }
  fetch('/api/v1/session')
    .then((r) => r.json())
    .then(
      (s) => {
        st.admin = !!s.admin;
        renderWho();
      },
      () => renderWho(),
    );

  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let toastTimer;
  /** @param {string} text @param {boolean} [err] */
  function toast(text, err) {
    const t = $('#toast');
    t.textContent = text;
    t.className = 'toast' + (err ? ' err' : '');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.add('hidden'), err ? 8000 : 4000);
  }
  /** @param {NodeView} v @param {string} action */
  async function act(v, action) {
    if ((action === 'reboot' || action === 'poweroff') && !confirm(action + ' ' + v.name + '?')) return;
    const msg = $('#d-msg');
    msg.className = 'msg';
    msg.textContent = action + '…';
    try {
      const r = await fetch('/api/v1/nodes/' + encodeURIComponent(v.name) + '/' + action, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      /** @type {Partial<ActionResult> & Partial<ErrorBody>} */
      const body = await r.json().catch(() => ({}));
      if (!r.ok) {
        /** @type {{ message: string, hint?: string }} */
        const e = body.error || { message: r.status + ' ' + r.statusText };
        const text =
          r.status === 401
            ? 'This needs the admin token: open the log-in link the dispatcher printed when it started (…/login?token=…).'
            : e.message + (e.hint ? ' — ' + e.hint : '');
        msg.className = 'msg err';
        msg.textContent = text;
        toast(text, true);
        return;
      }
      msg.textContent = body.node + ': ' + body.message;
      toast(body.node + ': ' + body.message);
    } catch (err) {
      msg.className = 'msg err';
      msg.textContent = 'the dispatcher did not answer: ' + /** @type {Error} */ (err).message;
    }
  }

  // ---------------------------------------------------------------- node detail
  const dialog = /** @type {HTMLDialogElement} */ ($('#detail'));
  dialog.addEventListener('close', () => {
    st.detail = null;
    stopConsole();
  });
  /** @param {string} mac */
  async function openDetail(mac) {
    const v = st.nodes.get(mac);
    if (!v) return;
    st.detail = mac;
    $('#d-msg').textContent = '';
    $('#d-boots').textContent = '…';
    $('#d-snapshot').textContent = 'not inspected yet';
    st.reason = null;
    renderDetail(v);
    if (!dialog.open) dialog.showModal();
    void loadConsole(v);
    void loadReason(v);
    try {
      /** @type {NodeDetail} */
      const d = await (await fetch('/api/v1/nodes/' + encodeURIComponent(v.name))).json();
      if (st.detail !== mac) return;
      addFields(d);
      if (d.lastInspect) showSnapshot(d.lastInspect.snapshot, d.lastInspect.at);
    } catch {
      /* the live row is enough */
    }
    loadBoots(v);
  }
  /** @param {NodeView} v */
  function renderDetail(v) {
    $('#d-name').replaceChildren(v.name + ' ', el('span', { class: 'state ' + v.state }, v.state));
    const a = $('#d-actions');
    a.replaceChildren();
    /** @type {(action: string, label: string, cls?: string) => void} */
    const add = (action, label, cls) =>
      a.append(el('button', { type: 'button', class: cls || '', 'data-action': action, onclick: () => act(v, action) }, label));
    if (v.enrollment === 'pending') add('approve', 'Approve');
    if (v.connected) add('reboot', 'Reboot', 'danger');
    if (v.state === 'ready' || v.state === 'busy') add('drain', 'Drain');
    if (v.state === 'draining') add('undrain', 'Undrain');
    if (v.connected) add('poweroff', 'Power off', 'danger');
    if (!v.connected && (v.state === 'off' || v.state === 'lost')) add('wake', 'Wake (WoL)');
    renderOps(v);
    const f = $('#d-fields');
    f.replaceChildren();
    /** @type {(k: string, val: unknown) => void} */
    const row = (k, val) => f.append(el('dt', {}, k), el('dd', {}, dash(val)));
    row('MAC', v.mac);
    row('IP', v.ip);
    row('UUID', v.uuid);
    row('state since', new Date(v.stateSince).toLocaleString());
    row('image', v.imageVersion);
    if (v.image) {
      row('image next boot', v.image.next && v.image.next !== v.imageVersion ? v.image.next : null);
      row('image state', v.image.stale ? 'stale: a newer build exists' : 'current');
      row('booted by', v.image.via);
      row('image health', v.image.health === 'failed' ? 'failed: ' + (v.image.healthDetail || '') : v.image.health);
    }
    row('agent', v.agentVersion);
    row('CPU', v.cpu && v.cores ? v.cpu + ' × ' + v.cores : v.cpu);
    row('memory', v.memUsedMiB !== null && v.memoryMiB ? mib(v.memUsedMiB) + ' used of ' + mib(v.memoryMiB) : mib(v.memoryMiB));
    row('load', v.load1 === null ? null : v.load1.toFixed(2));
    row(
      'tasks',
      v.tasks.length
        ? v.tasks.map((t) => '#' + t.taskId + (t.progress !== null ? ' ' + Math.round(t.progress * 100) + '%' : '')).join(', ')
        : v.connected
          ? 'none'
          : null,
    );
    row('boots', v.bootCount);
    row('last boot stage', v.bootStage ? v.bootStage.stage + ' at ' + time(v.bootStage.ts) : null);
    row('labels', v.labels.join(', '));
    row('heartbeat', ago(v.lastHeartbeat));
  }
  /** Power, health, black-hole evidence and resources, each when the dispatcher sends it. @param {NodeView} v */
  function renderOps(v) {
    const o = ops(v);
    const f = $('#d-ops');
    f.replaceChildren();
    /** @type {(k: string, ...val: (Node | string)[]) => void} */
    const row = (k, ...val) => f.append(el('dt', {}, k), el('dd', { 'data-field': k }, ...val));
    if (o.power)
      row(
        'power',
        el('span', { class: 'pstate ' + o.power.state }, o.power.state),
        (o.power.at ? ' ' + ago(o.power.at) : '') + (o.power.by ? ' (by ' + o.power.by + ')' : ''),
      );
    if (o.unreachable) row('unreachable', el('span', { class: 'bad' }, o.unreachable.reason), ' since ' + ago(o.unreachable.since));
    if (o.health)
      row(
        'health check',
        el('span', { class: o.health.ok ? 'ok' : 'bad' }, o.health.ok ? 'passed' : 'failed'),
        ' ' + ago(o.health.checkedAt ?? o.health.at),
        ...(o.health.output ? [el('pre', { class: 'why' }, o.health.output)] : []),
      );
    if (o.suspect) row('suspect', el('span', { class: 'bad' }, suspectText(o.suspect)), ' ' + ago(o.suspect.at));
    if (st.reason?.mac === v.mac && st.reason.state !== v.state) void loadReason(v);
    // Ready and busy need no explanation; a drain, a loss, a power-off do.
    else if (st.reason?.mac === v.mac && st.reason.text && !['ready', 'busy'].includes(v.state)) row('why ' + v.state, st.reason.text);
    const r = o.resources;
    if (r) {
      /** @type {(a: Alloc, fmt: (n: number) => string) => Node} */
      const use = (a, fmt) => {
        const pct = a.total ? Math.min(100, (a.allocated / a.total) * 100) : 0;
        const part = el('i', {});
        part.style.width = pct.toFixed(1) + '%';
        return el(
          'span',
          {},
          el('span', { class: 'prog wide' }, part),
          ' ' + fmt(a.allocated) + ' allocated, ' + fmt(Math.max(0, a.total - a.allocated)) + ' free of ' + fmt(a.total),
        );
      };
      row('cores', use(r.cores, String));
      row(
        'memory',
        use(r.memoryMiB, (n) => mib(n)),
      );
      if (r.gpus?.total) row('GPUs', use(r.gpus, String));
      row('limits', r.enforced ? 'enforced (cgroup v2)' : 'not enforced on this node');
    }
  }
  /** The reason the node is in its state now (drain, suspect, health...), from its events. @param {NodeView} v */
  async function loadReason(v) {
    st.reason = { mac: v.mac, state: v.state, text: '' };
    try {
      const r = await fetch('/api/v1/events?kind=node.state&limit=50&node=' + encodeURIComponent(v.name));
      if (!r.ok) return;
      /** @type {{ events: ClusterEvent[] }} */
      const d = await r.json();
      const last = d.events.filter((e) => e.data && e.data.to === v.state).at(-1);
      const why = last?.data?.reason;
      if (st.detail !== v.mac || st.reason?.state !== v.state || typeof why !== 'string') return;
      st.reason.text = why;
      renderOps(/** @type {NodeView} */ (st.nodes.get(v.mac) ?? v));
    } catch {
      /* the state alone is shown */
    }
  }

  // Console lines come from the node's kernel and serial port: anything at all. They go in as
  // text, with terminal escapes and control characters taken out. The dispatcher already drops
  // control characters, ESC included, which leaves colour and erase sequences as `[31m`, `[2K`:
  // those remnants go too.
  const CONSOLE_LINES = 20;
  const ESCAPES = /\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])|[\x00-\x08\x0b-\x1f\x7f]/g;
  const REMNANTS = /\[(?:\d{1,3}(?:;\d{1,3})*)?[mKJ]/g;
  /** @param {string} s */
  const plain = (s) => s.replace(ESCAPES, '').replace(REMNANTS, '');
  /** @type {EventSource | null} */
  let consoleStream = null;
  function stopConsole() {
    consoleStream?.close();
    consoleStream = null;
  }
  /** @param {ConsoleLine} l */
  function consoleLine(l) {
    return el(
      'li',
      { 'data-source': l.source, 'data-id': l.id },
      el('time', { datetime: new Date(l.ts).toISOString() }, time(l.ts)),
      el('span', { class: 'src ' + l.source }, l.source === 'kernel' ? 'kern' : 'serial'),
      el('span', { class: 'line' }, plain(l.text)),
    );
  }
  /** @param {ConsoleLine[]} lines */
  function addConsole(lines) {
    const box = $('#d-console');
    if (!lines.length) return;
    if (box.classList.contains('muted')) {
      box.className = 'console';
      box.replaceChildren();
    }
    box.append(...lines.map(consoleLine));
    while (box.children.length > CONSOLE_LINES) /** @type {ChildNode} */ (box.firstChild).remove();
    box.scrollTop = box.scrollHeight;
  }
  /** The last lines, then new ones as they arrive (the console stream, resumed after the last id). @param {NodeView} v */
  async function loadConsole(v) {
    stopConsole();
    const box = $('#d-console');
    box.className = 'console muted';
    box.replaceChildren(el('li', {}, '…'));
    try {
      const r = await fetch('/api/v1/nodes/' + encodeURIComponent(v.name) + '/console?limit=' + CONSOLE_LINES);
      if (!r.ok) throw new Error(await errorText(r));
      /** @type {ConsoleReply} */
      const d = await r.json();
      if (st.detail !== v.mac) return;
      box.replaceChildren(el('li', {}, 'nothing captured yet'));
      addConsole(d.lines);
      const after = d.lines.length ? /** @type {ConsoleLine} */ (d.lines.at(-1)).id : 0;
      const es = new EventSource('/api/v1/nodes/' + encodeURIComponent(v.name) + '/console/stream?after=' + after);
      es.addEventListener('line', (m) => addConsole([JSON.parse(/** @type {MessageEvent} */ (m).data)]));
      consoleStream = es;
    } catch (err) {
      if (st.detail === v.mac) box.replaceChildren(el('li', {}, 'console unavailable (' + /** @type {Error} */ (err).message + ')'));
    }
  }
  /** @param {NodeDetail} d */
  function addFields(d) {
    const f = $('#d-fields');
    /** @type {(k: string, val: unknown) => void} */
    const row = (k, val) => f.append(el('dt', {}, k), el('dd', {}, dash(val)));
    const inv = /** @type {Inventory} */ (d.inventory || {});
    if (inv.system) row('system', [inv.system.manufacturer, inv.system.model].filter(Boolean).join(' '));
    if (inv.os) row('OS', [inv.os.distro, inv.os.kernel, inv.os.arch].filter(Boolean).join(' '));
    if (d.firstStage) row('UEFI first stage', d.firstStage);
  }
  /** @param {NodeView} v */
  async function loadBoots(v) {
    const box = $('#d-boots');
    try {
      const r = await fetch('/api/v1/boots?node=' + encodeURIComponent(v.name));
      if (!r.ok) throw new Error(r.status === 404 ? 'no boot recorded' : String(r.status));
      /** @type {BootsReply} */
      const d = await r.json();
      let boots = d.boots;
      if (!boots && d.stages) {
        /** @type {Map<number, BootStage[]>} */
        const by = new Map();
        for (const s of d.stages) {
          if (!by.has(s.boot)) by.set(s.boot, []);
          /** @type {BootStage[]} */
          (by.get(s.boot)).push(s);
        }
        boots = [...by].map(([boot, stages]) => ({ boot, stages }));
      }
      if (!boots?.length) {
        box.textContent = 'no boot recorded yet';
        return;
      }
      box.className = 'boots';
      box.replaceChildren(
        ...boots
          .slice(-3)
          .reverse()
          .map((b, i) => waterfall(b, i === 0)),
      );
    } catch (err) {
      box.className = 'muted';
      box.textContent = 'boot timeline unavailable (' + /** @type {Error} */ (err).message + ')';
    }
  }
  /**
   * A boot as a waterfall: each stage a bar on one time axis, from when it was recorded to when
   * the next one was (the last stage is a mark), so the slow step of a boot stands out.
   * @param {Boot} b @param {boolean} open the newest boot is unfolded
   */
  function waterfall(b, open) {
    const t0 = b.stages.length ? /** @type {BootStage} */ (b.stages[0]).ts : 0;
    const end = b.stages.length ? /** @type {BootStage} */ (b.stages.at(-1)).ts : 0;
    const span = Math.max(1, end - t0);
    const box = el(
      'details',
      { class: 'wf', 'data-boot': b.boot },
      el(
        'summary',
        {},
        'boot #' + b.boot,
        el('span', { class: 'muted' }, (t0 ? ' · ' + new Date(t0).toLocaleString() : '') + ' · ' + (span / 1000).toFixed(2) + ' s'),
      ),
    );
    if (open) box.setAttribute('open', '');
    b.stages.forEach((s, i) => {
      const next = b.stages[i + 1];
      const ms = next ? next.ts - s.ts : 0;
      const detail = s.detail
        ? Object.entries(s.detail)
            .map(([k, x]) => k + '=' + (typeof x === 'object' ? JSON.stringify(x) : x))
            .join(' ')
        : '';
      const bar = el('i', { class: 'wf-bar' + (/failed|nak|ignored/.test(s.stage) ? ' bad' : '') + (next ? '' : ' last') });
      bar.style.left = (((s.ts - t0) / span) * 100).toFixed(2) + '%';
      bar.style.width = ((ms / span) * 100).toFixed(2) + '%';
      box.append(
        el(
          'div',
          { class: 'wf-row', 'data-stage': s.stage, title: detail },
          el('span', { class: 'wf-label' }, s.stage),
          el('span', { class: 'wf-track' }, bar),
          el('span', { class: 'wf-t num' }, '+' + ((s.ts - t0) / 1000).toFixed(3) + 's' + (next ? ' · ' + ms + ' ms' : '')),
        ),
      );
    });
    const axis = el('div', { class: 'wf-row wf-axis' }, el('span', { class: 'wf-label' }));
    const track = el('span', { class: 'wf-track' });
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      const tick = el('span', { class: 'wf-tick' }, ((f * span) / 1000).toFixed(span < 10_000 ? 2 : 0) + 's');
      tick.style.left = f * 100 + '%';
      track.append(tick);
    }
    axis.append(track, el('span', { class: 'wf-t' }));
    box.append(axis);
    return box;
  }
  /** @param {unknown} snapshot @param {number} [at] */
  function showSnapshot(snapshot, at) {
    const pre = $('#d-snapshot');
    pre.className = 'snapshot';
    pre.textContent = (at ? 'at ' + new Date(at).toLocaleString() + '\n' : '') + JSON.stringify(snapshot, null, 2);
  }
  $('#d-inspect').addEventListener('click', async () => {
    const v = st.detail === null ? undefined : st.nodes.get(st.detail);
    if (!v) return;
    const pre = $('#d-snapshot');
    pre.textContent = 'asking ' + v.name + '…';
    try {
      // POST: the browser then names the page's origin, which a cookie-authenticated action needs.
      const r = await fetch('/api/v1/nodes/' + encodeURIComponent(v.name) + '/inspect', { method: 'POST' });
      const d = await r.json();
      if (!r.ok) throw new Error(d.error ? d.error.message + (d.error.hint ? ' — ' + d.error.hint : '') : String(r.status));
      showSnapshot(d.snapshot, d.at);
    } catch (err) {
      pre.className = 'snapshot muted';
      pre.textContent = /** @type {Error} */ (err).message;
    }
  });

  // ---------------------------------------------------------------- boot servers
  /** Boot servers of other segments (dispatcherctl boot-servers): shown when there are any. */
  async function refreshBootServers() {
    try {
      const r = await fetch('/api/v1/boot-servers');
      if (!r.ok) return;
      /** @type {{ bootServers: BootServerView[] }} */
      const d = await r.json();
      $('#boot-servers').classList.toggle('hidden', d.bootServers.length === 0);
      const online = d.bootServers.filter((b) => b.state === 'online').length;
      $('#bs-total').textContent = d.bootServers.length ? online + ' of ' + d.bootServers.length + ' online' : '';
      $('#bs tbody').replaceChildren(
        ...d.bootServers.map((b) => {
          const c = b.report?.cache;
          const err = b.report?.errors.at(-1);
          return el(
            'tr',
            null,
            el('td', null, b.name),
            el('td', { class: 'state ' + b.state }, b.state),
            el('td', { class: 'opt' }, dash(b.address)),
            el('td', { class: 'opt' }, dash(b.report?.url)),
            el('td', null, ago(b.lastSeen)),
            el('td', { class: 'num' }, c ? c.files + ' files, ' + mib(c.bytes / 1048576) : '–'),
            el('td', { class: 'num' }, c ? c.refused : '–'),
            el('td', { class: 'num opt' }, b.scripts),
            el('td', { title: err ? err.message : '' }, err ? err.message.slice(0, 80) : '–'),
          );
        }),
      );
    } catch {
      /* asked again shortly */
    }
  }
  void refreshBootServers();
  setInterval(refreshBootServers, 5000);

  renderWho();
  connect();
})();
