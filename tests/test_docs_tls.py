"""The TLS guide's setup (docs/guides/tls.md), as written: its openssl commands make the CA and
the node's certificate, and its option file, with them, is the one an erl and an Elixir node
connect over TLS with and the one pybroadway reads into contexts that do mutual TLS."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pybroadway.erldist.tls_options import read_optfile
from pybroadway.term import Atom, decode
from testkit.pages import blocks, page
from testkit.peers import BeamPeer, SystemEpmd
from tests.erldist.test_tls_options import talk


def block(language: str) -> str:
    [found] = blocks(page("tls"), language)
    return found


@pytest.fixture
def made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The guide's commands run in a fresh directory, its option file written there as
    ssl_dist.conf; the test runs (and starts its nodes) there."""
    subprocess.run(["bash", "-euc", block("sh")], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    (tmp_path / "ssl_dist.conf").write_text(block("erlang"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def test_pybroadway_reads_the_option_file(made: Path) -> None:
    assert sorted(path.name for path in (made / "tls").glob("*.pem")) == ["ca.pem",
                                                                         "localhost.pem"]
    settings = read_optfile("ssl_dist.conf")
    outcome = await talk(settings, settings)
    assert outcome.version == "TLSv1.2" and outcome.client_cert is not None


def test_erl_and_elixir_connect_over_tls_with_it(made: Path, epmd: SystemEpmd) -> None:
    # the BEAM looks a relative -ssl_dist_optfile up in its code path, not the directory
    tls = ["-proto_dist", "inet_tls", "-ssl_dist_optfile", str(made / "ssl_dist.conf")]
    with BeamPeer.erlang("25", epmd_port=epmd.port, extra=tls) as erl, \
            BeamPeer.elixir(epmd_port=epmd.port, extra_erl=" ".join(tls)) as elixir:
        erl.wait_started()
        elixir.wait_started()
        assert decode(elixir.eval(f':net_adm.ping(:"{erl.node}")')) == Atom("pong")
        address = f"element(2, net_kernel:node_info('{elixir.node}'))"
        assert decode(erl.eval(f"element(4, proplists:get_value(address, {address}))")) \
            == Atom("tls")
