"""``--proto-dist`` and ``--ssl-dist-optfile`` (and ``--config``'s ``[tls]``): serve, worker
and ping give their node the TLS settings and IPv6 the BEAM's ``-proto_dist`` and
``-ssl_dist_optfile`` would; a front's workers get the same flags; every mistake is one line,
exit code 2, before any node starts. ``pybroadway ping`` with the option file a BEAM uses
gets pong from it; from a plain BEAM, one line saying why not."""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pybroadway import cli
from pybroadway._arguments import add_worker_arguments, check_command_line
from pybroadway._config import ConfigError, load_config
from pybroadway.erldist import Node
from pybroadway.workers import _worker
from pybroadway.workers._ports import worker_argv
from testkit import tls
from testkit.certs import CA, NodeCert, make_ca
from testkit.peers import BeamPeer, SystemEpmd, free_port
from tests.conftest import Pki
from tests.erldist.test_tls_options import both, opts
from tests.test_cli_errors import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, NodeCert, NodeCert]:
    root = tmp_path_factory.mktemp("certs")
    ca = make_ca(root / "ca")
    return ca, ca.issue(root / "node", "localhost"), ca.issue(root / "locked", "localhost",
                                                              password="secret")


@pytest.fixture
def optfile(certs: tuple[CA, NodeCert, NodeCert], tmp_path: Path) -> Path:
    """A good option file: both sides verify."""
    ca, node, _ = certs
    path = tmp_path / "ssl_dist.conf"
    path.write_text(both(opts(node, ca, "{verify, verify_peer}"),
                         opts(node, ca, "{verify, verify_peer}")))
    return path


def one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


def test_serve_gives_its_node_the_option_files_tls(optfile: Path, nodes: list[Node]) -> None:
    args = serve_args("--ssl-dist-optfile", str(optfile), "--epmd-port", str(free_port()))
    check_command_line(args)
    args.stop = asyncio.Event()
    args.stop.set()  # started, then stopped at once
    asyncio.run(cli.serve(args))
    [node] = nodes
    assert node.tls is not None and node.ipv6 is False
    assert node.tls.server.verify_mode == ssl.CERT_REQUIRED  # the file's verify_peer
    assert node.tls.client.check_hostname and node.tls.server_name is None


@pytest.mark.parametrize(("flags", "tls", "ipv6"), [
    ([], False, False), (["--proto-dist", "inet6_tcp"], False, True),
    (["FILE"], True, False), (["--proto-dist", "inet_tls", "FILE"], True, False),
    (["--proto-dist", "inet6_tls", "FILE"], True, True),
])
def test_ping_gives_its_node_tls_and_ipv6(optfile: Path, nodes: list[Node], flags: list[str],
                                          tls: bool, ipv6: bool) -> None:
    flags = [arg for flag in flags
             for arg in (["--ssl-dist-optfile", str(optfile)] if flag == "FILE" else [flag])]
    code = cli.main(["ping", "nobody@localhost", "--epmd-port", str(free_port()), *flags])
    assert code == 1  # pang: no such node
    [node] = nodes
    assert (node.tls is not None, node.ipv6) == (tls, ipv6)


def test_worker_gives_its_node_tls_and_ipv6(optfile: Path, nodes: list[Node],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    made = _worker.Node

    class Interrupted(made):  # type: ignore[misc, valid-type]
        """Ctrl-C as soon as the worker's node exists: it stops before finding its front."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGINT)
    monkeypatch.setattr(_worker, "Node", Interrupted)
    code = cli.main(["worker", "--join", "front@localhost", "--pipeline",
                     "testkit.doubles:Passthrough", "--epmd-port", str(free_port()),
                     "--proto-dist", "inet6_tls", "--ssl-dist-optfile", str(optfile)])
    assert code == 0
    [node] = nodes
    assert node.tls is not None and node.ipv6 is True


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipeline")
    parser.add_argument("--config")
    cli.add_serve_arguments(parser)
    args = parser.parse_args(argv)
    args.command = "serve"
    return args


def test_a_fronts_workers_get_its_distribution_flags(optfile: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(optfile.parent)
    args = serve_args("--workers", "2", "--proto-dist", "inet6_tls",
                      "--ssl-dist-optfile", optfile.name)
    check_command_line(args)
    workers = cli.serve_workers(args, {"extra_args": ["--hidden"]})
    assert workers is not None
    options = {**workers, "python": None, "pipeline": "testkit.doubles:Passthrough",
               "max_demand": 10}
    argv = worker_argv(Node("front@localhost"), "PyBroadway", options, 0, partitioned=False)
    assert argv[-5:] == ["--proto-dist", "inet6_tls", "--ssl-dist-optfile", str(optfile),
                         "--hidden"]
    # from --config's [tls]: the path relative to the file, the worker given it absolute
    config = tmp_path / "conf" / "pipeline.toml"
    config.parent.mkdir()
    config.write_text('[workers]\ncount = 1\n[tls]\noptfile = "../ssl_dist.conf"\n')
    monkeypatch.chdir(ROOT)
    args = serve_args("--config", str(config))
    check_command_line(args)
    assert args.tls is not None and args.ipv6 is False
    workers = cli.serve_workers(args, args.pipeline_options.get("workers"))
    assert workers is not None and workers["extra_args"] == [
        "--ssl-dist-optfile", str(optfile)]
    assert cli.serve_workers(serve_args("--workers", "1"), None) == {"count": 1,
                                                                      "pipeline": None}


def test_a_fronts_workers_get_its_tick_time() -> None:
    """As every node of a cluster must: a worker ticking slower is taken for dead by the
    nodes of the front's tick time, and global then cuts it off from all
    (tests/workers/test_hosts_tls.py shows it across hosts)."""
    options = {"python": None, "pipeline": "testkit.doubles:Passthrough", "max_demand": 10,
               "extra_args": []}
    argv = worker_argv(Node("front@localhost", ticktime=4), "PyBroadway", options, 0,
                       partitioned=False)
    assert argv[3] == "worker"
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    assert parser.parse_args(argv[4:]).ticktime == 4


def test_the_config_files_tls_table(optfile: Path, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(f'[tls]\noptfile = "{optfile.name}"\nproto_dist = "inet6_tls"\n')
    loaded = load_config(str(config))
    assert loaded.flags == {"ssl_dist_optfile": str(optfile), "proto_dist": "inet6_tls"}
    assert "tls" not in loaded.options  # flags only, nothing for the pipeline
    args = serve_args("--config", str(config), "--proto-dist", "inet_tls")
    check_command_line(args)  # a flag given wins over the file
    assert (args.proto_dist, args.tls is not None, args.ipv6) == ("inet_tls", True, False)
    for text, error in (('[tls]\nproto_dist = "inet7_tcp"\n', "invalid value for :proto_dist "
                                                               "option: expected one of"),
                        ('[tls]\ncertfile = "x"\n', "unknown options [:certfile]")):
        config.write_text(text)
        with pytest.raises(ConfigError, match=r"pipeline\.toml: .*") as caught:
            load_config(str(config))
        assert error in str(caught.value)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("command", ["serve", "worker", "ping"])
def test_bad_distribution_flags_are_one_line_exit_2(
        command: str, certs: tuple[CA, NodeCert, NodeCert], optfile: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, node, locked = certs
    base = {"serve": ["serve"], "ping": ["ping", "nobody@localhost"],
            "worker": ["worker", "--join", "front@localhost", "--pipeline",
                       "testkit.doubles:Passthrough"]}[command]
    unknown = write(tmp_path, "unknown.conf", both(opts(node, None, "{reuse_sessions, true}"),
                                                   "[]"))
    bad_syntax = write(tmp_path, "syntax.conf", "[{server,\n  [{certfile, \"a\"}\n"
                                                "  {keyfile, \"b\"}]}].\n")
    wrong_password = write(tmp_path, "password.conf", both(
        opts(locked, None, '{password, "guess"}'), "[]"))
    no_key = write(tmp_path, "nokey.conf", both(
        f'[{{certfile, "{node.certfile}"}}, {{keyfile, "{tmp_path}/absent.key"}}]', "[]"))
    cases = [
        (["--ssl-dist-optfile", str(tmp_path / "absent.conf")],
         f"cannot read the TLS option file {tmp_path}/absent.conf: No such file or directory"),
        (["--proto-dist", "inet6_tls"], "--proto-dist inet6_tls needs the TLS options: "
                                        "--ssl-dist-optfile FILE"),
        (["--proto-dist", "inet_tcp", "--ssl-dist-optfile", str(optfile)],
         f"--proto-dist inet_tcp and --ssl-dist-optfile {optfile} contradict each other"),
        (["--ssl-dist-optfile", bad_syntax], f"{bad_syntax}: line 3: expected ',' or ']'"),
        (["--ssl-dist-optfile", unknown], f"{unknown}: server: option reuse_sessions: not "
                                          f"supported by pybroadway"),
        (["--ssl-dist-optfile", wrong_password], "server: cannot load the key in "
                                                 f"{locked.keyfile}: wrong password"),
        (["--ssl-dist-optfile", no_key], f"server: keyfile: cannot read {tmp_path}/absent.key"),
    ]
    for flags, says in cases:
        line = one_line_exit_2([*base, *flags], capsys)
        assert line.startswith(f"pybroadway {command}: ") and says in line, line


def test_the_config_files_contradiction_names_its_keys(optfile: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    config = write(tmp_path, "pipeline.toml", f'[tls]\noptfile = "{optfile}"\n'
                                              f'proto_dist = "inet6_tcp"\n')
    line = one_line_exit_2(["serve", "--config", config], capsys)
    assert line == (f"pybroadway serve: {config}: tls.proto_dist inet6_tcp and {config}: "
                    f"tls.optfile {optfile} contradict each other: TLS options for a "
                    f"distribution without TLS (give inet_tls or inet6_tls, or no option file)")


def test_serve_with_a_bad_option_file_exits_2_saying_where(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("[{server,\n  [{certfile, \"/etc/node.pem\"},\n   {verify verify_peer}]}].\n")
    out = subprocess.run([sys.executable, "-m", "pybroadway", "serve", "--ssl-dist-optfile",
                          str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (f"pybroadway serve: {bad}: line 3: expected ',' or '}}' (for the "
                          f"'{{' of line 3), got 'verify_peer'\n")


def test_over_ipv6_the_default_address_is_ipv6s_loopback(optfile: Path) -> None:
    for argv, listen in ((["--proto-dist", "inet6_tcp"], "::1"), ([], None),
                         (["--proto-dist", "inet6_tls", "--ssl-dist-optfile", str(optfile)],
                          "::1"),
                         (["--proto-dist", "inet6_tcp", "--listen", "fd00::1"], "fd00::1")):
        args = serve_args(*argv)
        check_command_line(args)
        assert args.listen == listen  # None: serve's default, 127.0.0.1
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    for argv, listen in (([], "127.0.0.1"), (["--proto-dist", "inet6_tcp"], "::1")):
        args = parser.parse_args(["--join", "a@localhost", "--pipeline",
                                  "testkit.doubles:Passthrough", *argv])
        args.command = "worker"
        check_command_line(args)
        assert args.listen == listen


@pytest.mark.parametrize("peer", ["inet_tls", "inet6_tls", "plain"])
def test_ping_with_the_beams_option_file(peer: str, otp: str, epmd: SystemEpmd, pki: Pki,
                                         loopback6: NodeCert, tmp_path: Path) -> None:
    """The BEAM and ``pybroadway ping`` read one option file (over IPv6: ``--proto-dist
    inet6_tls``, the BEAM named ``…@::1``); a plain BEAM never answers the TLS handshake, and
    gives up on it after its ``net_setuptime`` (1 s here, not 7)."""
    ipv6 = peer == "inet6_tls"
    options = tls.optfile(tmp_path / "ssl_dist.conf", pki.ca, loopback6 if ipv6 else pki.node)
    extra = (["-kernel", "net_setuptime", "1"] if peer == "plain"
             else tls.beam_args(otp, options, ipv6=ipv6))
    with BeamPeer.erlang(otp, epmd_port=epmd.port, extra=extra,
                         host="::1" if ipv6 else "localhost") as beam:
        beam.wait_started()
        out = run("-m", "pybroadway", "ping", beam.node, "--cookie", beam.cookie,
                  "--epmd-port", str(epmd.port), "--ssl-dist-optfile", str(options),
                  *(["--proto-dist", "inet6_tls"] if ipv6 else []))
    if peer != "plain":
        assert (out.returncode, out.stdout, out.stderr) == (0, "pong\n", "")
    else:
        assert (out.returncode, out.stderr) == (1, ""), out.stderr
        assert out.stdout == (f"pang (TLS handshake to {beam.node} failed: the peer closed the "
                              f"connection in the TLS handshake (it refused it, or it does not "
                              f"speak TLS))\n")
