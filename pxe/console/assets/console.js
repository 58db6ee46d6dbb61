// pxeswarm console: fills the server-rendered pages from the JSON API.
// Plain JavaScript, no build step. Everything the server or an agent
// said is put into the page as text (textContent), never as markup.
'use strict';

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const param = body.dataset.param;
  const loggedIn = body.dataset.loggedIn === 'true';
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || '';

  // el builds an element: attrs sets attributes (dataset via "data-…",
  // listeners via "on…" functions), children are nodes or text.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function flash(msg, bad) {
    const f = document.getElementById('flash');
    if (!f) return;
    f.textContent = msg;
    f.className = bad ? 'bad' : 'ok';
  }

  // api calls the JSON API with the session's CSRF token. It resolves to
  // {status, data}; a network error gives status 0.
  async function api(method, path, data) {
    const opts = { method, headers: {}, credentials: 'same-origin' };
    if (method !== 'GET') opts.headers['X-CSRF-Token'] = csrf;
    if (data !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(data);
    }
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (e) {
      return { status: 0, data: { error: 'server unreachable: ' + e } };
    }
    let out = null;
    try { out = await resp.json(); } catch (e) { out = null; }
    if (resp.status === 401 && method !== 'GET') {
      flash('Your session has ended: log in again.', true);
    }
    return { status: resp.status, data: out };
  }

  function errText(r) {
    if (r.status === 404) return 'not available on this server yet (404)';
    return (r.data && r.data.error) || ('HTTP ' + r.status);
  }

  function bytes(n) {
    if (!n) return '0 B';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }

  function when(t) {
    if (!t) return '';
    const d = new Date(t);
    return isNaN(d) ? String(t) : d.toLocaleString();
  }

  // report is the last report on the machine's active task (none for a
  // task that has not reported yet, or without a task).
  function report(m) {
    return (m.task && m.task.last_report) || null;
  }

  function pct(rep) {
    if (!rep || !rep.bytes_total) return 0;
    return Math.min(100, 100 * rep.bytes_done / rep.bytes_total);
  }

  async function images() {
    const r = await api('GET', '/api/images');
    return r.status === 200 && Array.isArray(r.data) ? r.data : [];
  }

  async function machines() {
    const r = await api('GET', '/api/machines');
    return r.status === 200 && Array.isArray(r.data) ? r.data : [];
  }

  function fillSelect(sel, values, labels) {
    if (!sel) return;
    const keep = sel.value;
    sel.replaceChildren(...values.map((v, i) => el('option', { value: v }, labels ? labels[i] : v)));
    if (values.includes(keep)) sel.value = keep;
  }

  function groupsOf(ms) {
    return [...new Set(ms.map(m => m.group || ''))].sort();
  }

  async function deploy(target, image, extra) {
    const r = await api('POST', '/api/tasks', Object.assign({ image }, target, extra || {}));
    if (r.status === 201) {
      let msg = 'Started ' + r.data.tasks.length + ' task(s).';
      if (r.data.sent) msg += ' Wake-on-LAN sent to ' + r.data.sent.length + ' address(es).';
      if (r.data.wake_error) msg += ' Wake: ' + r.data.wake_error;
      flash(msg, !!r.data.wake_error);
      return true;
    }
    flash('Deploy failed: ' + errText(r), true);
    return false;
  }

  async function wake(target) {
    const r = await api('POST', '/api/wake', target);
    if (r.status === 200 || r.status === 202) {
      const n = (r.data && r.data.sent) ? r.data.sent.length : 0;
      flash('Wake-on-LAN sent to ' + n + ' address(es).');
    } else {
      flash('Wake failed: ' + errText(r), true);
    }
  }

  async function cancelTask(id) {
    const r = await api('POST', '/api/tasks/' + encodeURIComponent(id) + '/cancel');
    if (r.status === 200) flash('Canceled task ' + id + '.');
    else flash('Cancel failed: ' + errText(r), true);
  }

  // ---- room ----
  const rows = new Map(); // mac -> {row, cells}

  function roomRow(m) {
    const cells = {
      name: el('a', { href: '/machine/' + encodeURIComponent(m.mac), 'data-test': 'machine-name' }),
      group: el('td'), mac: el('td', { class: 'mono' }), ip: el('td', { class: 'mono' }), arch: el('td'),
      state: el('td', { 'data-test': 'state' }), phase: el('td', { 'data-test': 'phase' }),
      bar: el('progress', { max: 100, value: 0, 'data-test': 'progress', 'data-pct': '0' }),
      pctText: el('span', { class: 'pct' }),
      rate: el('td'), peers: el('td'), error: el('td', { class: 'error', 'data-test': 'last-error' }),
      actions: el('td', { class: 'actions' }),
    };
    const sel = loggedIn ? el('input', { type: 'checkbox', class: 'select', 'data-mac': m.mac, 'data-test': 'select' }) : '';
    const row = el('tr', { 'data-mac': m.mac, 'data-test': 'machine-row' },
      el('td', {}, sel), el('td', {}, cells.name), cells.mac, cells.ip, cells.arch, cells.state, cells.phase,
      el('td', { class: 'progress' }, cells.bar, cells.pctText), cells.rate, cells.peers, cells.error, cells.actions);
    return { row, cells };
  }

  function updateRow(entry, m) {
    const c = entry.cells;
    const rep = report(m);
    c.name.textContent = m.name || m.mac;
    c.mac.textContent = m.mac;
    c.ip.textContent = m.ip || '';
    c.arch.textContent = m.arch || '';
    c.state.textContent = m.task ? m.task.state : 'idle';
    entry.row.dataset.state = m.task ? m.task.state : 'idle';
    c.phase.textContent = rep ? rep.phase : '';
    const p = m.task ? pct(rep) : 0;
    c.bar.value = p;
    c.bar.dataset.pct = p.toFixed(1);
    c.pctText.textContent = m.task ? p.toFixed(0) + '%' : '';
    c.rate.textContent = rep && rep.rate_bps ? bytes(rep.rate_bps) + '/s' : '';
    c.peers.textContent = rep ? String(rep.peers || 0) : '';
    c.error.textContent = (m.task && m.task.error) || (rep && rep.error) || (m.last_report && m.last_report.error) || '';
    if (!loggedIn) return;
    const id = m.task ? m.task.id : '';
    if (c.actions.dataset.task !== id) {
      c.actions.dataset.task = id;
      c.actions.replaceChildren(
        id ? el('button', { 'data-test': 'cancel', onclick: () => cancelTask(id) }, 'Cancel') : '',
        el('button', { 'data-test': 'wake', onclick: () => wake({ macs: [m.mac] }) }, 'Wake'));
    }
  }

  function renderRoom(snap) {
    const room = document.getElementById('room');
    const ms = (snap && snap.machines) || [];
    const byGroup = new Map();
    for (const m of ms) {
      const g = m.group || '';
      if (!byGroup.has(g)) byGroup.set(g, []);
      byGroup.get(g).push(m);
    }
    const groups = [...byGroup.keys()].sort();
    const sections = [];
    for (const g of groups) {
      let sec = room.querySelector('section[data-group="' + CSS.escape(g) + '"]');
      if (!sec) {
        const tbody = el('tbody');
        const head = el('h2', {}, g || '(no group)');
        const btns = loggedIn && g ? el('span', { class: 'group-actions' },
          el('button', { 'data-test': 'deploy-group', 'data-group': g, onclick: () => deploy({ group: g }, document.getElementById('room-image').value) }, 'Deploy group'),
          el('button', { 'data-test': 'wake-group', 'data-group': g, onclick: () => wake({ group: g }) }, 'Wake group')) : '';
        sec = el('section', { 'data-group': g, 'data-test': 'group' }, el('div', { class: 'group-head' }, head, btns),
          el('table', { class: 'machines' },
            el('thead', {}, el('tr', {}, ...['', 'Name', 'MAC', 'IP', 'Firmware', 'State', 'Phase', 'Progress', 'Rate', 'Peers', 'Last error', ''].map(h => el('th', {}, h)))),
            tbody));
      }
      const tbody = sec.querySelector('tbody');
      const want = [];
      for (const m of byGroup.get(g)) {
        let entry = rows.get(m.mac);
        if (!entry) { entry = roomRow(m); rows.set(m.mac, entry); }
        updateRow(entry, m);
        want.push(entry.row);
      }
      if (want.some((r, i) => tbody.children[i] !== r) || tbody.children.length !== want.length) tbody.replaceChildren(...want);
      sections.push(sec);
    }
    if (sections.some((s, i) => room.children[i] !== s) || room.children.length !== sections.length) room.replaceChildren(...sections);
    const active = ms.filter(m => m.task).length;
    document.getElementById('summary').textContent = ms.length + ' machine(s), ' + active + ' with an active task';
    room.dataset.machines = String(ms.length);
  }

  function selectedMACs() {
    return [...document.querySelectorAll('input.select:checked')].map(i => i.dataset.mac);
  }

  async function room() {
    if (loggedIn) {
      fillSelect(document.getElementById('room-image'), (await images()).map(i => i.name));
      document.getElementById('deploy-selected').addEventListener('click', async () => {
        const img = document.getElementById('room-image').value;
        for (const mac of selectedMACs()) await deploy({ mac }, img);
      });
      document.getElementById('wake-selected').addEventListener('click', () => wake({ macs: selectedMACs() }));
    }
    const live = document.getElementById('live');
    const es = new EventSource('/api/events');
    es.addEventListener('snapshot', ev => {
      live.textContent = 'live · ' + new Date().toLocaleTimeString();
      live.dataset.state = 'live';
      renderRoom(JSON.parse(ev.data));
    });
    es.addEventListener('logout', () => { es.close(); location.href = '/login?next=/room'; });
    es.onerror = () => { live.textContent = 'reconnecting…'; live.dataset.state = 'down'; };
  }

  // ---- machine ----
  // renderInventory shows what the agent found (protocol.Inventory).
  function renderInventory(inv) {
    const sys = inv.system || {}, cpu = inv.cpu || {};
    const join = (...xs) => xs.filter(x => x).join(' ');
    const rows = [['Vendor', sys.vendor], ['Model', sys.product], ['Serial', sys.serial],
      ['Board', join(sys.board_vendor, sys.board_name)], ['BIOS', join(sys.bios_vendor, sys.bios_version, sys.bios_date)],
      ['CPU', join(cpu.model, cpu.cores ? cpu.cores + ' cores' : '', cpu.threads ? cpu.threads + ' threads' : '')],
      ['Memory', inv.memory_bytes ? bytes(inv.memory_bytes) : ''], ['Firmware', inv.firmware], ['Secure Boot', inv.secure_boot || 'unknown']];
    const table = (head, list, row) => el('table', {}, el('thead', {}, el('tr', {}, ...head.map(h => el('th', {}, h)))),
      el('tbody', {}, ...list.map(x => el('tr', {}, ...row(x).map(v => el('td', {}, v === undefined ? '' : v))))));
    return el('div', {},
      el('dl', { 'data-test': 'inventory-system' }, ...rows.filter(([, v]) => v).flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])),
      el('h3', {}, 'Disks'), table(['Name', 'Model', 'Size', 'Bus'], inv.disks || [], d => [d.name, d.model, bytes(d.size_bytes), d.bus]),
      el('h3', {}, 'Network'), table(['Name', 'Driver', 'MAC', 'Speed'], inv.nics || [], n => [n.name, n.driver, n.mac, n.speed_mbps ? n.speed_mbps + ' Mb/s' : '']));
  }

  async function machine() {
    const mac = param;
    let m = null;
    const r = await api('GET', '/api/machines/' + encodeURIComponent(mac));
    if (r.status === 200 && r.data) m = r.data;
    else m = (await machines()).find(x => x.mac === mac.toLowerCase()) || null;
    const info = document.getElementById('machine-info');
    if (!m) {
      info.replaceChildren(el('dd', {}, 'The server does not know this machine.'));
    } else {
      document.getElementById('machine-title').textContent = (m.name || m.mac) + ' (' + m.mac + ')';
      const rows = [['Group', m.group], ['IP', m.ip], ['Firmware', m.arch], ['First seen', when(m.first_seen)], ['Last seen', when(m.last_seen)],
        ['Active task', m.task ? m.task.id + ' (' + m.task.state + ')' : 'none']];
      info.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v || '')]));
      if (m.inventory) {
        document.getElementById('inventory').replaceChildren(renderInventory(m.inventory),
          el('p', { class: 'muted' }, m.inventory_at ? 'Reported ' + when(m.inventory_at) + '.' : ''));
      }
    }
    const t = await api('GET', '/api/tasks?mac=' + encodeURIComponent(mac));
    const tasks = t.status === 200 && Array.isArray(t.data) ? t.data.slice().reverse() : [];
    document.querySelector('#history tbody').replaceChildren(...tasks.map(x => el('tr', { 'data-test': 'history-row' },
      el('td', { class: 'mono' }, x.id), el('td', {}, x.image), el('td', {}, x.state), el('td', {}, when(x.created)),
      el('td', {}, when(x.updated)), el('td', { class: 'error' }, x.error || ''))));
  }

  // ---- images ----
  async function imagesPage() {
    const list = await images();
    const tbody = document.querySelector('#images tbody');
    tbody.replaceChildren(...list.map(im => el('tr', { 'data-test': 'image-row', 'data-name': im.name },
      el('td', {}, im.name), el('td', {}, bytes(im.size)), el('td', {}, im.used_size !== undefined ? bytes(im.used_size) : ''),
      el('td', {}, im.pieces !== undefined ? String(im.pieces) : ''), el('td', {}, im.versions !== undefined ? String(Array.isArray(im.versions) ? im.versions.length : im.versions) : ''),
      el('td', {}, im.web_seed ? 'yes' : 'no'), el('td', { class: 'mono' }, im.info_hash),
      el('td', {}, el('button', {
        'data-test': 'delete-image', onclick: async () => {
          if (!confirm('Delete image ' + im.name + '? Terminals can no longer get it.')) return;
          const r = await api('DELETE', '/api/images/' + encodeURIComponent(im.name));
          if (r.status === 200 || r.status === 204) { flash('Deleted ' + im.name + '.'); imagesPage(); }
          else flash('Delete failed: ' + errText(r), true);
        }
      }, 'Delete')))));
    tbody.parentElement.dataset.loaded = 'true';
  }

  // ---- tasks ----
  async function tasksPage() {
    const ms = await machines();
    const names = new Map(ms.map(m => [m.mac, m.name || m.mac]));
    fillSelect(document.getElementById('deploy-image'), (await images()).map(i => i.name));
    fillSelect(document.getElementById('deploy-group'), groupsOf(ms).filter(g => g));
    document.getElementById('deploy-machines').append(...ms.map(m =>
      el('label', {}, el('input', { type: 'checkbox', name: 'mac', value: m.mac, 'data-test': 'deploy-mac' }), ' ' + (m.name || m.mac))));
    document.getElementById('deploy-form').addEventListener('submit', async ev => {
      ev.preventDefault();
      const f = ev.target;
      const extra = {};
      if (f.wake.checked) extra.wake = true;
      if (f.after.value) extra.after = f.after.value;
      if (f.scope.value === 'group') await deploy({ group: f.group.value }, f.image.value, extra);
      else for (const c of f.querySelectorAll('input[name="mac"]:checked')) await deploy({ mac: c.value }, f.image.value, extra);
      refresh();
    });
    async function refresh() {
      const r = await api('GET', '/api/tasks');
      const ts = r.status === 200 && Array.isArray(r.data) ? r.data.slice().reverse() : [];
      const active = new Set(ts.filter(t => ['pending', 'booting', 'imaging', 'seeding'].includes(t.state)).map(t => t.mac));
      const tbody = document.querySelector('#tasks tbody');
      tbody.replaceChildren(...ts.map(t => {
        const isActive = ['pending', 'booting', 'imaging', 'seeding'].includes(t.state);
        const p = pct(t.last_report);
        let action = '';
        if (isActive) action = el('button', { 'data-test': 'cancel-task', onclick: async () => { await cancelTask(t.id); refresh(); } }, 'Cancel');
        else if ((t.state === 'failed' || t.state === 'canceled') && !active.has(t.mac)) {
          action = el('button', {
            'data-test': 'retry-task', onclick: async () => {
              await deploy({ mac: t.mac }, t.image, { target: t.target, check: t.check, after: t.after, on_error: t.on_error || undefined, seed_for: t.seed_for || undefined, create_table: t.create_table, discard: t.discard });
              refresh();
            }
          }, 'Retry');
        }
        return el('tr', { 'data-test': 'task-row', 'data-task': t.id, 'data-mac': t.mac, 'data-state': t.state },
          el('td', { class: 'mono' }, t.id), el('td', {}, names.get(t.mac) || t.mac), el('td', {}, t.image),
          el('td', { 'data-test': 'task-state' }, t.state),
          el('td', {}, isActive ? el('progress', { max: 100, value: p }) : ''), el('td', {}, when(t.updated)),
          el('td', { class: 'error' }, t.error || ''), el('td', {}, action));
      }));
      tbody.parentElement.dataset.loaded = 'true';
    }
    await refresh();
    setInterval(refresh, 2000);
  }

  // ---- swarm ----
  // svg builds an SVG element, as el builds HTML ones.
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  // swarmGraph draws one image's who-fed-whom picture (pxe.SwarmGraph):
  // the server in the middle, machines and other peers on a ring, an
  // arrow per edge, its width growing with the bytes.
  function swarmGraph(g) {
    const nodes = g.nodes || [], edges = g.edges || [];
    const W = 640, H = 520, cx = W / 2, cy = H / 2, R = Math.min(cx, cy) - 70;
    const ring = nodes.filter(n => n.kind !== 'server');
    const pos = new Map();
    for (const n of nodes) if (n.kind === 'server') pos.set(n.id, [cx, cy]);
    ring.forEach((n, i) => {
      const a = -Math.PI / 2 + 2 * Math.PI * i / Math.max(1, ring.length);
      pos.set(n.id, [cx + R * Math.cos(a), cy + R * Math.sin(a)]);
    });
    const label = n => n.kind === 'server' ? 'server' : (n.name || n.id);
    const byID = new Map(nodes.map(n => [n.id, n]));
    const max = Math.max(1, ...edges.map(e => e.bytes));
    const pic = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'swarm-graph', role: 'img', 'data-test': 'swarm-graph', 'data-image': g.image },
      svg('title', {}, 'Who fed whom for ' + g.image));
    const defs = svg('defs', {});
    for (const k of ['server', 'machine', 'peer']) {
      defs.append(svg('marker', { id: 'arrow-' + k, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 11, markerHeight: 11, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse', class: 'arrow-' + k },
        svg('path', { d: 'M 0 0 L 10 5 L 0 10 z' })));
    }
    pic.append(defs);
    const r = 14;
    for (const e of edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      const kind = (byID.get(e.from) || {}).kind || 'peer';
      // Shift each direction of a pair to its own side, and stop at the
      // circles' rims.
      let dx = b[0] - a[0], dy = b[1] - a[1];
      const len = Math.hypot(dx, dy) || 1;
      dx /= len; dy /= len;
      const off = 4, ox = -dy * off, oy = dx * off;
      const w = 1 + 11 * e.bytes / max;
      pic.append(svg('line', {
        x1: a[0] + dx * r + ox, y1: a[1] + dy * r + oy, x2: b[0] - dx * (r + 2) + ox, y2: b[1] - dy * (r + 2) + oy,
        'stroke-width': w.toFixed(1), class: 'edge edge-' + kind, 'marker-end': `url(#arrow-${kind})`,
        'data-test': 'swarm-edge', 'data-from': e.from, 'data-to': e.to, 'data-bytes': e.bytes,
      }, svg('title', {}, label(byID.get(e.from) || { id: e.from }) + ' → ' + label(byID.get(e.to) || { id: e.to }) + ': ' + bytes(e.bytes))));
    }
    for (const n of nodes) {
      const [x, y] = pos.get(n.id);
      const out = n.kind === 'server' ? 0 : 1;
      const lx = x + out * (x - cx) / R * 26, ly = y + (n.kind === 'server' ? r + 16 : out * (y - cy) / R * 26 + 4);
      pic.append(svg('g', { class: 'node node-' + n.kind, 'data-test': 'swarm-node', 'data-id': n.id, 'data-kind': n.kind },
        svg('circle', { cx: x, cy: y, r: n.kind === 'server' ? r + 4 : r }),
        svg('text', { x: lx, y: ly, 'text-anchor': Math.abs(lx - x) < 5 ? 'middle' : (lx > x ? 'start' : 'end') }, label(n)),
        svg('title', {}, label(n) + (n.kind === 'server' ? '' : ': ' + bytes(n.from_server) + ' from the server, ' + bytes(n.from_peers) + ' from peers'))));
    }
    const machinesOf = nodes.filter(n => n.kind === 'machine');
    return el('section', { 'data-test': 'swarm-graph-section', 'data-image': g.image },
      el('h3', {}, g.image), pic,
      el('table', {}, el('thead', {}, el('tr', {}, ...['Machine', 'Task', 'From the server', 'From peers'].map(h => el('th', {}, h)))),
        el('tbody', {}, ...machinesOf.map(n => el('tr', { 'data-test': 'swarm-machine', 'data-mac': n.id },
          el('td', {}, label(n)), el('td', { class: 'mono' }, (n.task || '') + (n.state ? ' (' + n.state + ')' : '')),
          el('td', { 'data-test': 'from-server' }, bytes(n.from_server)), el('td', { 'data-test': 'from-peers' }, bytes(n.from_peers)))))));
  }

  function renderSwarmGraphs(gs) {
    const box = document.getElementById('swarm-graphs');
    if (!gs.length) box.replaceChildren(el('p', { class: 'muted' }, 'No agent has reported where its image came from yet.'));
    else box.replaceChildren(...gs.map(swarmGraph));
    box.dataset.loaded = 'true';
  }

  async function swarmPage() {
    const live = document.getElementById('live');
    const es = new EventSource('/api/events');
    es.addEventListener('snapshot', ev => {
      live.textContent = 'live · ' + new Date().toLocaleTimeString();
      live.dataset.state = 'live';
      renderSwarmGraphs(JSON.parse(ev.data).swarm || []);
    });
    es.addEventListener('logout', () => { es.close(); location.href = '/login?next=/swarm'; });
    es.onerror = () => { live.textContent = 'reconnecting…'; live.dataset.state = 'down'; };
    async function refresh() {
      const [r, ms] = [await api('GET', '/api/swarms'), await machines()];
      const byIP = new Map(ms.filter(m => m.ip).map(m => [m.ip, m]));
      const box = document.getElementById('swarms');
      if (r.status !== 200 || !Array.isArray(r.data)) {
        box.replaceChildren(el('p', { class: 'muted' }, 'No swarm statistics: ' + errText(r)));
        box.dataset.loaded = 'true';
        return;
      }
      box.replaceChildren(...r.data.map(sw => {
        const hosts = sw.hosts || [];
        let down = 0, upByMachines = 0;
        for (const h of hosts) if (byIP.has(h.addr)) { down += h.downloaded; upByMachines += h.uploaded; }
        const fromServer = Math.max(0, down - upByMachines);
        const max = Math.max(1, ...hosts.map(h => Math.max(h.downloaded, h.uploaded)));
        return el('section', { 'data-test': 'swarm', 'data-name': sw.name },
          el('h2', {}, sw.name + ' '), el('p', {},
            sw.peers + ' peer(s), ' + sw.seeders + ' seeding. Machines got ' + bytes(down) + ': ' +
            bytes(upByMachines) + ' from each other, about ' + bytes(fromServer) + ' from the server.'),
          el('table', {}, el('thead', {}, el('tr', {}, ...['Host', 'Machine', 'Downloaded', 'Uploaded', 'down (blue) / up (green)'].map(h => el('th', {}, h)))),
            el('tbody', {}, ...hosts.map(h => {
              const m = byIP.get(h.addr);
              return el('tr', { 'data-test': 'swarm-host' }, el('td', { class: 'mono' }, h.addr),
                el('td', {}, m ? (m.name || m.mac) : '(not a machine: the server or another host)'),
                el('td', {}, bytes(h.downloaded)), el('td', {}, bytes(h.uploaded)),
                el('td', {}, el('progress', { max, value: h.downloaded, title: 'downloaded', class: 'down' }), el('progress', { max, value: h.uploaded, title: 'uploaded', class: 'up' })));
            }))));
      }));
      if (r.data.length === 0) box.replaceChildren(el('p', { class: 'muted' }, 'No image is published yet.'));
      box.dataset.loaded = 'true';
    }
    await refresh();
    setInterval(refresh, 2000);
  }

  // ---- schedules ----
  async function schedulesPage() {
    const ms = await machines();
    fillSelect(document.getElementById('schedule-group'), groupsOf(ms).filter(g => g));
    fillSelect(document.getElementById('schedule-image'), (await images()).map(i => i.name));
    async function refresh() {
      const r = await api('GET', '/api/schedules');
      const table = document.getElementById('schedules');
      table.dataset.loaded = 'true';
      if (r.status === 404) {
        document.getElementById('schedules-off').hidden = false;
        document.getElementById('schedule-add').hidden = true;
        table.hidden = true;
        return;
      }
      const list = Array.isArray(r.data) ? r.data : (r.data && Array.isArray(r.data.schedules) ? r.data.schedules : []);
      table.querySelector('tbody').replaceChildren(...list.map(s => {
        const what = [s.group ? 'group ' + s.group : '', (s.macs || []).join(' '), s.wake ? 'wake' : '', s.image ? 'deploy ' + s.image : '', s.after ? 'then ' + s.after : ''].filter(x => x).join(', ');
        const whenText = s.weekly ? 'every ' + s.weekly + (s.next ? ' (next ' + when(s.next) + ')' : '') : when(s.at) + (s.next ? '' : ' (done)');
        const runs = s.runs || [];
        const last = runs.length ? runs[runs.length - 1] : null;
        const lastText = !last ? '' : last.missed ? 'missed ' + when(last.due) :
          last.error ? 'failed: ' + last.error : when(last.ran) + ': ' + (last.tasks || []).length + ' task(s)' + ((last.skipped || []).length ? ', skipped ' + last.skipped.join('; ') : '');
        return el('tr', { 'data-test': 'schedule-row', 'data-id': s.id },
          el('td', { class: 'mono' }, s.id), el('td', {}, s.name || ''), el('td', {}, whenText), el('td', {}, what), el('td', {}, lastText),
          el('td', {}, el('button', {
            'data-test': 'cancel-schedule', onclick: async () => {
              const d = await api('DELETE', '/api/schedules/' + encodeURIComponent(s.id));
              if (d.status === 200 || d.status === 204) flash('Canceled schedule ' + s.id + '.');
              else flash('Cancel failed: ' + errText(d), true);
              refresh();
            }
          }, 'Cancel')));
      }));
    }
    document.getElementById('schedule-form').addEventListener('submit', async ev => {
      ev.preventDefault();
      const f = ev.target;
      const body = { group: f.group.value, image: f.image.value, wake: f.wake.checked, after: f.after.value };
      const name = f.elements.namedItem('name').value;
      if (name) body.name = name;
      if (f.weekly.value) body.weekly = f.weekly.value;
      else if (f.at.value) body.at = new Date(f.at.value).toISOString();
      else { flash('Give a time (once) or a weekly rule such as "fri 22:00".', true); return; }
      const r = await api('POST', '/api/schedules', body);
      if (r.status === 200 || r.status === 201) flash('Schedule added.');
      else flash('Adding the schedule failed: ' + errText(r), true);
      refresh();
    });
    await refresh();
  }

  const pages = { room, machine, images: imagesPage, tasks: tasksPage, swarm: swarmPage, schedules: schedulesPage };
  if (pages[page]) pages[page]().then(() => { body.dataset.ready = 'true'; });
})();
