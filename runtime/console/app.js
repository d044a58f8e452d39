// wsgate console: one page, plain JavaScript, no dependencies and no build step. The
// gateway embeds this file and serves it under a strict Content-Security-Policy
// (scripts and styles from this origin only, nothing inline), so all behaviour is
// wired up here rather than in the markup.
//
// One rule holds for the whole file: connection ids, routes, paths, headers, user
// agents, messages, log lines and error texts come from whoever connects to the
// gateway. They reach the DOM only as text (textContent, append(string), value),
// never as markup.

const KEY_SLOT = 'wsgate.console.key';
const TICK_MS = 3000; // how often the page samples the gateway
const WINDOW_MS = 5 * 60 * 1000; // the span of the Health chart
const PAGE_SIZE = 25;
const LOG_TAIL = 100; // execution log entries shown
const LOG_PAGE = 1000; // the largest page GET @logs returns
const TRY_LOG_LINES = 200; // Try-it log lines kept
const FETCH_TIMEOUT_MS = 10_000; // a request not answered by then is abandoned

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ DOM helpers

/** An element with attributes and children; strings become text nodes, never markup. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') node.className = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

/** Sets a node's text only when it changed, so live regions and screen readers stay quiet. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Shows a result line in a dialog or form: ok (green) or error (red). */
function result(id, text, kind = '') {
  const node = $(id);
  node.textContent = text;
  node.className = `result ${kind}`;
}

const pad = (n, width = 2) => String(n).padStart(width, '0');

/** HH:MM:SS (and .mmm) in local time. */
function clock(date, millis = false) {
  const text = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return millis ? `${text}.${pad(date.getMilliseconds(), 3)}` : text;
}

/** An API timestamp as local date and time; what cannot be parsed is shown as it came. */
function when(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${clock(date)}`;
}

/** A table's timestamp: the time of day when it is today, else the date too. */
function short(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return when(iso);
  return date.toDateString() === new Date().toDateString() ? clock(date) : when(iso);
}

/** A <time> element for an ISO timestamp. */
function timeEl(iso, text) {
  const node = el('time', {}, text);
  if (typeof iso === 'string') node.dateTime = iso;
  return node;
}

// ------------------------------------------------------------------ state

const state = {
  key: null,
  me: null, // {kind: 'operator'} or {kind: 'tenant', tenant}
  tenant: null,
  // Bumped on sign-out and on a tenant switch: answers to requests made before are
  // dropped, and the old tick loop stops.
  epoch: 0,
  timer: 0,
  view: 'connections',
  stats: null,
  routesShown: '', // the route list the selects were built from
  page: { token: undefined, back: [], next: undefined },
  search: null, // the id the table is showing alone, or null for the list
  finding: false, // a Find is waiting for its answer: the live list leaves the table alone
  listSeq: 0, // only the newest list or Find request may paint the table
  rows: new Map(), // connection id -> <tr>, reused so a refresh never steals focus
  samples: [], // {t, conn, msgs} of the tenant
  gatewaySamples: [], // the same, summed over all tenants (operator)
  logNext: null, // where the execution log was read up to; null: read its tail first
  logEntries: [],
  logPoll: null, // {epoch, promise} of the log read under way
  tenantIds: '',
  socket: null, // the Try-it WebSocket
  target: null, // the connection a dialog acts on
  pendingKey: null, // a key from the address, waiting for the user to switch to it or not
};

// ------------------------------------------------------------------ API

/** An API answer that was not 2xx, or no answer: "410 GoneException: no connection …". */
class ApiError extends Error {
  constructor(status, name, message) {
    super(message);
    this.status = status;
    this.kind = name;
  }
  toString() {
    return this.status ? `${this.status} ${this.kind}: ${this.message}` : `${this.kind}: ${this.message}`;
  }
}

// The gateway names its errors in x-amzn-ErrorType; these are for answers without it.
const STATUS_NAMES = {
  400: 'BadRequestException', 403: 'ForbiddenException', 404: 'NotFoundException',
  410: 'GoneException', 413: 'PayloadTooLargeException', 429: 'LimitExceededException',
  503: 'ServiceUnavailableException',
};

/**
 * Calls the admin API with the signed-in key (a header, never the URL); resolves to the
 * body text. A request not answered (head and body) within FETCH_TIMEOUT_MS is aborted
 * and rejects with a Timeout error, so nothing waiting on it waits forever.
 */
async function call(method, path, { query = {}, body, contentType } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  const headers = { Authorization: `Bearer ${state.key}` };
  if (contentType) headers['Content-Type'] = contentType;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  const timedOut = () => new ApiError(0, 'Timeout',
    `no answer within ${FETCH_TIMEOUT_MS / 1000} s (${method} ${url.pathname})`);
  let response;
  let text;
  try {
    try {
      response = await fetch(url, {
        method, headers, body, cache: 'no-store', credentials: 'omit', signal: controller.signal,
      });
    } catch (err) {
      if (controller.signal.aborted) throw timedOut();
      throw new ApiError(0, 'NetworkError', `the gateway did not answer (${err.message})`);
    }
    try {
      text = await response.text();
    } catch {
      if (controller.signal.aborted) throw timedOut();
      text = '';
    }
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) {
    let message = text;
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed.message === 'string') message = parsed.message;
    } catch {
      // Not JSON (a proxy's page, say): show the text as it is.
    }
    const name = response.headers.get('x-amzn-ErrorType') || STATUS_NAMES[response.status] || response.statusText || 'Error';
    throw new ApiError(response.status, name, message.slice(0, 500) || response.statusText);
  }
  return text;
}

async function json(method, path, options) {
  const text = await call(method, path, options);
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(0, 'BadAnswer', `${method} ${path} did not answer JSON`);
  }
}

/** A path under the current tenant: ('@connections', id) -> /demo/@connections/<id>. */
function tenantPath(resource, id) {
  const base = `/${encodeURIComponent(state.tenant)}/${resource}`;
  return id === undefined ? base : `${base}/${encodeURIComponent(id)}`;
}

/** Shows an error of a background request; a key that stopped working ends the session. */
function report(err) {
  if (err instanceof ApiError && err.status === 403 && state.key) {
    const linked = state.pendingKey;
    const message = `signed out: the key no longer works (${err})`;
    signOut(message);
    if (linked !== null) {
      // A key from the address was waiting for an answer: it is not dropped, nor used
      // unasked. It waits in the form (a password field), for Sign in.
      $('signin-key').value = linked;
      setText($('signin-error'), `${message}. The key from the address is filled in: Sign in uses it.`);
    }
    return;
  }
  setText($('notice'), err instanceof ApiError ? String(err) : `unexpected error: ${err?.message ?? err}`);
}

/** Wraps an event handler so that no rejection goes unhandled. */
const act = (fn) => (event) => {
  Promise.resolve().then(() => fn(event)).catch(report);
};

/** A form handler: the page never submits forms (the CSP forbids it anyway). */
function onSubmit(id, fn) {
  $(id).addEventListener('submit', (event) => {
    event.preventDefault();
    act(fn)(event);
  });
}

// ------------------------------------------------------------------ sign-in

/** The key in `#key=…`, removed from the address bar, history and bookmarks at once. */
function keyFromHash() {
  const key = new URLSearchParams(location.hash.slice(1)).get('key');
  if (key === null) return null;
  history.replaceState(null, '', location.pathname + location.search);
  return key || null;
}

/** The sign-in form, with a message; `retry` offers to try the kept key again. */
function showSignIn(message, retry = false) {
  for (const id of ['session', 'nav', 'view-connections', 'view-try', 'view-health']) $(id).hidden = true;
  $('signin').hidden = false;
  setText($('signin-error'), message);
  $('signin-retry').hidden = !retry;
  setText($('notice'), '');
  (retry ? $('signin-retry') : $('signin-key')).focus();
}

async function signIn(key) {
  state.key = key;
  // Kept in this tab only (never localStorage or a cookie), so a reload stays signed in.
  sessionStorage.setItem(KEY_SLOT, key);
  const epoch = ++state.epoch;
  let me;
  let status = null;
  try {
    me = await json('GET', '/-/me');
    if (me.kind === 'operator') status = await json('GET', '/-/status');
  } catch (err) {
    if (epoch !== state.epoch) return;
    if (err instanceof ApiError && err.status === 403) {
      // The key is refused: forget it. A key from the address waiting on this one
      // replaces nothing now, so it is used.
      forgetKey();
      const linked = state.pendingKey;
      state.pendingKey = null;
      // A question about it, asked while this key was signing in, is moot.
      if ($('switch-dialog').open) $('switch-dialog').close();
      if (linked !== null && linked !== key) {
        await signIn(linked);
        return;
      }
      showSignIn(`sign-in failed: ${err.message}`);
    } else {
      // No answer, a timeout, 429 or a server error: the key may well be good. Keep it,
      // and ask about a key from the address rather than drop either.
      showSignIn(`sign-in failed: ${err instanceof ApiError ? String(err) : err?.message ?? err}`, true);
      if (state.pendingKey !== null) askSwitch();
    }
    return;
  }
  if (epoch !== state.epoch) return;
  state.me = me;
  // Focus was in the sign-in form (or nowhere): it goes to the view's heading.
  const active = document.activeElement;
  const refocus = !active || active === document.body || $('signin').contains(active);
  $('signin').hidden = true;
  $('signin-key').value = '';
  setText($('signin-error'), '');
  $('signin-retry').hidden = true;
  $('session').hidden = false;
  $('nav').hidden = false;
  const operator = me.kind === 'operator';
  setText($('who'), operator ? 'Operator' : `Tenant ${me.tenant}`);
  $('picker-wrap').hidden = !operator;
  $('gateway-panel').hidden = !operator;
  $('legend-gateway').hidden = !operator;
  showView('connections', refocus); // loads nothing yet: no tenant is chosen
  if (operator) {
    renderGateway(status);
    renderPicker(status.tenants);
    const first = status.tenants[0]?.id;
    if (first === undefined) setText($('notice'), 'This gateway has no tenants.');
    else setTenant(first);
  } else {
    setTenant(me.tenant);
  }
  if (state.pendingKey !== null) askSwitch();
}

/** Who the signed-in key is, in words. */
const signedInAs = () => (state.me?.kind === 'operator' ? 'the operator' : `tenant ${state.me?.tenant}`);

/** The key this tab keeps (signed in with it, signing in, or its sign-in failed), or null. */
const keptKey = () => state.key ?? sessionStorage.getItem(KEY_SLOT);

/**
 * A key arrived in the address (a link, a bookmark, a pasted URL; the fragment is
 * already gone). With no key kept in this tab, it signs in. With that same key kept,
 * nothing happens (but a sign-in that failed is tried again). With another key kept,
 * signed in or not (a sign-in under way, or one that failed and offers Retry), the
 * page asks before switching: a link must never replace the tab's key, nor move a
 * signed-in tab to another tenant, without the user saying so.
 */
function offerKey(key) {
  const kept = keptKey();
  if (kept === null) {
    state.pendingKey = null;
    signIn(key).catch(report);
    return;
  }
  if (key === kept) {
    if (state.me === null && !$('signin-retry').hidden) signIn(key).catch(report);
    return;
  }
  state.pendingKey = key;
  askSwitch();
}

// The key the Switch / Keep question is about, while it is shown.
let askedKey = null;

/**
 * The Switch / Keep question about state.pendingKey. It never closes another dialog:
 * while one is open (the user half-way through a Send or a Close all, say) the question
 * waits, and is asked when the last dialog closes (see the dialogs' close handler).
 */
function askSwitch() {
  if (state.pendingKey === null || state.pendingKey === keptKey()) {
    state.pendingKey = null;
    return;
  }
  const dialog = $('switch-dialog');
  if (!dialog.open && anyDialogOpen()) return;
  const who = state.me !== null
    ? `You are signed in as ${signedInAs()}.`
    : 'This tab keeps another key, which has not signed in yet.';
  setText($('switch-question'), `${who} The address held a different key; it has been removed from the address.`);
  askedKey = state.pendingKey;
  if (!dialog.open) openDialog(dialog, $('switch-keep'));
}

function forgetKey() {
  state.key = null;
  sessionStorage.removeItem(KEY_SLOT);
}

/** Forgets the key, stops every timer and socket, and shows the sign-in form. */
function signOut(message = '') {
  state.epoch++;
  clearTimeout(state.timer);
  closeSocket(true);
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  forgetKey();
  state.pendingKey = null;
  state.me = null;
  state.tenant = null;
  state.tenantIds = '';
  state.gatewaySamples = [];
  resetTenantState();
  $('tenant-picker').replaceChildren();
  $('try-log').replaceChildren();
  showSignIn(message);
}

// ------------------------------------------------------------------ tenant and ticks

/** Forgets everything learnt about the current tenant. */
function resetTenantState() {
  state.stats = null;
  state.routesShown = '';
  state.samples = [];
  state.logNext = null;
  state.logEntries = [];
  state.page = { token: undefined, back: [], next: undefined };
  state.search = null;
  state.finding = false;
  state.rows.clear();
  $('conn-rows').replaceChildren();
  $('route-filter').replaceChildren(el('option', { value: '' }, 'all routes'));
  $('try-route').replaceChildren();
  $('exec-log').replaceChildren();
  $('failures').replaceChildren();
  delete $('failures').dataset.shown;
  $('chart').replaceChildren();
  for (const id of ['conn-summary', 'search-status', 'updated', 'try-url', 'health-now']) setText($(id), '');
  $('search-clear').hidden = true;
  $('search-id').value = '';
}

function setTenant(id) {
  closeSocket();
  // The dialogs act on the tenant's connections; the Switch / Keep question is about
  // keys, whatever the tenant, and stays until the user answers it.
  for (const dialog of document.querySelectorAll('dialog[open]')) {
    if (dialog.id !== 'switch-dialog') dialog.close();
  }
  resetTenantState();
  state.tenant = id;
  $('tenant-picker').value = id;
  setText($('conn-caption'), `Open connections of tenant ${id}`);
  clearTimeout(state.timer);
  tick(++state.epoch);
}

/**
 * One sample of everything the page shows live; the next is due TICK_MS later. Every
 * request ends within FETCH_TIMEOUT_MS, and whatever goes wrong is reported, so the
 * next tick always comes (unless the epoch moved on: a sign-out or another tenant).
 */
async function tick(epoch) {
  try {
    const jobs = [pollStats(epoch)];
    // The log is read only while it is seen.
    if (state.view === 'health') jobs.push(pollLogs(epoch));
    if (state.me?.kind === 'operator') jobs.push(pollOperator(epoch));
    if (liveTableDue()) jobs.push(loadConnections());
    const results = await Promise.allSettled(jobs);
    if (epoch !== state.epoch) return;
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) report(failed.reason);
    else setText($('notice'), '');
    if (epoch !== state.epoch) return; // report() may have signed out
    if (state.view === 'health') drawChart();
  } catch (err) {
    if (epoch === state.epoch) report(err);
  } finally {
    if (epoch === state.epoch) {
      clearTimeout(state.timer);
      state.timer = setTimeout(() => tick(epoch), TICK_MS);
    }
  }
}

async function pollStats(epoch) {
  const stats = await json('GET', tenantPath('@stats'));
  if (epoch !== state.epoch) return;
  state.stats = stats;
  addSample(state.samples, stats.connections, stats.messagesReceived + stats.messagesSent);
  const max = stats.maxConnections ? ` (at most ${stats.maxConnections})` : '';
  setText($('conn-summary'), `${stats.connections} open connection${stats.connections === 1 ? '' : 's'}${max}`);
  const routes = Array.isArray(stats.routes) ? stats.routes.map(String) : [];
  if (JSON.stringify(routes) !== state.routesShown) {
    state.routesShown = JSON.stringify(routes);
    fillRouteSelects(routes);
  }
  updateTryUrl();
  renderFailures(stats.failures || {});
}

async function pollOperator(epoch) {
  const [status, metrics] = await Promise.all([json('GET', '/-/status'), call('GET', '/metrics')]);
  if (epoch !== state.epoch) return;
  renderPicker(status.tenants);
  renderGateway(status);
  const sum = parseMetrics(metrics);
  addSample(state.gatewaySamples, sum.conn, sum.msgs);
}

/** The tenant picker, rebuilt only when the set of tenants changes (a reload). */
function renderPicker(tenants) {
  const picker = $('tenant-picker');
  const ids = tenants.map((t) => String(t.id));
  if (JSON.stringify(ids) !== state.tenantIds) {
    state.tenantIds = JSON.stringify(ids);
    picker.replaceChildren(...ids.map((id) => el('option', { value: id }, id)));
    if (state.tenant !== null && !ids.includes(state.tenant)) {
      if (ids.length) setTenant(ids[0]);
      else setText($('notice'), `Tenant ${state.tenant} is gone from this gateway.`);
    }
    if (state.tenant !== null) picker.value = state.tenant;
  }
  tenants.forEach((t, i) => setText(picker.options[i], `${t.id} (${t.connections} connected)`));
}

// ------------------------------------------------------------------ views

function showView(name, focus = true) {
  const before = state.view;
  state.view = name;
  for (const button of $('nav').querySelectorAll('button[data-view]')) {
    if (button.dataset.view === name) button.setAttribute('aria-current', 'page');
    else button.removeAttribute('aria-current');
  }
  for (const view of ['connections', 'try', 'health']) $(`view-${view}`).hidden = view !== name;
  if (focus) $(`view-${name}`).querySelector('h2').focus();
  if (name === 'connections') loadConnections().catch(report);
  if (name === 'health') {
    drawChart();
    renderLog();
    if (before !== 'health' && state.tenant !== null) {
      // The log was not read while unseen: start again from its tail rather than read
      // everything recorded meanwhile.
      state.logNext = null;
      const epoch = state.epoch;
      pollLogs(epoch).catch((err) => {
        if (epoch === state.epoch) report(err);
      });
    }
  }
}

// ------------------------------------------------------------------ connections

const anyDialogOpen = () => document.querySelector('dialog[open]') !== null;

/**
 * The list refreshes itself while it is seen, unless paused, a dialog is open, or the
 * table shows a search: reading one connection is recorded in the tenant's audit
 * trail, so a search is read once, when the user asks (Find), never on a timer.
 */
function liveTableDue() {
  return state.view === 'connections' && $('live').checked && !anyDialogOpen() && !document.hidden
    && state.search === null && !state.finding;
}

/** Loads the current page of the list into the table; a search result stays as it was found. */
async function loadConnections() {
  if (state.tenant === null || state.search !== null) return;
  const seq = ++state.listSeq;
  state.finding = false; // a Find under way is overtaken
  const epoch = state.epoch;
  const page = await json('GET', tenantPath('@connections'), {
    query: { limit: PAGE_SIZE, nextToken: state.page.token, route: $('route-filter').value },
  });
  if (seq !== state.listSeq || epoch !== state.epoch || state.search !== null) return;
  state.page.next = page.nextToken;
  renderRows(Array.isArray(page.items) ? page.items : []);
  setText($('updated'), `updated ${clock(new Date())}`);
}

/** Find: reads the connection `id` once and shows it alone in the table. */
async function findConnection(id) {
  if (state.tenant === null) return;
  const seq = ++state.listSeq;
  const epoch = state.epoch;
  state.finding = true;
  setText($('search-status'), 'looking…');
  let item = null;
  let failure = null;
  try {
    item = await json('GET', tenantPath('@connections', id));
  } catch (err) {
    failure = err;
  } finally {
    if (seq === state.listSeq) state.finding = false;
  }
  if (seq !== state.listSeq || epoch !== state.epoch) {
    if ($('search-status').textContent === 'looking…') setText($('search-status'), '');
    return;
  }
  const now = clock(new Date());
  if (failure === null) {
    state.search = id;
    $('search-clear').hidden = false;
    renderRows([item]);
    setText($('search-status'), `showing the connection with that id, as found at ${now} (live updates do not look again: press Find)`);
    setText($('updated'), `found ${now}`);
  } else if (failure.status === 410) {
    if (state.search === id) {
      // Looked again at the connection shown: it has gone since.
      renderRows([]);
      setText($('updated'), `found ${now}`);
      setText($('search-status'), `no connection with that id: it has closed (at ${now})`);
    } else {
      setText($('search-status'), 'no connection with that id');
    }
  } else {
    setText($('search-status'), String(failure));
  }
}

function renderRows(items) {
  const body = $('conn-rows');
  const seen = new Set(items.map((item) => String(item.connectionId)));
  for (const [id, row] of state.rows) {
    if (!seen.has(id)) {
      row.remove();
      state.rows.delete(id);
    }
  }
  items.forEach((item, index) => {
    const id = String(item.connectionId);
    let row = state.rows.get(id);
    if (!row) {
      row = makeRow(id);
      state.rows.set(id, row);
    }
    fillRow(row, item);
    // Rows already in place are never moved: moving a node would take focus off its buttons.
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
  });
  const empty = $('conn-empty');
  empty.hidden = items.length > 0;
  setText(empty, state.search !== null ? 'No connection with that id.' : 'No connections.');
  const searching = state.search !== null;
  $('prev').disabled = searching || state.page.back.length === 0;
  $('next').disabled = searching || !state.page.next;
  setText($('page-no'), searching ? 'Search result' : `Page ${state.page.back.length + 1}`);
}

function makeRow(id) {
  const row = el('tr');
  row.append(el('th', { scope: 'row' }, el('code', {}, id)));
  for (let i = 0; i < 6; i++) row.append(el('td'));
  const button = (text, label, handler) => {
    const b = el('button', { type: 'button', 'aria-label': label }, text);
    b.addEventListener('click', act(() => handler(id)));
    return b;
  };
  row.append(el('td', { class: 'actions' },
    button('Send', `Send to connection ${id}`, openSend),
    button('Disconnect', `Disconnect connection ${id}`, openDisconnect),
    button('Details', `Details of connection ${id}`, openDetails)));
  return row;
}

function fillRow(row, item) {
  const cells = row.children;
  const identity = item.identity || {};
  setText(cells[1], String(item.route ?? ''));
  setText(cells[2], String(item.path ?? ''));
  setText(cells[3], short(item.connectedAt));
  setText(cells[4], short(item.lastActiveAt));
  setText(cells[5], String(identity.sourceIp ?? ''));
  setText(cells[6], String(identity.userAgent ?? ''));
}

/** The route filter and the Try-it route picker, keeping what was chosen. */
function fillRouteSelects(routes) {
  const filter = $('route-filter');
  const chosen = filter.value;
  filter.replaceChildren(el('option', { value: '' }, 'all routes'), ...routes.map((r) => el('option', { value: r }, r)));
  filter.value = routes.includes(chosen) ? chosen : '';
  const tryRoute = $('try-route');
  const tried = tryRoute.value;
  tryRoute.replaceChildren(...routes.map((r) => el('option', { value: r }, r)));
  if (routes.includes(tried)) {
    tryRoute.value = tried;
  } else if (routes.length) {
    // Start from a route that needs no parameters, if there is one.
    tryRoute.value = routes.find((r) => !r.includes('{')) ?? routes[0];
    $('try-path').value = examplePath(tryRoute.value);
  }
}

function resetPaging() {
  state.page = { token: undefined, back: [], next: undefined };
}

// ------------------------------------------------------------------ dialogs

// Dialog -> what had focus before it opened.
const openers = new WeakMap();

function openDialog(dialog, focus) {
  openers.set(dialog, document.activeElement);
  dialog.showModal();
  focus.focus();
}

for (const dialog of document.querySelectorAll('dialog')) {
  dialog.addEventListener('close', () => {
    // Back to the button that opened it, or (its row gone, or signed out meanwhile) to
    // the view's heading or the sign-in form.
    const opener = openers.get(dialog);
    openers.delete(dialog);
    if (!anyDialogOpen()) {
      const signin = !$('signin').hidden;
      const fallback = signin
        ? ($('signin-retry').hidden ? $('signin-key') : $('signin-retry'))
        : $(`view-${state.view}`).querySelector('h2');
      const back = opener?.isConnected && opener !== document.body && opener.checkVisibility() ? opener : fallback;
      back.focus();
    }
    // A key from the address waited for this dialog to close: the question comes now.
    if (dialog.id !== 'switch-dialog' && state.pendingKey !== null && !anyDialogOpen()) askSwitch();
    // The list was paused while the dialog was open: it catches up now, not a tick later.
    if (liveTableDue()) loadConnections().catch(report);
  });
}
for (const button of document.querySelectorAll('dialog [data-close]')) {
  button.addEventListener('click', () => button.closest('dialog').close());
}

function openSend(id) {
  state.target = id;
  setText($('send-target'), id);
  result('send-result', '');
  openDialog($('send-dialog'), $('send-message'));
}

/** Base64 (or base64url) text to bytes; throws on anything else. */
function base64Bytes(text) {
  const clean = text.replace(/\s+/g, '').replace(/-/g, '+').replace(/_/g, '/');
  const binary = atob(clean);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

onSubmit('send-form', async () => {
  const id = state.target;
  const binary = $('send-binary').checked;
  let body = $('send-message').value;
  if (binary) {
    try {
      body = base64Bytes(body);
    } catch {
      result('send-result', 'the message is not valid base64', 'error');
      return;
    }
  }
  result('send-result', 'sending…');
  try {
    await call('POST', tenantPath('@connections', id), {
      query: { type: binary ? 'binary' : 'text' },
      body,
      contentType: binary ? 'application/octet-stream' : 'text/plain; charset=utf-8',
    });
    result('send-result', 'sent', 'ok');
  } catch (err) {
    result('send-result', String(err), 'error');
  }
});

function openDisconnect(id) {
  state.target = id;
  setText($('disc-target'), id);
  $('disc-code').value = '1000';
  $('disc-reason').value = '';
  $('disc-confirm').checked = false;
  result('disc-result', '');
  openDialog($('disc-dialog'), $('disc-code'));
}

/** The code and reason fields as query parameters (the API checks them and says why not). */
const closeQuery = (codeId, reasonId) => ({ code: $(codeId).value.trim(), reason: $(reasonId).value });

onSubmit('disc-form', async () => {
  if (!$('disc-confirm').checked) {
    result('disc-result', 'Tick “I understand the client will be disconnected” first.', 'error');
    $('disc-confirm').focus();
    return;
  }
  const query = closeQuery('disc-code', 'disc-reason');
  result('disc-result', 'disconnecting…');
  try {
    await call('DELETE', tenantPath('@connections', state.target), { query });
    result('disc-result', `disconnected with code ${query.code || 1000}`, 'ok');
  } catch (err) {
    result('disc-result', String(err), 'error');
  }
  $('disc-confirm').checked = false;
});

async function openCloseAll() {
  // Count now rather than trust the last sample: the question names what will happen.
  const epoch = state.epoch;
  const stats = await json('GET', tenantPath('@stats'));
  // Another tenant was chosen, or another dialog (the Switch question) opened meanwhile.
  if (epoch !== state.epoch || anyDialogOpen()) return;
  const n = stats.connections;
  setText($('closeall-question'), `Close all ${n} connection${n === 1 ? '' : 's'} of tenant ${state.tenant}?`);
  $('closeall-code').value = '1000';
  $('closeall-reason').value = '';
  $('closeall-confirm').checked = false;
  result('closeall-result', '');
  openDialog($('closeall-dialog'), $('closeall-code'));
}

onSubmit('closeall-form', async () => {
  if (!$('closeall-confirm').checked) {
    result('closeall-result', 'Tick “I understand every client of this tenant will be disconnected” first.', 'error');
    $('closeall-confirm').focus();
    return;
  }
  result('closeall-result', 'closing…');
  try {
    const answer = await json('DELETE', tenantPath('@connections'), { query: closeQuery('closeall-code', 'closeall-reason') });
    result('closeall-result', `closed ${answer.closed}`, 'ok');
  } catch (err) {
    result('closeall-result', String(err), 'error');
  }
  $('closeall-confirm').checked = false;
});

/** A name/value table, or a line saying there are none. */
function pairsTable(title, pairs) {
  const entries = Object.entries(pairs && typeof pairs === 'object' ? pairs : {});
  if (!entries.length) return el('p', {}, `${title}: none`);
  const rows = entries.map(([name, value]) => el('tr', {}, el('th', { scope: 'row' }, name), el('td', {}, String(value))));
  return el('div', { class: 'table-wrap' }, el('table', {},
    el('caption', {}, title),
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Name'), el('th', { scope: 'col' }, 'Value'))),
    el('tbody', {}, ...rows)));
}

function facts(dl, list) {
  dl.replaceChildren();
  for (const [name, value] of list) dl.append(el('dt', {}, name), el('dd', {}, value));
}

async function openDetails(id) {
  state.target = id;
  $('details-facts').replaceChildren();
  $('details-tables').replaceChildren();
  result('details-status', 'loading…');
  const dialog = $('details-dialog');
  openDialog(dialog, dialog.querySelector('[data-close]'));
  const epoch = state.epoch;
  let c;
  try {
    c = await json('GET', tenantPath('@connections', id));
  } catch (err) {
    if (epoch === state.epoch) result('details-status', err.status === 410 ? `no connection with that id (${err})` : String(err), 'error');
    return;
  }
  if (epoch !== state.epoch || state.target !== id) return;
  result('details-status', '');
  const identity = c.identity || {};
  facts($('details-facts'), [
    ['Connection id', String(c.connectionId ?? id)],
    ['Route', String(c.route ?? '')],
    ['Path', String(c.path ?? '')],
    ['URI', String(c.uri ?? '')],
    ['Subprotocol', c.subprotocol == null ? 'none' : String(c.subprotocol)],
    ['Connected at', when(c.connectedAt)],
    ['Last active', when(c.lastActiveAt)],
    ['Source IP', String(identity.sourceIp ?? '')],
    ['User agent', String(identity.userAgent ?? '')],
  ]);
  $('details-tables').replaceChildren(
    pairsTable('Headers', c.headers),
    pairsTable('Path parameters', c.pathParameters),
    pairsTable('Query parameters', c.queryParameters));
}

// ------------------------------------------------------------------ Try it

/** A route template with example values: /chat/{room} -> /chat/room1. */
function examplePath(template) {
  return template.replace(/\{([^}]*)\}/g, (_, name) => `${name.replace(/\+$/, '') || 'value'}1`);
}

function tryUrl() {
  const base = state.stats?.websocket;
  if (!base) return '';
  let path = $('try-path').value.trim();
  if (!path.startsWith('/')) path = `/${path}`;
  return `${base}${path}`;
}

function updateTryUrl() {
  setText($('try-url'), tryUrl() || '(the gateway has not said where its WebSocket listener is)');
}

function setTryButtons() {
  const ws = state.socket;
  const open = ws?.readyState === WebSocket.OPEN;
  $('try-connect').disabled = ws !== null;
  $('try-send').disabled = !open;
  $('try-disconnect').disabled = !open;
}

/** One line of the Try-it log: time, what happened, and the data as text. */
function tryLog(what, data = '') {
  const log = $('try-log');
  const now = new Date();
  const line = el('li', {}, timeEl(now.toISOString(), clock(now, true)), ' ', el('strong', {}, what));
  if (data !== '') line.append(' ', el('span', { class: 'data' }, data));
  log.append(line);
  while (log.children.length > TRY_LOG_LINES) log.firstElementChild.remove();
}

/** A message as text; binary as its length and the first bytes in hex. */
function showData(data) {
  if (typeof data === 'string') return data;
  const bytes = new Uint8Array(data);
  const hex = Array.from(bytes.subarray(0, 64), (b) => pad(b.toString(16))).join(' ');
  return `[binary ${bytes.length} bytes] ${hex}${bytes.length > 64 ? ' …' : ''}`;
}

function connectTry() {
  if (state.socket) return;
  const url = tryUrl();
  if (!url) {
    tryLog('error', 'the gateway has not said where its WebSocket listener is');
    return;
  }
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (err) {
    tryLog('error', err.message);
    return;
  }
  ws.binaryType = 'arraybuffer';
  state.socket = ws;
  tryLog('connecting', url);
  setTryButtons();
  ws.addEventListener('open', () => {
    tryLog('connected', url);
    setTryButtons();
  });
  ws.addEventListener('message', (event) => tryLog('← received', showData(event.data)));
  // The browser says nothing about why; the close that follows has the code.
  ws.addEventListener('error', () => tryLog('error', 'the connection failed'));
  ws.addEventListener('close', (event) => {
    if (!silenced.has(ws)) tryLog('closed', `${event.code}${event.reason ? ` ${event.reason}` : ''}`);
    if (state.socket === ws) state.socket = null;
    setTryButtons();
  });
}

// Sockets closed by signing out: their close event has no log left to go to.
const silenced = new WeakSet();

function closeSocket(quiet = false) {
  const ws = state.socket;
  if (!ws) return;
  state.socket = null;
  if (quiet) silenced.add(ws);
  ws.close(1000, 'console closed');
  setTryButtons();
}

// ------------------------------------------------------------------ Health

/** Remembers a sample, forgetting those older than the chart's span. */
function addSample(list, conn, msgs) {
  const t = Date.now();
  list.push({ t, conn: Number(conn) || 0, msgs: Number(msgs) || 0 });
  while (list.length && list[0].t < t - WINDOW_MS - TICK_MS) list.shift();
}

/** Messages per second between successive samples (counters are cumulative). */
function rates(samples) {
  const points = [];
  for (let i = 1; i < samples.length; i++) {
    const seconds = (samples[i].t - samples[i - 1].t) / 1000;
    const delta = samples[i].msgs - samples[i - 1].msgs;
    // A counter that went down belongs to a restarted gateway: no rate for that step.
    if (seconds > 0 && delta >= 0) points.push([samples[i].t, delta / seconds]);
  }
  return points;
}

/** Sums wsgate_connections and the message counters over every tenant in Prometheus text. */
function parseMetrics(text) {
  const sum = { conn: 0, msgs: 0 };
  const line = /^([A-Za-z_:][\w:]*)(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)/;
  for (const row of text.split('\n')) {
    const m = line.exec(row);
    if (!m) continue;
    const value = Number(m[2]);
    if (!Number.isFinite(value)) continue;
    if (m[1] === 'wsgate_connections') sum.conn += value;
    else if (m[1] === 'wsgate_messages_received_total' || m[1] === 'wsgate_messages_sent_total') sum.msgs += value;
  }
  return sum;
}

const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element; presentation attributes only, since the CSP allows no style attributes. */
function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const round = (v) => String(Number(v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)));

function drawChart() {
  const width = 600;
  const left = 56;
  const right = 8;
  const height = 90;
  const now = Date.now();
  const x = (t) => left + (width - left - right) * (1 - (now - t) / WINDOW_MS);
  const operator = state.me?.kind === 'operator';
  const panels = [
    { name: 'connections', top: 14, pick: (s) => s.map((p) => [p.t, p.conn]) },
    { name: 'messages/s', top: 134, pick: rates },
  ];
  const root = svg('svg', { viewBox: `0 0 ${width} 250`, role: 'img', 'aria-labelledby': 'chart-title', class: 'chart-svg' });
  const latest = (points) => (points.length ? round(points[points.length - 1][1]) : '—');
  const summary = [];
  root.append(svg('title', { id: 'chart-title' }, 'Connections and messages per second, last 5 minutes'));
  for (const panel of panels) {
    const series = [['tenant', panel.pick(state.samples)]];
    if (operator) series.push(['gateway', panel.pick(state.gatewaySamples)]);
    // Headroom above the highest point, so a steady line does not hide in the frame.
    const max = Math.max(1, ...series.flatMap(([, points]) => points.map((p) => p[1]))) * 1.2;
    const y = (v) => panel.top + height - (height * v) / max;
    root.append(
      svg('rect', { x: left, y: panel.top, width: width - left - right, height, class: 'frame' }),
      svg('text', { x: left - 6, y: panel.top + 10, 'text-anchor': 'end', class: 'axis' }, round(max)),
      svg('text', { x: left - 6, y: panel.top + height, 'text-anchor': 'end', class: 'axis' }, '0'),
      svg('text', { x: left + 6, y: panel.top + 14, class: 'label' }, panel.name));
    for (const [name, points] of series) {
      const visible = points.filter((p) => p[0] >= now - WINDOW_MS);
      if (visible.length) {
        const coords = visible.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
        root.append(svg('polyline', { points: coords, fill: 'none', class: `line ${name}` }));
      }
    }
    summary.push(`${panel.name}: ${latest(series[0][1])}${operator ? ` (all tenants ${latest(series[1][1])})` : ''}`);
  }
  root.append(
    svg('text', { x: left, y: 246, class: 'axis' }, '5 min ago'),
    svg('text', { x: width - right, y: 246, 'text-anchor': 'end', class: 'axis' }, 'now'));
  $('chart').replaceChildren(root);
  setText($('health-now'), `Now, ${state.tenant}: ${summary.join('; ')}`);
}

function renderFailures(failures) {
  const nonzero = Object.entries(failures).filter(([, n]) => Number(n) > 0);
  const box = $('failures');
  const key = JSON.stringify(nonzero);
  if (box.dataset.shown === key) return;
  box.dataset.shown = key;
  if (!nonzero.length) {
    box.replaceChildren(el('p', {}, 'none'));
    return;
  }
  box.replaceChildren(el('div', { class: 'table-wrap' }, el('table', {},
    el('caption', {}, 'Failed plugin events by kind, since the gateway started'),
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Kind'), el('th', { scope: 'col' }, 'Count'))),
    el('tbody', {}, ...nonzero.map(([kind, n]) => el('tr', {}, el('th', { scope: 'row' }, kind), el('td', {}, String(n))))))));
}

/** Reads the execution log (one read at a time per epoch: a second caller shares the first's). */
function pollLogs(epoch) {
  if (state.logPoll?.epoch === epoch) return state.logPoll.promise;
  const promise = readLogs(epoch).finally(() => {
    if (state.logPoll?.promise === promise) state.logPoll = null;
  });
  state.logPoll = { epoch, promise };
  return promise;
}

/**
 * The newest LOG_TAIL entries first (tail=N: no reading through the whole ring to
 * find them), then from where the last read ended, keeping the newest LOG_TAIL.
 */
async function readLogs(epoch) {
  let changed = false;
  if (state.logNext !== null) {
    // A busy log is read a page at a time; a few pages per tick keep each tick short.
    for (let pages = 0; pages < 5; pages++) {
      const since = state.logNext;
      const page = await json('GET', tenantPath('@logs'), { query: { since, limit: LOG_PAGE } });
      if (epoch !== state.epoch) return;
      const entries = Array.isArray(page.entries) ? page.entries : [];
      if (Number.isSafeInteger(page.next) && page.next < since) {
        // `since` is past the newest entry: the gateway restarted and numbers its log
        // from 1 again, answering where its ring begins. Reading on from there would
        // read the whole ring; its tail is read afresh instead.
        state.logNext = null;
        break;
      }
      if (Number.isSafeInteger(page.next)) state.logNext = page.next;
      if (entries.length) {
        state.logEntries.push(...entries);
        state.logEntries.splice(0, Math.max(0, state.logEntries.length - LOG_TAIL));
        changed = true;
      }
      if (entries.length < LOG_PAGE) break;
    }
  }
  if (state.logNext === null) {
    const page = await json('GET', tenantPath('@logs'), { query: { tail: LOG_TAIL } });
    if (epoch !== state.epoch) return;
    const entries = Array.isArray(page.entries) ? page.entries : [];
    state.logEntries = entries.slice(-LOG_TAIL);
    state.logNext = Number(page.next) || 0;
    changed = true;
  }
  if (changed && state.view === 'health') renderLog();
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/** One execution log entry as a line of text. */
function logItem(entry) {
  const date = new Date(entry.time);
  const level = LEVELS.includes(entry.level) ? entry.level : 'info';
  const where = [entry.plugin, entry.route, entry.connectionId].filter((v) => v).join(' · ');
  const line = el('li', { class: `level-${level}` },
    timeEl(entry.time, Number.isNaN(date.getTime()) ? String(entry.time) : clock(date)), ' ',
    el('span', { class: 'level' }, level), ' ', el('span', { class: 'kind' }, String(entry.kind ?? '')), ' ');
  if (where) line.append(el('span', { class: 'where' }, where), ' ');
  // An audit entry's message already says who did what to which connection, and how it went.
  const audit = entry.audit;
  const text = entry.message || (audit ? `${audit.action} ${audit.target} answered ${audit.status}` : '');
  line.append(String(text));
  return line;
}

function renderLog() {
  const list = $('exec-log');
  const items = state.logEntries.slice().reverse().map(logItem);
  list.replaceChildren(...(items.length ? items : [el('li', {}, 'no entries yet')]));
}

/** The operator's Gateway panel: the node, its cluster and its reloads. */
function renderGateway(status) {
  const cluster = status.cluster;
  const list = [
    ['Version', String(status.version ?? '')],
    ['Started at', when(status.startedAt)],
    ['State', status.draining ? 'draining (new clients go elsewhere)' : 'serving'],
  ];
  if (status.degraded) list.push(['Degraded', String(status.degraded)]);
  if (cluster) list.push(['Node', String(cluster.node ?? '')]);
  if (cluster?.nodes?.error) list.push(['Cluster', `nodes unknown: ${cluster.nodes.error}`]);
  facts($('gateway-facts'), list);
  const nodes = Array.isArray(cluster?.nodes) ? cluster.nodes : [];
  $('cluster-wrap').hidden = !nodes.length;
  $('cluster-rows').replaceChildren(...nodes.map((n) =>
    el('tr', {}, el('th', { scope: 'row' }, String(n.id)), el('td', {}, n.alive ? 'alive' : 'silent'))));
  const reloads = Array.isArray(status.reloads) ? status.reloads : [];
  $('reloads-wrap').hidden = !reloads.length;
  $('reload-rows').replaceChildren(...reloads.map((r) => el('tr', {},
    el('th', { scope: 'row' }, when(r.at)),
    el('td', {}, String(r.result)),
    el('td', {}, `${r.tookMs} ms`),
    el('td', {}, String(r.error ?? r.summary ?? '')))));
}

// ------------------------------------------------------------------ wiring

onSubmit('signin-form', async () => {
  const key = $('signin-key').value.trim();
  if (!key) {
    setText($('signin-error'), 'Enter a management key.');
    return;
  }
  state.pendingKey = null; // the user chose this key: a linked one waits no longer
  await signIn(key);
});

// After a sign-in that got no usable answer (the key is kept): the same key again.
$('signin-retry').addEventListener('click', act(async () => {
  const key = state.key ?? sessionStorage.getItem(KEY_SLOT);
  if (key === null) {
    showSignIn('Enter a management key.');
    return;
  }
  setText($('signin-error'), 'signing in…');
  await signIn(key);
}));

$('switch-go').addEventListener('click', act(async () => {
  const key = state.pendingKey;
  state.pendingKey = null;
  askedKey = null;
  $('switch-dialog').close();
  if (key === null) return;
  signOut();
  await signIn(key);
}));
// Keep (and Escape) decline the question: the key it was about is dropped, at once. Not
// in the dialog's `close` event, which the browser fires in a later task: a link
// followed meanwhile asks again about its key, and a late `close` would drop that one,
// leaving a question whose Switch does nothing. The page itself closes the question
// only on Switch and on signing out, which deal with the key first.
function declineSwitch() {
  if (askedKey !== null && state.pendingKey === askedKey) state.pendingKey = null;
  askedKey = null;
}
$('switch-keep').addEventListener('click', declineSwitch);
$('switch-dialog').addEventListener('cancel', declineSwitch);

$('sign-out').addEventListener('click', () => signOut());

$('tenant-picker').addEventListener('change', () => setTenant($('tenant-picker').value));

for (const button of $('nav').querySelectorAll('button[data-view]')) {
  button.addEventListener('click', () => showView(button.dataset.view));
}

onSubmit('search-form', async () => {
  const id = $('search-id').value.trim();
  if (!id) {
    state.search = null;
    state.finding = false;
    $('search-clear').hidden = true;
    setText($('search-status'), '');
    await loadConnections();
    return;
  }
  // Find again on the same id looks again: the one way a search result is refreshed.
  await findConnection(id);
});

$('search-clear').addEventListener('click', act(async () => {
  state.search = null;
  state.finding = false;
  $('search-id').value = '';
  // The button hides itself: focus goes to the search box rather than to nowhere.
  $('search-id').focus();
  $('search-clear').hidden = true;
  setText($('search-status'), '');
  await loadConnections();
}));

$('route-filter').addEventListener('change', act(async () => {
  resetPaging();
  await loadConnections();
}));

$('live').addEventListener('change', act(async () => {
  if ($('live').checked) await loadConnections();
}));

$('next').addEventListener('click', act(async () => {
  if (!state.page.next) return;
  state.page.back.push(state.page.token);
  state.page.token = state.page.next;
  await loadConnections();
}));

$('prev').addEventListener('click', act(async () => {
  if (!state.page.back.length) return;
  state.page.token = state.page.back.pop();
  await loadConnections();
}));

$('close-all').addEventListener('click', act(openCloseAll));

$('try-route').addEventListener('change', () => {
  $('try-path').value = examplePath($('try-route').value);
  updateTryUrl();
});
$('try-path').addEventListener('input', updateTryUrl);
onSubmit('try-form', connectTry);

onSubmit('try-send-form', () => {
  const ws = state.socket;
  if (ws?.readyState !== WebSocket.OPEN) return;
  const text = $('try-message').value;
  ws.send(text);
  tryLog('→ sent', text);
});

onSubmit('try-close-form', () => {
  const ws = state.socket;
  if (!ws) return;
  const code = Number($('try-code').value || 1000);
  try {
    // The browser refuses codes other than 1000 and 3000-4999, and reasons over 123 bytes.
    ws.close(code, $('try-reason').value);
    tryLog('closing', `${code} ${$('try-reason').value}`.trim());
  } catch (err) {
    tryLog('error', err.message);
  }
});

$('try-clear').addEventListener('click', () => $('try-log').replaceChildren());

// A link or bookmark with #key=… while the page is open: see offerKey.
window.addEventListener('hashchange', () => {
  const key = keyFromHash();
  if (key !== null) offerKey(key);
});

// Start. The key this tab already had signs in; a different key in the fragment is
// then offered (Switch / Keep) like a link followed later, since a page that sent
// this tab here could have put it there. Without a key of its own, the fragment's
// signs in.
{
  const linked = keyFromHash();
  const stored = sessionStorage.getItem(KEY_SLOT);
  if (stored && linked && linked !== stored) state.pendingKey = linked;
  const key = stored || linked;
  if (key) signIn(key).catch(report);
  else showSignIn('');
}
