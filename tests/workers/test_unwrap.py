"""A worker's events as messages: the compiled builder (``_cunwrap``) and the Python one, its
reference, build the same messages; the compiled one sets a class's fields through its slot
descriptors and refuses a class whose fields are not all its own slots."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybroadway.pipeline import Message
from pybroadway.term import Atom, Pid
from pybroadway.workers import _worker
from pybroadway.workers._protocol import SAME
from testkit.codec import require_built


class FakeNode:
    name = Atom("w@localhost")


STAGE = object()
SENDER = Pid(FakeNode.name, 1, 0, 1)


def events() -> list[Any]:
    return [(1, b"a", {b"source": 1}), (2, b"b", SAME), (3, [1, 2], {}), (4, b"d", SAME),
            (5, b"e", {b"source": 2, "kept": b"x"}), (6, b"f", SAME)]


@pytest.fixture(params=["python", "native"])
def native(request: pytest.FixtureRequest) -> bool:
    if request.param == "native":
        require_built(_worker.built_unwrap, "pybroadway.workers._cunwrap")
    return request.param == "native"


def test_events_become_messages_acknowledged_by_their_ids(native: bool) -> None:
    replier = _worker.Replier(FakeNode(), SENDER)  # type: ignore[arg-type]
    messages = _worker.unwrapper(replier, native)(events(), {"producer": STAGE})
    assert [m.data for m in messages] == [b"a", b"b", [1, 2], b"d", b"e", b"f"]
    assert [m.acknowledger for m in messages] == [(replier, STAGE, key) for key in range(1, 7)]
    first, second, third, fourth, fifth, sixth = (m.metadata for m in messages)
    assert first == {"source": 1} and isinstance(first, MappingProxyType)
    assert second is first  # `same`: the map before it, shared
    assert third == {} and fourth == {}  # an empty map: no metadata
    assert fifth == {"source": 2, "kept": b"x"} and sixth is fifth
    for message in messages:
        assert (message.batcher, message.batch_key, message.batch_mode, message.status) == (
            "default", "default", "bulk", "ok")


def test_both_builders_build_the_same_messages() -> None:
    require_built(_worker.built_unwrap, "pybroadway.workers._cunwrap")
    replier = _worker.Replier(FakeNode(), SENDER)  # type: ignore[arg-type]
    built = [_worker.unwrapper(replier, native)(events(), {"producer": STAGE})
             for native in (False, True)]
    assert [repr(m) for m in built[0]] == [repr(m) for m in built[1]]


def test_a_malformed_event_is_an_error_not_a_crash(native: bool) -> None:
    replier = _worker.Replier(FakeNode(), SENDER)  # type: ignore[arg-type]
    unwrap = _worker.unwrapper(replier, native)
    with pytest.raises(ValueError):
        unwrap([(1, b"a", SAME), (2, b"b")], {"producer": STAGE})


def test_the_compiled_builder_refuses_a_class_it_cannot_copy() -> None:
    require_built(_worker.built_unwrap, "pybroadway.workers._cunwrap")
    assert _worker.built_unwrap is not None

    class WithDict(Message):
        pass  # instances have a __dict__: copying the slots would not copy it

    with pytest.raises(TypeError, match="__slots__"):
        _worker.built_unwrap(events(), WithDict(None), None, STAGE, SAME, dict)


class Slots:
    __slots__ = ("_metadata", "acknowledger", "data", "extra")


class Borrowed:
    __slots__ = ("_metadata", "acknowledger", "data")


Borrowed.data = Slots.data  # type: ignore[assignment]  # another class's slot, not its own


def test_the_compiled_builder_sets_fields_through_the_slot_descriptors() -> None:
    # Another class of plain __slots__ is built like Message: the template's other fields
    # are read, and every field set, through the class's descriptors, which check the types.
    require_built(_worker.built_unwrap, "pybroadway.workers._cunwrap")
    assert _worker.built_unwrap is not None
    template = Slots()
    with pytest.raises(AttributeError, match="extra"):  # a template without that field
        _worker.built_unwrap(events(), template, None, STAGE, SAME, dict)
    template.extra = "kept"
    built = _worker.built_unwrap(events()[:2], template, None, STAGE, SAME, dict)
    assert [(m.data, m._metadata, m.acknowledger, m.extra) for m in built] == [
        (b"a", {b"source": 1}, (None, STAGE, 1), "kept"),
        (b"b", {b"source": 1}, (None, STAGE, 2), "kept")]
    with pytest.raises(TypeError, match="'data'"):
        _worker.built_unwrap(events(), Borrowed(), None, STAGE, SAME, dict)


metadata_maps = st.dictionaries(st.binary(max_size=4), st.integers() | st.binary(max_size=4),
                                max_size=3)
well_formed = st.tuples(st.integers(), st.binary(max_size=8) | st.integers(),
                        st.just(SAME) | metadata_maps)
anything = (st.integers() | st.binary(max_size=4) | st.just(SAME) | st.none()
            | st.lists(st.integers(), max_size=4))
malformed = (anything | st.tuples(anything) | st.tuples(anything, anything)
             | st.tuples(anything, anything, anything, anything)
             | st.tuples(st.integers(), anything, st.integers(min_value=1)))


@settings(max_examples=300, deadline=None)
@given(st.lists(well_formed | malformed, max_size=12))
def test_the_compiled_builder_agrees_or_refuses(events: list[Any]) -> None:
    # Events come from a peer: whatever they are, the compiled builder either builds what the
    # reference builds or raises, and never crashes the worker's interpreter.
    require_built(_worker.built_unwrap, "pybroadway.workers._cunwrap")
    replier = _worker.Replier(FakeNode(), SENDER)  # type: ignore[arg-type]
    try:
        built = _worker.unwrapper(replier, True)(events, {"producer": STAGE})
    # ValueError: an event that is not a 3-tuple; TypeError or AttributeError: metadata that
    # is not a map (the conversion iterates it and reads its values)
    except (ValueError, TypeError, AttributeError):
        assert not all(type(event) is tuple and len(event) == 3 and (
            event[2] is SAME or isinstance(event[2], dict)) for event in events)
        return
    reference = _worker.unwrapper(replier, False)(events, {"producer": STAGE})
    assert [repr(m) for m in built] == [repr(m) for m in reference]
