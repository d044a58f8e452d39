#!/usr/bin/env python3
"""The web console in a real browser: the system Chromium, driven by Playwright.

Run by the Rust test `tests/e2e` after it has opened two WebSocket clients on the
tenant: A (`--target`, an ordinary client) and B (`--hostile`, whose User-Agent is
markup). The script signs in through `#key=`, looks at, sends to, disconnects and
closes connections through the page, uses Try it and Health, signs out, signs in as
the operator and checks the phone layout. It prints one JSON line and exits 0, or
prints which step failed and why and exits 1. Screenshots go to `--out`.

The page is watched all along: any console error or warning, uncaught exception,
alert, failed request, or request to a host other than the gateway's two listeners
fails the run. Chromium reports every fetch answered 4xx/5xx as a console error
("Failed to load resource: the server responded with a status of 410 (Gone)", with
the request's URL as its location; found by trying it). The only one accepted is
the deliberate 410 of step `disconnect`: the Send to A after A was disconnected, for
that exact URL, once.

Every wait is bounded (Playwright's timeouts, `expect` with a timeout); nothing
sleeps to synchronise.
"""

import argparse
import json
import re
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

HOSTILE_UA = "<img src=x onerror=alert(1)>"
MESSAGE = "hello from the console"
CLOSE_CODE = "4001"
CLOSE_REASON = "bye from the console"
TRY_MESSAGE = "ping from try-it"
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
        # The deliberate 410 (see the module's docstring): opened within step
        # `disconnect`, for one URL path, at most once, closed when the step ends. Chromium
        # logs it when the answer's head arrives, before the page can show the answer,
        # so it is seen before the step's check of the page passes.
        self.expected_410 = None
        self.accepted = []
        self.requests = 0

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
        self.check_url("request", request.url)

    def on_websocket(self, websocket):
        self.check_url("WebSocket", websocket.url)

    def on_console(self, message):
        if message.type not in ("error", "warning"):
            return
        text = message.text
        url = (message.location or {}).get("url", "")
        wanted = self.expected_410
        if (
            wanted is not None
            and text.startswith("Failed to load resource: the server responded with a status of 410")
            and unquote(urlsplit(url).path) == wanted
        ):
            self.expected_410 = None  # once only
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


def row_of(table, connection_id):
    """The table row of a connection, found by its id as text."""
    return table.get_by_role("row").filter(has=table.page.get_by_role("rowheader", name=connection_id, exact=True))


def no_page_overflow(page, where):
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    if width[0] > width[1]:
        raise StepFailed(f"phone: the page is wider than the screen in {where}: scrollWidth {width[0]} > {width[1]}")


def run(args, out):
    ws_url = websocket_origin(args)
    allowed = {host_port(args.admin), host_port(ws_url)}
    watch = Watch(args, allowed)
    steps = []
    tenant_path = f"/{args.tenant}/@connections/"

    def step(name):
        watch.verify()  # what the previous step left behind
        watch.expected_410 = None  # an accepted 410 belongs to its step only
        watch.step = name
        steps.append(name)

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
            watch.expected_410 = tenant_path + args.target
            send_button.click()
            dialog = page.get_by_role("dialog", name="Send to a connection")
            dialog.get_by_label("Message", exact=True).fill(MESSAGE)
            dialog.get_by_role("button", name="Send", exact=True).click()
            expect(dialog.get_by_role("status")).to_contain_text("410 GoneException")
            dialog.get_by_role("button", name="Close", exact=True).click()
            live.check()
            expect(row_a).to_have_count(0)

            # 7. Try it: a WebSocket from the page to /echo, seen in the table, closed 1000.
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
            page.screenshot(path=out / "try-it.png", full_page=True)
            user_agent = page.evaluate("navigator.userAgent")
            page.get_by_role("navigation").get_by_role("button", name="Connections").click()
            mine = table.get_by_role("row").filter(has_text="/echo").filter(has_text=user_agent)
            expect(mine).to_have_count(1)
            page.get_by_role("navigation").get_by_role("button", name="Try it").click()
            try_view.get_by_label("Close code", exact=True).fill("1000")
            try_view.get_by_role("button", name="Disconnect", exact=True).click()
            expect(log.get_by_role("listitem").filter(has_text=re.compile(r"closed 1000\b"))).to_have_count(1)

            # 8. Health: the chart has at least two samples of a series.
            step("health")
            page.get_by_role("navigation").get_by_role("button", name="Health").click()
            page.wait_for_function(
                """() => [...document.querySelectorAll('#chart svg polyline, #chart svg path')].some((line) => {
                    const points = line.getAttribute('points') || line.getAttribute('d') || '';
                    return points.trim().split(/[\\s]+/).length >= 2;
                })""",
                timeout=15_000,
            )
            health = page.get_by_role("region", name="Health", exact=True)
            expect(health.get_by_role("list", name="Execution log")).to_contain_text("PostToConnection")
            page.screenshot(path=out / "health.png", full_page=True)

            # 9. Close all: the dialog names the count; B is closed with it.
            step("close-all")
            page.get_by_role("navigation").get_by_role("button", name="Connections").click()
            connections_view.get_by_role("button", name="Close all", exact=True).click()
            dialog = page.get_by_role("dialog", name="Close all connections")
            expect(dialog).to_be_visible()
            question = re.compile(rf"^Close all (\d+) connections? of tenant {re.escape(args.tenant)}\?$")
            expect(dialog.get_by_text(question)).to_be_visible()
            asked = int(question.match(dialog.get_by_text(question).inner_text()).group(1))
            if asked < 1:
                raise StepFailed(f"close-all: the dialog asks to close {asked} connections; B is open")
            dialog.get_by_label("I understand every client of this tenant will be disconnected").check()
            dialog.get_by_role("button", name="Close all", exact=True).click()
            expect(dialog.get_by_role("status")).to_have_text(re.compile(r"^closed \d+$"))
            closed = int(dialog.get_by_role("status").inner_text().split()[1])
            if closed < 1:
                raise StepFailed(f"close-all: closed {closed}; B was open")
            dialog.get_by_role("button", name="Close", exact=True).click()
            expect(row_b).to_have_count(0)

            # 10. Sign out, then in as the operator.
            step("operator")
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            expect(page.get_by_label("Management key")).to_be_visible()
            if page.evaluate("sessionStorage.length"):
                raise StepFailed("operator: sessionStorage still holds something after signing out")
            page.goto(f"{args.admin}/ui/#key={args.ops_key}")
            expect(page.get_by_text("Operator", exact=True)).to_be_visible()
            if args.ops_key in page.url:
                raise StepFailed(f"operator: the key is still in the URL: {page.url}")
            picker = page.get_by_label("Tenant", exact=True)
            expect(picker.locator("option", has_text=args.tenant)).to_have_count(1)
            picker.select_option(args.tenant)
            page.get_by_role("navigation").get_by_role("button", name="Health").click()
            expect(page.get_by_role("region", name="Gateway", exact=True)).to_be_visible()
            page.screenshot(path=out / "operator.png", full_page=True)

            # 11. A phone: the page never scrolls sideways; the table scrolls in its box.
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
        except (PlaywrightError, AssertionError) as err:
            # A bounded wait ran out: say in which step, and what the page did meanwhile.
            shoot_failure(page, out)
            seen = f" (meanwhile: {'; '.join(watch.problems)})" if watch.problems else ""
            raise StepFailed(f"{watch.step}: {err}{seen}") from err
        finally:
            browser.close()
    return steps, watch


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
        steps, watch = run(args, out)
    except (StepFailed, PlaywrightError, OSError, AssertionError) as err:
        print(f"console test failed: {err}", flush=True)
        return 1
    print(json.dumps({
        "ok": True,
        "steps": steps,
        "accepted": watch.accepted,
        "seconds": round(time.monotonic() - started, 1),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
