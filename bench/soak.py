"""Soak: a server fed for minutes by Elixir and Python clients while faults are injected.

    python bench/soak.py [--minutes 10] [--rate 2000] [--fault-every 15]

The server is a process of its own (this script with ``--serve``): a node and a pipeline fed by
the connector, counting what its receiver read and what the pipeline handled. Three Elixir
pushers and one Python client push ``{label, n}`` at ``--rate`` messages per second each. Every
``--fault-every`` seconds one fault, in turn:

- an Elixir pusher is killed (``Process.exit(pid, :kill)``) and a new one starts;
- 50 garbage connections hit the server's distribution port;
- the receiver is killed from the Elixir node (its supervisor restarts it; the clients find it
  again, as the library's client does).

Progress lines go to stderr every 10 s. At the end: pushed (sent by the clients), read (taken
by the receiver), handled, lost = read - handled (must be 0: what the receiver read is never
lost; pushes sent while it was down are not read), and the server's RSS over time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support import print_table, say

from pybroadway.erldist import Node
from pybroadway.erldist import epmd as epmd_client
from pybroadway.otp_distribution import DEFAULT_NAME, Client, ConnectError
from pybroadway.otp_distribution import OtpDistributionProducer as Producer
from pybroadway.pipeline import Message, Pipeline
from pybroadway.term import Atom, decode
from testkit.peers import BeamPeer, SystemEpmd

COOKIE = "soak"

# An Elixir pusher that behaves like the library's client: finds the receiver through
# :global, registers, monitors it, and when it goes down finds it again and registers.
PUSHER_EX = r'''
defmodule SoakPusher do
  # The pusher is registered under its label.
  def start(label, rate) do
    pid = spawn(fn -> loop(label, rate, nil, 1) end)
    Process.register(pid, label)
    :ok
  end

  def sent(label) do
    ref = make_ref(); send(label, {:sent, self(), ref})
    receive do {^ref, n} -> n after 5000 -> :timeout end
  end

  defp find do
    :global.sync()
    case :global.whereis_name(:off_broadway_otp_distribution_receiver) do
      :undefined -> Process.sleep(50); find()
      pid ->
        try do
          :ok = GenServer.call(pid, :register)
          Process.monitor(pid)
          pid
        catch :exit, _ -> Process.sleep(50); find()
        end
    end
  end

  defp loop(label, rate, nil, n), do: loop(label, rate, find(), n)
  defp loop(label, rate, receiver, n) do
    receive do
      {:DOWN, _, :process, ^receiver, _} -> loop(label, rate, nil, n)
      {:sent, from, ref} -> send(from, {ref, n - 1}); loop(label, rate, receiver, n)
    after 10 ->
      batch = div(rate, 100)
      for i <- n..(n + batch - 1), do: GenServer.cast(receiver, {:push_message, {label, i}})
      loop(label, rate, receiver, n + batch)
    end
  end
end
:ok
'''


# -- the server (a process of its own) ---------------------------------------------------------


class CountingProducer(Producer):
    """The connector's producer, counting what its receiver read."""

    read = 0

    def pushed(self, data: list[Any], metadata: list[Any]) -> None:
        CountingProducer.read += len(data)
        super().pushed(data, metadata)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def serve(sname: str, epmd_port: int) -> None:
    handled = 0

    def handle(processor: str, message: Message, context: Any) -> Message:
        nonlocal handled
        handled += 1
        return message

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Node(sname, cookie=COOKIE, epmd_port=epmd_port) as node:
        node.expose("soak", "stats", lambda: (CountingProducer.read, handled, _rss_kb()))
        pipeline = Pipeline(handle_message=handle,
                            producer={"module": (CountingProducer, {"node": node})},
                            processors={"default": {"concurrency": 2}})
        async with pipeline:
            print("ready", flush=True)
            await stop.wait()
        print(json.dumps({"read": CountingProducer.read, "handled": handled,
                          "rss_kb": _rss_kb()}), flush=True)


# -- the clients and the faults ------------------------------------------------------------------


class PythonPusher:
    """A Python client pushing ``{label, n}`` at ``rate`` per second; pushes while it is not
    connected wait in its queue and count as sent; once the queue is full (QueueFull, a
    ConnectError) they are not sent (and not counted)."""

    def __init__(self, client: Client, label: str, rate: int) -> None:
        self.client, self.label, self.rate, self.sent = client, Atom(label), rate, 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            for _ in range(self.rate // 100):
                try:
                    self.client.push_message((self.label, self.sent + 1))
                except ConnectError:
                    break
                self.sent += 1


async def garbage(port: int, count: int = 50) -> None:
    for _ in range(count):
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(os.urandom(64))
            await writer.drain()
            writer.close()
        except OSError:
            pass


async def soak(args: argparse.Namespace) -> list[tuple[str, ...]]:
    epmd = SystemEpmd()
    sname = f"soak_server{os.getpid()}@localhost"
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", sname, "--epmd-port", str(epmd.port)],
        stdout=subprocess.PIPE, text=True)
    peer = None
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        peer = BeamPeer.elixir(epmd_port=epmd.port, cookie=COOKIE, name=f"soak_ex{os.getpid()}")
        await asyncio.to_thread(peer.wait_started)
        assert decode(await peer.aeval(f'Node.connect(:"{sname}")')) is True
        await peer.aeval(PUSHER_EX)
        async with Node(f"soak_py{os.getpid()}@localhost", cookie=COOKIE,
                        epmd_port=epmd.port) as node:
            return await run_soak(args, node, peer, sname)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if peer is not None:
            peer.kill()
        epmd.stop()


async def stats(peer: BeamPeer, sname: str) -> tuple[int, int, int]:
    value = decode(await peer.aeval(f':rpc.call(:"{sname}", :soak, :stats, [])'))
    return tuple(value)  # type: ignore[return-value]


async def run_soak(args: argparse.Namespace, node: Node, peer: BeamPeer, sname: str
                   ) -> list[tuple[str, ...]]:
    rate = args.rate
    elixir = []
    for i in range(3):
        await peer.aeval(f"SoakPusher.start(:ex{i}, {rate})")
        elixir.append(f":ex{i}")
    retired: list[int] = []
    assert await node.connect(sname)
    client = await Client.start(node, backoff=0.05, max_backoff=0.5)
    python = PythonPusher(client, "py", rate)
    pushing = asyncio.ensure_future(python.run())
    address = await epmd_client.port_please(sname.split("@")[0], epmd_port=node.epmd_port)
    assert address is not None
    port = address.port
    started = time.monotonic()
    duration = args.minutes * 60
    rss_curve: list[tuple[float, float]] = []
    faults = {"pusher killed": 0, "garbage connections": 0, "receiver killed": 0}
    next_fault, next_report, turn = started + args.fault_every, started, 0
    while (now := time.monotonic()) < started + duration:
        if now >= next_report:
            read, handled, rss_kb = await stats(peer, sname)
            rss_curve.append((now - started, rss_kb / 1024))
            say(f"{now - started:5.0f}s  read {read:,}  handled {handled:,}  "
                f"RSS {rss_kb / 1024:.0f} MB")
            next_report += 10
        if now >= next_fault:
            kind = list(faults)[turn % 3]
            if kind == "pusher killed":
                victim = elixir.pop(0)
                sent = decode(await peer.aeval(f"SoakPusher.sent({victim})"))
                await peer.aeval(f"Process.exit(Process.whereis({victim}), :kill)")
                retired.append(sent)
                await peer.aeval(f"SoakPusher.start(:ex{turn + 3}, {rate})")
                elixir.append(f":ex{turn + 3}")
            elif kind == "garbage connections":
                await garbage(port)
            else:
                await peer.aeval(f"Process.exit(:global.whereis_name(:{DEFAULT_NAME}), :kill)")
            faults[kind] += 1
            turn += 1
            next_fault += args.fault_every
        await asyncio.sleep(0.2)
    pushing.cancel()
    sent_elixir = [decode(await peer.aeval(f"SoakPusher.sent({p})")) for p in elixir]
    for p in elixir:
        await peer.aeval(f"Process.exit(Process.whereis({p}), :kill)")
    pushed = sum(retired) + sum(sent_elixir) + python.sent
    # Everything read is handled once the pipeline catches up.
    for _ in range(300):
        read, handled, rss_kb = await stats(peer, sname)
        if read == handled:
            break
        await asyncio.sleep(0.1)
    rss_curve.append((time.monotonic() - started, rss_kb / 1024))
    rows = [("measure", "value"),
            ("minutes", f"{args.minutes:g}"),
            ("pushed by the clients", f"{pushed:,}"),
            ("read by the receiver", f"{read:,}"),
            ("handled", f"{handled:,}"),
            ("lost (read - handled)", f"{read - handled:,}")]
    rows += [(f"faults: {kind}", str(count)) for kind, count in faults.items()]
    minute = max(1, len(rss_curve) // 10)
    rows += [(f"server RSS at {t:4.0f}s", f"{mb:.0f} MB") for t, mb in rss_curve[::minute]]
    rows.append(("server RSS at the end", f"{rss_curve[-1][1]:.0f} MB"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=2000, help="messages/s of each client")
    parser.add_argument("--fault-every", type=float, default=15.0, help="seconds")
    parser.add_argument("--serve", metavar="SNAME", help=argparse.SUPPRESS)
    parser.add_argument("--epmd-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.epmd_port))
        return
    rows = asyncio.run(soak(args))
    print_table(f"Soak: {args.minutes:g} minutes, 4 clients at {args.rate:,} msg/s each, "
                f"a fault every {args.fault_every:g}s", rows)


if __name__ == "__main__":
    main()
