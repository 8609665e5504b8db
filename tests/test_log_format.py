"""One log format for what a user runs: the EPMD, the server and the example client all write
``HH:MM:SS.mmm [LEVEL] message``; the client prints only its result unless asked (``-v``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from testkit.peers import free_port, unique_name
from testkit.processes import WatchedProcess

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] \S")
COOKIE = "format_cookie"


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def test_epmd_server_and_client_log_in_one_format() -> None:
    epmd_port = free_port()
    server = f"{unique_name('fmt')}@localhost"
    client = ["examples/client.py", "--cookie", COOKIE, "--epmd-port", str(epmd_port),
              "--server", server, "--sname", f"{unique_name('fmtc')}@localhost"]
    epmd = WatchedProcess(python("-m", "pybroadway", "epmd", "serve", "--port",
                                 str(epmd_port)), cwd=ROOT)
    try:
        epmd.wait_logged("listening on")
        serve = WatchedProcess(python("-m", "pybroadway", "serve", "--cookie", COOKIE,
                                      "--sname", server, "--epmd-port", str(epmd_port)),
                               cwd=ROOT)
        try:
            serve.wait_logged(" serves off_broadway_otp_distribution_receiver")
            quiet = subprocess.run(python(*client, "push", "How are you?", "--count", "3"),
                                   cwd=ROOT, capture_output=True, text=True, timeout=60)
            verbose = subprocess.run(python(*client, "-v", "push", "again"),
                                     cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert serve.terminate() == 0
        finally:
            serve.kill()
        assert epmd.terminate() == 0
    finally:
        epmd.kill()
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "pushed 3\n", "")
    assert verbose.returncode == 0 and verbose.stdout == "pushed 1\n"
    assert "client: registered with" in verbose.stderr
    # every push arrived, though the client stopped its node right after the casts
    assert serve.stdout[-1] == "handled 4, failed 0, dropped 0"
    assert serve.count("handled: %Broadway.Message{") == 4
    assert epmd.count("registered") > 0  # the EPMD logs the nodes that come and go
    for name, lines in (("client -v", verbose.stderr.splitlines()), ("serve", serve.stderr),
                        ("epmd", epmd.stderr)):
        assert lines, f"{name} logged nothing"
        odd = [line for line in lines if not LINE.match(line)]
        assert not odd, f"{name} logged lines of another shape: {odd[:3]}"
