"""``pybroadway serve --dashboard-port`` as users open it: a headless Chromium on the page while
an Elixir client pushes. The page counts what the node handled and keeps counting without a
reload, draws the configured stages, lists a raising handler's failure, loads nothing from
another origin, and wants the token; workers appear on it as they join and go as they leave.

One serve process and one browser per module; the browser is Debian's Chromium through
selenium (a missing one fails under CI, skips elsewhere)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.browser import chromium
from testkit.peers import BeamPeer, SystemEpmd, free_port, unique_name, wait_for_port
from testkit.processes import WatchedProcess
from tests.otp_distribution.helpers import COOKIE, ELIXIR_CLIENT

pytestmark = [pytest.mark.beam, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dashboard-test-token"
WAIT = 30.0
CONFIG = """\
[batchers.default]
batch_size = 10
batch_timeout = 50
concurrency = 2

[batchers.archive]
batch_size = 100
"""
#: Where the README's screenshot is written when set (``docs/dashboard.png``).
SCREENSHOT = os.environ.get("PYBROADWAY_DASHBOARD_SCREENSHOT")


def environment() -> dict[str, str]:
    """This environment, with the worktree first on the path (the tests' pipelines)."""
    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def pybroadway(*argv: str) -> WatchedProcess:
    return WatchedProcess([sys.executable, "-m", "pybroadway", *argv], cwd=ROOT,
                          env=environment())


class Served:
    """A serve process with its dashboard, and an Elixir node connected to it."""

    def __init__(self, process: WatchedProcess, node: str, port: int, peer: BeamPeer) -> None:
        self.process = process
        self.node = node
        self.port = port
        self.peer = peer
        self.url = f"http://127.0.0.1:{port}/"

    def push(self, label: str, count: int) -> None:
        """An Elixir client pushes ``{label, 1..count}``; returns once all are sent."""
        reply = self.peer.raw(
            ":global.sync(); r = :global.whereis_name(:off_broadway_otp_distribution_receiver); "
            f"PbPusher.start(r, :{label}, {count}, self()); "
            f"receive do {{:pushed, :{label}}} -> \"ok\" after 30000 -> \"timeout\" end")
        assert reply == b"ok"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


def serve(epmd: SystemEpmd, tmp: Path, *flags: str, token: str | None = None
          ) -> tuple[WatchedProcess, str, int]:
    """``serve`` with a dashboard: given by flags, or with ``token``, by the file's
    ``[dashboard]`` table (and the file's batchers)."""
    node = f"{unique_name('dash')}@localhost"
    port = free_port()
    if token is None:
        flags = ("--dashboard-port", str(port), *flags)
    else:
        config = tmp / "dashboard.toml"
        config.write_text(f"{CONFIG}\n[dashboard]\nport = {port}\ntoken = '{token}'\n")
        flags = ("--config", str(config), *flags)
    process = pybroadway(
        "serve", "--sname", node, "--cookie", COOKIE, "--epmd-port", str(epmd.port),
        "--quiet", "--pipeline", "tests.dashboard.pipelines:FailsOnBoom", *flags)
    try:
        process.wait_logged("dashboard at", timeout=WAIT)
        wait_for_port(port)
    except BaseException:
        process.kill()
        raise
    return process, node, port


@pytest.fixture(scope="module")
def served(epmd: SystemEpmd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("served")
    process, node, port = serve(epmd, tmp, "--concurrency", "3", token=TOKEN)
    try:
        with BeamPeer.elixir(epmd_port=epmd.port, cookie=COOKIE) as peer:
            peer.wait_started()
            assert peer.raw(f"Atom.to_string(Node.connect(:\"{node}\"))") == b"true"
            peer.eval(ELIXIR_CLIENT)
            yield Served(process, node, port, peer)
    finally:
        process.terminate()


def wait_text(driver: Any, element_id: str, expected: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shows(d: Any) -> bool:
        return bool(d.find_element(By.ID, element_id).text == expected)

    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.1).until(shows)
    except Exception:
        shown = driver.find_element(By.ID, element_id).text
        raise AssertionError(f"#{element_id} shows {shown!r}, not {expected!r}") from None


def test_the_page_counts_what_an_elixir_client_pushed_and_keeps_counting(
        browser: Any, served: Served) -> None:
    browser.get(served.url + f"?token={TOKEN}")
    wait_text(browser, "status", "live")
    browser.execute_script("window.loadedOnce = true;")  # gone if the page reloads
    served.push("first", 1234)
    wait_text(browser, "handled", "1,234")
    served.push("second", 1000)
    wait_text(browser, "handled", "2,234")
    assert browser.execute_script("return window.loadedOnce === true")
    assert browser.execute_script(
        "return performance.getEntriesByType('navigation').length") == 1
    assert browser.find_element("id", "failed").text == "0"


def test_the_graph_shows_the_configured_processors_and_batchers(
        browser: Any, served: Served) -> None:
    browser.get(served.url + f"?token={TOKEN}")
    wait_text(browser, "status", "live")
    stages = browser.execute_script(
        "return [...document.querySelectorAll('#graph g.stage')].map(g => "
        "[g.dataset.kind, g.dataset.name, g.dataset.concurrency || null])")
    assert sorted(map(tuple, stages)) == sorted([
        ("producer", "PyBroadway.Broadway.Producer_0", None),
        ("processor", "default", "3"),
        ("batcher", "archive", None), ("batcher", "default", None),
        ("batch_processor", "archive", "1"), ("batch_processor", "default", "2")])
    nodes = browser.execute_script(
        "return [...document.querySelectorAll('#nodes tbody tr')].map(r => "
        "[...r.cells].map(c => c.textContent))")
    assert [served.peer.node, "visible", "TCP"] in nodes  # the Elixir node, connected
    names = browser.execute_script(
        "return document.querySelector('#names tbody').textContent")
    assert ":off_broadway_otp_distribution_receiver" in names  # the receiver, in :global


def test_a_raising_handler_shows_in_the_failures_panel(browser: Any, served: Served) -> None:
    browser.get(served.url + f"?token={TOKEN}")
    wait_text(browser, "status", "live")
    served.peer.raw(":global.sync(); {:ok, c} = PbClient.start(:global, :boomer); "
                    "GenServer.cast(c, {:push_message, {:boom, 7}}); \"ok\"")
    wait_text(browser, "failed", "1")
    row = browser.execute_script(
        "return [...document.querySelector('#failures tbody tr').cells].map(c => c.textContent)")
    assert row[1:] == ["handle_message", "ValueError: cannot handle boom number 7", "{:boom, 7}"]
    pid_rows = browser.execute_script(
        "return document.querySelector('#clients tbody').textContent")
    assert served.peer.node in pid_rows  # the client that registered


def test_the_page_loads_nothing_from_another_origin(browser: Any, served: Served,
                                                    tmp_path: Path) -> None:
    origin = f"http://127.0.0.1:{served.port}/"
    browser.get_log("performance")  # what earlier tests loaded
    browser.get(origin + f"?token={TOKEN}")
    wait_text(browser, "status", "live")
    names = browser.execute_script(  # what the page finished loading
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(name.startswith(origin + "static/dashboard.js") for name in names)
    requested = [json.loads(entry["message"])["message"]["params"]["request"]["url"]
                 for entry in browser.get_log("performance")  # all it asked for
                 if '"Network.requestWillBeSent"' in entry["message"]]
    assert any(url.startswith(origin + "api/stream") for url in requested)
    assert [url for url in [*names, *requested]
            if not url.startswith((origin, "data:"))] == []
    browser.set_window_size(1400, 1200)  # the whole page: the failures panel too
    wait_text(browser, "failed", "1")
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    browser.set_window_size(1400, 1000)
    if SCREENSHOT:
        shutil.copy(shot, SCREENSHOT)


def test_the_token_is_wanted(served: Served) -> None:
    for path in ("/", "/api/snapshot", "/metrics", "/api/stream"):
        assert served.get(path)[0] == 401, path
        assert served.get(path + "?token=wrong")[0] == 401, path
    assert served.get("/api/snapshot", {"Authorization": "Bearer wrong"})[0] == 401
    status, body = served.get("/api/snapshot", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and b'"handled":' in body
    status, body = served.get(f"/metrics?token={TOKEN}")
    assert status == 200 and b"pybroadway_messages_handled_total" in body
    assert served.get("/static/dashboard.js")[0] == 200  # the same for everyone


def test_workers_appear_as_they_join_and_go_as_they_leave(
        browser: Any, epmd: SystemEpmd, tmp_path: Path) -> None:
    process, node, port = serve(epmd, tmp_path, "--workers", "0")
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait_text(browser, "status", "live")
        workers = "return [...document.querySelectorAll('#graph g.stage[data-kind=worker]')]" \
                  ".map(g => g.dataset.name)"
        assert browser.execute_script(workers) == [""]  # the placeholder: none yet
        name = f"{unique_name('dashworker')}@localhost"
        worker_port = free_port()
        worker = pybroadway("worker", "--join", node, "--sname", name, "--cookie", COOKIE,
                            "--epmd-port", str(epmd.port), "--hidden",
                            "--pipeline", "tests.dashboard.pipelines:FailsOnBoom",
                            "--dashboard-port", str(worker_port))
        try:
            from selenium.webdriver.support.ui import WebDriverWait
            WebDriverWait(browser, WAIT, 0.1).until(
                lambda d: d.execute_script(workers) == [name])
            text = browser.execute_script(
                "return document.querySelector('#graph g.stage[data-kind=worker]').textContent")
            assert "host localhost" in text
            nodes = browser.execute_script(
                "return [...document.querySelectorAll('#nodes tbody tr')].map(r => "
                "[...r.cells].map(c => c.textContent))")
            assert [name, "hidden", "TCP"] in nodes  # a --hidden worker
            subscriptions = browser.execute_script(
                "return [...document.querySelectorAll('#subscriptions tbody tr')].map(r => "
                "r.cells[0].textContent + ' ' + r.cells[3].textContent)")
            assert subscriptions == [f"→ {name}"]  # the worker subscribed to the front's stage
            worker.wait_logged("dashboard at", timeout=WAIT)  # the worker's own page
            with urllib.request.urlopen(f"http://127.0.0.1:{worker_port}/api/snapshot",
                                        timeout=10) as response:
                snapshot = json.loads(response.read())
            assert snapshot["node"] == name and node in [
                row["name"] for row in snapshot["erlang"]["nodes"]["rows"]]
        finally:
            assert worker.terminate() == 0
        WebDriverWait(browser, WAIT, 0.1).until(lambda d: d.execute_script(workers) == [""])
    finally:
        process.terminate()
