// corral's web page script. Every page works without it; with it:
// - VM actions call the API (with the session's CSRF token) instead of reloading the page,
//   after a confirm() where data could be lost;
// - VM states and job progress update live from /api/v1/events;
// - the VM filter applies as one types.
// Text from the server is only ever put into the page with textContent.
'use strict';

(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : '';

  function notice(text, isError) {
    const box = document.getElementById('notices');
    if (!box) return;
    const p = document.createElement('p');
    p.className = isError ? 'error' : 'ok';
    p.textContent = text;
    box.prepend(p);
    while (box.children.length > 4) box.lastElementChild.remove();
  }

  function duration(s) {
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + String(Math.floor(s / 60) % 60).padStart(2, '0') + ' min';
    return Math.floor(s / 86400) + ' d ' + (Math.floor(s / 3600) % 24) + ' h';
  }

  function utc(ms) {
    return new Date(ms).toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
  }

  function field(root, name) {
    return root.querySelector('[data-field="' + name + '"]');
  }

  function setState(el, state) {
    if (!el) return;
    el.textContent = state;
    el.className = 'state state-' + state;
  }

  // Buttons a VM's state allows (each says which states in data-when).
  function enableButtons(root, state) {
    for (const b of root.querySelectorAll('button[data-when]')) {
      b.disabled = !b.dataset.when.split(' ').includes(state);
    }
  }

  // A VM's status (as GET /api/v1/vms/NAME answers it) into every element showing it.
  function applyVm(st) {
    for (const el of document.querySelectorAll('[data-vm]')) {
      if (el.dataset.vm !== st.name) continue;
      el.dataset.state = st.state;
      setState(field(el, 'state'), st.state);
      const up = field(el, 'uptime');
      if (up) up.textContent = st.uptime_seconds != null ? duration(st.uptime_seconds) : up.dataset.empty || '';
      const pid = field(el, 'pid');
      if (pid) pid.textContent = st.pid != null ? st.pid : pid.dataset.empty || '';
      enableButtons(el, st.state);
    }
    const running = document.getElementById('running-count');
    if (running) running.textContent = document.querySelectorAll('tr[data-vm][data-state="running"]').length;
  }

  function fillJob(row, j) {
    row.id = 'job-' + j.id;
    row.dataset.job = j.id;
    row.dataset.state = j.state;
    field(row, 'id').textContent = j.id;
    const vm = field(row, 'vm');
    if (!vm.firstChild) {
      const a = document.createElement('a');
      a.href = '/vms/' + encodeURIComponent(j.vm);
      a.textContent = j.vm;
      vm.append(a);
    }
    field(row, 'kind').textContent = j.kind;
    field(row, 'target').textContent = j.target;
    setState(field(row, 'state'), j.state);
    const bar = field(row, 'progress');
    bar.setAttribute('aria-label', 'Progress of job ' + j.id);
    let value = null;
    let max = 1;
    if (j.total > 0) { value = Math.min(j.done, j.total); max = j.total; } else if (j.state === 'succeeded') { value = 1; }
    bar.max = max;
    if (value === null) bar.removeAttribute('value'); else bar.value = value;
    field(row, 'percent').textContent = value === null ? '' : Math.floor(value * 100 / max) + '%';
    field(row, 'started').textContent = utc(j.started_ms);
    field(row, 'took').textContent = j.finished_ms ? duration(Math.floor((j.finished_ms - j.started_ms) / 1000)) : '';
    field(row, 'message').textContent = j.message || '';
  }

  const ENDED = ['succeeded', 'failed', 'interrupted'];

  // A job's progress (a `job` event, or the 202 answer that started it) into every job
  // table, adding its row if new. The answer and the event stream come over different
  // connections, so a stale "running" may arrive after "succeeded": a row that has ended
  // never goes back, and the end is announced once.
  function applyJob(j) {
    let fresh = false;
    for (const table of document.querySelectorAll('table[data-jobs]')) {
      if (table.dataset.jobsVm && table.dataset.jobsVm !== j.vm) continue;
      const body = table.tBodies[0];
      let row = body.querySelector('tr[data-job="' + j.id + '"]');
      if (row && ENDED.includes(row.dataset.state)) continue;
      fresh = true;
      if (!row) {
        const tpl = table.nextElementSibling;
        if (!tpl || !tpl.matches('template.job-row')) continue;
        row = tpl.content.firstElementChild.cloneNode(true);
        for (const empty of body.querySelectorAll('tr.empty')) empty.remove();
        body.prepend(row);
        const max = Number(table.dataset.max || 50);
        while (body.rows.length > max) body.lastElementChild.remove();
      }
      fillJob(row, j);
    }
    if (!fresh && document.querySelector('table[data-jobs]')) return;
    if (j.state === 'failed' || j.state === 'interrupted') {
      const banner = document.getElementById('last-failure');
      if (banner) {
        banner.textContent = 'Last failed job: ' + j.kind + ' of ' + j.vm + ' (job ' + j.id + ')' + (j.message ? ': ' + j.message : '');
        banner.hidden = false;
      }
      notice(j.kind + ' of ' + j.vm + ' ' + j.state + (j.message ? ': ' + j.message : ''), true);
    } else if (j.state === 'succeeded') {
      notice(j.kind + ' of ' + j.vm + ' succeeded' + (j.message ? ': ' + j.message : ''));
    }
  }

  async function act(form, button) {
    const vm = form.dataset.actVm;
    const action = button.value;
    const row = form.closest('[data-vm]');
    form.setAttribute('aria-busy', 'true');
    for (const b of form.querySelectorAll('button')) b.disabled = true;
    try {
      const r = await fetch('/api/v1/vms/' + encodeURIComponent(vm) + '/' + action, {
        method: 'POST',
        headers: { 'X-CSRF-Token': csrf },
        credentials: 'same-origin',
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) {
        notice(action + ' of ' + vm + ' failed: ' + (body.error || r.statusText), true);
      } else if (body.job) {
        notice(action + ' of ' + vm + ': job ' + body.job.id + ' started');
        applyJob(body.job);
      } else {
        notice(action + ' of ' + vm + ': done');
        if (body.status) applyVm(body.status);
      }
    } catch (err) {
      notice(action + ' of ' + vm + ' failed: ' + err, true);
    } finally {
      form.removeAttribute('aria-busy');
      enableButtons(form, row ? row.dataset.state : '');
    }
  }

  document.addEventListener('submit', (e) => {
    const form = e.target;
    const button = e.submitter;
    if (button && button.dataset.confirm) {
      if (!window.confirm(button.dataset.confirm)) {
        e.preventDefault();
        return;
      }
      // A plain form (restore in place) then skips the server's confirmation page.
      if (form.elements.confirmed) form.elements.confirmed.value = 'yes';
    }
    if (form.dataset.actVm && button && button.value) {
      e.preventDefault();
      act(form, button);
    } else if (form.hasAttribute('data-filter-form')) {
      e.preventDefault();
    }
  });

  const filter = document.getElementById('filter');
  if (filter) {
    const rows = document.getElementById(filter.dataset.filterRows);
    filter.addEventListener('input', () => {
      const q = filter.value.trim().toLowerCase();
      for (const row of rows.rows) {
        if (row.dataset.filter !== undefined) row.hidden = !row.dataset.filter.includes(q);
      }
    });
  }

  if (document.querySelector('[data-live]') && window.EventSource) {
    const events = new EventSource('/api/v1/events');
    events.addEventListener('vm', (e) => applyVm(JSON.parse(e.data)));
    events.addEventListener('job', (e) => applyJob(JSON.parse(e.data)));
    // For people and tests alike: whether live updates are flowing.
    events.addEventListener('open', () => { document.documentElement.dataset.live = 'open'; });
    events.addEventListener('error', () => { document.documentElement.dataset.live = 'reconnecting'; });
  }
})();
