"""Drives the trace view page (`sonde run --ui`) in headless Chromium, as a person would: waits
for a trace in the list, opens it, reads its waterfall and the detail of its first span, takes a
screenshot, then opens the service map and the routes of the trace's root service.

Usage: ui_browser.py URL TRACE_ID SCREENSHOT_PNG [--timeout S]

Prints ONE JSON object on stdout:
  {"row": {trace_id, spans, root_service, error},
   "waterfall": [{span_id, parent_span_id (null for none), depth, service, name, offset_ms,
                  duration_ms, error}],
   "detail": [[key, value], ...],         attributes of the first span, from the detail panel
   "edges": [{client, server, requests}],
   "routes": [route, ...],                 routes of the root service ([] when it has none)
   "requests": [every URL the page requested, in order, repeats included; data: URLs cut at 80
                characters],
   "console_errors": [browser console SEVERE messages (CSP violations among them)]}
On a timeout or failure: exits 1 with a message on stderr saying what the page showed, and still
saves the screenshot. Uses Debian's chromium and chromium-driver; never touches the network
(SE_OFFLINE: Selenium Manager does not look for drivers).
"""

import argparse
import json
import os
import sys
import time

os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Failure(Exception):
    pass


class Page:
    def __init__(self, timeout):
        self.timeout = timeout
        self.requests = []
        self.console = []
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1400,900", "--hide-scrollbars", "--force-device-scale-factor=1",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps", "--metrics-recording-only",
                    "--disable-features=Translate,OptimizationHints,MediaRouter",
                    "--lang=en-US"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.fit_viewport(1400, 900)
        self.driver.set_page_load_timeout(timeout)

    def fit_viewport(self, width, height):
        """Makes the page's viewport (not the window around it) width x height, so that the
        screenshot is exactly that size."""
        self.driver.set_window_size(width, height)
        for _ in range(3):
            w, h = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
            if (w, h) == (width, height):
                return
            size = self.driver.get_window_size()
            self.driver.set_window_size(size["width"] + width - w, size["height"] + height - h)

    def drain(self):
        """Moves the browser's buffered logs into self.requests and self.console."""
        try:
            for entry in self.driver.get_log("performance"):
                try:
                    msg = json.loads(entry["message"])["message"]
                except (KeyError, ValueError):
                    continue
                if msg.get("method") == "Network.requestWillBeSent":
                    url = msg.get("params", {}).get("request", {}).get("url")
                    if url:
                        # data: URLs (Chrome's own error page has some) cut to keep the output short
                        self.requests.append(url[:80] + "…" if url.startswith("data:") and len(url) > 80 else url)
            for entry in self.driver.get_log("browser"):
                if entry.get("level") == "SEVERE":
                    self.console.append(entry.get("message", ""))
        except WebDriverException:
            pass

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, what, check, timeout=None):
        """Polls check() until it returns a truthy value; raises Failure naming `what`."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last_error = None
        while True:
            try:
                value = check()
                if value:
                    return value
            except WebDriverException as e:  # a stale element during a re-render, say
                last_error = e
            self.drain()
            if time.monotonic() >= deadline:
                extra = f" (last error: {str(last_error).splitlines()[0]})" if last_error else ""
                raise Failure(f"timed out after {timeout or self.timeout:.0f} s waiting for {what}{extra}")
            time.sleep(0.2)

    def state(self):
        """What the page shows, for a failure message."""
        try:
            return self.js("""
                const q = (s) => document.querySelector(s);
                const banner = q('#banner');
                const wf = q('#waterfall');
                return {
                  title: document.title,
                  url: location.href,
                  banner: banner && !banner.hidden ? banner.textContent : '',
                  list: Array.from(document.querySelectorAll('.trace-row')).slice(0, 30)
                          .map((r) => `${r.dataset.traceId} (${r.dataset.spans} spans)`),
                  list_text: (q('#trace-list') || {}).innerText?.slice(0, 300) || '',
                  footer: (q('#list-foot') || {}).textContent || '',
                  waterfall_trace: wf ? wf.dataset.traceId : null,
                  waterfall_rows: document.querySelectorAll('#waterfall .span-row').length,
                  waterfall_text: wf ? wf.innerText.slice(0, 200) : '',
                  map_status: (q('#map-status') || {}).textContent || '',
                  map_text: (q('#map') || {}).innerText?.slice(0, 300) || '',
                  edges: document.querySelectorAll('.edge').length,
                };""")
        except WebDriverException as e:
            return {"error": f"could not read the page: {str(e).splitlines()[0]}"}

    def screenshot(self, path):
        try:
            self.driver.save_screenshot(path)
        except WebDriverException as e:
            print(f"ui_browser: could not save the screenshot {path}: {e}", file=sys.stderr)


def run(page, url, trace_id, shot):
    sel_row = f'.trace-row[data-trace-id="{trace_id}"]'
    page.driver.get(url)

    def row_ready():
        rows = page.driver.find_elements(By.CSS_SELECTOR, sel_row)
        return rows[0] if rows else None
    row = page.wait(f"trace {trace_id} in the trace list", row_ready)
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
    row.click()

    def waterfall_complete():
        # the row's span count may still grow while late spans arrive: re-read both every time
        return page.js("""
            const row = document.querySelector(arguments[0]);
            const wf = document.getElementById('waterfall');
            if (!row || !wf || wf.dataset.traceId !== arguments[1]) return null;
            const n = wf.querySelectorAll('.span-row').length;
            return n > 0 && n === Number(row.dataset.spans) ? n : null;""", sel_row, trace_id)
    page.wait(f"the waterfall of {trace_id} with as many spans as its list row says", waterfall_complete)

    row_data = page.js("""
        const r = document.querySelector(arguments[0]);
        return {trace_id: r.dataset.traceId, spans: Number(r.dataset.spans),
                root_service: r.dataset.rootService, error: r.dataset.error === 'true'};""", sel_row)
    waterfall = page.js("""
        return Array.from(document.querySelectorAll('#waterfall .span-row')).map((r) => ({
          span_id: r.dataset.spanId,
          parent_span_id: r.dataset.parentSpanId || null,
          depth: Number(r.dataset.depth),
          service: r.dataset.service,
          name: r.dataset.name,
          offset_ms: Number(r.dataset.offsetMs),
          duration_ms: Number(r.dataset.durationMs),
          error: r.dataset.error === 'true',
        }));""")

    # select the first span (the page selects it by default; click it as a person would)
    first = page.driver.find_elements(By.CSS_SELECTOR, "#waterfall .span-row")[0]
    first.click()
    first_id = waterfall[0]["span_id"]
    page.wait(f"the span detail of {first_id}",
              lambda: page.js("const d = document.getElementById('span-detail');"
                              "return d && d.dataset.spanId === arguments[0];", first_id))
    detail = page.js("""
        return Array.from(document.querySelectorAll('#span-detail .attr-row'))
          .map((r) => [r.dataset.key, r.dataset.value]);""")
    time.sleep(0.3)  # let the last frame paint
    page.screenshot(shot)

    page.driver.find_element(By.ID, "tab-map").click()
    page.wait("at least one edge on the service map",
              lambda: page.driver.find_elements(By.CSS_SELECTOR, "#map .edge"))
    edges = page.js("""
        return Array.from(document.querySelectorAll('#map .edge')).map((e) => ({
          client: e.getAttribute('data-client'),
          server: e.getAttribute('data-server'),
          requests: Number(e.getAttribute('data-requests')),
        }));""")

    routes = []
    root_service = row_data["root_service"]
    sel_node = f'#map .node[data-service="{css_string(root_service)}"]'
    if page.driver.find_elements(By.CSS_SELECTOR, sel_node):
        page.wait(f"a click on the map node of {root_service}", lambda: click(page, sel_node))
        page.wait(f"the routes of {root_service}",
                  lambda: page.js("const r = document.getElementById('routes');"
                                  "return r && r.dataset.service === arguments[0];", root_service))
        routes = page.js("return Array.from(document.querySelectorAll('#routes .route-row'))"
                         ".map((r) => r.dataset.route);")
    page.drain()
    return {"row": row_data, "waterfall": waterfall, "detail": detail, "edges": edges,
            "routes": routes, "requests": page.requests, "console_errors": page.console}


def css_string(s):
    return s.replace("\\", "\\\\").replace('"', '\\"')


def click(page, selector):
    # the map re-renders when its numbers change: find the node afresh for each try
    page.driver.find_element(By.CSS_SELECTOR, selector).click()
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("trace_id")
    ap.add_argument("screenshot")
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()

    try:
        page = Page(a.timeout)
    except WebDriverException as e:
        print(f"ui_browser: could not start {CHROMIUM} with {CHROMEDRIVER}: {e}", file=sys.stderr)
        return 1
    try:
        result = run(page, a.url, a.trace_id.lower(), a.screenshot)
    except (Failure, WebDriverException) as e:
        page.drain()
        page.screenshot(a.screenshot)
        shown = page.state()
        print(f"ui_browser: {str(e).splitlines()[0]}", file=sys.stderr)
        print(f"ui_browser: the page showed: {json.dumps(shown, indent=1)}", file=sys.stderr)
        if page.console:
            print(f"ui_browser: console errors: {json.dumps(page.console, indent=1)}", file=sys.stderr)
        print(f"ui_browser: requested {len(page.requests)} URLs, the last ones: "
              f"{json.dumps(page.requests[-5:])}", file=sys.stderr)
        print(f"ui_browser: screenshot in {a.screenshot}", file=sys.stderr)
        return 1
    finally:
        try:
            page.driver.quit()
        except WebDriverException:
            pass
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
