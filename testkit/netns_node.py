"""A pybroadway node for the simulated-host tests: ``python -m testkit.netns_node NAME ADDRESS
[PEER]`` starts ``NAME`` listening on ``ADDRESS`` with a short tick time, registers a gen_server
``echo`` that answers ``{echo, Request}``, and writes one line to stderr per event:
``started``, ``nodeup PEER``, ``nodedown PEER``, ``reply TERM``. An IPv6 ``ADDRESS`` makes it
an IPv6 node (``Node(ipv6=True)``, as ``-proto_dist inet6_tcp``).

With ``PEER`` it keeps connected to it: while there is no connection it tries every 0.3 s,
and after each connect it calls ``{echo, PEER}`` with ``hello`` and writes the reply.
It runs until it is killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from pybroadway.erldist import CallError, GenServer, Node
from pybroadway.erldist.genserver import From
from pybroadway.term import Atom, inspect


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Echo(GenServer):
    def handle_call(self, request: Any, from_: From) -> Any:
        return (Atom("echo"), request)


async def main(name: str, address: str, peer: str | None) -> None:
    ticktime = float(os.environ.get("NETNS_TICKTIME", "4"))
    node = Node(name, cookie="netns", host=address, ticktime=ticktime, connect_timeout=2,
                ipv6=":" in address)
    node.monitor_nodes(lambda other, up: say(f"{'nodeup' if up else 'nodedown'} {other.name}"))
    async with node:
        node.spawn(Echo(), name="echo")
        say("started")
        while True:
            if peer is not None and node.connection(peer) is None \
                    and await node.connect(peer):
                try:
                    reply = await node.call(("echo", peer), Atom("hello"), timeout=2)
                    say(f"reply {inspect(reply)}")
                except CallError as exc:
                    say(f"call failed {exc}")
            await asyncio.sleep(0.3)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
