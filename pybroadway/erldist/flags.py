"""Distribution capability flags (DFLAG_*) exchanged during the handshake.

Values follow ``kernel/include/dist.hrl`` (see docs/guides/protocol.md#flags). Every flag is
available both as a member of :class:`DFlag` and as a module-level ``int`` constant of the same
name.
"""

from __future__ import annotations

import enum

__all__ = [
    "ALIAS",
    "ALTACT_SIG",
    "ATOM_CACHE",
    "BIG_CREATION",
    "BIG_SEQTRACE_LABELS",
    "BIT_BINARIES",
    "DEFAULT",
    "DIST_HDR_ATOM_CACHE",
    "DIST_MONITOR",
    "DIST_MONITOR_NAME",
    "EXIT_PAYLOAD",
    "EXPORT_PTR_TAG",
    "EXTENDED_PIDS_PORTS",
    "EXTENDED_REFERENCES",
    "FRAGMENTS",
    "FUN_TAGS",
    "HANDSHAKE_23",
    "HIDDEN_ATOM_CACHE",
    "INTERNAL_TAGS",
    "LOCAL_EXT",
    "MANDATORY",
    "MANDATORY_25",
    "MANDATORY_25_DIGEST",
    "MAP_TAG",
    "NAME_ME",
    "NEW_FLOATS",
    "NEW_FUN_TAGS",
    "NO_MAGIC",
    "PUBLISHED",
    "SEND_SENDER",
    "SMALL_ATOM_TAGS",
    "SPAWN",
    "UNICODE_IO",
    "UNLINK_ID",
    "UTF8_ATOMS",
    "V4_NC",
    "DFlag",
    "default_flags",
    "flag_names",
    "missing_flags",
]


class DFlag(enum.IntFlag):
    """One bit per distribution capability."""

    PUBLISHED = 0x1
    ATOM_CACHE = 0x2
    EXTENDED_REFERENCES = 0x4
    DIST_MONITOR = 0x8
    FUN_TAGS = 0x10
    DIST_MONITOR_NAME = 0x20
    HIDDEN_ATOM_CACHE = 0x40
    NEW_FUN_TAGS = 0x80
    EXTENDED_PIDS_PORTS = 0x100
    EXPORT_PTR_TAG = 0x200
    BIT_BINARIES = 0x400
    NEW_FLOATS = 0x800
    UNICODE_IO = 0x1000
    DIST_HDR_ATOM_CACHE = 0x2000
    SMALL_ATOM_TAGS = 0x4000
    INTERNAL_TAGS = 0x8000
    UTF8_ATOMS = 0x10000
    MAP_TAG = 0x20000
    BIG_CREATION = 0x40000
    SEND_SENDER = 0x80000
    BIG_SEQTRACE_LABELS = 0x100000
    NO_MAGIC = 0x200000
    EXIT_PAYLOAD = 0x400000
    FRAGMENTS = 0x800000
    HANDSHAKE_23 = 0x1000000
    UNLINK_ID = 0x2000000
    MANDATORY_25_DIGEST = 0x4000000
    SPAWN = 1 << 32
    NAME_ME = 2 << 32
    V4_NC = 4 << 32
    ALIAS = 8 << 32
    LOCAL_EXT = 16 << 32
    ALTACT_SIG = 32 << 32


PUBLISHED = int(DFlag.PUBLISHED)
ATOM_CACHE = int(DFlag.ATOM_CACHE)
EXTENDED_REFERENCES = int(DFlag.EXTENDED_REFERENCES)
DIST_MONITOR = int(DFlag.DIST_MONITOR)
FUN_TAGS = int(DFlag.FUN_TAGS)
DIST_MONITOR_NAME = int(DFlag.DIST_MONITOR_NAME)
HIDDEN_ATOM_CACHE = int(DFlag.HIDDEN_ATOM_CACHE)
NEW_FUN_TAGS = int(DFlag.NEW_FUN_TAGS)
EXTENDED_PIDS_PORTS = int(DFlag.EXTENDED_PIDS_PORTS)
EXPORT_PTR_TAG = int(DFlag.EXPORT_PTR_TAG)
BIT_BINARIES = int(DFlag.BIT_BINARIES)
NEW_FLOATS = int(DFlag.NEW_FLOATS)
UNICODE_IO = int(DFlag.UNICODE_IO)
DIST_HDR_ATOM_CACHE = int(DFlag.DIST_HDR_ATOM_CACHE)
SMALL_ATOM_TAGS = int(DFlag.SMALL_ATOM_TAGS)
INTERNAL_TAGS = int(DFlag.INTERNAL_TAGS)
UTF8_ATOMS = int(DFlag.UTF8_ATOMS)
MAP_TAG = int(DFlag.MAP_TAG)
BIG_CREATION = int(DFlag.BIG_CREATION)
SEND_SENDER = int(DFlag.SEND_SENDER)
BIG_SEQTRACE_LABELS = int(DFlag.BIG_SEQTRACE_LABELS)
NO_MAGIC = int(DFlag.NO_MAGIC)
EXIT_PAYLOAD = int(DFlag.EXIT_PAYLOAD)
FRAGMENTS = int(DFlag.FRAGMENTS)
HANDSHAKE_23 = int(DFlag.HANDSHAKE_23)
UNLINK_ID = int(DFlag.UNLINK_ID)
MANDATORY_25_DIGEST = int(DFlag.MANDATORY_25_DIGEST)
SPAWN = int(DFlag.SPAWN)
NAME_ME = int(DFlag.NAME_ME)
V4_NC = int(DFlag.V4_NC)
ALIAS = int(DFlag.ALIAS)
LOCAL_EXT = int(DFlag.LOCAL_EXT)
ALTACT_SIG = int(DFlag.ALTACT_SIG)

#: The set OTP 25 insists on (``DFLAG_DIST_MANDATORY_25``), 0x1070F94.
MANDATORY_25 = (
    EXTENDED_REFERENCES | FUN_TAGS | NEW_FUN_TAGS | EXTENDED_PIDS_PORTS | EXPORT_PTR_TAG
    | BIT_BINARIES | NEW_FLOATS | UTF8_ATOMS | MAP_TAG | BIG_CREATION | HANDSHAKE_23
)

#: The set OTP 26+ insists on (adds UNLINK_ID and V4_NC), 0x403070F94. We require it of peers
#: and always advertise it.
MANDATORY = MANDATORY_25 | UNLINK_ID | V4_NC

#: What a pybroadway node advertises (hidden); add PUBLISHED for a visible node.
DEFAULT = (
    MANDATORY | DIST_MONITOR | DIST_MONITOR_NAME | SPAWN | ALIAS | SEND_SENDER | EXIT_PAYLOAD
    | SMALL_ATOM_TAGS
)

assert MANDATORY_25 == 0x1070F94
assert MANDATORY == 0x403070F94


def default_flags(*, hidden: bool = False) -> int:
    """The flags a pybroadway node advertises: :data:`DEFAULT`, plus PUBLISHED unless hidden."""
    return DEFAULT if hidden else DEFAULT | PUBLISHED


def expand_mandatory_25(flags: int) -> int:
    """Expand MANDATORY_25_DIGEST into the OTP 25 mandatory set, as the BEAM does."""
    if flags & MANDATORY_25_DIGEST:
        return flags | MANDATORY_25
    return flags


def missing_flags(flags: int, required: int = MANDATORY) -> int:
    """The bits of ``required`` absent from ``flags`` (after MANDATORY_25_DIGEST expansion)."""
    return required & ~expand_mandatory_25(flags)


def flag_names(flags: int) -> list[str]:
    """Names of the bits set in ``flags``, lowest first, for log lines.

    Unknown bits are shown as hex, e.g. ``["PUBLISHED", "0x8000000000"]``.
    """
    names: list[str] = []
    bit = 1
    remaining = int(flags)
    while remaining:
        if remaining & bit:
            try:
                names.append(DFlag(bit).name or hex(bit))
            except ValueError:
                names.append(hex(bit))
            remaining &= ~bit
        bit <<= 1
    return names
