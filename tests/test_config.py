"""``pybroadway serve --config pipeline.toml``: the file is read and checked with the pipeline's
schema, errors name the file, the key path, the value and what is allowed (one line, exit code
2), flags given win over the file, and a batcher from the file really batches."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pybroadway._config import ConfigError, apply_defaults, load_config
from pybroadway.cli import add_serve_arguments
from testkit.pages import blocks, page
from testkit.peers import free_port, unique_name
from testkit.processes import WatchedProcess
from testkit.wait import eventually
from tests.test_cli_errors import COOKIE, interrupt, running

ROOT = Path(__file__).resolve().parents[1]

FULL = """
pipeline = "mypipeline:Batched"
partition_by = "mypipeline:by_data"
shutdown = 5000

[node]
sname = "orders@localhost"
cookie = "secret"

[producer]
mode = "pull"
buffer_size = 50000
request_atom = "pull_message"
[producer.rate_limiting]
allowed_messages = 1000
interval = 1000

[processors.default]
concurrency = 4
max_demand = 50

[batchers.db]
batch_size = 100
batch_timeout = 1000
partition_by = "mypipeline:by_data"

[context]
table = "orders"
"""

PIPELINE_MODULE = """
import json, os
from pybroadway.pipeline import Pipeline

def by_data(message):
    return 0

def by_length(message):
    return len(message.data)

by_customer = by_data

class Batched(Pipeline):
    def handle_message(self, processor, message, context):
        return message.put_batcher("db")

    def handle_batch(self, batcher, messages, batch_info, context):
        with open(os.environ["BATCHES_FILE"], "a") as out:
            out.write(json.dumps([batcher, len(messages), context,
                                  sorted({m.data.decode() for m in messages})[0],
                                  os.getpid()]) + "\\n")
        return messages
"""


@pytest.fixture
def pipeline_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "mypipeline.py").write_text(PIPELINE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pipeline.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipeline")
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_a_full_file(pipeline_module: Path) -> None:
    import mypipeline  # type: ignore[import-not-found]

    config = load_config(write(pipeline_module, FULL))
    assert config.pipeline == "mypipeline:Batched"
    assert config.flags == {"sname": "orders@localhost", "cookie": "secret", "mode": "pull",
                            "buffer_size": 50000, "request_atom": "pull_message",
                            "concurrency": 4}
    assert config.options == {
        "partition_by": mypipeline.by_data, "shutdown": 5000, "context": {"table": "orders"},
        "producer": {"rate_limiting": {"allowed_messages": 1000, "interval": 1000}},
        "processors": {"default": {"max_demand": 50}},
        "batchers": {"db": {"batch_size": 100, "batch_timeout": 1000,
                            "partition_by": mypipeline.by_data}}}


@pytest.mark.parametrize(("text", "error"), [
    ("colour = 1", "unknown options [:colour], valid options are: [:pipeline, :node, "),
    ("[node]\nsnam = 'x'", "unknown options [:snam], valid options are: [:sname, :cookie, "
                           ":listen, :epmd_port, :ticktime] (in options [:node])"),
    ("[producer]\nmode = 'pul'", "invalid value for :mode option: expected one of ['push', "
                                 "'pull'], got: 'pul' (in options [:producer])"),
    ("[producer]\npull_interval = 0", "invalid value for :pull_interval option: expected "
                                      "positive number, got: 0 (in options [:producer])"),
    ("[producer.rate_limiting]\ninterval = 10", "required :allowed_messages option not found, "
                                                "received options: [:interval] (in options "
                                                "[:producer, :rate_limiting])"),
    ("[processors.default]\nconcurrency = 0", "invalid value for :concurrency option: expected "
                                              "positive integer, got: 0 (in options "
                                              "[:processors, :default])"),
    ("[processors.default]\nmin_demand = 10\nmax_demand = 10",
     "invalid value for :min_demand option: expected an integer less than :max_demand (10), "
     "got: 10 (in options [:processors, :default])"),
    ("[batchers.db]\nbatch_sise = 3", "unknown options [:batch_sise], valid options are: "
                                      "[:concurrency, :batch_size, :batch_timeout, "
                                      ":partition_by, :executor] (in options [:batchers, :db])"),
    ("[batchers.db]\npartition_by = 'nowhere'", "invalid value for :partition_by option: "
                                                "expected an import path module:function, "
                                                "got: 'nowhere' (in options [:batchers, :db])"),
    ("partition_by = 'os:no_such_function'", "invalid value for :partition_by option: cannot "
                                             "import it (module 'os' has no attribute "),
])
def test_bad_keys_and_values_are_named(tmp_path: Path, text: str, error: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {error}")


def test_the_pipeline_guides_example_is_valid(pipeline_module: Path) -> None:
    example = blocks(page("pipelines"), "toml")[0]
    config = load_config(write(pipeline_module, example))
    assert config.pipeline == "mypipeline:Orders"
    assert config.options["batchers"] == {"db": {"batch_size": 100, "batch_timeout": 1000}}


def test_not_toml_and_missing(tmp_path: Path) -> None:
    path = write(tmp_path, "[producer")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path} is not valid TOML: ")
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == (f"cannot read the configuration {missing}: "
                                 "No such file or directory")


def test_flags_given_win_over_the_file_which_wins_over_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
        [node]
        sname = "fromfile@localhost"
        [producer]
        mode = "pull"
        buffer_size = 7
        register_global = false
        [processors.default]
        concurrency = 3
    """))
    # --mode push is the default's value, given explicitly: it still wins
    args = serve_args("--mode", "push", "--concurrency", "5")
    config.apply(args)
    apply_defaults(args)
    assert (args.mode, args.concurrency) == ("push", 5)  # flags
    assert (args.sname, args.buffer_size, args.register_global) == (
        "fromfile@localhost", 7, False)  # the file
    assert (args.overflow, args.pull_interval, args.listen) == ("block", 5.0, "127.0.0.1")
    # a boolean option has both flags: either wins over the file
    for flag, value in (("--register-global", True), ("--no-register-global", False)):
        args = serve_args(flag)
        config.apply(args)
        apply_defaults(args)
        assert args.register_global is value


def test_serve_with_a_bad_file_is_one_line_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[batchers.db]\nbatch_size = 0\n")
    out = subprocess.run([sys.executable, "-m", "pybroadway", "serve", "--config", path],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr == (f"pybroadway serve: {path}: invalid value for :batch_size option: "
                          "expected positive integer, got: 0 (in options [:batchers, :db])\n")


MANY_KEYS = 100_000


@pytest.mark.parametrize(("text", "error"), [
    ("x = " + "[" * 600 + "]" * 600, " is not valid TOML: nested too deep (at most 32 levels)"),
    ("[context]\nx = " + "{a = " * 40 + "1" + "}" * 40,
     ": context.x" + ".a" * 31 + ": nested deeper than 32 levels"),
    (b"[context]\nname = 'caf\xe9'\n", " is not valid TOML: not UTF-8 (byte 21)"),
    ("[[subscribe]]\nname = 'ev'\nnode = 'nohost'",
     ": subscribe[0].node: invalid value 'nohost': expected a node name name@host"),
    ("[[subscribe]]\nname = 'ev'\nnode = 'a@b'\n[[subscribe]]\nname = 'e:v'\nnode = 'a@b'",
     ": subscribe[1].name: invalid value 'e:v': expected the name a producer is registered"),
    ("[[subscribe]]\nname = 'ev'\nnode = 'a@b'\nmax_demand = 2\nmin_demand = 5",
     ": subscribe[0]: min_demand must be from 0 to max_demand - 1 (1), not 5"),
    ("pipeline = 'no_such_module_here:Orders'",
     ": pipeline: 'no_such_module_here:Orders': cannot import it (No module named "),
    ("[workers]\npipeline = 'os:path'", ": workers.pipeline: 'os:path': it is not a subclass "
                                         "of pybroadway.pipeline.Pipeline"),
    ("".join(f"key{i} = 1\n" for i in range(MANY_KEYS)),
     ": unknown options [:key0, :key1, :key2, "),
])
def test_serve_with_a_bad_file_says_where_in_one_short_line_exit_2(
        tmp_path: Path, text: str | bytes, error: str) -> None:
    path = tmp_path / "pipeline.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "pybroadway", "serve", "--config", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (2, ""), out.stderr[-2000:]
    assert out.stderr.startswith(f"pybroadway serve: {path}{error}"), out.stderr[-2000:]
    assert out.stderr.count("\n") == 1 and len(out.stderr) < 1200, out.stderr[-2000:]


def test_a_long_error_keeps_its_start_and_its_end(tmp_path: Path) -> None:
    path = write(tmp_path, "[node]\n" + "".join(f"k{i} = 1\n" for i in range(MANY_KEYS)))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: unknown options [:k0, :k1, ")
    assert " characters left out) … " in text
    assert text.endswith(", :k99999], valid options are: [:sname, :cookie, :listen, "
                         ":epmd_port, :ticktime] (in options [:node])")
    assert len(text) < 1100
    assert str(ConfigError("a\nb\x1b")) == "a\\nb\\x1b"


def test_the_file_pipeline_is_checked_only_when_no_flag_names_one(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "pipeline = 'no_such_module_here:Orders'"))
    args = serve_args("--pipeline", "tests.workers.pipelines:Echo")
    config.apply(args)
    assert args.pipeline == "tests.workers.pipelines:Echo"
    with pytest.raises(ConfigError, match="pipeline: 'no_such_module_here:Orders'"):
        config.apply(serve_args())


@contextmanager
def serving(config: str, pipeline_module: Path, batches: Path, sname: str,
            epmd_port: int) -> Iterator[WatchedProcess]:
    """``serve --config`` with the test's pipeline module importable, writing its batches to
    ``batches``; once it serves."""
    env = {**os.environ, "BATCHES_FILE": str(batches),
           "PYTHONPATH": os.pathsep.join([str(pipeline_module), str(ROOT)])}
    argv = ["-m", "pybroadway", "serve", "--config", config, "--quiet", "--cookie", COOKIE,
            "--sname", sname, "--epmd-port", str(epmd_port)]
    with running(argv, env=env) as server:
        server.wait_line(" serves off_broadway_otp_distribution_receiver in push mode")
        yield server


def test_serve_config_runs_handle_batch(pipeline_module: Path) -> None:
    """A batcher from the file batches what a Python client pushes, and the context arrives."""
    batches = pipeline_module / "batches.jsonl"
    epmd_port = free_port()
    sname = f"{unique_name('cfg')}@localhost"
    path = write(pipeline_module, """
        pipeline = "mypipeline:Batched"
        [producer]
        mode = "push"
        [batchers.db]
        batch_size = 10
        batch_timeout = 60000
        [context]
        table = "orders"
    """)
    with serving(path, pipeline_module, batches, sname, epmd_port) as server:
        pushed = subprocess.run(
            [sys.executable, "examples/client.py", "--cookie", COOKIE, "--epmd-port",
             str(epmd_port), "--server", sname, "--sname", f"{unique_name('cli')}@localhost",
             "push", "hi", "--count", "30"], cwd=ROOT, capture_output=True, text=True,
            timeout=60)
        assert pushed.returncode == 0, pushed.stderr
        eventually(lambda: batches.exists() and len(batches.read_text().splitlines()) == 3)
        code, stdout, stderr = interrupt(server)
    assert code == 0, stderr
    assert stdout.splitlines()[-1] == "handled 30, failed 0, dropped 0"
    lines = [json.loads(line)[:3] for line in batches.read_text().splitlines()]
    # full batches of 10 (batch_timeout is a minute away): the file's batch_size holds
    assert lines == [["db", 10, {"table": "orders"}]] * 3


def test_a_workers_table_is_checked_and_flags_win_over_it(tmp_path: Path) -> None:
    from pybroadway.cli import serve_workers

    path = write(tmp_path, """
        [workers]
        count = 3
        redeliver = true
        max_demand = 50
        max_restarts = 1
    """)
    config = load_config(path)
    assert (config.flags["workers"], config.flags["redeliver"]) == (3, True)
    assert config.options["workers"] == {"max_demand": 50, "max_restarts": 1}
    for argv, expected in (((), {"count": 3, "redeliver": True}),
                           (("--workers", "1", "--no-redeliver"), {"count": 1,
                                                                   "redeliver": False})):
        args = serve_args(*argv)
        config.apply(args)
        assert serve_workers(args, config.options.get("workers")) == {
            **expected, "max_demand": 50, "max_restarts": 1, "pipeline": None}
    # a [workers] table alone turns them on (count: the schema's default); none: no workers
    config = load_config(write(tmp_path, "[workers]\nmax_in_flight = 10\n"))
    args = serve_args()
    config.apply(args)
    assert serve_workers(args, config.options.get("workers")) == {
        "max_in_flight": 10, "pipeline": None}
    assert serve_workers(serve_args(), None) is None
    for text, error in (("[workers]\ncount = -1", "invalid value for :count option: expected "
                                                  "non negative integer, got: -1 (in options "
                                                  "[:workers])"),
                        ("[workers]\nnode = 'x'", "unknown options [:node], valid options are: "
                                                  "[:count, :redeliver, ")):
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, text))
        assert error in str(caught.value)


def test_serve_config_runs_its_batchers_in_the_workers(pipeline_module: Path) -> None:
    """[workers] in the file: the file's batchers, context and partition_by run in the workers
    (not in serve's process), a partition on one worker, batches at the file's size."""
    batches = pipeline_module / "batches.jsonl"
    epmd_port = free_port()
    sname = f"{unique_name('cfgw')}@localhost"
    path = write(pipeline_module, """
        pipeline = "mypipeline:Batched"
        partition_by = "mypipeline:by_length"
        [batchers.db]
        batch_size = 10
        batch_timeout = 60000
        [context]
        table = "orders"
        [workers]
        count = 2
    """)
    with serving(path, pipeline_module, batches, sname, epmd_port) as server:
        for word in ("hi", "hello"):  # two partitions (by length), 30 messages each
            pushed = subprocess.run(
                [sys.executable, "examples/client.py", "--cookie", COOKIE, "--epmd-port",
                 str(epmd_port), "--server", sname, "--sname", f"{unique_name('cli')}@localhost",
                 "push", word, "--count", "30"], cwd=ROOT, capture_output=True, text=True,
                timeout=60)
            assert pushed.returncode == 0, pushed.stderr
        eventually(lambda: batches.exists() and len(batches.read_text().splitlines()) == 6,
                   timeout=60)
        code, stdout, stderr = interrupt(server)
    assert code == 0, stderr
    assert stdout.splitlines()[-1] == "handled 60, failed 0, dropped 0"
    lines = [json.loads(line) for line in batches.read_text().splitlines()]
    assert {(batcher, size, json.dumps(context)) for batcher, size, context, _, _ in lines} == {
        ("db", 10, json.dumps({"table": "orders"}))}
    by_word: dict[str, set[int]] = {}
    for *_, data, pid in lines:
        by_word.setdefault(data, set()).add(pid)
    assert sorted(by_word) == ["hello", "hi"]
    assert all(len(pids) == 1 for pids in by_word.values())  # a partition on one worker
    assert server.proc.pid not in set().union(*by_word.values())  # in the workers


def test_a_dashboard_table_is_checked_and_flags_win_over_it(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
        [dashboard]
        port = 8080
        host = "0.0.0.0"
        token = "from-the-file"
    """))
    assert config.flags == {"dashboard_port": 8080, "dashboard_host": "0.0.0.0",
                            "dashboard_token": "from-the-file"}
    assert config.options == {}
    args = serve_args("--dashboard-port", "9090")
    config.apply(args)
    assert (args.dashboard_port, args.dashboard_host, args.dashboard_token) == (
        9090, "0.0.0.0", "from-the-file")
    for text, error in (("port = 70000", "expected at most 65,535, got: 70000"),
                        ("colour = 'red'", "unknown options [:colour]"),
                        ("token = 7", "expected string, got: 7")):
        path = write(tmp_path, f"[dashboard]\n{text}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert error in str(caught.value) and "dashboard" in str(caught.value)


def test_tables_of_flags_only_leave_nothing_for_the_pipeline(tmp_path: Path) -> None:
    # The pipeline refuses an option it does not know: [metrics] once reached it as
    # metrics={} and serve stopped with "unknown options [:metrics]".
    config = load_config(write(tmp_path, "[node]\nticktime = 5\n[metrics]\nport = 9568\n"
                                         "[tls]\nproto_dist = 'inet6_tcp'\n"))
    assert config.flags == {"ticktime": 5, "metrics_port": 9568, "proto_dist": "inet6_tcp"}
    assert config.options == {}
