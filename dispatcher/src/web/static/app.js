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
  dialog.addEventListener('close', () => (st.detail = null));
  /** @param {string} mac */
  async function openDetail(mac) {
    const v = st.nodes.get(mac);
    if (!v) return;
    st.detail = mac;
    $('#d-msg').textContent = '';
    $('#d-boots').textContent = '…';
    $('#d-snapshot').textContent = 'not inspected yet';
    renderDetail(v);
    if (!dialog.open) dialog.showModal();
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
      row('health check', v.image.health === 'failed' ? 'failed: ' + (v.image.healthDetail || '') : v.image.health);
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
          .map((b) => {
            const t0 = b.stages.length ? /** @type {BootStage} */ (b.stages[0]).ts : 0;
            const t = el(
              'table',
              {},
              el('caption', { class: 'muted' }, 'boot #' + b.boot + (t0 ? ' · ' + new Date(t0).toLocaleString() : '')),
            );
            for (const s of b.stages) {
              const detail = s.detail
                ? Object.entries(s.detail)
                    .map(([k, x]) => k + '=' + (typeof x === 'object' ? JSON.stringify(x) : x))
                    .join(' ')
                : '';
              t.append(
                el(
                  'tr',
                  {},
                  el('td', { class: 'num' }, '+' + ((s.ts - t0) / 1000).toFixed(3) + 's'),
                  el('td', {}, s.stage),
                  el('td', { class: 'muted' }, detail),
                ),
              );
            }
            return t;
          }),
      );
    } catch (err) {
      box.className = 'muted';
      box.textContent = 'boot timeline unavailable (' + /** @type {Error} */ (err).message + ')';
    }
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

  renderWho();
  connect();
})();
