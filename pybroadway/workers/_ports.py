"""The processes of a front's workers: one :class:`WorkerPort` per local worker, each a process
of the front's node that runs ``python -m pybroadway worker`` and ends when it does, and the
stage they subscribe to, under one :class:`~pybroadway.erldist.supervisor.Supervisor` (itself
a child of the node's) that restarts them within its intensity (``max_restarts`` in
``max_seconds``); past that, the front gives up loudly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from pybroadway.erldist.node import Node
from pybroadway.erldist.process import Exit, Process
from pybroadway.erldist.supervisor import ChildSpec, Supervisor
from pybroadway.errors import StateError
from pybroadway.term import Atom

from ._output import READ_SIZE, drained, logged, output_log, printed, relay

log = logging.getLogger("pybroadway.workers")

COOKIE_ENV = "PYBROADWAY_COOKIE"
"""How a front gives its workers the cookie (not on their command line, which ``ps`` shows)."""

WORKER_EXITED = Atom("worker_exited")
STOP_GRACE = 10.0
"""Seconds a worker gets to drain after SIGTERM before it is killed."""
RELAY_GRACE = 2.0
"""Seconds the front reads a worker's pipes after it ended (a process it started may hold
them)."""
LOG_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)


def worker_argv(node: Node, name: str, options: dict[str, Any], index: int, *,
                partitioned: bool, generation: int = 0) -> list[str]:
    """The command line of worker ``index`` of the front ``name`` on ``node``; a reload's
    replacement (``generation`` 1, 2, ...) has a node name of its own: one that went down
    and came back at once under the same name looks to ``:global`` like a partition."""
    short, _, host = node.name.name.partition("@")
    suffix = f"g{generation}" if generation else ""
    argv = [options["python"] or sys.executable, "-m", "pybroadway", "worker",
            "--join", node.name.name, "--pipeline", options["pipeline"],
            "--name", name, "--sname", f"{short}_w{index}{suffix}@{host}",
            # where the front listens: the cluster's nodes that reach the front mesh with its
            # workers too (global's connect_all)
            "--listen", node.listen_host, "--max-demand", str(options["max_demand"]),
            # the front's: a node of another tick time takes a worker's quiet connection to
            # it for dead (or ticks too late for it), and global then cuts the worker off
            "--ticktime", f"{node.ticktime:g}",
            "--exit-with-front",  # the processors and batchers: asked of the front
            # its output relayed by the front (._output), from the level the front logs
            "--output-to-front", "--log-level", logging.getLevelName(_relayed_level())]
    epmd_port = getattr(node, "epmd_port", None)
    if epmd_port is not None:
        argv += ["--epmd-port", str(epmd_port)]
    if partitioned:
        argv += ["--partition", str(index)]
    return argv + [str(arg) for arg in options["extra_args"]]


def _relayed_level() -> int:
    """The least level of ``worker --log-level`` the front logs its workers' records at."""
    level = output_log.getEffectiveLevel()
    return max((known for known in LOG_LEVELS if known <= level), default=logging.DEBUG)


class WorkerPort(Process):
    """Runs one worker process and ends (``{worker_exited, Code}``) when it does; killed, it
    stops the worker: SIGTERM (the worker drains), SIGKILL after :data:`STOP_GRACE`. It
    relays the worker's stdout and stderr (:mod:`._output`), marked with its node's short
    name, until their end."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        super().__init__()
        self.argv = argv
        self.env = env
        self.node_name = argv[argv.index("--sname") + 1]
        self.os_pid: int | None = None

    async def run(self) -> None:
        pipe = asyncio.subprocess.PIPE
        worker = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=pipe,
            stderr=pipe, limit=READ_SIZE,
            start_new_session=True)  # Ctrl-C on the terminal reaches the front only
        self.os_pid = worker.pid
        assert worker.stdout is not None and worker.stderr is not None
        mark = self.node_name.partition("@")[0]
        loop = asyncio.get_running_loop()
        relays = [loop.create_task(relay(worker.stdout, printed(mark))),
                  loop.create_task(relay(worker.stderr, logged(mark)))]
        try:
            code = await worker.wait()
        except asyncio.CancelledError:
            await _stop(worker)
            raise
        finally:
            await drained(relays, RELAY_GRACE)
        raise Exit((WORKER_EXITED, code))


async def _stop(worker: asyncio.subprocess.Process) -> None:
    if worker.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        worker.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(worker.wait()), STOP_GRACE)
    except TimeoutError:
        log.warning("worker %d did not stop within %ss; killed", worker.pid, STOP_GRACE)
        with contextlib.suppress(ProcessLookupError):
            worker.kill()
        await worker.wait()


class WorkerPorts:
    """The supervisor of a front's stage (``stage``, its first child) and worker processes.

    The front ``name`` on ``node`` owns it; ``gave_up`` is told why when the supervisor
    exceeds its intensity."""

    def __init__(self, node: Node, name: str, options: dict[str, Any], stage: ChildSpec, *,
                 partitioned: bool, gave_up: Callable[[str], None]) -> None:
        self.node = node
        self.gave_up = gave_up
        env = dict(os.environ)
        env[COOKIE_ENV] = node.cookie
        path = [entry for entry in sys.path if entry]
        env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *path])
        self._argv: Callable[[int, int], list[str]] = lambda index, generation: worker_argv(
            node, name, options, index, partitioned=partitioned, generation=generation)
        self._env = env
        self.generation = 0
        self.specs: list[ChildSpec] = []
        self.names: list[str] = []
        for index in range(options["count"]):
            self._make(index)
        self.supervisor = Supervisor([stage, *self.specs], intensity=options["max_restarts"],
                                     period=float(options["max_seconds"]))
        # Under the node's supervisor, stopped with the node; not restarted from there:
        # past its intensity the pipeline stops (a temporary child).
        self._spec = ChildSpec(id=f"workers of {name}", start=self._supervisor,
                               restart="temporary",
                               shutdown=(STOP_GRACE + RELAY_GRACE + 2.0) * (len(self.specs) + 1))
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    def _supervisor(self) -> Supervisor:
        return self.supervisor

    async def start(self) -> None:
        node_supervisor = self.node.supervisor
        if node_supervisor is None:
            raise StateError(f"start {self.node} before the pipeline that uses it")
        await node_supervisor.start_child(self._spec)
        self._watch = asyncio.get_running_loop().create_task(self._watch_supervisor())

    async def _watch_supervisor(self) -> None:
        reason = await self.supervisor.wait()
        if not self._stopping:
            self.gave_up(f"the workers or their stage were restarted more than "
                               f"{self.supervisor.intensity} times in "
                               f"{self.supervisor.period:g}s ({reason}): stopping")

    def _make(self, index: int) -> None:
        argv = self._argv(index, self.generation)
        spec = ChildSpec(id=f"worker {index}", shutdown=STOP_GRACE + RELAY_GRACE + 1.0,
                         start=_starter(argv, self._env))
        name = argv[argv.index("--sname") + 1]
        if index < len(self.specs):
            self.specs[index], self.names[index] = spec, name
        else:
            self.specs.append(spec)
            self.names.append(name)

    def replacement(self, index: int) -> tuple[ChildSpec, str]:
        """A reload's: the child spec of a new worker ``index`` (a node name of its own, see
        :func:`worker_argv`), and its node name; it stands for the old one from now on."""
        if index == 0:
            self.generation += 1
        self._make(index)
        return self.specs[index], self.names[index]

    def os_pids(self) -> dict[str, int]:
        """The operating system's pid of each running worker, by node name."""
        pids = {}
        for spec in self.specs:
            process = self.supervisor.child(spec.id)
            if isinstance(process, WorkerPort) and process.os_pid is not None:
                pids[process.node_name] = process.os_pid
        return pids

    async def stop(self) -> None:
        """Stop the workers (they drain), then the stage."""
        self._stopping = True
        if self._watch is None:
            return  # never started
        node_supervisor = self.node.supervisor
        if node_supervisor is not None and node_supervisor.alive:
            with contextlib.suppress(KeyError):  # the node may be stopping it already
                await node_supervisor.terminate_child(self._spec.id)
        if self.supervisor.alive:
            self.supervisor.exit(Atom("shutdown"))
        await self._watch


def _starter(argv: list[str], env: dict[str, str]) -> Any:
    def start() -> WorkerPort:
        return WorkerPort(argv, env)
    return start
