"""A front and its workers on simulated hosts (testkit.netns): ``pybroadway serve --workers 0``
on hosta, ``pybroadway worker --join front@hosta`` on hostb and hostc, and an Elixir client
on hostd pushing numbered messages as the library's client does. Both workers take the
stream (the front's log, and ``:pg`` seen from the Elixir node, which connects to the front
only: global's mesh brings it the workers, which are visible nodes); hostb's cable is pulled:
the front sees its worker go within the tick time, fails or hands over what it held, the
stream goes on through hostc; the cable is back: the worker joins again and takes work. In
the end every message the receiver read is acknowledged exactly once (the front's summary
on SIGTERM), and nothing of the hosts is left."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.netns import Host, Hosts
from testkit.peers import require
from testkit.processes import WatchedProcess, python_env
from testkit.recorded import PIPELINE as RECORDED
from testkit.recorded import recorded
from testkit.wait import eventually

pytestmark = [pytest.mark.beam, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
TICKTIME = 4
COOKIE = "hosts_cookie"
PIPELINE = RECORDED
SLEEP_MS = 10  # per message in a worker: each takes at most ~100 messages/s
WORKER_SUMMARY = re.compile(r"^handled (\d+), failed (\d+)$")
HOLDING = re.compile(r"worker w1@hostb left \((.*)\) holding (\d+) messages; (.*)$")
BOTH = "pg w1@hostb,w2@hostc"

# The client, in Elixir's standard library only: it finds the receiver through :global and
# registers as the library's client does, then casts {:push_message, i} for i = 1, 2, ...,
# 20 at a time every 250 ms, until STOP_FILE exists, and says "pushed N". (Bursts: a trickle
# would all go to one worker, GenStage's DemandDispatcher giving each event to the first of
# the subscriptions with the most demand, and a worker asking again as soon as its
# processors take what it got.) Meanwhile it says "pg NODES" whenever the members of :pg's
# PyBroadway group change. It connects to the front only (no worker is named to it): global
# connects it to the workers, and back to w1 when w1 joins the front again. It says "nodeup
# NODE PROTOCOL" for each connection, with its distribution's carrier (tcp, or tls for
# inet_tls_dist), as net_kernel holds it.
CLIENT = r'''
[front, stop_file] = System.argv()
front = String.to_atom(front)
say = fn line -> IO.puts(:stderr, line) end
me = self()
spawn(fn ->
  :ok = :net_kernel.monitor_nodes(true)
  send(me, :watching)
  carriers = fn carriers ->
    receive do
      {:nodeup, node} ->
        {:ok, {:net_address, _, _, protocol, _}} = :net_kernel.node_info(node, :address)
        say.("nodeup #{node} #{protocol}")
      _ -> :ok
    end
    carriers.(carriers)
  end
  carriers.(carriers)
end)
receive do
  :watching -> :ok
end
{:ok, _} = :pg.start(:pybroadway)
spawn(fn ->
  watch = fn watch, last ->
    now = :pg.get_members(:pybroadway, :PyBroadway)
          |> Enum.map(&node/1) |> Enum.uniq() |> Enum.sort() |> Enum.join(",")
    if now != last, do: say.("pg " <> now)
    Process.sleep(50)
    watch.(watch, now)
  end
  watch.(watch, nil)
end)
find = fn find, tries ->
  Node.connect(front)
  :global.sync()
  case :global.whereis_name(:off_broadway_otp_distribution_receiver) do
    :undefined when tries > 1 -> Process.sleep(200); find.(find, tries - 1)
    pid when is_pid(pid) -> pid
  end
end
receiver = find.(find, 50)
:ok = GenServer.call(receiver, :register)
say.("registered")
push = fn push, i ->
  if File.exists?(stop_file) do
    i - 1
  else
    for j <- i..(i + 19), do: GenServer.cast(receiver, {:push_message, j})
    Process.sleep(250)
    push.(push, i + 20)
  end
end
say.("pushed #{push.(push, 1)}")
Process.sleep(:infinity)
'''


def env(log: Path) -> dict[str, str]:
    """What every program on a host gets: this checkout, the host's EPMD, the record."""
    return python_env(PYTHONPATH=str(ROOT), ERL_EPMD_PORT="4369",
                      PYBROADWAY_TEST_LOG=str(log), PYBROADWAY_TEST_SLEEP_MS=str(SLEEP_MS))



def lines_after(process: WatchedProcess, start: int, test: Callable[[str], bool],
                what: str, timeout: float) -> None:
    """Wait until a line of ``process``'s stderr from index ``start`` on passes ``test``."""
    process.wait_until(lambda: any(test(line) for line in process.stderr[start:]), what,
                       timeout)


def tails(*processes: WatchedProcess) -> str:
    """The last lines each process wrote (a failed wait shows them)."""
    parts = []
    for process in processes:
        lines = [line for line in process.stderr if "push_message: " not in line]
        parts += [f"-- {' '.join(process.proc.args[4:8])}", *lines[-25:]]
    return "\n".join(parts)


def front_on(host: Host, log: Path, *flags: str, ipv6: bool = False) -> WatchedProcess:
    """``front@hosta`` on ``host`` (at its IPv6 address with ``ipv6``) with no workers of its
    own, ``flags`` added; returns once its receiver is registered."""
    process = host.run([sys.executable, "-m", "pybroadway", "serve", "--workers", "0",
                        "--listen", host.address6 if ipv6 else host.address,
                        "--sname", "front@hosta",
                        "--cookie", COOKIE, "--ticktime", str(TICKTIME),
                        "--pipeline", PIPELINE, "--quiet", "--message-log-level", "INFO",
                        *flags], env=env(log), cwd=ROOT)
    process.wait_logged(" serves off_broadway_otp_distribution_receiver", timeout=30)
    return process


def worker(host: Host, name: str, log: Path, *flags: str, ipv6: bool = False
           ) -> WatchedProcess:
    """A worker ``name`` on ``host`` (at its IPv6 address with ``ipv6``) joining
    ``front@hosta``, ``flags`` added."""
    return host.run([sys.executable, "-m", "pybroadway", "worker", "--join", "front@hosta",
                     "--pipeline", PIPELINE, "--cookie", COOKIE, "--sname", name,
                     "--listen", host.address6 if ipv6 else host.address,
                     "--ticktime", str(TICKTIME),
                     "--max-demand", "10", "--quiet", *flags], env=env(log), cwd=ROOT)


def client_on(host: Host, script: Path, stop_file: Path, log: Path,
           *erl_flags: str) -> WatchedProcess:
    """The Elixir client ``client@hostd`` on ``host`` running ``script`` (:data:`CLIENT`)
    against ``front@hosta`` until ``stop_file`` exists; ``erl_flags`` go to its BEAM."""
    elixir = require("Elixir (elixir)", "elixir")
    erl = " ".join([f"-kernel net_ticktime {TICKTIME} -start_epmd false", *erl_flags])
    return host.run([elixir, "--sname", "client@hostd", "--cookie", COOKIE, "--erl", erl,
                     str(script), "front@hosta", str(stop_file)],
                    env=env(log), cwd=script.parent)


def pushed_by(client: WatchedProcess) -> int:
    """How many messages the client pushed, once it has stopped pushing."""
    client.wait_logged("pushed ", timeout=10)
    return int(next(line for line in client.stderr if line.startswith("pushed ")).split()[1])


@pytest.mark.parametrize("redeliver", [True, False], ids=["redeliver", "fail"])
def test_workers_on_other_hosts_lose_the_link_and_rejoin(
        redeliver: bool, tmp_path: Path, leaves_nothing: None) -> None:
    log = tmp_path / "handled"
    stop_file = tmp_path / "stop"
    script = tmp_path / "client.exs"
    script.write_text(CLIENT)
    with Hosts(["hosta", "hostb", "hostc", "hostd"]) as hosts:
        a, b, c, d = (hosts[name] for name in ("hosta", "hostb", "hostc", "hostd"))
        for host in hosts:
            host.start_epmd(env=env(log))
        front = front_on(a, log, *(["--redeliver"] if redeliver else []))
        w1, w2 = worker(b, "w1@hostb", log), worker(c, "w2@hostc", log)
        client = client_on(d, script, stop_file, log)
        front.wait_logged("PyBroadway: worker w1@hostb joined", timeout=30)
        front.wait_logged("PyBroadway: worker w2@hostc joined", timeout=30)
        client.wait_logged("registered", timeout=30)
        client.wait_logged(BOTH, timeout=30)  # pg, seen from an Elixir node on another host

        # the stream flows through both workers
        eventually(lambda: len(recorded(log, w1.proc.pid)) >= 20
                   and len(recorded(log, w2.proc.pid)) >= 20, timeout=20,
                   what=lambda: "both workers handle\n" + tails(front, w1, w2))

        seen = len(client.stderr)
        b.link_down()
        cut = time.monotonic()
        front.wait_logged("PyBroadway: worker w1@hostb left", timeout=TICKTIME * 3)
        noticed = time.monotonic() - cut
        assert noticed <= TICKTIME * 2, f"nodedown after {noticed:.1f}s"
        left = next(m for line in front.stderr if (m := HOLDING.search(line)))
        held = int(left.group(2))
        assert held > 0, "w1 held nothing when its cable was pulled"
        assert left.group(1) == ":noconnection"
        assert left.group(3) == ("handed to the others" if redeliver else "they fail")
        lines_after(client, seen, lambda line: line == "pg w2@hostc",
                    "pg without w1", TICKTIME * 3)
        # the stream goes on through hostc alone
        through_w2 = len(recorded(log, w2.proc.pid))
        eventually(lambda: len(recorded(log, w2.proc.pid)) >= through_w2 + 20, timeout=10,
                   what=lambda: "w2 takes the stream\n" + tails(front, w2))

        seen = len(client.stderr)
        b.link_up()
        front.wait_logged("PyBroadway: worker w1@hostb joined", count=2, timeout=20)
        lines_after(client, seen, lambda line: line == BOTH, "pg with w1 again", 20)
        # w1 takes new work: data later than anything handled when it joined again
        latest = max(recorded(log, w1.proc.pid) + recorded(log, w2.proc.pid))
        eventually(lambda: max(recorded(log, w1.proc.pid)) > latest, timeout=15,
                   what=lambda: "w1 handles again\n" + tails(front, w1))

        stop_file.touch()
        pushed = pushed_by(client)
        front.wait_logged("push_message: ", count=pushed, timeout=10)
        assert front.count("push_message: ") == pushed  # the receiver read each once
        assert front.terminate() == 0, "\n".join(front.stderr[-30:])
        handled, failed, dropped = front.summary()
        for process in (w1, w2):
            assert process.terminate() == 0, "\n".join(process.stderr[-30:])
            assert WORKER_SUMMARY.match(process.stdout[-1]), process.stdout
        stderr = "\n".join(front.stderr + w1.stderr + w2.stderr)

    assert dropped == 0
    assert handled + failed == pushed, "each message acknowledged exactly once"
    done = recorded(log, w1.proc.pid) + recorded(log, w2.proc.pid)
    assert set(done) <= set(range(1, pushed + 1))
    if redeliver:
        assert failed == 0
        assert set(done) == set(range(1, pushed + 1)), "a message was never handled"
        assert len(done) - pushed <= held  # handled twice: only some that w1 held
    else:
        assert failed == held
        assert len(done) == len(set(done)), "without redeliver, nothing is handled twice"
        assert len(done) >= handled
    assert "Traceback" not in stderr, stderr
