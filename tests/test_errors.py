"""Every error the public API raises is a PyBroadwayError and keeps the stdlib base it
documents, so ``except PyBroadwayError`` and ``except ValueError`` (…) both catch it."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import pytest

from pybroadway import (
    ArgumentError,
    ArgumentTypeError,
    CallbackError,
    NotFound,
    PyBroadwayError,
    StateError,
    TimedOut,
)
from pybroadway.erldist import CallError, ChildSpec, Exit, Node, Supervisor
from pybroadway.erldist.pg import ScopeNotRunning
from pybroadway.erldist.stages import StageStopped, SubscribeOptions
from pybroadway.gen_stage import GenStageProducer
from pybroadway.metrics import HttpLimits
from pybroadway.otp_distribution import ConnectError, OtpDistributionProducer
from pybroadway.pipeline import Message, OptionsError, Pipeline, Producer
from pybroadway.term import (
    Atom,
    DecodeError,
    Decoder,
    EncodeError,
    Encoder,
    ImproperList,
    decode,
    encode,
)
from pybroadway.workers._options import Unsendable, pack
from testkit.doubles import Passthrough
from testkit.peers import SystemEpmd, unique_name

PUBLIC_PACKAGES = [
    "pybroadway", "pybroadway.errors", "pybroadway.pipeline", "pybroadway.erldist",
    "pybroadway.erldist.stages", "pybroadway.erldist.pg", "pybroadway.erldist.global_names",
    "pybroadway.erldist.epmd", "pybroadway.term", "pybroadway.otp_distribution",
    "pybroadway.gen_stage", "pybroadway.workers", "pybroadway.metrics",
]

DOCUMENTED_BASES: dict[type[BaseException], type[BaseException]] = {
    ArgumentError: ValueError,
    ArgumentTypeError: TypeError,
    CallbackError: TypeError,
    StateError: RuntimeError,
    NotFound: KeyError,
    TimedOut: TimeoutError,
    CallError: RuntimeError,
    DecodeError: ValueError,
    EncodeError: TypeError,
    ConnectError: ConnectionError,
    OptionsError: ValueError,
    StageStopped: RuntimeError,
    ScopeNotRunning: RuntimeError,
    Unsendable: ValueError,
}


GOOD = {"producer": {"module": (Producer, {})}, "processors": {"default": {}}}


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_every_exported_exception_is_a_pybroadway_error(package: str) -> None:
    module = importlib.import_module(package)
    exported = [getattr(module, name) for name in module.__all__]
    errors = [thing for thing in exported
              if inspect.isclass(thing) and issubclass(thing, BaseException)]
    assert [error.__name__ for error in errors
            if not issubclass(error, PyBroadwayError)] == []


@pytest.mark.parametrize(("error", "base"), DOCUMENTED_BASES.items(),
                         ids=lambda e: e.__name__)
def test_each_error_keeps_its_documented_stdlib_base(error: type[BaseException],
                                                     base: type[BaseException]) -> None:
    assert issubclass(error, PyBroadwayError) and issubclass(error, base)


def test_exit_is_a_pybroadway_error() -> None:
    assert issubclass(Exit, PyBroadwayError)


def _missing_handle_message() -> None:
    class Empty(Pipeline):
        pass

    Empty(**GOOD)


BAD_CALLS: list[tuple[str, Callable[[], object], type[BaseException]]] = [
    ("pipeline option", lambda: Passthrough(**GOOD, shutdown=-1), ValueError),
    ("pipeline callback", _missing_handle_message, TypeError),
    ("push before start", lambda: Passthrough(**GOOD).push_messages([Message(1)]), RuntimeError),
    ("producer unstarted", lambda: Producer().push_messages([Message(1)]), RuntimeError),
    ("batch mode", lambda: Message(1).put_batch_mode("sometimes"),  # type: ignore[arg-type]
     ValueError),
    ("producer mode", lambda: OtpDistributionProducer(node=Node("a@localhost"),
                                                      mode="both"),  # type: ignore[arg-type]
     ValueError),
    ("producer overflow", lambda: OtpDistributionProducer(
        node=Node("a@localhost"), overflow="spill"),  # type: ignore[arg-type]
     ValueError),
    ("subscribe_to", lambda: GenStageProducer(node=Node("a@localhost"), subscribe_to=[]),
     ValueError),
    ("subscription", lambda: SubscribeOptions(max_demand=0), ValueError),
    ("encode option", lambda: Encoder(none="null"), ValueError),
    ("decode option", lambda: Decoder(none="null"), ValueError),
    ("unencodable", lambda: encode(object()), TypeError),
    ("undecodable", lambda: decode(b"\x83\xff"), ValueError),
    ("atom name", lambda: Atom(7), TypeError),  # type: ignore[arg-type]
    ("improper list", lambda: ImproperList([], 1), ValueError),
    ("node name", lambda: Node("@"), ValueError),
    ("send target", lambda: Node("a@localhost").send(3.5, "hi"), TypeError),
    ("spawn unstarted", lambda: Node("a@localhost").spawn(Supervisor([])), RuntimeError),
    ("supervisor ids", lambda: Supervisor([ChildSpec(id="a", start=Supervisor)] * 2),
     ValueError),
    ("unsendable", lambda: pack(object()), ValueError),
    ("http limits", lambda: HttpLimits(max_connections=0), ValueError),
]


@pytest.mark.parametrize(("call", "base"), [(call, base) for _, call, base in BAD_CALLS],
                         ids=[what for what, _, _ in BAD_CALLS])
def test_bad_input_raises_a_pybroadway_error_of_its_stdlib_kind(
        call: Callable[[], object], base: type[BaseException]) -> None:
    with pytest.raises(base) as info:
        call()
    assert isinstance(info.value, PyBroadwayError)


async def test_a_pipeline_started_twice_says_so() -> None:
    pipeline = Passthrough(**GOOD)
    await pipeline.start()
    try:
        with pytest.raises(StateError) as twice:
            await pipeline.start()
        assert isinstance(twice.value, RuntimeError)
        with pytest.raises(RuntimeError) as limited:
            pipeline.update_rate_limiting(allowed_messages=1)
        assert isinstance(limited.value, StateError)
    finally:
        await pipeline.stop()


async def test_node_errors_keep_their_stdlib_kinds(epmd: SystemEpmd) -> None:
    async with Node(unique_name("py") + "@localhost", epmd_port=epmd.port) as node:
        with pytest.raises(RuntimeError) as call:
            await node.call("nobody_is_registered_so", "hello", timeout=5.0)
        assert isinstance(call.value, CallError) and call.value.reason == Atom("noproc")
        with pytest.raises(RuntimeError) as twice:
            await node.start()
        assert isinstance(twice.value, StateError)
        supervisor = node.spawn(Supervisor([]))
        with pytest.raises(KeyError) as missing:
            supervisor.child("nobody")
        assert isinstance(missing.value, NotFound)
        assert str(missing.value) == f"supervisor {supervisor.pid} has no child 'nobody'"
