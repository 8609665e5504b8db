"""What crosses the switch of simulated hosts (:mod:`testkit.netns`): ``python -m testkit.wire``,
run in the switch's namespace by :meth:`Hosts.watch_wire <testkit.netns.Hosts.watch_wire>`,
captures every frame the hosts send and writes one line to stderr per TCP connection, once its
dialler's first bytes have passed:

    conn 10.200.7.4:40312 10.200.7.1:37711 160301

(the dialler, the listener, the first bytes it sent, in hex). It says ``capturing`` first.

A test reads from it what went over the wire rather than what a node says it did: a TLS
connection starts with a TLS handshake record (``16 03``), a plain distribution connection
with a 2-byte length and ``N`` or ``n``, an EPMD request with a 2-byte length and its code.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # a frame a port sends: the same frame came in on another port
IPV4, IPV6 = 0x0800, 0x86DD
TCP = 6
SYN, ACK = 0x02, 0x10
SHOWN = 3
"""Bytes of a connection's first payload written out: enough for a TLS record's type and
version, or a distribution or EPMD message's length and code."""

Endpoint = tuple[str, int]


def tcp_segment(frame: bytes) -> tuple[Endpoint, Endpoint, int, bytes] | None:
    """The source, destination, flags and payload of an Ethernet frame carrying TCP over IPv4
    or IPv6 (without extension headers, as the hosts send); None for any other frame."""
    if len(frame) < 14:
        return None
    kind = struct.unpack_from("!H", frame, 12)[0]
    ip = frame[14:]
    if kind == IPV4 and len(ip) >= 20 and ip[9] == TCP:
        header = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
        segment = ip[header:total]
    elif kind == IPV6 and len(ip) >= 40 and ip[6] == TCP:
        length = struct.unpack_from("!H", ip, 4)[0]
        src, dst = str(ipaddress.IPv6Address(ip[8:24])), str(ipaddress.IPv6Address(ip[24:40]))
        segment = ip[40:40 + length]
    else:
        return None
    if len(segment) < 20:
        return None
    sport, dport = struct.unpack_from("!HH", segment)
    offset = (segment[12] >> 4) * 4
    return (src, sport), (dst, dport), segment[13], segment[offset:]


def shown(endpoint: Endpoint) -> str:
    address, port = endpoint
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def main() -> None:
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    print("capturing", file=sys.stderr, flush=True)
    dialled: set[tuple[Endpoint, Endpoint]] = set()  # SYN seen, no payload from the dialler yet
    while True:
        frame, (_, _, pkttype, *_) = capture.recvfrom(65536)
        if pkttype == PACKET_OUTGOING:
            continue
        found = tcp_segment(frame)
        if found is None:
            continue
        src, dst, flags, payload = found
        if flags & (SYN | ACK) == SYN:
            dialled.add((src, dst))
        elif payload and (src, dst) in dialled:
            dialled.discard((src, dst))
            print(f"conn {shown(src)} {shown(dst)} {payload[:SHOWN].hex()}", file=sys.stderr,
                  flush=True)


if __name__ == "__main__":
    main()
