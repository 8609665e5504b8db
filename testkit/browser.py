"""A headless Chromium driven by selenium (Debian's ``chromium`` and ``chromium-driver``), and
a raw reader of the dashboard's event stream: what the dashboard tests and its benchmark
share."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testkit.peers import IN_CI, require

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


@contextlib.contextmanager
def chromium(user_data_dir: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile in ``user_data_dir``; quit on leaving. Missing
    browser or selenium: fails under CI, skips elsewhere (as a missing Erlang does)."""
    require("Chromium", CHROMIUM)
    require("chromedriver", CHROMEDRIVER)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require("selenium (pip install -e '.[dev]')", None)
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def open_stream(port: int, token: str | None = None, *, receive_buffer: int | None = None
                ) -> socket.socket:
    """A socket that has asked for ``/api/stream`` (read it, or not); ``receive_buffer``
    shrinks its receive window first (a viewer that reads nothing fills less)."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    query = f"?token={token}" if token else ""
    sock.sendall(f"GET /api/stream{query} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    return sock


__all__ = ["CHROMEDRIVER", "CHROMIUM", "IN_CI", "chromium", "open_stream"]
