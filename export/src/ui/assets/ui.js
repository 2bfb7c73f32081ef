// sonde trace view: the page served by `sonde run --ui`.
// Plain ES2020, no dependencies, no build step. The page polls the agent with relative URLs
// (api/traces every 1 s, api/services every 2 s, the open trace every 1 s) and only touches the
// DOM when a response differs from the previous one. CSP: no inline style or script anywhere;
// styles are set through the CSSOM (el.style.x) and handlers with addEventListener.
'use strict';

(() => {
  const TRACES_EVERY_MS = 1000;
  const SERVICES_EVERY_MS = 2000;
  const TRACE_EVERY_MS = 1000;
  const MISSING_TRACE_EVERY_MS = 5000;
  const HIDDEN_EVERY_MS = 5000; // browser tab in the background
  const FETCH_TIMEOUT_MS = 5000;
  const LIST_LIMIT = 200;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);

  // el('div', {class: 'a', 'data-x': 1, text: 'hi'}, child, 'text', null)
  function build(doc, ns, tag, attrs, children) {
    const e = ns ? doc.createElementNS(ns, tag) : doc.createElement(tag);
    if (attrs) {
      for (const k of Object.keys(attrs)) {
        const v = attrs[k];
        if (v === undefined || v === null || v === false) continue;
        if (k === 'text') e.textContent = String(v);
        else if (k === 'class') e.setAttribute('class', v);
        else if (k === 'on') for (const ev of Object.keys(v)) e.addEventListener(ev, v[ev]);
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const el = (tag, attrs, ...children) => build(document, null, tag, attrs, children);
  const svg = (tag, attrs, ...children) => build(document, SVG_NS, tag, attrs, children);

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  const finite = (x) => typeof x === 'number' && Number.isFinite(x);

  function fmtMs(v) {
    if (!finite(v)) return '–';
    const a = Math.abs(v);
    if (a >= 10000) return (v / 1000).toFixed(1) + ' s';
    if (a >= 1000) return (v / 1000).toFixed(2) + ' s';
    if (a >= 100) return v.toFixed(0) + ' ms';
    if (a >= 10) return v.toFixed(1) + ' ms';
    if (a >= 1) return v.toFixed(2) + ' ms';
    if (a === 0) return '0 ms';
    if (a >= 0.01) return v.toFixed(3) + ' ms';
    return (v * 1000).toFixed(1) + ' µs';
  }

  function fmtRate(v) {
    if (!finite(v)) return '–';
    if (v === 0) return '0';
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1);
    if (v >= 0.01) return v.toFixed(2);
    return '<0.01';
  }

  function fmtPct(v) {
    if (!finite(v)) return '–';
    if (v === 0) return '0%';
    const p = v * 100;
    if (p < 0.1) return '<0.1%';
    return (p >= 10 ? p.toFixed(0) : p.toFixed(1)) + '%';
  }

  function fmtInt(v) {
    return finite(v) ? Math.round(v).toLocaleString('en-US') : '–';
  }

  const pad = (n, w) => String(n).padStart(w, '0');
  function fmtClock(unixMs) {
    if (!finite(unixMs)) return '–';
    const d = new Date(unixMs);
    return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${pad(d.getMilliseconds(), 3)}`;
  }
  function fmtDate(unixMs) {
    if (!finite(unixMs)) return '–';
    const d = new Date(unixMs);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1, 2)}-${pad(d.getDate(), 2)} ${fmtClock(unixMs)}`;
  }

  // A stable colour per service name: a hash of the name (FNV-1a, seeded, then murmur3's
  // finaliser) picks one of Tableau 20's colours less its reds (red means error) and greys. The
  // same name has the same colour in every view and on every load; the seed is one under which
  // common names (curl, nginx, python3.11, postgres, node, ...) get different hues.
  const PALETTE = [
    '#4e79a7', '#a0cbe8', '#f28e2b', '#ffbe7d', '#59a14f', '#8cd17d', '#b6992d', '#f1ce63',
    '#499894', '#86bcb6', '#d37295', '#fabfd2', '#b07aa1', '#d4a6c8', '#9d7660', '#d7b5a6',
  ];
  const COLOUR_SEED = 534371;
  const colourCache = new Map();
  function colourOf(name) {
    const key = String(name || '');
    let c = colourCache.get(key);
    if (c) return c;
    let h = (0x811c9dc5 ^ COLOUR_SEED) >>> 0;
    for (let i = 0; i < key.length; i++) {
      h ^= key.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b) >>> 0;
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35) >>> 0;
    h ^= h >>> 16;
    c = PALETTE[(h >>> 0) % PALETTE.length];
    colourCache.set(key, c);
    return c;
  }

  function swatch(name, cls) {
    const s = el('span', { class: cls || 'swatch', 'aria-hidden': 'true' });
    s.style.backgroundColor = colourOf(name);
    return s;
  }

  // ---------------------------------------------------------------- fetching and reachability

  async function getText(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch(path, {
        cache: 'no-store',
        signal: ctl.signal,
        headers: { Accept: 'application/json' },
      });
      const text = await r.text();
      return { status: r.status, ok: r.ok, text };
    } finally {
      clearTimeout(timer);
    }
  }

  function errorOf(res) {
    try {
      const j = JSON.parse(res.text);
      if (j && typeof j.error === 'string') return j.error;
    } catch (_) { /* not JSON */ }
    return `HTTP ${res.status}`;
  }

  // reachable: null before the first answer, then whether the last request got any answer.
  // apiErrors: endpoint -> message for endpoints that answered with an error status.
  const conn = { reachable: null, lastContact: 0, apiErrors: new Map() };

  function reached(endpoint, problem) {
    conn.reachable = true;
    conn.lastContact = Date.now();
    if (problem) conn.apiErrors.set(endpoint, problem);
    else conn.apiErrors.delete(endpoint);
    renderConn();
  }

  function unreachable() {
    conn.reachable = false;
    renderConn();
  }

  function renderConn() {
    const banner = $('banner');
    const live = $('live');
    const liveText = $('live-text');
    let msg = '';
    if (conn.reachable === false) {
      msg = 'agent not reachable';
      if (conn.lastContact) {
        const ago = Math.max(0, Math.round((Date.now() - conn.lastContact) / 1000));
        msg += ` — last answer ${ago} s ago`;
      }
      msg += ' — retrying every second';
    } else if (conn.apiErrors.size) {
      msg = Array.from(conn.apiErrors.values()).join(' · ');
    }
    if (banner.textContent !== msg) banner.textContent = msg;
    banner.hidden = !msg;
    live.classList.toggle('down', conn.reachable === false);
    const lt = conn.reachable === false ? 'offline' : conn.reachable ? 'live' : 'connecting';
    if (liveText.textContent !== lt) liveText.textContent = lt;
  }

  // A poller runs fn every period ms (a number or a function giving it), never twice at once;
  // kick() runs it now.
  function poller(fn, period) {
    let timer = 0;
    let running = false;
    let again = false;
    async function run() {
      clearTimeout(timer);
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        await fn();
      } catch (e) {
        console.warn('sonde ui:', e); // a bug in rendering: keep polling
      } finally {
        running = false;
        if (again) {
          again = false;
          timer = setTimeout(run, 0);
        } else {
          const periodMs = typeof period === 'function' ? period() : period;
          timer = setTimeout(run, document.hidden ? Math.max(periodMs, HIDDEN_EVERY_MS) : periodMs);
        }
      }
    }
    return { kick: run };
  }

  // ---------------------------------------------------------------- state

  const st = {
    tab: 'traces',
    list: { text: null, data: null, rendered: false, query: null },
    rows: new Map(), // trace_id -> {el, sig}
    filterOptions: { services: '', operations: '' },
    trace: { id: null, text: null, data: null, missing: false, pendingSpan: null },
    span: null, // selected span id
    services: { text: null, data: null },
    mapDirty: true,
    service: null, // selected service on the map
  };

  // ---------------------------------------------------------------- trace list

  function filterQuery() {
    const p = new URLSearchParams();
    const service = $('f-service').value;
    const operation = $('f-operation').value.trim();
    const status = $('f-status').value;
    const minMs = $('f-min-ms').value.trim();
    const text = $('f-text').value.trim();
    if (service) p.set('service', service);
    if (operation) p.set('operation', operation);
    if (status && status !== 'any') p.set('status', status);
    if (minMs !== '' && Number.isFinite(Number(minMs)) && Number(minMs) > 0) p.set('min_ms', minMs);
    if (text) p.set('q', text);
    p.set('limit', String(LIST_LIMIT));
    return p.toString();
  }

  function filtersActive() {
    return !!($('f-service').value || $('f-operation').value.trim() || $('f-status').value !== 'any' ||
      $('f-min-ms').value.trim() || $('f-text').value.trim());
  }

  async function pollTraces() {
    const q = filterQuery();
    let res;
    try {
      res = await getText('api/traces?' + q);
    } catch (_) {
      unreachable();
      return;
    }
    if (!res.ok) {
      reached('traces', `agent error on api/traces: ${errorOf(res)}`);
      return;
    }
    reached('traces');
    if (q !== filterQuery()) return; // the filters changed meanwhile: a new poll is queued
    if (res.text === st.list.text) return;
    let data;
    try {
      data = JSON.parse(res.text);
    } catch (_) {
      reached('traces', 'agent sent invalid JSON on api/traces');
      return;
    }
    st.list.text = res.text;
    st.list.data = data;
    renderList(data, q);
  }

  function renderStats(d) {
    const parts = [];
    if (finite(d.stored)) parts.push(`${fmtInt(d.stored)}${finite(d.capacity) ? ' / ' + fmtInt(d.capacity) : ''} stored`);
    if (finite(d.evicted)) parts.push(`${fmtInt(d.evicted)} evicted`);
    const s = parts.join(' · ');
    const node = $('store-stats');
    if (node.textContent !== s) node.textContent = s;
  }

  function syncOptions(d) {
    const services = Array.isArray(d.services) ? d.services.slice().sort() : [];
    const sKey = services.join('\n');
    if (sKey !== st.filterOptions.services) {
      st.filterOptions.services = sKey;
      const sel = $('f-service');
      const cur = sel.value;
      clear(sel);
      sel.appendChild(el('option', { value: '', text: 'all services' }));
      const all = cur && !services.includes(cur) ? [cur, ...services] : services;
      for (const s of all) sel.appendChild(el('option', { value: s, text: s }));
      sel.value = cur;
    }
    const ops = Array.isArray(d.operations) ? d.operations.slice().sort() : [];
    const oKey = ops.join('\n');
    if (oKey !== st.filterOptions.operations) {
      st.filterOptions.operations = oKey;
      const dl = $('operations');
      clear(dl);
      for (const o of ops) dl.appendChild(el('option', { value: o }));
    }
  }

  function traceRow(t) {
    const err = !!t.error;
    const services = Array.isArray(t.services) ? t.services : [];
    const row = el('div', {
      class: 'trace-row' + (err ? ' error' : ''),
      role: 'option',
      'data-trace-id': t.trace_id,
      'data-spans': t.spans,
      'data-root-service': t.root_service || '',
      'data-error': err ? 'true' : 'false',
      title: `trace ${t.trace_id}\nservices: ${services.join(', ')}`,
    },
    el('div', { class: 'tr-main' },
      swatch(t.root_service, 'swatch'),
      el('span', { class: 'tr-service', text: t.root_service || '?' }),
      el('span', { class: 'tr-name', text: t.root_name || '' }),
      err ? el('span', { class: 'badge err', text: 'error' }) : null,
      el('span', { class: 'tr-dur', text: fmtMs(t.duration_ms) })),
    el('div', { class: 'tr-sub' },
      el('span', { class: 'tr-time', text: fmtClock(t.start_unix_ms) }),
      el('span', { text: `${fmtInt(t.spans)} span${t.spans === 1 ? '' : 's'}` }),
      el('span', { class: 'tr-svcs' }, ...services.slice(0, 8).map((s) => swatch(s, 'mini-swatch'))),
      el('span', { text: `${services.length} service${services.length === 1 ? '' : 's'}` }),
      el('span', { class: 'tr-id mono', text: String(t.trace_id).slice(0, 12) })));
    return row;
  }

  function renderList(d, query) {
    // rows that come in with the same filters are new traces: flash them
    const flash = st.list.rendered && st.list.query === query;
    st.list.query = query;
    renderStats(d);
    syncOptions(d);
    const list = $('trace-list');
    const traces = Array.isArray(d.traces) ? d.traces : [];

    // keep the rows the user is looking at in place when new traces come in on top
    let anchor = null;
    if (list.scrollTop > 0) {
      for (const r of list.children) {
        if (r.offsetTop + r.offsetHeight > list.scrollTop) {
          anchor = { id: r.dataset.traceId, delta: r.offsetTop - list.scrollTop };
          break;
        }
      }
    }

    const seen = new Set();
    const wanted = [];
    for (const t of traces) {
      if (!t || typeof t.trace_id !== 'string' || seen.has(t.trace_id)) continue;
      seen.add(t.trace_id);
      const sig = JSON.stringify(t);
      let entry = st.rows.get(t.trace_id);
      if (!entry || entry.sig !== sig) {
        const row = traceRow(t);
        if (entry && entry.el.parentNode) entry.el.parentNode.replaceChild(row, entry.el);
        else if (flash) row.classList.add('fresh');
        entry = { el: row, sig };
        st.rows.set(t.trace_id, entry);
      }
      entry.el.classList.toggle('selected', t.trace_id === st.trace.id);
      entry.el.setAttribute('aria-selected', t.trace_id === st.trace.id ? 'true' : 'false');
      wanted.push(entry.el);
    }
    for (const [id, entry] of st.rows) {
      if (!seen.has(id)) {
        entry.el.remove();
        st.rows.delete(id);
      }
    }
    // drop anything else (the empty-state message)
    for (const c of Array.from(list.children)) if (!c.classList.contains('trace-row')) c.remove();
    for (let i = 0; i < wanted.length; i++) {
      if (list.children[i] !== wanted[i]) list.insertBefore(wanted[i], list.children[i] || null);
    }
    if (wanted.length === 0) {
      list.appendChild(el('div', {
        class: 'empty',
        text: filtersActive() ? 'No trace matches the filters.' : 'No traces yet — waiting for traffic…',
      }));
    }
    if (anchor) {
      const e = st.rows.get(anchor.id);
      if (e) list.scrollTop = e.el.offsetTop - anchor.delta;
    }
    st.list.rendered = true;

    const matched = finite(d.matched) ? d.matched : traces.length;
    const foot = traces.length < matched ?
      `showing ${fmtInt(traces.length)} of ${fmtInt(matched)} matching traces` :
      `${fmtInt(matched)} matching trace${matched === 1 ? '' : 's'}`;
    const f = $('list-foot');
    if (f.textContent !== foot) f.textContent = foot;
  }

  function markSelectedRow() {
    for (const [id, entry] of st.rows) {
      entry.el.classList.toggle('selected', id === st.trace.id);
      entry.el.setAttribute('aria-selected', id === st.trace.id ? 'true' : 'false');
    }
  }

  // ---------------------------------------------------------------- one trace: waterfall

  function setHash() {
    const p = new URLSearchParams();
    if (st.trace.id) p.set('trace', st.trace.id);
    if (st.tab === 'map') p.set('tab', 'map');
    const h = p.toString();
    try {
      history.replaceState(null, '', h ? '#' + h : location.pathname + location.search);
    } catch (_) { /* sandboxed */ }
  }

  function openTrace(id, spanId, preloaded) {
    if (!id) return;
    if (st.trace.id !== id) {
      st.trace = { id, text: null, data: null, missing: false, pendingSpan: spanId || null };
      st.span = spanId || null;
      const wf = $('waterfall');
      wf.dataset.traceId = '';
      clear(wf);
      wf.appendChild(el('div', { class: 'empty', text: 'Loading trace…' }));
      clear($('span-detail'));
      renderTraceHead();
    } else if (spanId) {
      selectSpan(spanId, true);
    }
    markSelectedRow();
    setHash();
    if (preloaded) acceptTrace(id, preloaded);
    tracePoll.kick();
  }

  async function pollTrace() {
    const id = st.trace.id;
    if (!id) return;
    let res;
    try {
      res = await getText('api/trace/' + encodeURIComponent(id));
    } catch (_) {
      unreachable();
      return;
    }
    if (st.trace.id !== id) return;
    reached('trace', res.ok || res.status === 404 ? '' : `agent error on api/trace: ${errorOf(res)}`);
    if (res.status === 404) {
      if (!st.trace.missing) {
        st.trace.missing = true;
        if (!st.trace.data) {
          const wf = $('waterfall');
          wf.dataset.traceId = '';
          clear(wf);
          wf.appendChild(el('div', { class: 'empty', text: `Trace ${id} is not stored by the agent (evicted, or not seen).` }));
        }
        renderTraceHead();
      }
      return;
    }
    if (!res.ok) return;
    acceptTrace(id, res);
  }

  function acceptTrace(id, res) {
    if (res.text === st.trace.text && !st.trace.missing) return;
    let data;
    try {
      data = JSON.parse(res.text);
    } catch (_) {
      return;
    }
    st.trace.text = res.text;
    st.trace.data = data;
    st.trace.missing = false;
    renderWaterfall();
  }

  function niceTicks(total) {
    const raw = total / 6;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const ticks = [];
    for (let i = 0; i * step <= total * 1.0001 && i < 50; i++) ticks.push({ v: i * step, label: (i * step).toFixed(decimals) + ' ms' });
    return ticks;
  }

  function traceTotal(t) {
    let total = finite(t.duration_ms) ? t.duration_ms : 0;
    for (const s of t.spans || []) {
      const end = (finite(s.offset_ms) ? s.offset_ms : 0) + (finite(s.duration_ms) ? s.duration_ms : 0);
      if (end > total) total = end;
    }
    return total > 0 ? total : 0.001;
  }

  function renderTraceHead() {
    const head = $('trace-head');
    clear(head);
    const t = st.trace.data;
    const idle = !st.trace.id;
    head.parentNode.classList.toggle('idle', idle);
    $('waterfall').hidden = idle;
    $('span-detail').hidden = idle;
    if (idle) {
      head.appendChild(el('div', { class: 'th-empty' },
        el('div', { class: 'th-empty-art', 'aria-hidden': 'true' },
          ...[[0, 70], [8, 45], [14, 30], [30, 40]].map(([l, w]) => {
            const bar = el('span');
            bar.style.marginLeft = l + '%';
            bar.style.width = w + '%';
            return bar;
          })),
        el('h2', { text: 'Select a trace' }),
        el('span', { class: 'muted', text: 'Click a trace in the list to see its spans on a time axis, nested by parent and coloured by service.' })));
      return;
    }
    if (!t) {
      head.appendChild(el('div', { class: 'th-title' },
        el('h2', { class: 'mono', text: st.trace.id }),
        st.trace.missing ? el('span', { class: 'badge warn', text: 'not stored' }) : null));
      return;
    }
    const spans = t.spans || [];
    const root = spans[0] || {};
    const errors = spans.filter((s) => s.status === 'error').length;
    const services = [];
    for (const s of spans) if (!services.includes(s.service)) services.push(s.service);
    head.appendChild(el('div', { class: 'th-title' },
      swatch(root.service, 'swatch big'),
      el('h2', {}, el('span', { class: 'th-service', text: root.service || '' }), ' ', el('span', { text: root.name || '' })),
      errors ? el('span', { class: 'badge err', text: `${errors} error${errors === 1 ? '' : 's'}` }) : null,
      st.trace.missing ? el('span', { class: 'badge warn', title: 'the agent evicted this trace; showing the last copy', text: 'no longer stored' }) : null));
    head.appendChild(el('div', { class: 'th-meta' },
      el('span', {}, el('b', { text: fmtMs(t.duration_ms) })),
      el('span', { text: `${spans.length} span${spans.length === 1 ? '' : 's'}` }),
      el('span', { text: fmtDate(t.start_unix_ms) }),
      el('span', { class: 'mono selectable', title: 'trace id', text: t.trace_id })));
    head.appendChild(el('div', { class: 'legend' },
      ...services.map((s) => el('span', { class: 'legend-item' }, swatch(s, 'swatch'), el('span', { text: s })))));
  }

  function renderWaterfall() {
    const t = st.trace.data;
    const wf = $('waterfall');
    const scroll = wf.scrollTop;
    clear(wf);
    renderTraceHead();
    const spans = Array.isArray(t.spans) ? t.spans : [];
    const total = traceTotal(t);
    const ticks = niceTicks(total);
    const pct = (v) => Math.max(0, Math.min(100, (v / total) * 100));

    const axisLane = el('div', { class: 'lane' });
    for (const tk of ticks) {
      const p = pct(tk.v);
      const tick = el('div', { class: 'tick' + (p > 92 ? ' end' : p === 0 ? ' start' : '') }, el('span', { text: tk.label }));
      tick.style.left = p + '%';
      axisLane.appendChild(tick);
    }
    wf.appendChild(el('div', { class: 'wf-axis' },
      el('div', { class: 'wf-axis-label', text: 'service · span' }),
      el('div', { class: 'wf-axis-track' }, axisLane)));

    const grid = el('div', { class: 'wf-grid', 'aria-hidden': 'true' });
    for (const tk of ticks) {
      const g = el('div', { class: 'gridline' });
      g.style.left = pct(tk.v) + '%';
      grid.appendChild(g);
    }
    const rows = el('div', { class: 'wf-rows' }, grid);

    const ids = new Set(spans.map((s) => s.span_id));
    if (st.trace.pendingSpan && ids.has(st.trace.pendingSpan)) {
      st.span = st.trace.pendingSpan;
      st.trace.pendingSpan = null;
    }
    if (!st.span || !ids.has(st.span)) st.span = spans.length ? spans[0].span_id : null;

    for (const s of spans) {
      const depth = finite(s.depth) ? s.depth : 0;
      const off = finite(s.offset_ms) ? s.offset_ms : 0;
      const dur = finite(s.duration_ms) ? s.duration_ms : 0;
      const err = s.status === 'error';
      const start = pct(off);
      const width = Math.max(0, pct(off + dur) - start);

      const label = el('div', { class: 'sr-label' },
        err ? el('span', { class: 'err-icon', title: 'error' + (s.status_message ? ': ' + s.status_message : ''), text: '!' }) : null,
        swatch(s.service, 'swatch'),
        el('span', { class: 'sr-service', text: s.service || '' }),
        el('span', { class: 'sr-name', text: s.name || '' }),
        s.orphan ? el('span', { class: 'badge orphan', title: 'its parent span is not (yet) in this trace', text: 'orphan' }) : null);
      label.style.paddingLeft = (10 + Math.min(depth, 24) * 16) + 'px';

      const bar = el('div', { class: 'sr-bar kind-' + (s.kind || 'internal') });
      bar.style.left = start + '%';
      bar.style.width = width + '%';
      bar.style.backgroundColor = colourOf(s.service);
      const durLabel = el('span', { class: 'sr-dur', text: fmtMs(dur) });
      if (start + width <= 80) {
        durLabel.style.left = (start + width) + '%';
        durLabel.classList.add('after');
      } else if (start >= 20) {
        durLabel.style.right = (100 - start) + '%';
        durLabel.classList.add('before');
      } else {
        durLabel.style.right = (100 - start - width) + '%';
        durLabel.classList.add('inside');
      }
      const row = el('div', {
        class: 'span-row' + (err ? ' error' : '') + (s.orphan ? ' orphan' : '') + (s.span_id === st.span ? ' selected' : ''),
        'data-span-id': s.span_id,
        'data-parent-span-id': s.parent_span_id || '',
        'data-depth': depth,
        'data-service': s.service || '',
        'data-name': s.name || '',
        'data-offset-ms': off,
        'data-duration-ms': dur,
        'data-error': err ? 'true' : 'false',
        title: `${s.service} · ${s.name}\n${s.kind || ''} · ${fmtMs(dur)} at +${fmtMs(off)}${err ? '\nerror' + (s.status_message ? ': ' + s.status_message : '') : ''}`,
      }, label, el('div', { class: 'sr-track' }, el('div', { class: 'lane' }, bar, durLabel)));
      depthGuides(label, depth);
      rows.appendChild(row);
    }
    if (!spans.length) rows.appendChild(el('div', { class: 'empty', text: 'This trace has no spans.' }));
    wf.appendChild(rows);
    wf.dataset.traceId = t.trace_id || st.trace.id;
    wf.scrollTop = scroll;
    renderDetail();
  }

  function depthGuides(label, depth) {
    for (let d = 0; d < Math.min(depth, 24); d++) {
      const g = el('span', { class: 'guide', 'aria-hidden': 'true' });
      g.style.left = (17 + d * 16) + 'px';
      label.appendChild(g);
    }
  }

  function selectSpan(spanId, scrollIntoView) {
    if (!spanId) return;
    st.span = spanId;
    for (const r of $('waterfall').querySelectorAll('.span-row')) {
      const on = r.dataset.spanId === spanId;
      r.classList.toggle('selected', on);
      if (on && scrollIntoView) r.scrollIntoView({ block: 'nearest' });
    }
    renderDetail();
  }

  function kvTable(pairs, rowClass, emptyText) {
    if (!Array.isArray(pairs) || pairs.length === 0) return el('div', { class: 'muted small', text: emptyText });
    const tb = el('tbody');
    for (const p of pairs) {
      const k = String(p[0]);
      const v = p[1] === null || p[1] === undefined ? '' : String(p[1]);
      tb.appendChild(el('tr', { class: rowClass, 'data-key': k, 'data-value': v },
        el('td', { class: 'k', title: k, text: k }),
        el('td', { class: 'v', text: v })));
    }
    return el('table', { class: 'kv' }, tb);
  }

  function renderDetail() {
    const panel = $('span-detail');
    const t = st.trace.data;
    const s = t && (t.spans || []).find((x) => x.span_id === st.span);
    // the same span again (its trace got a late span): keep the panel's scroll position
    const keepScroll = s && panel.dataset.spanId === s.span_id ? panel.scrollTop : 0;
    clear(panel);
    if (!s) {
      panel.dataset.spanId = '';
      if (t) panel.appendChild(el('div', { class: 'muted pad', text: 'Click a span to see its details.' }));
      return;
    }
    panel.dataset.spanId = s.span_id;
    const status = s.status || 'unset';
    panel.appendChild(el('div', { class: 'sd-head' },
      swatch(s.service, 'swatch big'),
      el('h3', { class: 'sd-name', text: s.name || '' }),
      el('span', { class: 'badge kind', text: s.kind || 'internal' }),
      el('span', { class: 'badge status-' + status, text: status })));
    const parent = s.parent_span_id ? el('span', { class: 'mono', text: s.parent_span_id }) : el('span', { class: 'muted', text: 'none (root)' });
    panel.appendChild(el('div', { class: 'sd-meta' },
      el('span', {}, el('span', { class: 'muted', text: 'service ' }), el('b', { text: s.service || '' })),
      el('span', {}, el('span', { class: 'muted', text: 'duration ' }), el('b', { text: fmtMs(s.duration_ms) })),
      el('span', {}, el('span', { class: 'muted', text: 'start ' }), `+${fmtMs(s.offset_ms)}`),
      el('span', {}, el('span', { class: 'muted', text: 'span ' }), el('span', { class: 'mono', text: s.span_id })),
      el('span', {}, el('span', { class: 'muted', text: 'parent ' }), parent,
        s.orphan ? el('span', { class: 'badge orphan', text: 'not in trace' }) : null)));
    if (status === 'error' || s.status_message) {
      panel.appendChild(el('div', { class: 'sd-status ' + status },
        el('b', { text: status === 'error' ? 'Error' : 'Status' }),
        s.status_message ? ': ' + s.status_message : ''));
    }
    const links = Array.isArray(s.links) ? s.links : [];
    const linkBox = el('div', { class: 'links' });
    if (!links.length) linkBox.appendChild(el('div', { class: 'muted small', text: 'no links' }));
    for (const l of links) {
      const note = el('span', { class: 'link-note muted' });
      const same = l.trace_id === (t.trace_id || st.trace.id);
      const btn = el('button', {
        type: 'button',
        class: 'link-row',
        'data-trace-id': l.trace_id || '',
        'data-span-id': l.span_id || '',
        title: same ? 'a span of this trace' : 'open the linked trace if the agent stores it',
      },
      el('span', { class: 'mono', text: `${String(l.trace_id || '').slice(0, 16)}…` }),
      el('span', { class: 'mono muted', text: ` / ${l.span_id || ''}` }),
      same ? el('span', { class: 'badge', text: 'this trace' }) : null);
      btn.addEventListener('click', () => followLink(l, note));
      linkBox.appendChild(el('div', { class: 'link-line' }, btn, note));
    }
    panel.appendChild(el('div', { class: 'sd-cols' },
      el('section', { class: 'sd-attrs' },
        el('h4', { text: `Attributes (${(s.attributes || []).length})` }),
        kvTable(s.attributes, 'attr-row', 'no attributes')),
      el('section', { class: 'sd-res' },
        el('h4', { text: 'Resource' }),
        kvTable(s.resource, 'resource-row', 'no resource attributes'),
        el('h4', { text: `Links (${links.length})` }),
        linkBox)));
    panel.scrollTop = keepScroll;
  }

  async function followLink(l, note) {
    if (!l.trace_id) return;
    if (st.trace.data && l.trace_id === (st.trace.data.trace_id || st.trace.id)) {
      selectSpan(l.span_id, true);
      return;
    }
    note.textContent = 'opening…';
    let res;
    try {
      res = await getText('api/trace/' + encodeURIComponent(l.trace_id));
    } catch (_) {
      note.textContent = 'agent not reachable';
      unreachable();
      return;
    }
    if (res.ok) {
      openTrace(l.trace_id, l.span_id, res);
    } else if (res.status === 404) {
      note.textContent = 'trace not stored';
    } else {
      note.textContent = errorOf(res);
    }
  }

  // ---------------------------------------------------------------- service map

  async function pollServices() {
    let res;
    try {
      res = await getText('api/services');
    } catch (_) {
      unreachable();
      return;
    }
    if (!res.ok) {
      reached('services', `agent error on api/services: ${errorOf(res)}`);
      return;
    }
    reached('services');
    if (res.text === st.services.text) return;
    let data;
    try {
      data = JSON.parse(res.text);
    } catch (_) {
      return;
    }
    st.services.text = res.text;
    st.services.data = data;
    st.mapDirty = true;
    if (st.tab === 'map') renderMapView();
  }

  // Columns by depth: services that are never servers first, then each server one column to the
  // right of its deepest client (back edges of cycles ignored). Inside a column, nodes are ordered
  // by the mean row of their clients to keep edges short.
  function layout(names, edges) {
    const out = new Map();
    const inc = new Map();
    for (const n of names) {
      out.set(n, []);
      inc.set(n, []);
    }
    for (const e of edges) {
      if (e.client === e.server) continue;
      out.get(e.client).push(e.server);
      inc.get(e.server).push(e.client);
    }
    const sorted = names.slice().sort();
    const roots = sorted.filter((n) => inc.get(n).length === 0);
    const order = roots.concat(sorted.filter((n) => inc.get(n).length > 0));
    const state = new Map(); // 1 on stack, 2 done
    const dag = new Map(names.map((n) => [n, []]));
    const visit = (start) => {
      const stack = [[start, 0]];
      state.set(start, 1);
      while (stack.length) {
        const top = stack[stack.length - 1];
        const [n, i] = top;
        const next = out.get(n);
        if (i < next.length) {
          top[1]++;
          const m = next[i];
          const sm = state.get(m);
          if (sm === 1) continue; // back edge: closes a cycle
          dag.get(n).push(m);
          if (!sm) {
            state.set(m, 1);
            stack.push([m, 0]);
          }
        } else {
          state.set(n, 2);
          stack.pop();
        }
      }
    };
    for (const n of order) if (!state.get(n)) visit(n);
    // longest path layering on the DAG (Kahn)
    const indeg = new Map(names.map((n) => [n, 0]));
    for (const [, ms] of dag) for (const m of ms) indeg.set(m, indeg.get(m) + 1);
    const depth = new Map(names.map((n) => [n, 0]));
    const queue = sorted.filter((n) => indeg.get(n) === 0);
    while (queue.length) {
      const n = queue.shift();
      for (const m of dag.get(n)) {
        depth.set(m, Math.max(depth.get(m), depth.get(n) + 1));
        indeg.set(m, indeg.get(m) - 1);
        if (indeg.get(m) === 0) queue.push(m);
      }
    }
    const cols = [];
    for (const n of sorted) {
      const d = depth.get(n);
      while (cols.length <= d) cols.push([]);
      cols[d].push(n);
    }
    const rowOf = new Map();
    cols[0]?.forEach((n, i) => rowOf.set(n, i));
    for (let c = 1; c < cols.length; c++) {
      const bary = (n) => {
        const ps = inc.get(n).filter((p) => rowOf.has(p));
        return ps.length ? ps.reduce((a, p) => a + rowOf.get(p), 0) / ps.length : Infinity;
      };
      cols[c].sort((a, b) => (bary(a) - bary(b)) || (a < b ? -1 : a > b ? 1 : 0));
      cols[c].forEach((n, i) => rowOf.set(n, i));
    }
    return cols;
  }

  const NODE_W = 156;
  const NODE_H = 46;
  const COL_GAP_MIN = 165;
  const COL_GAP_MAX = 300;
  const ROW_GAP = 64;
  const MARGIN_X = 28;
  const MARGIN_Y = 44;

  // an edge or a service is drawn in red from this error rate on (any error shows in its label)
  const BAD_ERROR_RATE = 0.05;
  function isBad(e) {
    if (finite(e.error_rate)) return e.error_rate >= BAD_ERROR_RATE;
    return finite(e.errors) && finite(e.requests) && e.requests > 0 && e.errors / e.requests >= BAD_ERROR_RATE;
  }

  function renderMapView() {
    st.mapDirty = false;
    renderMap();
    renderRoutes();
  }

  function renderMap() {
    const d = st.services.data;
    const box = $('map');
    const status = $('map-status');
    clear(box);
    if (!d) {
      status.textContent = 'loading…';
      return;
    }
    if (d.span_metrics === false) {
      status.textContent = '';
      box.appendChild(el('div', { class: 'notice' },
        el('b', { text: 'The service map needs span metrics. ' }),
        'Enable them in the agent configuration with ',
        el('code', { text: '[span_metrics] enabled = true' }), ' and restart the agent.'));
      return;
    }
    const edges = (Array.isArray(d.edges) ? d.edges : []).filter((e) => e && e.client != null && e.server != null);
    const names = [];
    const add = (n) => { if (n != null && !names.includes(n)) names.push(n); };
    for (const e of edges) {
      add(e.client);
      add(e.server);
    }
    for (const s of Array.isArray(d.services) ? d.services : []) add(s.name);
    const win = finite(d.window_s) ? d.window_s : null;
    status.textContent = `${names.length} service${names.length === 1 ? '' : 's'} · ${edges.length} call edge${edges.length === 1 ? '' : 's'}` +
      (win ? ` · rates over the last ${fmtRate(win)} s` : '') + ' · click a service for its routes';
    if (!names.length) {
      box.appendChild(el('div', { class: 'notice', text: 'No calls seen yet. The map fills in as the agent sees requests between services.' }));
      return;
    }

    const cols = layout(names, edges);
    const maxRows = Math.max(...cols.map((c) => c.length));
    // spread the columns over the width there is, within limits that keep edge labels readable
    const avail = box.clientWidth - 32;
    const gap = cols.length > 1 ?
      Math.max(COL_GAP_MIN, Math.min(COL_GAP_MAX, (avail - MARGIN_X * 2 - cols.length * NODE_W) / (cols.length - 1))) : 0;
    const W = MARGIN_X * 2 + cols.length * NODE_W + (cols.length - 1) * gap;
    let bottom = MARGIN_Y + maxRows * NODE_H + (maxRows - 1) * ROW_GAP; // grows with loops under nodes
    const pos = new Map();
    cols.forEach((col, c) => {
      const colH = col.length * NODE_H + (col.length - 1) * ROW_GAP;
      const y0 = MARGIN_Y + (maxRows * NODE_H + (maxRows - 1) * ROW_GAP - colH) / 2;
      col.forEach((n, i) => pos.set(n, { x: MARGIN_X + c * (NODE_W + gap), y: y0 + i * (NODE_H + ROW_GAP), col: c }));
    });

    const root = svg('svg', { class: 'map-svg', role: 'img', 'aria-label': 'service map' });
    root.style.minWidth = Math.round(W * 0.7) + 'px';
    root.appendChild(svg('defs', {},
      svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, orient: 'auto-start-reverse', markerUnits: 'userSpaceOnUse' },
        svg('path', { class: 'arrow-head', d: 'M0,0 L10,5 L0,10 z' })),
      svg('marker', { id: 'arrow-err', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, orient: 'auto-start-reverse', markerUnits: 'userSpaceOnUse' },
        svg('path', { class: 'arrow-head err', d: 'M0,0 L10,5 L0,10 z' }))));

    const sel = st.service;
    const gEdges = svg('g', { class: 'edges' });
    const gLabels = svg('g', { class: 'edge-labels' });
    const pairCount = new Map();
    for (const e of edges) {
      const a = pos.get(e.client);
      const b = pos.get(e.server);
      const err = isBad(e);
      const someErr = finite(e.error_rate) ? e.error_rate > 0 : finite(e.errors) && e.errors > 0;
      const touches = sel && (e.client === sel || e.server === sel);
      let dPath;
      let lx;
      let ly;
      if (e.client === e.server) {
        const x = a.x + NODE_W - 30;
        const y = a.y;
        dPath = `M${x},${y} C${x},${y - 44} ${x + 46},${y - 44} ${x + 40},${y + 4}`;
        lx = x + 20;
        ly = y - 40;
      } else if (b.col > a.col) {
        const x1 = a.x + NODE_W;
        const y1 = a.y + NODE_H / 2;
        const x2 = b.x - 2;
        const y2 = b.y + NODE_H / 2;
        const k = (x2 - x1) / 2;
        dPath = `M${x1},${y1} C${x1 + k},${y1} ${x2 - k},${y2} ${x2},${y2}`;
        lx = (x1 + x2) / 2;
        ly = (y1 + y2) / 2;
        if (Math.abs(y2 - y1) < 4) ly -= 21; // a straight edge: its label above it, keeping it visible
      } else {
        // a call against the flow (a cycle or a same-column call): loop under the nodes
        const key = [e.client, e.server].sort().join('\n');
        const nth = pairCount.get(key) || 0;
        pairCount.set(key, nth + 1);
        const x1 = a.x + NODE_W / 2 - 12 + nth * 24;
        const y1 = a.y + NODE_H;
        const x2 = b.x + NODE_W / 2 + 12 - nth * 24;
        const y2 = b.y + NODE_H + 2;
        const drop = 46 + Math.abs(a.col - b.col) * 8;
        const yb = Math.max(y1, y2) + drop;
        dPath = `M${x1},${y1} C${x1},${yb} ${x2},${yb} ${x2},${y2}`;
        lx = (x1 + x2) / 2;
        ly = 0.75 * yb + 0.125 * (y1 + y2) + 19; // under the lowest point of the loop
        bottom = Math.max(bottom, ly + 18);
      }
      const width = 1.4 + Math.min(4, Math.log10(1 + (finite(e.rate_per_s) ? e.rate_per_s : 0)) * 2.2);
      const g = svg('g', {
        class: 'edge' + (err ? ' error' : '') + (sel && !touches ? ' dim' : '') + (touches ? ' hot' : ''),
        'data-client': e.client,
        'data-server': e.server,
        'data-requests': finite(e.requests) ? e.requests : 0,
      },
      svg('title', { text: `${e.client} → ${e.server}\n${fmtInt(e.requests)} requests, ${fmtInt(e.errors)} errors since start\n${fmtRate(e.rate_per_s)} req/s, ${fmtPct(e.error_rate)} errors\np50 ${fmtMs(e.p50_ms)}, p99 ${fmtMs(e.p99_ms)}` }),
      svg('path', { class: 'edge-hit', d: dPath }),
      svg('path', { class: 'edge-line', d: dPath, 'stroke-width': width.toFixed(2), 'marker-end': err ? 'url(#arrow-err)' : 'url(#arrow)' }));
      g.addEventListener('click', () => selectService(e.server));
      gEdges.appendChild(g);

      const l1a = `${fmtRate(e.rate_per_s)} req/s · `;
      const l1b = `${fmtPct(e.error_rate)} err`;
      const l2 = `p50 ${fmtMs(e.p50_ms)} · p99 ${fmtMs(e.p99_ms)}`;
      const lw = Math.max(l1a.length + l1b.length, l2.length) * 6.1 + 14;
      const lh = 32;
      gLabels.appendChild(svg('g', { class: 'edge-label' + (err ? ' error' : '') + (sel && !touches ? ' dim' : ''), transform: `translate(${(lx - lw / 2).toFixed(1)},${(ly - lh / 2).toFixed(1)})` },
        svg('rect', { width: lw.toFixed(1), height: lh, rx: 4 }),
        svg('text', { x: (lw / 2).toFixed(1), y: 13, class: 'l1' },
          svg('tspan', { text: l1a }),
          svg('tspan', { class: someErr ? 'err' : '', text: l1b })),
        svg('text', { x: (lw / 2).toFixed(1), y: 26, class: 'l2', text: l2 })));
    }
    root.appendChild(gEdges);

    // incoming totals per service for the node's second line
    const inRate = new Map();
    const inErr = new Map();
    for (const e of edges) {
      if (!finite(e.rate_per_s)) continue;
      inRate.set(e.server, (inRate.get(e.server) || 0) + e.rate_per_s);
      inErr.set(e.server, (inErr.get(e.server) || 0) + e.rate_per_s * (finite(e.error_rate) ? e.error_rate : 0));
    }
    const gNodes = svg('g', { class: 'nodes' });
    for (const n of names) {
      const p = pos.get(n);
      const rate = inRate.get(n);
      const sub = rate !== undefined ?
        `${fmtRate(rate)} req/s in · ${fmtPct(rate > 0 ? inErr.get(n) / rate : 0)} err` :
        'client only';
      const shown = n.length > 18 ? n.slice(0, 17) + '…' : n;
      const stripe = svg('rect', { class: 'node-stripe', x: 0, y: 0, width: 6, height: NODE_H, rx: 3 });
      stripe.setAttribute('fill', colourOf(n));
      const g = svg('g', {
        class: 'node' + (n === sel ? ' selected' : '') + (rate > 0 && inErr.get(n) / rate >= BAD_ERROR_RATE ? ' has-errors' : ''),
        'data-service': n,
        transform: `translate(${p.x},${p.y})`,
        tabindex: 0,
        role: 'button',
      },
      svg('title', { text: n }),
      svg('rect', { class: 'node-box', x: 0, y: 0, width: NODE_W, height: NODE_H, rx: 6 }),
      stripe,
      svg('text', { class: 'node-name', x: 16, y: 20, text: shown }),
      svg('text', { class: 'node-sub', x: 16, y: 36, text: sub }));
      g.addEventListener('click', () => selectService(n));
      g.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') {
          ev.preventDefault();
          selectService(n);
        }
      });
      gNodes.appendChild(g);
    }
    root.appendChild(gNodes);
    root.appendChild(gLabels);
    const H = Math.ceil(bottom + MARGIN_Y);
    root.setAttribute('viewBox', `0 0 ${Math.ceil(W)} ${H}`);
    root.setAttribute('width', Math.ceil(W));
    root.setAttribute('height', H);
    box.appendChild(root);
    if (!edges.length) box.appendChild(el('div', { class: 'notice', text: 'No calls between services seen yet.' }));
  }

  function selectService(name) {
    st.service = name;
    renderMapView();
  }

  function renderRoutes() {
    const box = $('routes');
    clear(box);
    const d = st.services.data;
    const name = st.service;
    box.dataset.service = name || '';
    if (!d || d.span_metrics === false) return;
    if (!name) {
      box.appendChild(el('div', { class: 'muted pad', text: 'Click a service on the map to see its routes with request rate, error rate and latency.' }));
      return;
    }
    const svc = (Array.isArray(d.services) ? d.services : []).find((s) => s.name === name);
    const routes = svc && Array.isArray(svc.routes) ? svc.routes : [];
    const win = finite(d.window_s) ? d.window_s : null;
    box.appendChild(el('div', { class: 'routes-head' },
      swatch(name, 'swatch big'),
      el('h2', { text: name }),
      el('span', { class: 'muted', text: win ? `rates over the last ${fmtRate(win)} s, counts since the agent started` : '' }),
      el('button', { type: 'button', class: 'btn-plain', text: 'show traces →', on: { click: () => showTraces(name, '') } })));

    const cols = ['Route', 'Kind', 'Req/s', 'Error rate', 'p50', 'p99', 'Requests', 'Errors', ''];
    const table = (headers, body) => el('table', { class: 'grid' },
      el('thead', {}, el('tr', {}, ...headers.map((h, i) => el('th', { class: i > 1 ? 'num' : '', text: h })))), body);

    const tb = el('tbody');
    for (const r of routes) {
      const err = finite(r.errors) && r.errors > 0;
      tb.appendChild(el('tr', { class: 'route-row' + (err ? ' error' : ''), 'data-route': r.route || '' },
        el('td', { class: 'mono', text: r.route || '' }),
        el('td', { text: r.kind || '' }),
        el('td', { class: 'num', text: fmtRate(r.rate_per_s) }),
        el('td', { class: 'num' + (finite(r.error_rate) && r.error_rate > 0 ? ' err-text' : ''), text: fmtPct(r.error_rate) }),
        el('td', { class: 'num', text: fmtMs(r.p50_ms) }),
        el('td', { class: 'num', text: fmtMs(r.p99_ms) }),
        el('td', { class: 'num', text: fmtInt(r.requests) }),
        el('td', { class: 'num', text: fmtInt(r.errors) }),
        el('td', { class: 'num' }, el('button', { type: 'button', class: 'btn-link', text: 'traces', title: 'traces with this route', on: { click: () => showTraces(name, r.route || '') } }))));
    }
    box.appendChild(el('h4', { text: `Routes (${routes.length})` }));
    if (routes.length) box.appendChild(table(cols, tb));
    else box.appendChild(el('div', { class: 'muted small', text: 'No routes: the agent saw this service only as a client.' }));

    const edges = Array.isArray(d.edges) ? d.edges : [];
    const edgeTable = (list, other) => {
      const body = el('tbody');
      for (const e of list) {
        body.appendChild(el('tr', { class: 'edge-row' },
          el('td', {}, swatch(e[other], 'swatch'), ' ', e[other]),
          el('td', { class: 'num', text: fmtRate(e.rate_per_s) }),
          el('td', { class: 'num' + (finite(e.error_rate) && e.error_rate > 0 ? ' err-text' : ''), text: fmtPct(e.error_rate) }),
          el('td', { class: 'num', text: fmtMs(e.p50_ms) }),
          el('td', { class: 'num', text: fmtMs(e.p99_ms) }),
          el('td', { class: 'num', text: fmtInt(e.requests) })));
      }
      return el('table', { class: 'grid' },
        el('thead', {}, el('tr', {}, ...['Service', 'Req/s', 'Error rate', 'p50', 'p99', 'Requests'].map((h, i) => el('th', { class: i ? 'num' : '', text: h })))), body);
    };
    const outs = edges.filter((e) => e.client === name);
    const ins = edges.filter((e) => e.server === name);
    const pair = el('div', { class: 'edge-tables' });
    pair.appendChild(el('section', {}, el('h4', { text: `Called by (${ins.length})` }),
      ins.length ? edgeTable(ins, 'client') : el('div', { class: 'muted small', text: 'no clients seen' })));
    pair.appendChild(el('section', {}, el('h4', { text: `Calls (${outs.length})` }),
      outs.length ? edgeTable(outs, 'server') : el('div', { class: 'muted small', text: 'no outgoing calls seen' })));
    box.appendChild(pair);
  }

  function showTraces(service, text) {
    const sel = $('f-service');
    if (![...sel.options].some((o) => o.value === service)) sel.appendChild(el('option', { value: service, text: service }));
    sel.value = service;
    $('f-text').value = text;
    setTab('traces');
    filtersChanged();
  }

  // ---------------------------------------------------------------- tabs, filters, keys

  function setTab(tab) {
    st.tab = tab;
    const map = tab === 'map';
    $('view-traces').hidden = map;
    $('view-map').hidden = !map;
    $('tab-traces').classList.toggle('active', !map);
    $('tab-map').classList.toggle('active', map);
    $('tab-traces').setAttribute('aria-selected', String(!map));
    $('tab-map').setAttribute('aria-selected', String(map));
    if (map) {
      if (st.mapDirty || !$('map').firstChild) renderMapView();
      servicesPoll.kick();
    }
    setHash();
  }

  let debounce = 0;
  function filtersChanged() {
    clearTimeout(debounce);
    tracesPoll.kick();
  }
  function filtersTyped() {
    clearTimeout(debounce);
    debounce = setTimeout(filtersChanged, 250);
  }

  function moveSelection(items, currentIndex, delta) {
    if (!items.length) return null;
    const i = currentIndex < 0 ? 0 : Math.max(0, Math.min(items.length - 1, currentIndex + delta));
    return items[i];
  }

  function wire() {
    $('tab-traces').addEventListener('click', () => setTab('traces'));
    $('tab-map').addEventListener('click', () => setTab('map'));

    for (const id of ['f-service', 'f-status']) $(id).addEventListener('change', filtersChanged);
    for (const id of ['f-operation', 'f-min-ms', 'f-text']) {
      $(id).addEventListener('input', filtersTyped);
      $(id).addEventListener('change', filtersChanged);
      $(id).addEventListener('keydown', (ev) => { if (ev.key === 'Enter') filtersChanged(); });
    }
    $('f-clear').addEventListener('click', () => {
      $('f-service').value = '';
      $('f-operation').value = '';
      $('f-status').value = 'any';
      $('f-min-ms').value = '';
      $('f-text').value = '';
      filtersChanged();
    });

    const list = $('trace-list');
    list.addEventListener('click', (ev) => {
      const row = ev.target.closest('.trace-row');
      if (row) openTrace(row.dataset.traceId);
    });
    list.addEventListener('keydown', (ev) => {
      if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
      ev.preventDefault();
      const rows = Array.from(list.querySelectorAll('.trace-row'));
      const cur = rows.findIndex((r) => r.dataset.traceId === st.trace.id);
      const next = moveSelection(rows, cur, ev.key === 'ArrowDown' ? 1 : -1);
      if (next) {
        openTrace(next.dataset.traceId);
        next.scrollIntoView({ block: 'nearest' });
      }
    });

    const wf = $('waterfall');
    wf.addEventListener('click', (ev) => {
      const row = ev.target.closest('.span-row');
      if (row) selectSpan(row.dataset.spanId, false);
    });
    wf.addEventListener('keydown', (ev) => {
      if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
      ev.preventDefault();
      const rows = Array.from(wf.querySelectorAll('.span-row'));
      const cur = rows.findIndex((r) => r.dataset.spanId === st.span);
      const next = moveSelection(rows, cur, ev.key === 'ArrowDown' ? 1 : -1);
      if (next) selectSpan(next.dataset.spanId, true);
    });

    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) {
        tracesPoll.kick();
        servicesPoll.kick();
        if (st.trace.id) tracePoll.kick();
      }
    });
    let resizeTimer = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (st.tab === 'map') renderMapView(); else st.mapDirty = true; }, 150);
    });
    // keep the "last contact N s ago" of the banner current while the agent is away
    setInterval(() => { if (conn.reachable === false) renderConn(); }, 1000);
  }

  const tracesPoll = poller(pollTraces, TRACES_EVERY_MS);
  const servicesPoll = poller(pollServices, SERVICES_EVERY_MS);
  // a trace the agent does not (or no longer) store(s) is asked for less often
  const tracePoll = poller(pollTrace, () => (st.trace.missing ? MISSING_TRACE_EVERY_MS : TRACE_EVERY_MS));

  function start() {
    wire();
    renderTraceHead();
    const p = new URLSearchParams(location.hash.replace(/^#/, ''));
    if (p.get('tab') === 'map') setTab('map');
    const id = p.get('trace');
    if (id && /^[0-9a-fA-F]{1,64}$/.test(id)) openTrace(id.toLowerCase());
    tracesPoll.kick();
    servicesPoll.kick();
    if (!st.trace.id) tracePoll.kick(); // idles until a trace is opened
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
