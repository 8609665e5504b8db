"""One log format for what a user runs: the EPMD, the server and the example client all write
``HH:MM:SS.mmm [LEVEL] message``; the client prints only its result unless asked (``-v``)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from testkit.peers import free_port, unique_name, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] \S")
COOKIE = "format_cookie"


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_epmd_server_and_client_log_in_one_format() -> None:
    epmd_port = free_port()
    server = f"{unique_name('fmt')}@localhost"
    client = ["examples/client.py", "--cookie", COOKIE, "--epmd-port", str(epmd_port),
              "--server", server, "--sname", f"{unique_name('fmtc')}@localhost"]
    epmd = subprocess.Popen(python("-m", "pybroadway", "epmd", "serve", "--port",
                                   str(epmd_port)),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for_port(epmd_port)
        serve = subprocess.Popen(
            python("-m", "pybroadway", "serve", "--cookie", COOKIE, "--sname", server,
                   "--epmd-port", str(epmd_port)),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            quiet = subprocess.run(python(*client, "push", "How are you?", "--count", "3"),
                                   cwd=ROOT, capture_output=True, text=True, timeout=60)
            verbose = subprocess.run(python(*client, "-v", "push", "again"),
                                     cwd=ROOT, capture_output=True, text=True, timeout=60)
        finally:
            serve_out, serve_err = stop(serve)
    finally:
        _, epmd_err = stop(epmd)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "pushed 3\n", "")
    assert verbose.returncode == 0 and verbose.stdout == "pushed 1\n"
    assert "registered with" in verbose.stderr
    assert serve_out.splitlines()[-1] == "handled 4, failed 0, dropped 0"
    assert "handled: %Broadway.Message{" in serve_err
    assert "registered" in epmd_err  # the EPMD logs the nodes that come and go
    for name, log in (("client -v", verbose.stderr), ("serve", serve_err),
                      ("epmd", epmd_err)):
        lines = log.splitlines()
        assert lines, f"{name} logged nothing"
        odd = [line for line in lines if not LINE.match(line)]
        assert not odd, f"{name} logged lines of another shape: {odd[:3]}"
