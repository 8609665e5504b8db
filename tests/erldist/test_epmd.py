"""EPMD client against Debian's epmd, and the embedded EPMD against real OTP 25 / 28 nodes."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pybroadway.erldist import epmd as E
from testkit.peers import BeamPeer, SystemEpmd, free_port, require, unique_name, wait_for_port
from testkit.wait import eventually_async

ROOT = Path(__file__).resolve().parents[2]


async def _start_peer(otp: str, epmd_port: int, **kw: object) -> BeamPeer:
    peer = BeamPeer.erlang(otp, epmd_port=epmd_port, **kw)  # type: ignore[arg-type]
    try:
        # The embedded epmd runs on this loop: wait in a thread so it keeps serving.
        await asyncio.to_thread(peer.wait_started)
    except BaseException:
        peer.kill()
        raise
    return peer


def _text(peer: BeamPeer, expr: str) -> str:
    """Evaluate ``expr`` on the peer and return its value printed with ~p."""
    return peer.raw(f"list_to_binary(io_lib:format(\"~p\", [{expr}])).").decode()


async def _atext(peer: BeamPeer, expr: str) -> str:
    return await asyncio.to_thread(_text, peer, expr)


# ---------------------------------------------------------------- client vs Debian's epmd


async def test_client_register_names_port_please_close(epmd: SystemEpmd) -> None:
    name = unique_name("pyreg")
    reg = await E.register(name, 40001, epmd_port=epmd.port)
    try:
        assert reg.creation != 0
        assert (name, 40001) in await E.names("127.0.0.1", epmd.port)
        addr = await E.port_please(name, epmd_port=epmd.port)
        assert addr is not None
        assert (addr.name, addr.port, addr.node_type) == (name, 40001, E.NODE_TYPE_NORMAL)
        assert (addr.highest, addr.lowest) == (6, 5)
        assert await E.port_please(f"{name}@localhost", epmd_port=epmd.port) == addr
    finally:
        await reg.close()
    assert reg.closed

    async def gone() -> bool:
        return (await E.port_please(name, epmd_port=epmd.port) is None
                and all(n != name for n, _ in await E.names(epmd_port=epmd.port)))
    await eventually_async(gone)


async def test_client_hidden_registration(epmd: SystemEpmd) -> None:
    name = unique_name("pyhid")
    async with await E.register(name, 40002, hidden=True, epmd_port=epmd.port):
        addr = await E.port_please(name, epmd_port=epmd.port)
        assert addr is not None and addr.hidden


async def test_client_name_in_use(epmd: SystemEpmd) -> None:
    name = unique_name("pydup")
    async with await E.register(name, 40003, epmd_port=epmd.port):
        with pytest.raises(E.EpmdError, match=f"the name {name} seems to be in use"):
            await E.register(name, 40004, epmd_port=epmd.port)


async def test_client_uses_erl_epmd_port(epmd: SystemEpmd, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("ERL_EPMD_PORT", str(epmd.port))
    assert E.default_epmd_port() == epmd.port
    assert isinstance(await E.names(), list)


def test_default_epmd_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERL_EPMD_PORT", raising=False)
    assert E.default_epmd_port() == 4369
    monkeypatch.setenv("ERL_EPMD_PORT", "4370")
    assert E.default_epmd_port() == 4370
    monkeypatch.setenv("ERL_EPMD_PORT", "nonsense")
    assert E.default_epmd_port() == 4369


async def test_client_unreachable() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(E.EpmdError, match="cannot reach epmd"):
        await E.register("x", 1234, epmd_port=port)
    with pytest.raises(E.EpmdError):
        await E.port_please("x", epmd_port=port)
    with pytest.raises(E.EpmdError):
        await E.names(epmd_port=port)


async def test_client_timeout_on_silent_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(E.EpmdError, match="within"):
            await E.register("x", 1234, epmd_port=port, timeout=0.3)
        with pytest.raises(E.EpmdError, match="within"):
            await E.port_please("x", epmd_port=port, timeout=0.3)
    finally:
        server.close()


async def test_erl_node_visible_to_client(epmd: SystemEpmd, otp: str) -> None:
    peer = await _start_peer(otp, epmd.port)
    try:
        addr = await E.port_please(peer.name, epmd_port=epmd.port)
        assert addr is not None and addr.name == peer.name
        assert (addr.highest, addr.lowest) == (6, 5)
    finally:
        peer.kill()


# ---------------------------------------------------------------- embedded epmd


async def test_embedded_with_our_client() -> None:
    async with E.EmbeddedEpmd() as srv:
        first = await E.register("alpha", 5555, epmd_port=srv.port)
        assert first.creation != 0
        assert await E.names(epmd_port=srv.port) == [("alpha", 5555)]
        addr = await E.port_please("alpha", epmd_port=srv.port)
        assert addr == E.NodeAddress("alpha", 5555, E.NODE_TYPE_NORMAL, 0, 6, 5, b"")
        assert await E.port_please("beta", epmd_port=srv.port) is None
        with pytest.raises(E.EpmdError, match="seems to be in use"):
            await E.register("alpha", 5556, epmd_port=srv.port)
        await first.close()

        async def gone() -> bool:
            return await E.names(epmd_port=srv.port) == []
        await eventually_async(gone)
        second = await E.register("alpha", 5557, epmd_port=srv.port)
        assert second.creation not in (0, first.creation)
        await second.close()


async def test_embedded_restart_gives_new_creation() -> None:
    async with E.EmbeddedEpmd() as srv:
        seen = set()
        for _ in range(5):
            reg = await E.register("again", 5555, epmd_port=srv.port)
            assert reg.creation != 0
            seen.add(reg.creation)
            await reg.close()
            await eventually_async(lambda: _not_registered(srv, "again"))
        assert len(seen) == 5


def _not_registered(srv: E.EmbeddedEpmd, name: str) -> bool:
    return name not in srv.registered()


async def test_embedded_old_alive2_resp() -> None:
    """A node registering with HighestVersion 5 gets the old 16-bit ALIVE2_RESP."""
    async with E.EmbeddedEpmd() as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        body = struct.pack(">BHBBHHH", 120, 7777, 77, 0, 5, 5, 3) + b"old" + b"\0\0"
        writer.write(struct.pack(">H", len(body)) + body)
        reply = await reader.readexactly(4)
        assert reply[:2] == b"y\x00" and struct.unpack(">H", reply[2:])[0] in (1, 2, 3)
        assert "old" in srv.registered()
        writer.close()


GARBAGE = [
    b"",                          # connect and close
    b"\x00",                      # half a length
    b"\x00\x00",                  # empty request
    b"\x00\x05zz",                # short body, then close
    b"\x00\x03\xff\xfe\xfd",      # unknown request
    b"\x00\x04x\x00\x01M",        # truncated ALIVE2_REQ
    struct.pack(">H", 20) + struct.pack(">BHBBHHH", 120, 1, 77, 0, 6, 5, 200) + b"abcdefghi",
    b"\x00\x01d",                 # dump
    b"\x00\x05sNONE",             # stop an unknown name
    os.urandom(300),
]


async def test_embedded_survives_garbage() -> None:
    async with E.EmbeddedEpmd(request_timeout=0.5) as srv:
        for junk in GARBAGE:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(junk)
            await writer.drain()
            writer.write_eof()
            await asyncio.wait_for(reader.read(), 2)  # the server replies or closes
            writer.close()
        # A connection that sends nothing is timed out, not kept forever.
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
        assert srv.serving
        async with await E.register("survivor", 4444, epmd_port=srv.port) as reg:
            assert reg.creation != 0
            assert await E.names(epmd_port=srv.port) == [("survivor", 4444)]


async def test_embedded_erl_registers(otp: str) -> None:
    async with E.EmbeddedEpmd() as srv:
        peer = await _start_peer(otp, srv.port)
        try:
            addr = await E.port_please(peer.name, epmd_port=srv.port)
            assert addr is not None and addr.name == peer.name
            assert (addr.highest, addr.lowest) == (6, 5)
            assert peer.name in dict(await E.names(epmd_port=srv.port))
            assert await _atext(peer, "net_adm:names()") == (
                f'{{ok,[{{"{peer.name}",{addr.port}}}]}}')
        finally:
            peer.kill()
        await eventually_async(lambda: _not_registered(srv, peer.name))


@pytest.mark.beam  # starts erl or epmd itself, without the fixtures
async def test_embedded_two_erl_nodes_connect() -> None:
    async with E.EmbeddedEpmd() as srv:
        a = await _start_peer("25", srv.port)
        try:
            b = await _start_peer("28", srv.port)
            try:
                assert await _atext(a, f"net_kernel:connect_node('{b.node}')") == "true"
                assert await _atext(b, "nodes()") == f"[{a.node}]"
                listed = await _atext(b, "net_adm:names()")
                assert f'"{a.name}"' in listed and f'"{b.name}"' in listed
            finally:
                b.kill()
        finally:
            a.kill()


@pytest.mark.beam  # starts erl or epmd itself, without the fixtures
async def test_embedded_restarted_erl_gets_new_creation() -> None:
    async with E.EmbeddedEpmd() as srv:
        name = unique_name("erlre")
        creations = []
        for _ in range(2):
            peer = await _start_peer("25", srv.port, name=name)
            try:
                creations.append(srv._nodes[name].creation)
                assert await _atext(peer, "erlang:system_info(creation)") == str(creations[-1])
            finally:
                peer.kill()
            await eventually_async(lambda: _not_registered(srv, name))
        assert creations[0] != creations[1]


async def test_ensure_epmd() -> None:
    port = free_port()
    first = await E.ensure_epmd(port)
    assert first is not None and first.port == port
    try:
        assert await E.ensure_epmd(port) is None  # already served
    finally:
        await first.close()


async def test_ensure_epmd_race() -> None:
    port = free_port()
    results = await asyncio.gather(*(E.ensure_epmd(port) for _ in range(4)))
    started = [r for r in results if r is not None]
    try:
        assert len(started) == 1
    finally:
        for r in started:
            await r.close()


async def test_ensure_epmd_sees_system_epmd(epmd: SystemEpmd) -> None:
    assert await E.ensure_epmd(epmd.port) is None


# ---------------------------------------------------------------- CLI and scripts


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pybroadway", "epmd", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, env=env)


async def test_cli_names_against_system_epmd(epmd: SystemEpmd) -> None:
    name = unique_name("pycli")
    async with await E.register(name, 40011, epmd_port=epmd.port):
        out = await asyncio.to_thread(_cli, "names", "--port", str(epmd.port))
    assert out.returncode == 0, out.stderr
    assert f"name {name} at port 40011" in out.stdout


async def test_cli_port_please_unknown(epmd: SystemEpmd) -> None:
    out = await asyncio.to_thread(_cli, "port-please", "nobody", "--port", str(epmd.port))
    assert out.returncode == 1


def test_scripts_embedded_serve_names_kill() -> None:
    port = free_port()
    env = dict(os.environ, ERL_EPMD_PORT=str(port))
    serve = subprocess.Popen(["bash", str(ROOT / "epmd_scripts/start-embedded-epmd.sh")],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        listed = subprocess.run(["bash", str(ROOT / "epmd_scripts/list-nodes.sh")], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0, listed.stderr
        assert f"on port {port}" in listed.stdout
        stop = subprocess.run(["bash", str(ROOT / "epmd_scripts/stop-epmd.sh")], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=30)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert serve.wait(timeout=10) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


async def test_scripts_wrap_the_cli() -> None:
    """start-embedded-epmd.sh, list-nodes.sh and stop-epmd.sh on a private port, with --port
    or ERL_EPMD_PORT, run with this interpreter ($PYTHON)."""
    port = free_port()
    env = dict(os.environ, PYTHON=sys.executable, ERL_EPMD_PORT=str(port))

    def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(ROOT / "epmd_scripts" / name), *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=30)

    serve = subprocess.Popen(["bash", str(ROOT / "epmd_scripts/start-embedded-epmd.sh"),
                              "--port", str(port), "--relaxed-command-check"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        await asyncio.to_thread(wait_for_port, port)
        name = unique_name("pyscript")
        async with await E.register(name, 40021, epmd_port=port) as reg:
            listed = await asyncio.to_thread(script, "list-nodes.sh", "--port", str(port))
            assert listed.returncode == 0, listed.stderr
            assert listed.stdout.splitlines() == [
                f"epmd: up and running on port {port} with data:", f"name {name} at port 40021"]
            stop = await asyncio.to_thread(script, "stop-epmd.sh")
            assert (stop.returncode, stop.stdout) == (0, "Killed\n"), stop.stderr
            await asyncio.wait_for(reg.wait_lost(), 10)
        assert await asyncio.to_thread(serve.wait, 10) == 0
        assert "embedded epmd listening on 127.0.0.1:" in (serve.stderr.read() if serve.stderr
                                                          else "")
        gone = await asyncio.to_thread(script, "list-nodes.sh")
        assert gone.returncode == 1
        assert gone.stderr.startswith("pybroadway epmd: cannot reach epmd at 127.0.0.1:")
        assert len(gone.stderr.splitlines()) == 1, gone.stderr
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


@pytest.mark.beam  # starts erl or epmd itself, without the fixtures
def test_scripts_system_epmd_start_stop() -> None:
    require("Erlang's epmd", "epmd")
    port = free_port()
    env = dict(os.environ, ERL_EPMD_PORT=str(port))
    start = subprocess.run(["bash", str(ROOT / "epmd_scripts/start-system-epmd.sh")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert start.returncode == 0, start.stderr
    try:
        listed = subprocess.run(["bash", str(ROOT / "epmd_scripts/list-nodes.sh")], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0, listed.stderr
    finally:
        stop = subprocess.run(["bash", str(ROOT / "epmd_scripts/stop-epmd.sh")], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=30)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    again = subprocess.run(["bash", str(ROOT / "epmd_scripts/list-nodes.sh")], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=30)
    assert again.returncode != 0


@pytest.mark.beam  # starts erl or epmd itself, without the fixtures
async def test_erlang_epmd_command_against_embedded() -> None:
    """Debian's `epmd -names` and `epmd -stop` understand the embedded server (which obeys a
    stop only when relaxed, as epmd does)."""
    epmd_bin = require("Erlang's epmd", "epmd")

    def run(*args: str) -> str:
        return subprocess.run([epmd_bin, "-port", str(srv.port), *args], capture_output=True,
                              text=True, timeout=10).stdout

    async with E.EmbeddedEpmd(relaxed_command_check=True) as srv:
        reg = await E.register("listed", 6001, epmd_port=srv.port)
        out = await asyncio.to_thread(run, "-names")
        assert f"up and running on port {srv.port}" in out and "name listed at port 6001" in out
        assert "STOPPED" in await asyncio.to_thread(run, "-stop", "listed")
        await asyncio.wait_for(reg.wait_lost(), 5)
        assert "listed" not in srv.registered()
        assert "NOEXIST" in await asyncio.to_thread(run, "-stop", "listed")
