"""Option validation: exact messages naming the key path, the value and what is valid."""

from __future__ import annotations

import pytest

from pybroadway.pipeline import OptionsError, Pipeline, Producer, options

from .helpers import Passthrough

GOOD = {"producer": {"module": (Producer, {})}, "processors": {"default": {}}}


def error(**overrides: object) -> OptionsError:
    with pytest.raises(OptionsError) as info:
        Passthrough(**{**GOOD, **overrides})
    return info.value


def test_defaults_come_from_the_schema() -> None:
    pipeline = Passthrough(**GOOD)
    processors = pipeline.options["processors"]["default"]
    assert processors["max_demand"] == 10
    assert processors["min_demand"] == 5
    assert pipeline.options["producer"]["concurrency"] == 1
    assert pipeline.options["shutdown"] == 30000
    assert pipeline.options["batchers"] == {}
    assert pipeline.options["name"] == "Passthrough"
    pipeline = Passthrough(**GOOD, batchers={"s3": {}})
    assert pipeline.options["batchers"]["s3"] == {
        "concurrency": 1, "batch_size": 100, "batch_timeout": 1000, "partition_by": None,
        "executor": None}
    assert "``batch_timeout`` — Milliseconds" in options.docs()
    assert "Default: 1000." in (Pipeline.__doc__ or "")


def test_invalid_value_names_the_path_and_value() -> None:
    err = error(processors={"default": {"concurrency": 0}})
    assert str(err) == ("invalid value for :concurrency option: expected positive integer, "
                        "got: 0 (in options [:processors, :default])")
    assert (err.key, err.keys_path, err.value) == ("concurrency", ("processors", "default"), 0)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"processors": {"default": {"concurrency": 10**8}}},
     "invalid value for :concurrency option: expected at most 10,000, got: 100000000 "
     "(in options [:processors, :default])"),
    ({"processors": {"default": {"max_demand": 10**6}}},
     "invalid value for :max_demand option: expected at most 100,000, got: 1000000 "
     "(in options [:processors, :default])"),
    ({"batchers": {"s3": {"concurrency": 10_001}}},
     "invalid value for :concurrency option: expected at most 10,000, got: 10001 "
     "(in options [:batchers, :s3])"),
    ({"producer": {"module": (Producer, {}), "concurrency": 10**5}},
     "invalid value for :concurrency option: expected at most 10,000, got: 100000 "
     "(in options [:producer])"),
    ({"max_seconds": float("inf")},
     "invalid value for :max_seconds option: expected positive number, got: inf"),
    ({"max_seconds": float("nan")},
     "invalid value for :max_seconds option: expected positive number, got: nan"),
], ids=["concurrency", "max_demand", "batchers", "producers", "inf", "nan"])
def test_what_costs_tasks_or_memory_is_bounded(overrides: dict[str, object],
                                               message: str) -> None:
    """A careless ``concurrency=10**8`` is refused, not a pipeline that takes all the memory
    before it starts; the bound is in the message and in the docs."""
    assert str(error(**overrides)) == message
    assert Passthrough(**{**GOOD, "processors": {"default": {"concurrency": 10_000}}})
    assert "Number of processors. Default: 2 * the number of CPUs. At most 10,000." in \
        options.docs()


def test_batcher_option_error() -> None:
    err = error(batchers={"s3": {"batch_size": -1}})
    assert str(err) == ("invalid value for :batch_size option: expected positive integer, "
                        "got: -1 (in options [:batchers, :s3])")
    assert str(error(batchers={"s3": {"batch_timeout": True}})) == (
        "invalid value for :batch_timeout option: expected positive integer, got: True "
        "(in options [:batchers, :s3])")


def test_unknown_option_lists_the_valid_ones() -> None:
    assert str(error(processors={"default": {"stages": 4}})) == (
        "unknown options [:stages], valid options are: [:concurrency, :min_demand, "
        ":max_demand, :partition_by, :executor] (in options [:processors, :default])")
    assert str(error(processors={"fast": {}})) == (
        "unknown options [:fast], valid options are: [:default] (in options [:processors])")
    assert str(error(publishers={})) == (
        "unknown options [:publishers], valid options are: [:name, :producer, :processors, "
        ":batchers, :partition_by, :context, :shutdown, :max_restarts, :max_seconds, "
        ":offload, :version]")


def test_required_options() -> None:
    with pytest.raises(OptionsError) as info:
        Passthrough(processors={"default": {}})
    assert str(info.value) == (
        "required :producer option not found, received options: [:processors, :name]")
    assert str(error(producer={"concurrency": 2})) == (
        "required :module option not found, received options: [:concurrency] "
        "(in options [:producer])")
    assert str(error(producer={"module": (Producer, {}),
                               "rate_limiting": {"interval": 10}})) == (
        "required :allowed_messages option not found, received options: [:interval] "
        "(in options [:producer, :rate_limiting])")


def test_producer_module_and_transformer() -> None:
    assert str(error(producer={"module": object})) == (
        "invalid value for :module option: expected a Producer subclass or a tuple "
        "(Producer subclass, dict of its options), got: <class 'object'> "
        "(in options [:producer])")
    assert str(error(producer={"module": Producer, "transformer": len})).startswith(
        "invalid value for :transformer option: expected a tuple (function, options)")


def test_min_demand_must_be_below_max_demand() -> None:
    assert str(error(processors={"default": {"min_demand": 10}})) == (
        "invalid value for :min_demand option: expected an integer less than :max_demand "
        "(10), got: 10 (in options [:processors, :default])")


def test_executor_choices() -> None:
    assert str(error(processors={"default": {"executor": "process"}})) == (
        "invalid value for :executor option: expected None, 'thread' or a "
        "concurrent.futures.Executor, got: 'process' (in options [:processors, :default])")

    async def handle_message(processor: str, message: object, context: object) -> object:
        return message

    with pytest.raises(OptionsError) as info:
        Passthrough(**GOOD | {"processors": {"default": {"executor": "thread"}}},
                    handle_message=handle_message)
    assert str(info.value) == (
        "invalid value for :executor option: expected None when handle_message is a coroutine "
        "function, got: 'thread' (in options [:processors, :default])")


def test_class_attributes_and_keywords() -> None:
    class Configured(Passthrough):
        producer = {"module": (Producer, {})}
        processors = {"default": {"concurrency": 3}}
        context = {"db": "x"}

    assert Configured().options["processors"]["default"]["concurrency"] == 3
    assert Configured().options["context"] == {"db": "x"}
    overridden = Configured(processors={"default": {"concurrency": 1}})
    assert overridden.options["processors"]["default"]["concurrency"] == 1


def test_callbacks_are_required() -> None:
    with pytest.raises(TypeError, match="handle_message"):
        Pipeline(**GOOD)
    with pytest.raises(TypeError, match="handle_batch"):
        Pipeline(**GOOD, batchers={"default": {}}, handle_message=lambda p, m, c: m)
