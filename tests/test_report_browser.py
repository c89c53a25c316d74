"""report.html in a real browser: headless Chromium opens a report made by `radsafe report`
over real lm-eval output files and finds no console error, no request leaving the page,
every figure loaded, and tables that sort when a header is clicked.

The browser is driven over the Chrome DevTools Protocol on a pipe (``--remote-debugging-pipe``:
no port is opened, standard library only). Without a Chromium binary the tests are skipped,
unless ``CI`` or ``RADSAFE_BROWSER_TEST=1`` is set: there a missing browser fails them
(``.ci/run`` installs the Debian package ``chromium``). ``RADSAFE_CHROMIUM`` names a binary
to use. A full-page screenshot is kept in ``$RADSAFE_TEST_ARTIFACTS`` (default:
``test-artifacts/`` at the repository root) as ``report.png``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURE, JsonServer
from fake_openai_server import load_answers, scripted_reply

from lm_eval_radsafe.cli import main

pytestmark = pytest.mark.slow  # four lm-eval runs and a browser

REPO = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: the models the runs are made of: three in-process scripted models and one served model
#: answered through radsafe eval (whose run carries the answering time: the cost figure)
SCRIPTED = ("alpha-1b", "alpha-7b", "beta-3b")
SERVED = "gamma-2b"
CARDS = {"alpha-1b": ("alpha", 1), "alpha-7b": ("alpha", 7), "beta-3b": ("beta", 3), "gamma-2b": ("gamma", 2)}


def browser_binary() -> str | None:
    """The Chromium to run: ``$RADSAFE_CHROMIUM``, else the first of :data:`BROWSERS` on PATH."""
    named = os.environ.get("RADSAFE_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def browser_required() -> bool:
    """Whether a missing browser is a failure (CI, or asked for) rather than a skip."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false") or os.environ.get("RADSAFE_BROWSER_TEST") == "1"


def artifacts_dir() -> Path:
    """Where test artifacts go: ``$RADSAFE_TEST_ARTIFACTS``, else ``<repo>/test-artifacts``."""
    return Path(os.environ.get("RADSAFE_TEST_ARTIFACTS") or REPO / "test-artifacts")


# --------------------------------------------------------------------------- a DevTools client on a pipe


class ProtocolError(RuntimeError):
    """The browser answered a command with an error, ended, or did not answer in time."""


class Chromium:
    """Headless Chromium with the DevTools protocol on file descriptors 3 (commands in) and
    4 (replies and events out), messages separated by NUL bytes. Use as a context manager:
    the browser process is stopped on leaving, also when a test fails."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        self.binary, self.profile, self.log = binary, profile, log
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._buffer = b""
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Chromium:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def on_fds_3_and_4() -> None:  # runs in the child between fork and exec
            # first above 10 (so neither end is already 3 or 4), then onto 3 and 4, inheritable
            commands = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD_CLOEXEC, 10)
            replies = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        args = [
            self.binary,
            "--headless",
            # the sandbox needs user namespaces that containers and root lack; the page is a file this test wrote
            "--no-sandbox",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-extensions",
            "--disable-sync",
            "--hide-scrollbars",
            "--mute-audio",
            "--window-size=1280,900",
            "about:blank",
        ]
        try:
            with self.log.open("wb") as log:
                self._process = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=False,
                    preexec_fn=on_fds_3_and_4, start_new_session=True,
                )  # fmt: skip
        except BaseException:
            for fd in (self._to_browser, self._from_browser):
                os.close(fd)
            raise
        finally:
            os.close(to_browser_read)
            os.close(from_browser_write)
        return self

    def __exit__(self, *exc: object) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except (ProtocolError, OSError):
                pass
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        if process is not None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the browser and its helpers
                process.wait()

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def _read(self, deadline: float) -> None:
        """Read what the browser sent until at least one whole message arrived."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"no answer from the browser in time; its log ends:\n{self._log_tail()}")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise ProtocolError(f"the browser ended (exit code {self._process.poll()}); its log ends:\n{self._log_tail()}")
                self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        for raw in messages:
            message = json.loads(raw)
            if "id" in message:
                self._replies[message["id"]] = message
            else:
                self.events.append(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 60) -> dict[str, Any]:
        """Send one command and return its result; :class:`ProtocolError` on an error reply."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode("utf-8") + b"\0"
        while data:
            data = data[os.write(self._to_browser, data):]
        deadline = time.monotonic() + timeout
        while self._next_id not in self._replies:
            self._read(deadline)
        reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise ProtocolError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_for(self, method: str, session: str, timeout: float = 60) -> dict[str, Any]:
        """The first event ``method`` of ``session`` (already received or arriving)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["method"] == method and event.get("sessionId") == session:
                    return event
            self._read(deadline)

    def evaluate(self, expression: str, session: str) -> Any:
        """The JSON value of ``expression`` in the page (awaited when it is a promise)."""
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session
        )
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")


# --------------------------------------------------------------------------- the report and the page


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report over real lm-eval output files: three scripted models (every condition of
    the fixture set, greedy, and closed book with self-consistency and in four option orders) and one model served by
    the scripted OpenAI-compatible server through `radsafe eval` (two conditions, timed),
    with model cards: every figure the report draws."""
    from test_analysis import _answer_fn, write_run

    base = tmp_path_factory.mktemp("browser")
    runs = base / "runs"
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("RADSAFE_DATA", str(FIXTURE))
        mp.setenv("RADSAFE_RESPONSE_CACHE", str(base / "responses.sqlite"))
        for seed, model in enumerate(SCRIPTED):
            write_run(runs, model, ["radsafe200", "radsafe200_closed_book_sc", "radsafe200_closed_book_perm"], _answer_fn(model, seed))
        with JsonServer(scripted_reply(load_answers(FIXTURE), correct=0.6)) as server:
            code = main([
                "eval", "--model", "radsafe-local-chat-completions",
                "--model_args", f"model={SERVED},base_url={server.url}/chat/completions",
                "--tasks", "radsafe200_closed_book,radsafe200_clean_evidence", "--apply_chat_template",
                "--log_samples", "--output_path", str(runs),
            ])  # fmt: skip
            assert code == 0
        cards = base / "cards.yaml"
        cards.write_text(
            "models:\n" + "".join(f"  - {{name: {m}, family: {f}, parameters: {p}}}\n" for m, (f, p) in CARDS.items()),
            encoding="utf-8",
        )
        out = base / "report"
        assert main(["report", str(runs), "--out", str(out), "--model-cards", str(cards), "--n-boot", "200", "--no-cache"]) == 0
    finally:
        mp.undo()
    return out


def figure_names(report: Path) -> list[str]:
    """The figures the report wrote (one PNG each; PNG is the default format)."""
    return sorted(p.stem for p in (report / "figures").glob("*.png"))


@pytest.fixture(scope="module")
def page(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """report.html open in headless Chromium after its load event, a full-page screenshot
    saved; yields the browser, the page's session and the events seen while it loaded."""
    binary = browser_binary()
    if binary is None:
        reason = "no Chromium binary found (install the Debian package chromium, or set RADSAFE_CHROMIUM)"
        if browser_required():
            pytest.fail(f"{reason}; CI or RADSAFE_BROWSER_TEST=1 asks for the browser test", pytrace=False)
        pytest.skip(reason)
    report_dir = request.getfixturevalue("report_dir")  # made only when there is a browser to show it
    work = tmp_path_factory.mktemp("chromium")
    url = (report_dir / "report.html").resolve().as_uri()
    with Chromium(binary, work / "profile", work / "chromium.log") as browser:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        seen = len(browser.events)
        navigated = browser.call("Page.navigate", {"url": url}, session)
        assert "errorText" not in navigated, navigated
        browser.wait_for("Page.loadEventFired", session)
        # every image decoded (data URIs load before the load event; decode() waits for pixels)
        browser.evaluate("Promise.all([...document.images].map(i => i.decode().catch(() => null)))", session)
        metrics = browser.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = browser.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True,
             "clip": {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1}},
            session,
        )  # fmt: skip
        folder = artifacts_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.png").write_bytes(base64.b64decode(shot["data"]))
        yield {"browser": browser, "session": session, "url": url, "seen": seen, "height": metrics["height"]}


# --------------------------------------------------------------------------- what the page must do


def page_errors(page: dict[str, Any]) -> list[Any]:
    """Uncaught exceptions, console errors and assertions, and errors the browser logged
    (a resource that failed, a blocked script...) since the page began loading."""
    events = page["browser"].events[page["seen"]:]
    problems = [e["params"]["exceptionDetails"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    problems += [e["params"] for e in events if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")]
    problems += [e["params"]["entry"] for e in events if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    return problems


def test_no_request_leaves_the_page_and_no_console_error(page: dict[str, Any]) -> None:
    events = page["browser"].events[page["seen"]:]
    requests = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    assert page["url"] in requests  # the page itself: the recording works
    assert [u for u in requests if u != page["url"] and not u.startswith("data:")] == []
    # nor a resource the protocol might not show
    loaded = page["browser"].evaluate("performance.getEntriesByType('resource').map(e => e.name)", page["session"])
    assert [u for u in loaded if not u.startswith("data:")] == []
    assert page_errors(page) == []


def test_every_figure_the_report_wrote_is_shown(page: dict[str, Any], report_dir: Path) -> None:
    from lm_eval_radsafe.analysis.drawing import FIGURE_ORDER

    written = figure_names(report_dir)
    # the fixture's runs give every kind of figure the report draws (some once per regime: name_regime)
    assert [k for k in FIGURE_ORDER if not any(w == k or w.startswith(k + "_") for w in written)] == []
    images = page["browser"].evaluate(
        "[...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,"
        " shown: i.getBoundingClientRect().width, data: i.src.startsWith('data:image/')}))",
        page["session"],
    )
    assert len(images) == len(written)
    assert sorted(i["alt"] for i in images) == written
    for image in images:
        assert image["complete"] and image["data"] and image["width"] > 0 and image["height"] > 0, image
        assert image["shown"] > 100, image  # laid out at a readable size, not collapsed
    assert page["height"] > 900  # the screenshot holds the whole page, not the first screen


#: the first number of a cell, as the page sorts it; None for "–" and other cells without one
_NUMBER = re.compile(r"^[\[(]?\s*([+\-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[+\-]?\d+)?)", re.IGNORECASE)


def _number(text: str) -> float | None:
    match = _NUMBER.match(text.strip())
    return float(match.group(1).replace("\u2212", "-").replace(",", "")) if match else None


def _column(page: dict[str, Any], table: int, column: int) -> dict[str, Any]:
    """Header state, the column's cells and every row's text of the page's ``table``-th table."""
    return page["browser"].evaluate(
        f"""(() => {{
          const table = document.querySelectorAll('table')[{table}];
          const header = table.tHead.rows[0].cells[{column}];
          const rows = [...table.tBodies[0].rows];
          return {{sort: header.getAttribute('aria-sort'), button: !!header.querySelector('button'),
                   cells: rows.map(r => r.cells[{column}].textContent.trim()), rows: rows.map(r => r.textContent)}};
        }})()""",
        page["session"],
    )


def _click(page: dict[str, Any], table: int, column: int) -> None:
    """A real mouse click on the header button (scrolled into view first)."""
    browser, session = page["browser"], page["session"]
    box = browser.evaluate(
        f"""(() => {{
          const button = document.querySelectorAll('table')[{table}].tHead.rows[0].cells[{column}].querySelector('button');
          button.scrollIntoView({{block: 'center'}});
          const r = button.getBoundingClientRect();
          return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
        }})()""",
        session,
    )
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1}, session)


def _press_enter(page: dict[str, Any], table: int, column: int) -> None:
    browser, session = page["browser"], page["session"]
    browser.evaluate(f"document.querySelectorAll('table')[{table}].tHead.rows[0].cells[{column}].querySelector('button').focus()", session)
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}, session)


def _is_sorted(values: list[float], descending: bool = False) -> bool:
    pairs = list(zip(values, values[1:]))
    return all(b <= a for a, b in pairs) if descending else all(a <= b for a, b in pairs)


def _find(page: dict[str, Any], header: str) -> tuple[int, int, list[str]]:
    """(table, column, headers) of the first table with a header cell matching ``header`` (a JS regex)."""
    found = page["browser"].evaluate(
        f"""(() => {{
          const tables = [...document.querySelectorAll('table')];
          for (let t = 0; t < tables.length; t++) {{
            if (!tables[t].tHead) continue;
            const headers = [...tables[t].tHead.rows[0].cells].map(c => c.textContent.trim());
            const column = headers.findIndex(h => /{header}/.test(h));
            if (column >= 0) return [t, column, headers];
          }}
          return null;
        }})()""",
        page["session"],
    )
    assert found is not None, f"no sortable table with a header matching /{header}/"
    return found[0], found[1], found[2]


def test_a_numeric_column_sorts_by_number_both_ways_and_by_keyboard(page: dict[str, Any]) -> None:
    # the results table of the greedy regime (the first with an accuracy column), by accuracy
    table, column, headers = _find(page, "^Accuracy")
    before = _column(page, table, column)
    assert before["button"] and before["sort"] is None
    values = [_number(c) for c in before["cells"]]
    assert None not in values and len(values) >= 8
    assert not _is_sorted(values) and not _is_sorted(values, descending=True), before["cells"]

    _click(page, table, column)
    ascending = _column(page, table, column)
    assert ascending["sort"] == "ascending"
    assert [_number(c) for c in ascending["cells"]] == sorted(values)
    assert Counter(ascending["rows"]) == Counter(before["rows"])  # whole rows moved, none lost

    _click(page, table, column)
    descending = _column(page, table, column)
    assert descending["sort"] == "descending"
    assert [_number(c) for c in descending["cells"]] == sorted(values, reverse=True)
    assert Counter(descending["rows"]) == Counter(before["rows"])

    _press_enter(page, table, column)
    assert _column(page, table, column)["sort"] == "ascending"
    # sorting by another column clears the first one's direction
    other = headers.index("n")
    _click(page, table, other)
    assert _column(page, table, column)["sort"] is None and _column(page, table, other)["sort"] == "ascending"
    assert page_errors(page) == []


def test_signed_numbers_with_units_and_intervals_sort_as_numbers(page: dict[str, Any]) -> None:
    """Slopes such as "-36.2 pp [-128.5, 56.1]" and "+66.0 pp [...]": as text (even with numeric
    collation, which ignores the sign) the order would be wrong."""
    table, column, _ = _find(page, "^slope")
    cells = _column(page, table, column)["cells"]
    values = [_number(c) for c in cells]
    assert None not in values and min(values) < 0 < max(values), cells
    _click(page, table, column)
    state = _column(page, table, column)
    assert state["sort"] == "ascending" and [_number(c) for c in state["cells"]] == sorted(values), state["cells"]
    assert page_errors(page) == []


def test_cells_without_a_number_sort_last_both_ways(page: dict[str, Any]) -> None:
    """In a numeric column with "–" cells (a table that has some), the dashes stay at the end."""
    browser, session = page["browser"], page["session"]
    found = browser.evaluate(
        """(() => {
          const tables = [...document.querySelectorAll('table')];
          for (let t = 0; t < tables.length; t++) {
            const table = tables[t];
            if (!table.tHead || !table.tBodies[0]) continue;
            const rows = [...table.tBodies[0].rows];
            for (let c = 0; c < table.tHead.rows[0].cells.length; c++) {
              const cells = rows.map(r => (r.cells[c] ? r.cells[c].textContent.trim() : ''));
              const dashes = cells.filter(x => x === '–').length;
              const numbers = new Set(cells.filter(x => /^[+\\-]?\\d/.test(x)));
              if (dashes > 0 && numbers.size >= 2 && dashes + cells.filter(x => /^[+\\-]?\\d/.test(x)).length === cells.length) {
                return {table: t, column: c, header: table.tHead.rows[0].cells[c].textContent.trim()};
              }
            }
          }
          return null;
        })()""",
        session,
    )
    if found is None:
        pytest.fail("the fixture report has no numeric column with a '–' cell: the check of missing values cannot run")
    table, column = found["table"], found["column"]
    first = "descending" if _column(page, table, column)["sort"] == "ascending" else "ascending"
    for direction in (first, "ascending" if first == "descending" else "descending"):
        _click(page, table, column)
        state = _column(page, table, column)
        assert state["sort"] == direction, found
        numbers = [_number(c) for c in state["cells"]]
        first_missing = numbers.index(None)
        assert all(n is None for n in numbers[first_missing:]), (found, state["cells"])
        assert _is_sorted(numbers[:first_missing], descending=direction == "descending"), state["cells"]
    assert page_errors(page) == []
