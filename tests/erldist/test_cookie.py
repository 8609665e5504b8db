"""~/.erlang.cookie handling: read, strip, create like erl, warn on open permissions."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from pathlib import Path

import pytest

from pybroadway.erldist.cookie import cookie_path, default_cookie
from testkit.peers import SystemEpmd, require, unique_name


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_reads_and_strips(home: Path) -> None:
    path = home / ".erlang.cookie"
    path.write_text("  SECRETCOOKIE\n")
    path.chmod(0o400)
    assert cookie_path() == path
    assert default_cookie() == "SECRETCOOKIE"


def test_creates_like_erl(home: Path) -> None:
    cookie = default_cookie()
    path = home / ".erlang.cookie"
    assert len(cookie) == 20 and cookie.isascii() and cookie.isalpha() and cookie.isupper()
    assert path.read_bytes() == cookie.encode()  # no trailing newline
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert default_cookie() == cookie  # stable once created
    other = default_cookie(home / "other")
    assert other != cookie


def test_explicit_path(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_text("abc")
    path.chmod(0o400)
    assert default_cookie(path) == "abc"
    assert default_cookie(str(path)) == "abc"


def test_warns_on_open_permissions(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = home / ".erlang.cookie"
    path.write_text("OPEN")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="pybroadway.erldist.cookie"):
        assert default_cookie() == "OPEN"
    assert any("accessible by others" in r.getMessage() for r in caplog.records)


def test_no_warning_when_private(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = home / ".erlang.cookie"
    path.write_text("PRIVATE")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="pybroadway.erldist.cookie"):
        default_cookie()
    assert not caplog.records


def test_empty_file_is_an_error(home: Path) -> None:
    (home / ".erlang.cookie").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        default_cookie()


def test_erl_accepts_the_cookie_we_create(home: Path, epmd: SystemEpmd) -> None:
    """A distributed erl (OTP 25) started without -setcookie uses the file we created."""
    cookie = default_cookie()
    erl = require("Erlang/OTP (erl)", "erl")
    env = dict(os.environ, HOME=str(home), ERL_EPMD_PORT=str(epmd.port))
    out = subprocess.run(
        [erl, "-noshell", "-sname", f"{unique_name('cookie')}@localhost", "-start_epmd",
         "false", "-eval", 'io:format("~s", [erlang:get_cookie()]), halt().'],
        capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout == cookie, out.stderr


def test_creating_the_file_is_said_once_at_warning_with_its_path(
        home: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pybroadway.erldist.cookie"):
        default_cookie()
        default_cookie()
    said = [record for record in caplog.records if "created" in record.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert str(home / ".erlang.cookie") in said[0].getMessage()
