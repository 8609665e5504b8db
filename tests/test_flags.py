"""Every flag is checked by the configuration file's schema: a value the file refuses, the flag
refuses, with the same reason naming the flag, in one line on stderr and exit status 2, before
anything starts; bounds where a value costs processes or memory say the bound."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pybroadway._arguments import check_command_line
from pybroadway.cli import main
from pybroadway.workers._schema import MAX_WORKERS
from testkit.peers import free_port, unique_name
from tests.test_cli_errors import COOKIE, run
from tests.test_config import serve_args

pytestmark = pytest.mark.timeout(30)  # a bad value let through starts a server


def serve(*argv: str, file: str = "") -> list[str]:
    """``serve ARGV`` after flags that keep it off the host's EPMD and cookie file (but those
    ``file``, a configuration, sets), should a bad value be let through and a node start."""
    base = {"cookie": COOKIE, "sname": f"{unique_name('flags')}@localhost",
            "epmd_port": str(free_port())}
    flags = [item for key, value in base.items() if key not in file
             for item in (f"--{key.replace('_', '-')}", value)]
    return ["serve", *flags, *argv]


SERVE = [
    (["--workers", "100000"], f"--workers: expected at most {MAX_WORKERS}, got: 100000"),
    (["--workers", "-1"], "--workers: expected non negative integer, got: -1"),
    (["--concurrency", "100000000"], "--concurrency: expected at most 10,000, got: 100000000"),
    (["--buffer-size", "-5"], "--buffer-size: expected positive integer, got: -5"),
    (["--buffer-size", "0"], "--buffer-size: expected positive integer, got: 0"),
    (["--buffer-size", "2000000"], "--buffer-size: expected at most 1,000,000, got: 2000000"),
    (["--pull-interval", "-1"], "--pull-interval: expected positive number, got: -1.0"),
    (["--pull-interval", "0"], "--pull-interval: expected positive number, got: 0.0"),
    (["--pull-interval", "nan"], "--pull-interval: expected positive number, got: nan"),
    (["--pull-interval", "inf"], "--pull-interval: expected positive number, got: inf"),
    (["--ticktime", "0"], "--ticktime: expected positive number, got: 0.0"),
    (["--max-demand", "0"], "--max-demand: expected positive integer, got: 0"),
    (["--max-demand", "1000000"], "--max-demand: expected at most 100,000, got: 1000000"),
    (["--resume-at", "10000"],
     "--resume-at: expected an integer less than the buffer size (10,000), got: 10000"),
    (["--buffer-size", "100", "--resume-at", "150"],
     "--resume-at: expected an integer less than the buffer size (100), got: 150"),
    (["--cookie", ""], "--cookie: expected a cookie of 1 to 255 Latin-1 characters, got: ''"),
    (["--cookie", "€"], "--cookie: expected a cookie of 1 to 255 Latin-1 characters, got: '€'"),
    (["--sname", "a@b@c"], "--sname: expected a node name, name@host (one '@', at most 255 "
                           "characters), got: 'a@b@c'"),
    (["--sname", "server@"], "--sname: expected a node name, name@host (one '@', at most 255 "
                             "characters), got: 'server@'"),
    (["--epmd-port", "99999"], "--epmd-port: expected at most 65,535, got: 99999"),
    (["--epmd-port", "0"], "--epmd-port: expected positive integer, got: 0"),
    (["--metrics-port", "70000"], "--metrics-port: expected at most 65,535, got: 70000"),
]


@pytest.mark.parametrize(("argv", "message"), SERVE, ids=[" ".join(a) for a, _ in SERVE])
def test_a_bad_serve_flag_is_one_line_exit_2(argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(serve(*argv)) == 2
    assert capsys.readouterr().err == f"pybroadway serve: invalid value for {message}\n"


OTHERS = [
    (["worker", "--join", "f@localhost", "--pipeline", "m:C", "--max-demand", "0"],
     "--max-demand: expected positive integer, got: 0"),
    (["worker", "--join", "f@localhost", "--pipeline", "m:C", "--concurrency", "100000"],
     "--concurrency: expected at most 10,000, got: 100000"),
    (["worker", "--join", "f@localhost", "--pipeline", "m:C", "--ticktime", "inf"],
     "--ticktime: expected positive number, got: inf"),
    (["worker", "--join", "f@localhost", "--pipeline", "m:C", "--epmd-port", "99999"],
     "--epmd-port: expected at most 65,535, got: 99999"),
    (["worker", "--join", "f@localhost", "--pipeline", "m:C", "--partition", "-1"],
     "--partition: expected non negative integer, got: -1"),
    (["ping", "a@localhost", "--epmd-port", "99999"],
     "--epmd-port: expected at most 65,535, got: 99999"),
    (["ping", "a@localhost", "--sname", "a@b@c"], "--sname: expected a node name, name@host "
                                                  "(one '@', at most 255 characters), got: "
                                                  "'a@b@c'"),
    (["epmd", "names", "--port", "99999"], "--port: expected at most 65,535, got: 99999"),
]


@pytest.mark.parametrize(("argv", "message"), OTHERS, ids=[" ".join(a) for a, _ in OTHERS])
def test_a_bad_flag_of_another_command_is_one_line_exit_2(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err == f"pybroadway {argv[0]}: invalid value for {message}\n"


SAME = [
    (["--workers", "100000"], "[workers]\ncount = 100000"),
    (["--concurrency", "100000000"], "[processors.default]\nconcurrency = 100000000"),
    (["--buffer-size", "-5"], "[producer]\nbuffer_size = -5"),
    (["--buffer-size", "2000000"], "[producer]\nbuffer_size = 2000000"),
    (["--pull-interval", "inf"], "[producer]\npull_interval = inf"),
    (["--pull-interval", "nan"], "[producer]\npull_interval = nan"),
    (["--ticktime", "0"], "[node]\nticktime = 0"),
    (["--resume-at", "20000"], "[producer]\nresume_at = 20000"),
    (["--cookie", ""], "[node]\ncookie = ''"),
    (["--sname", "a@b@c"], "[node]\nsname = 'a@b@c'"),
    (["--epmd-port", "99999"], "[node]\nepmd_port = 99999"),
    (["--metrics-port", "70000"], "[metrics]\nport = 70000"),
]
REASON = re.compile(r"invalid value for (?:--[\w-]+|:\w+ option): (.+?), got: ")


@pytest.mark.parametrize(("argv", "text"), SAME, ids=[" ".join(a) for a, _ in SAME])
def test_a_flag_is_refused_as_the_same_key_in_the_file(
        argv: list[str], text: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    assert main(serve(*argv)) == 2
    flag = capsys.readouterr().err
    assert main(serve("--config", str(path), file=text)) == 2
    file = capsys.readouterr().err
    assert file.startswith(f"pybroadway serve: {path}: invalid value for :"), file
    assert len(flag.splitlines()) == len(file.splitlines()) == 1
    flag_reason, file_reason = REASON.search(flag), REASON.search(file)
    assert flag_reason is not None and file_reason is not None, (flag, file)
    assert flag_reason.group(1) == file_reason.group(1)


def test_the_bounds_themselves_are_allowed_and_a_flag_can_mend_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text("[producer]\nresume_at = 20000\n[node]\nticktime = 7\n"
                    "[metrics]\nport = 9568\n")
    args = serve_args("--workers", str(MAX_WORKERS), "--concurrency", "10000", "--buffer-size",
                      "1000000", "--max-demand", "100000", "--epmd-port", "65535",
                      "--sname", "server")
    args.command, args.config = "serve", str(path)
    check_command_line(args)  # the file's resume_at is below the flag's buffer size
    assert (args.workers, args.resume_at, args.ticktime, args.metrics_port) == (
        MAX_WORKERS, 20000, 7, 9568)


@pytest.mark.parametrize("argv", [["--epmd-port", "99999"], ["--workers", "100000"]],
                         ids=" ".join)
def test_as_users_run_it_a_bad_flag_is_one_line_exit_2(argv: list[str]) -> None:
    """``--epmd-port 99999`` was an OverflowError traceback; ``--workers 100000`` spawned
    workers until the machine stopped answering."""
    out = run("-m", "pybroadway", *serve(*argv))
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"pybroadway serve: invalid value for {argv[0]}: expected at "
                                 f"most ")


def test_the_example_server_checks_its_flags_as_serve_does() -> None:
    out = run("examples/broadway.py", "--buffer-size", "-5")
    assert out.returncode == 2, out.stderr
    assert out.stderr == ("broadway.py: invalid value for --buffer-size: expected positive "
                          "integer, got: -5\n")


@pytest.mark.parametrize(("spec", "why"), [
    ("nope", "expected an import path module:Class"),
    ("__main__:P", "workers import the pipeline by module path"),
])
def test_a_worker_with_a_bad_pipeline_is_one_line_exit_2_as_serve(
        spec: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--join", "f@localhost", "--pipeline", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pybroadway worker: --pipeline ") and why in err, err
    assert err.count("\n") == 1
