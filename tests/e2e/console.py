#!/usr/bin/env python3
"""The web console in a real browser: the system Chromium, driven by Playwright.

Run by the Rust test `tests/e2e` after it has opened two WebSocket clients on the
tenant: A (`--target`, an ordinary client) and B (`--hostile`, whose User-Agent is
markup). The script signs in through `#key=`, looks at, sends to, disconnects and
closes connections through the page, uses Try it (sending markup too) and Health,
signs out, signs in again (a refused key is forgotten; a sign-in answered 429 keeps the
key and offers Retry), is asked before a link with another key replaces the kept one
(Keep while Retry is offered; Keep, then Switch to the operator while signed in; while
the Close all dialog is half-filled the question waits for it to close, and the dialog
keeps what was entered) and checks the phone layout. It prints one JSON
line and exits 0, or prints which step failed and why and exits 1. Screenshots go to
`--out`.

It opens one WebSocket client of its own, X, on the tenant's `/connections` route,
with markup in its query and in a header, and reaches X's details with the keyboard
alone: the nav with Shift+Tab and Space, the search box with Tab and Enter, the row's
buttons with Tab and Shift+Tab, the dialogs with Enter and Escape, focus going back to
the button that opened each. Close all closes X with B. Nothing X does reaches A or B.

In every view and dialog, every visible control (and image, table and dialog) has an
accessible name and every visible input, select and textarea a label (`check_names`).

The page is watched all along: any console error or warning, uncaught exception,
alert, failed request, or request to a host other than the gateway's two listeners
fails the run. Chromium reports every fetch answered 4xx/5xx as a console error
("Failed to load resource: the server responded with a status of 410 (Gone)", with
the request's URL as its location; found by trying it). The only ones accepted are
the deliberate ones, each for one exact URL path, once, within its step: the 410 of
step `disconnect` (the Send to A after A was disconnected), the 403 of step
`sign-out` (a refused key) and the 429 of step `retry` (a sign-in answered 429 by a
route of the test's own).

The console reads one connection (an audited request) only when asked: step
`keyboard` lets a tick of the live loop pass while a search is shown and counts the
reads of the found connection. The execution log is read only while Health is shown,
starting from its tail: step `health` first makes more audited calls than the log
shows (Sends to connections that do not exist, answered 410, straight to the API, not
through the page), and the log shows exactly the newest 100, newest first.

Every wait is bounded (Playwright's timeouts, `expect` with a timeout); nothing
sleeps to synchronise.
"""

import argparse
import http.client
import json
import re
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import connect as ws_connect

HOSTILE_UA = "<img src=x onerror=alert(1)>"
MESSAGE = "hello from the console"
CLOSE_CODE = "4001"
CLOSE_REASON = "bye from the console"
TRY_MESSAGE = "ping from try-it"
TRY_HOSTILE = "<img src=x onerror=alert(2)>"
# Client X's markup: a query parameter (sent percent-encoded, shown decoded) and a header.
X_QUERY = "%3Cscript%3Ealert(3)%3C%2Fscript%3E"
X_QUERY_VALUE = "<script>alert(3)</script>"
X_HEADER = ("X-Evil", "<b>bold</b>")
LOG_SHOWN = 100  # execution log entries the console shows
AUDITED_MISSES = 120  # audited API calls made before Health is opened: more than it shows
MAX_TABS = 20  # Tab presses allowed to reach a control: a bound, not a count that must match
TIMEOUT_MS = 10_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class StepFailed(Exception):
    """A step's check failed; the message names the step."""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin", required=True, help="the admin listener, http://HOST:PORT")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--key", required=True, help="the tenant's bearer key")
    parser.add_argument("--ops-key", required=True, help="the operator's bearer key")
    parser.add_argument("--target", required=True, help="connection id of client A")
    parser.add_argument("--hostile", required=True, help="connection id of client B")
    parser.add_argument("--out", required=True, help="folder for the screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    return parser.parse_args()


def host_port(url):
    """(host, port) of a URL, with the scheme's default port filled in."""
    parts = urlsplit(url)
    default = {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(parts.scheme)
    return (parts.hostname, parts.port or default)


def websocket_origin(args):
    """Where the tenant's routes are, as the gateway tells the console (GET @stats)."""
    request = urllib.request.Request(
        f"{args.admin}/{args.tenant}/@stats",
        headers={"Authorization": f"Bearer {args.key}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        stats = json.load(response)
    if not stats.get("websocket"):
        raise StepFailed(f"setup: @stats names no WebSocket URL: {stats}")
    return stats["websocket"]


class Watch:
    """Everything the page must never do, collected as it happens."""

    def __init__(self, args, allowed_hosts):
        self.args = args
        self.allowed = allowed_hosts
        self.problems = []
        self.step = "start"
        # A deliberate error answer (see the module's docstring): (status, URL path),
        # opened within a step, at most once, closed when the step ends. Chromium logs
        # it when the answer's head arrives, before the page can show the answer, so it
        # is seen before the step's check of the page passes.
        self.expected = None
        self.accepted = []
        self.requests = 0
        self.sent = []  # every request the page made, in order

    def check_url(self, what, url):
        if host_port(url) not in self.allowed:
            self.problems.append(f"{self.step}: {what} to another host: {url}")
        # The fragment never leaves the browser; everything else does.
        sent = url.split("#", 1)[0]
        for key in (self.args.key, self.args.ops_key):
            if key in sent:
                self.problems.append(f"{self.step}: a key appears in a {what} URL: {sent}")

    def on_request(self, request):
        self.requests += 1
        self.sent.append(request)
        self.check_url("request", request.url)

    def on_websocket(self, websocket):
        self.check_url("WebSocket", websocket.url)

    def on_console(self, message):
        if message.type not in ("error", "warning"):
            return
        text = message.text
        url = (message.location or {}).get("url", "")
        wanted = self.expected
        if (
            wanted is not None
            and text.startswith(f"Failed to load resource: the server responded with a status of {wanted[0]}")
            and unquote(urlsplit(url).path) == wanted[1]
        ):
            self.expected = None  # once only
            self.accepted.append(f"{self.step}: {text} ({url})")
            return
        self.problems.append(f"{self.step}: console {message.type}: {text} ({url})")

    def on_page_error(self, error):
        self.problems.append(f"{self.step}: uncaught exception in the page: {error}")

    def on_dialog(self, dialog):
        self.problems.append(f"{self.step}: the page opened a {dialog.type} dialog: {dialog.message!r}")
        dialog.dismiss()

    def on_request_failed(self, request):
        self.problems.append(f"{self.step}: request failed: {request.method} {request.url}: {request.failure}")

    def attach(self, page):
        page.on("request", self.on_request)
        page.on("websocket", self.on_websocket)
        page.on("console", self.on_console)
        page.on("pageerror", self.on_page_error)
        page.on("dialog", self.on_dialog)
        page.on("requestfailed", self.on_request_failed)

    def verify(self):
        if self.problems:
            raise StepFailed("; ".join(self.problems))


def path_of(request):
    """A request's URL path, percent-decoded."""
    return unquote(urlsplit(request.url).path)


def row_of(table, connection_id):
    """The table row of a connection, found by its id as text."""
    return table.get_by_role("row").filter(has=table.page.get_by_role("rowheader", name=connection_id, exact=True))


def no_page_overflow(page, where):
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if width[0] > width[1]:
        raise StepFailed(f"phone: the page is wider than the screen in {where}: scrollWidth {width[0]} > {width[1]}")


# Roles whose elements need a name to be told apart by a screen reader: the controls,
# and the images (the Health chart), tables and dialogs.
NAMED_ROLES = (
    "button", "link", "textbox", "searchbox", "combobox", "listbox", "checkbox", "radio",
    "spinbutton", "slider", "switch", "tab", "menuitem", "img", "table", "dialog",
)

# The visible form fields without a label and buttons without a name, by the DOM's
# own rules (a <label>, aria-label, aria-labelledby naming elements with text), and
# aria-labelledby/-describedby naming ids that do not exist.
UNLABELLED_JS = """() => {
  const text = (ids) => (ids || '').split(/\\s+/).filter(Boolean)
    .map((id) => document.getElementById(id)?.textContent.trim() ?? '').join(' ').trim();
  const say = (el) => el.outerHTML.slice(0, 160);
  const bad = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || !el.checkVisibility()) continue;
    const labelled = [...el.labels].some((label) => label.textContent.trim())
      || (el.getAttribute('aria-label') || '').trim() || text(el.getAttribute('aria-labelledby'));
    if (!labelled) bad.push(`${el.tagName.toLowerCase()} element without a label: ${say(el)}`);
  }
  for (const el of document.querySelectorAll('button, [role=button]')) {
    if (!el.checkVisibility()) continue;
    const named = (el.getAttribute('aria-label') || '').trim() || text(el.getAttribute('aria-labelledby'))
      || el.textContent.trim() || (el.title || '').trim();
    if (!named) bad.push(`a button without a name: ${say(el)}`);
  }
  for (const el of document.querySelectorAll('[aria-labelledby], [aria-describedby]')) {
    if (!el.checkVisibility()) continue;
    for (const attr of ['aria-labelledby', 'aria-describedby']) {
      for (const id of (el.getAttribute(attr) || '').split(/\\s+/).filter(Boolean)) {
        if (!document.getElementById(id)) bad.push(`${attr} names a missing id ${id}: ${say(el)}`);
      }
    }
  }
  return bad;
}"""


def check_names(page, where):
    """Every visible control, image, table and dialog in `where` has an accessible name
    and every form field a label.

    Twice over: Playwright's accessible-name computation (what a screen reader would
    announce) for every role that needs a name, and the DOM's labelling rules. Fails
    naming each element that has none. Returns how many named elements it saw."""
    def any_of(name=None):
        found = None
        for role in NAMED_ROLES:
            one = page.get_by_role(role) if name is None else page.get_by_role(role, name=name)
            found = one if found is None else found.or_(one)
        return found

    unnamed = any_of(re.compile(r"^\s*$")).evaluate_all("els => els.map((el) => el.outerHTML.slice(0, 160))")
    problems = [f"no accessible name: {html}" for html in unnamed]
    problems += page.evaluate(UNLABELLED_JS)
    named = any_of().count()
    if problems:
        raise StepFailed(f"{where}: " + "; ".join(problems))
    if named == 0:
        raise StepFailed(f"{where}: nothing with a role that needs a name, so nothing was checked")
    return named


def focused(page):
    """What has focus, for a failure message."""
    return page.evaluate(
        "() => { const el = document.activeElement;"
        " return el ? el.outerHTML.slice(0, 120) : 'nothing'; }"
    )


def tab_to(page, target, key, what, where):
    """Presses `key` (Tab or Shift+Tab) until `target` has focus, at most MAX_TABS times."""
    passed = []
    for _ in range(MAX_TABS):
        page.keyboard.press(key)
        if target.evaluate("el => el === document.activeElement"):
            return len(passed) + 1
        passed.append(focused(page))
    raise StepFailed(f"{where}: {MAX_TABS} presses of {key} never reached {what}; focus went to: " + " | ".join(passed))


def audited_misses(args, count):
    """`count` audited management calls, quickly (one kept-alive HTTP connection): Sends
    to connections that do not exist, `gone-000` on, each answered 410 and recorded in
    the tenant's execution log."""
    parts = urlsplit(args.admin)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        for i in range(count):
            conn.request(
                "POST",
                f"/{args.tenant}/@connections/gone-{i:03d}",
                body=b"x",
                headers={"Authorization": f"Bearer {args.key}", "Content-Type": "text/plain"},
            )
            response = conn.getresponse()
            response.read()
            if response.status != 410:
                raise StepFailed(f"health: a Send to connection gone-{i:03d} answered {response.status}, not 410")
    finally:
        conn.close()


def connect_x(ws_url):
    """Client X on the tenant's /connections route, markup in its query and a header; its id."""
    client = ws_connect(
        f"{ws_url}/connections?q={X_QUERY}",
        additional_headers=[X_HEADER],
        open_timeout=10,
        close_timeout=5,
    )
    try:
        client.send("{}")
        answer = json.loads(client.recv(timeout=10))
        return client, answer["connection_id"]
    except BaseException:
        client.close()
        raise


def run(args, out):
    ws_url = websocket_origin(args)
    allowed = {host_port(args.admin), host_port(ws_url)}
    watch = Watch(args, allowed)
    steps = []
    timings = {}  # step -> when it started
    tenant_path = f"/{args.tenant}/@connections/"

    def step(name):
        timings[name] = time.monotonic()
        watch.verify()  # what the previous step left behind
        watch.expected = None  # an accepted error answer belongs to its step only
        watch.step = name
        steps.append(name)

    client_x = None
    named = {}  # where -> how many named elements check_names saw there

    def names(where):
        named[where] = check_names(page, f"{watch.step}: {where}")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = None
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page = context.new_page()
            watch.attach(page)

            # 1-2. Sign in through the fragment; the key leaves the address bar at once.
            step("sign-in")
            bare = re.compile(rf"^{re.escape(args.admin)}/ui/$")  # the address without a key
            switch = page.get_by_role("dialog", name="Switch to the key in the address?")
            page.goto(f"{args.admin}/ui/#key={args.key}")
            connections_view = page.get_by_role("region", name="Connections", exact=True)
            expect(connections_view).to_be_visible()
            if args.key in page.url or "#key" in page.url:
                raise StepFailed(f"sign-in: the key is still in the URL: {page.url}")
            stored = page.evaluate("Object.values(sessionStorage)")
            if args.key not in stored:
                raise StepFailed(f"sign-in: sessionStorage lacks the key: {stored}")
            if page.evaluate("localStorage.length") or page.evaluate("document.cookie"):
                raise StepFailed("sign-in: the page kept something in localStorage or a cookie")

            # 3. Both clients are listed; B's user agent is text, not markup.
            step("connections")
            table = page.get_by_role("table", name=re.compile("Open connections"))
            row_a = row_of(table, args.target)
            row_b = row_of(table, args.hostile)
            expect(row_a).to_have_count(1)
            expect(row_b).to_have_count(1)
            expect(row_b.locator("td").nth(5)).to_have_text(HOSTILE_UA)
            if table.locator("img").count() or page.locator("[onerror]").count():
                raise StepFailed("connections: the hostile user agent became an element")
            # The time of the last refresh changes every 3 s: no live region announces it.
            updated = connections_view.locator("#updated")
            expect(updated).to_have_text(re.compile(r"^updated \d\d:\d\d:\d\d$"))
            if updated.evaluate(
                "el => el.closest('[aria-live], [role=status], [role=log], [role=alert], [role=timer]') !== null"
            ):
                raise StepFailed("connections: the line that changes every 3 s is in a live region")
            names("connections")
            page.screenshot(path=out / "connections.png", full_page=True)

            # 4. Details of A: its handshake headers.
            step("details")
            details_button = row_a.get_by_role("button", name=f"Details of connection {args.target}")
            expect(details_button).to_have_text("Details")
            details_button.click()
            dialog = page.get_by_role("dialog", name="Connection details")
            expect(dialog).to_be_visible()
            headers = dialog.get_by_role("table", name="Headers")
            expect(headers.get_by_role("rowheader", name=re.compile("^host$", re.I))).to_have_count(1)
            names("details dialog")
            page.screenshot(path=out / "details.png")
            page.keyboard.press("Escape")
            expect(dialog).to_be_hidden()
            expect(details_button).to_be_focused()

            # 5. Send a text message to A.
            step("send")
            send_button = row_a.get_by_role("button", name=f"Send to connection {args.target}")
            expect(send_button).to_have_text("Send")
            send_button.click()
            dialog = page.get_by_role("dialog", name="Send to a connection")
            expect(dialog).to_be_visible()
            dialog.get_by_label("Message", exact=True).fill(MESSAGE)
            dialog.get_by_label("text", exact=True).check()
            names("send dialog")
            dialog.get_by_role("button", name="Send", exact=True).click()
            expect(dialog.get_by_role("status")).to_have_text("sent")
            page.screenshot(path=out / "send.png")
            dialog.get_by_role("button", name="Close", exact=True).click()
            expect(dialog).to_be_hidden()

            # 6. Disconnect A (4001, a reason), confirmed in a second step; then a Send to
            # A is answered 410. Live updates are paused first so that A's row stays.
            step("disconnect")
            live = page.get_by_label("Live updates (every 3 s)")
            live.uncheck()
            disconnect_button = row_a.get_by_role("button", name=f"Disconnect connection {args.target}")
            expect(disconnect_button).to_have_text("Disconnect")
            disconnect_button.click()
            dialog = page.get_by_role("dialog", name="Disconnect a connection")
            expect(dialog).to_be_visible()
            names("disconnect dialog")
            dialog.get_by_label("Close code", exact=True).fill(CLOSE_CODE)
            dialog.get_by_label("Reason", exact=True).fill(CLOSE_REASON)
            submit = dialog.get_by_role("button", name="Disconnect", exact=True)
            requests_before = watch.requests
            submit.click()
            expect(dialog.get_by_role("status")).to_contain_text("I understand")  # not yet confirmed
            if watch.requests != requests_before:
                raise StepFailed("disconnect: a request went out before the disconnect was confirmed")
            dialog.get_by_label("I understand the client will be disconnected").check()
            submit.click()
            expect(dialog.get_by_role("status")).to_have_text(f"disconnected with code {CLOSE_CODE}")
            page.screenshot(path=out / "disconnect.png")
            dialog.get_by_role("button", name="Close", exact=True).click()
            expect(dialog).to_be_hidden()
            watch.expected = (410, tenant_path + args.target)
            send_button.click()
            dialog = page.get_by_role("dialog", name="Send to a connection")
            dialog.get_by_label("Message", exact=True).fill(MESSAGE)
            dialog.get_by_role("button", name="Send", exact=True).click()
            expect(dialog.get_by_role("status")).to_contain_text("410 GoneException")
            dialog.get_by_role("button", name="Close", exact=True).click()
            live.check()
            expect(row_a).to_have_count(0)

            # 7. Try it: a WebSocket from the page to /echo, seen in the table, closed 1000;
            # markup sent and echoed stays text.
            step("try-it")
            page.get_by_role("navigation").get_by_role("button", name="Try it").click()
            try_view = page.get_by_role("region", name="Try it", exact=True)
            expect(try_view).to_be_visible()
            try_view.get_by_label("Route", exact=True).select_option("/echo")
            expect(try_view.get_by_label("Path", exact=True)).to_have_value("/echo")
            expect(try_view.locator("output")).to_have_text(f"{ws_url}/echo")
            try_view.get_by_role("button", name="Connect", exact=True).click()
            log = try_view.get_by_role("list", name="Log")
            expect(log.get_by_role("listitem").filter(has_text=re.compile(r"\bconnected\b"))).to_have_count(1)
            try_view.get_by_label("Message", exact=True).fill(TRY_MESSAGE)
            try_view.get_by_role("button", name="Send", exact=True).click()
            echoed = log.get_by_role("listitem").filter(has_text="← received").filter(has_text=TRY_MESSAGE)
            expect(echoed).to_have_count(1)
            expect(echoed.locator("time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d"))
            try_view.get_by_label("Message", exact=True).fill(TRY_HOSTILE)
            try_view.get_by_role("button", name="Send", exact=True).click()
            lines = log.get_by_role("listitem")
            for what in ("→ sent", "← received"):
                line = lines.filter(has_text=what).filter(has_text=TRY_HOSTILE)
                expect(line).to_have_count(1)
                expect(line.locator(".data")).to_have_text(TRY_HOSTILE)
            if log.locator("img").count() or try_view.locator("[onerror]").count():
                raise StepFailed("try-it: the echoed markup became an element in the log")
            names("Try it")
            page.screenshot(path=out / "try-it.png", full_page=True)
            user_agent = page.evaluate("navigator.userAgent")
            page.get_by_role("navigation").get_by_role("button", name="Connections").click()
            mine = table.get_by_role("row").filter(has_text="/echo").filter(has_text=user_agent)
            expect(mine).to_have_count(1)
            page.get_by_role("navigation").get_by_role("button", name="Try it").click()
            try_view.get_by_label("Close code", exact=True).fill("1000")
            try_view.get_by_role("button", name="Disconnect", exact=True).click()
            expect(log.get_by_role("listitem").filter(has_text=re.compile(r"closed 1000\b"))).to_have_count(1)

            # 8. The keyboard alone. Client X connects with markup in its query and a
            # header. Shift+Tab from the current nav button reaches Connections, Space
            # opens it and focus lands on its heading; Tab reaches the search box, Enter
            # finds X; Tab reaches X's Send, then Disconnect and Details (Shift+Tab goes
            # back); Enter opens the details with focus inside, the markup shown as text;
            # Escape closes them and focus is back on Details. The same for Send, whose
            # message box gets focus. Shift+Tab reaches Show all; Enter lists every
            # connection again, focus moving to the search box.
            step("keyboard")
            client_x, x_id = connect_x(ws_url)
            nav = page.get_by_role("navigation")
            nav_try = nav.get_by_role("button", name="Try it", exact=True)
            nav_connections = nav.get_by_role("button", name="Connections", exact=True)
            nav_try.focus()
            page.keyboard.press("Shift+Tab")
            expect(nav_connections).to_be_focused()
            page.keyboard.press("Space")
            expect(connections_view).to_be_visible()
            expect(try_view).to_be_hidden()
            expect(nav_connections).to_have_attribute("aria-current", "page")
            expect(connections_view.get_by_role("heading", name="Connections", exact=True)).to_be_focused()
            page.keyboard.press("Tab")
            search = connections_view.get_by_role("searchbox", name="Find by connection id", exact=True)
            expect(search).to_be_focused()
            page.keyboard.type(x_id)
            searched_from = len(watch.sent)
            page.keyboard.press("Enter")
            expect(connections_view.get_by_role("status").filter(has_text="showing the connection with that id")).to_have_count(1)
            shown_from = len(watch.sent)
            row_x = row_of(table, x_id)
            expect(row_x).to_have_count(1)
            expect(table.locator("tbody").get_by_role("row")).to_have_count(1)
            x_send = row_x.get_by_role("button", name=f"Send to connection {x_id}", exact=True)
            x_disconnect = row_x.get_by_role("button", name=f"Disconnect connection {x_id}", exact=True)
            x_details = row_x.get_by_role("button", name=f"Details of connection {x_id}", exact=True)
            tab_to(page, x_send, "Tab", f"the Send button of connection {x_id}", watch.step)
            page.keyboard.press("Tab")
            expect(x_disconnect).to_be_focused()
            page.keyboard.press("Tab")
            expect(x_details).to_be_focused()
            page.keyboard.press("Shift+Tab")
            expect(x_disconnect).to_be_focused()
            page.keyboard.press("Tab")
            expect(x_details).to_be_focused()
            # A tick of the live loop passes with the search shown and no dialog open (its
            # GET @stats, sent in the same turn as any other read of the tick, answered):
            # it does not read X again, since every read of one connection is audited.
            stats_path = f"/{args.tenant}/@stats"
            def is_tick(request):
                return request.method == "GET" and path_of(request) == stats_path
            tick = next((r for r in watch.sent[shown_from:] if is_tick(r)), None)
            if tick is None:
                tick = page.wait_for_event("request", predicate=is_tick, timeout=TIMEOUT_MS)
            tick.response()
            reads = [r.url for r in watch.sent[searched_from:]
                     if r.method == "GET" and path_of(r) == tenant_path + x_id]
            if len(reads) != 1:
                raise StepFailed(f"keyboard: a search must read the connection once, until Find again; it read: {reads}")
            page.keyboard.press("Enter")
            dialog = page.get_by_role("dialog", name="Connection details")
            expect(dialog).to_be_visible()
            expect(dialog.get_by_role("button", name="Close", exact=True)).to_be_focused()
            evil = dialog.get_by_role("table", name="Headers").get_by_role("row").filter(
                has=page.get_by_role("rowheader", name=X_HEADER[0].lower(), exact=True))
            expect(evil.get_by_role("cell")).to_have_text(X_HEADER[1])
            query = dialog.get_by_role("table", name="Query parameters").get_by_role("row").filter(
                has=page.get_by_role("rowheader", name="q", exact=True))
            expect(query.get_by_role("cell")).to_have_text(X_QUERY_VALUE)
            # The URI as it came, percent-encoded, as text.
            expect(dialog.get_by_role("definition").filter(has_text=f"/connections?q={X_QUERY}")).to_have_count(1)
            for tag in ("b", "script", "img", "[onerror]"):
                if dialog.locator(tag).count():
                    raise StepFailed(f"keyboard: X's markup became a {tag} element in the details dialog")
            names("details dialog of X")
            page.keyboard.press("Escape")
            expect(dialog).to_be_hidden()
            expect(x_details).to_be_focused()
            page.keyboard.press("Shift+Tab")
            page.keyboard.press("Shift+Tab")
            expect(x_send).to_be_focused()
            page.keyboard.press("Enter")
            dialog = page.get_by_role("dialog", name="Send to a connection")
            expect(dialog).to_be_visible()
            expect(dialog.get_by_role("textbox", name="Message", exact=True)).to_be_focused()
            page.keyboard.press("Escape")
            expect(dialog).to_be_hidden()
            expect(x_send).to_be_focused()
            show_all = connections_view.get_by_role("button", name="Show all", exact=True)
            tab_to(page, show_all, "Shift+Tab", "the Show all button", watch.step)
            page.keyboard.press("Enter")
            expect(row_b).to_have_count(1)
            expect(row_x).to_have_count(1)
            expect(show_all).to_be_hidden()
            expect(search).to_be_focused()
            expect(search).to_have_value("")

            # 9. Health, opened with Enter on its nav button: the chart has at least two
            # samples of a series.
            step("health")
            logs_path = f"/{args.tenant}/@logs"
            early = [r.url for r in watch.sent if path_of(r) == logs_path]
            if early:
                raise StepFailed(f"health: the execution log was read before Health was shown: {early}")
            # More audited calls than the log shows, so that it must leave the oldest out.
            audited_misses(args, AUDITED_MISSES)
            logs_from = len(watch.sent)
            nav_health = nav.get_by_role("button", name="Health", exact=True)
            nav_health.focus()
            page.keyboard.press("Enter")
            expect(nav_health).to_have_attribute("aria-current", "page")
            page.wait_for_function(
                """() => [...document.querySelectorAll('#chart svg polyline, #chart svg path')].some((line) => {
                    const points = line.getAttribute('points') || line.getAttribute('d') || '';
                    return points.trim().split(/[\\s]+/).length >= 2;
                })""",
                timeout=15_000,
            )
            health = page.get_by_role("region", name="Health", exact=True)
            exec_log = health.get_by_role("list", name="Execution log")
            expect(exec_log).to_contain_text("PostToConnection")
            first = next(r for r in watch.sent[logs_from:] if path_of(r) == logs_path)
            if urlsplit(first.url).query != f"tail={LOG_SHOWN}":
                raise StepFailed(f"health: the log's first read is not its tail: {first.url}")
            # The newest LOG_SHOWN entries, newest first: the last Send leads; the first
            # ones (more than LOG_SHOWN entries came after them) are left out.
            items = exec_log.get_by_role("listitem")
            expect(items).to_have_count(LOG_SHOWN)
            expect(items.filter(has_text="gone-").first).to_contain_text(f"gone-{AUDITED_MISSES - 1:03d} answered 410")
            expect(exec_log).not_to_contain_text("gone-000")
            names("Health")
            page.screenshot(path=out / "health.png", full_page=True)

            # 10. Close all: the dialog names the count; B and X are closed with it.
            step("close-all")
            page.get_by_role("navigation").get_by_role("button", name="Connections").click()
            connections_view.get_by_role("button", name="Close all", exact=True).click()
            dialog = page.get_by_role("dialog", name="Close all connections")
            expect(dialog).to_be_visible()
            question = re.compile(rf"^Close all (\d+) connections? of tenant {re.escape(args.tenant)}\?$")
            expect(dialog.get_by_text(question)).to_be_visible()
            asked = int(question.match(dialog.get_by_text(question).inner_text()).group(1))
            if asked < 2:
                raise StepFailed(f"close-all: the dialog asks to close {asked} connections; B and X are open")
            names("close-all dialog")
            # A link with another key arrives half-way: the dialog stays as it was, and
            # the Switch / Keep question waits until it is closed.
            dialog.get_by_label("Reason", exact=True).fill("half-way")
            page.goto(f"{args.admin}/ui/#key={args.ops_key}")
            expect(page).to_have_url(bare)  # the page has seen the key
            expect(dialog).to_be_visible()
            expect(switch).to_be_hidden()
            expect(dialog.get_by_label("Reason", exact=True)).to_have_value("half-way")
            dialog.get_by_label("I understand every client of this tenant will be disconnected").check()
            dialog.get_by_role("button", name="Close all", exact=True).click()
            expect(dialog.get_by_role("status")).to_have_text(re.compile(r"^closed \d+$"))
            closed = int(dialog.get_by_role("status").inner_text().split()[1])
            if closed < 2:
                raise StepFailed(f"close-all: closed {closed}; B and X were open")
            dialog.get_by_role("button", name="Close", exact=True).click()
            expect(dialog).to_be_hidden()
            expect(switch).to_be_visible()
            switch.get_by_role("button", name="Keep", exact=True).click()
            expect(switch).to_be_hidden()
            expect(row_b).to_have_count(0)
            expect(row_x).to_have_count(0)
            try:
                unexpected = client_x.recv(timeout=TIMEOUT_MS / 1000)
                raise StepFailed(f"close-all: X received {unexpected!r} instead of a close")
            except ConnectionClosed as closed_x:
                if closed_x.rcvd is None or closed_x.rcvd.code != 1000:
                    raise StepFailed(f"close-all: X was not closed with 1000: {closed_x}") from closed_x
            except TimeoutError as err:
                raise StepFailed("close-all: X was still open after Close all") from err

            # 11. Sign out. A key the gateway refuses (403) is forgotten, with no Retry.
            step("sign-out")
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            expect(page.get_by_label("Management key")).to_be_visible()
            names("sign-in")
            if page.evaluate("sessionStorage.length"):
                raise StepFailed("sign-out: sessionStorage still holds something after signing out")
            signin_error = page.get_by_role("alert")
            retry = page.get_by_role("button", name="Retry", exact=True)
            watch.expected = (403, "/-/me")
            page.goto(f"{args.admin}/ui/#key=not-a-key")
            expect(signin_error).to_contain_text("sign-in failed")
            expect(retry).to_be_hidden()
            if page.evaluate("sessionStorage.length"):
                raise StepFailed("sign-out: the page kept a key the gateway refused")

            # 12. A sign-in answered 429 (by the test's route, once) keeps the key and
            # offers Retry, which signs in.
            step("retry")
            page.route(
                f"{args.admin}/-/me",
                lambda route: route.fulfill(
                    status=429,
                    headers={"x-amzn-ErrorType": "LimitExceededException"},
                    content_type="application/json",
                    body=json.dumps({"message": "too many requests (the test's route)"}),
                ),
                times=1,
            )
            watch.expected = (429, "/-/me")
            page.goto(f"{args.admin}/ui/#key={args.key}")
            expect(signin_error).to_contain_text("429 LimitExceededException")
            expect(retry).to_be_focused()
            names("sign-in with Retry")
            if page.evaluate("Object.values(sessionStorage)") != [args.key]:
                raise StepFailed("retry: the key was not kept after a 429")
            # Not signed in, but a key is kept: a link with another key is asked about
            # (Keep / Switch), never taken silently.
            page.goto(f"{args.admin}/ui/#key={args.ops_key}")
            expect(switch).to_be_visible()
            expect(page).to_have_url(bare)
            expect(switch).to_contain_text("This tab keeps another key")
            switch.get_by_role("button", name="Keep", exact=True).click()
            expect(switch).to_be_hidden()
            expect(retry).to_be_focused()
            if page.evaluate("Object.values(sessionStorage)") != [args.key]:
                raise StepFailed("retry: a link's key replaced the kept one")
            retry.click()
            signed_in_as_tenant = page.get_by_text(f"Tenant {args.tenant}", exact=True)
            expect(signed_in_as_tenant).to_be_visible()

            # 13. A link with a key while signed in: the key leaves the address at once.
            # The same key changes nothing; another is offered (Keep / Switch) and never
            # taken silently.
            step("switch")
            page.goto(f"{args.admin}/ui/#key={args.key}")
            expect(page).to_have_url(bare)
            expect(switch).to_be_hidden()
            page.goto(f"{args.admin}/ui/#key={args.ops_key}")
            expect(switch).to_be_visible()
            expect(page).to_have_url(bare)
            expect(switch).to_contain_text(f"You are signed in as tenant {args.tenant}")
            expect(switch.get_by_role("button", name="Keep", exact=True)).to_be_focused()
            names("switch dialog")
            switch.get_by_role("button", name="Keep", exact=True).click()
            expect(switch).to_be_hidden()
            expect(signed_in_as_tenant).to_be_visible()
            if page.evaluate("Object.values(sessionStorage)") != [args.key]:
                raise StepFailed("switch: Keep did not keep the tenant's key")
            page.goto(f"{args.admin}/ui/#key={args.ops_key}")
            expect(switch).to_be_visible()
            switch.get_by_role("button", name="Switch", exact=True).click()

            # 14. The operator.
            step("operator")
            expect(page.get_by_text("Operator", exact=True)).to_be_visible()
            if args.ops_key in page.url:
                raise StepFailed(f"operator: the key is still in the URL: {page.url}")
            picker = page.get_by_label("Tenant", exact=True)
            expect(picker.locator("option", has_text=args.tenant)).to_have_count(1)
            picker.select_option(args.tenant)
            page.get_by_role("navigation").get_by_role("button", name="Health").click()
            expect(page.get_by_role("region", name="Gateway", exact=True)).to_be_visible()
            names("operator's Health")
            page.screenshot(path=out / "operator.png", full_page=True)

            # 15. A phone: the page never scrolls sideways; the table scrolls in its box.
            step("phone")
            page.set_viewport_size({"width": 375, "height": 812})
            no_page_overflow(page, "Health")
            page.get_by_role("navigation").get_by_role("button", name="Try it").click()
            no_page_overflow(page, "Try it")
            page.get_by_role("navigation").get_by_role("button", name="Connections").click()
            expect(page.get_by_role("table", name=re.compile("Open connections"))).to_be_visible()
            no_page_overflow(page, "Connections")
            page.screenshot(path=out / "phone.png", full_page=True)

            watch.verify()
        except StepFailed:
            shoot_failure(page, out)
            raise
        except (PlaywrightError, AssertionError, WebSocketException, OSError) as err:
            # A bounded wait ran out: say in which step, and what the page did meanwhile.
            shoot_failure(page, out)
            seen = f" (meanwhile: {'; '.join(watch.problems)})" if watch.problems else ""
            raise StepFailed(f"{watch.step}: {err}{seen}") from err
        finally:
            browser.close()
            if client_x is not None:
                client_x.close()
    # How long each step took, to see where the time goes on a slow machine.
    starts = list(timings.values()) + [time.monotonic()]
    took = {name: round(end - start, 1) for name, start, end in zip(timings, starts, starts[1:])}
    return steps, watch, named, took


def shoot_failure(page, out):
    if page is None:
        return
    try:
        page.screenshot(path=out / "failure.png", full_page=True)
    except PlaywrightError:
        pass


def main():
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        steps, watch, named, took = run(args, out)
    except (StepFailed, PlaywrightError, OSError, AssertionError) as err:
        print(f"console test failed: {err}", flush=True)
        return 1
    print(json.dumps({
        "ok": True,
        "steps": steps,
        "accepted": watch.accepted,
        "named": named,
        "seconds": round(time.monotonic() - started, 1),
        "step_seconds": took,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
