"""``scripts/otp28.sh``, the OTP 28 step of the test command: on x86_64 it hands over an
`erl`; where the wheel it comes from does not exist, it says so plainly and the suite runs
without the OTP 28 cases (skipped with that reason, under CI too)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest

from testkit.peers import erl_for

ROOT = Path(__file__).resolve().parents[1]


def run_otp28_script(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "scripts/otp28.sh"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PATH": path})


def test_on_another_architecture_it_says_so_and_succeeds(tmp_path: Path) -> None:
    fake = tmp_path / "uname"
    fake.write_text("#!/bin/sh\necho aarch64\n")
    fake.chmod(0o755)
    done = run_otp28_script(f"{tmp_path}:{os.environ['PATH']}")
    assert done.returncode == 0 and done.stdout == ""
    assert "no OTP 28 runtime for this machine (aarch64)" in done.stderr
    assert "x86_64 only" in done.stderr


@pytest.mark.beam
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the wheel exists for x86_64 only")
def test_on_x86_64_it_prints_an_erl_of_otp_28() -> None:
    done = run_otp28_script(os.environ["PATH"])
    assert done.returncode == 0, done.stderr
    erl = done.stdout.strip()
    release = subprocess.run(
        [erl, "-noshell", "-eval", "io:put_chars(erlang:system_info(otp_release)), halt()."],
        capture_output=True, text=True, timeout=60)
    assert release.stdout == "28"


def test_the_otp_28_cases_are_skipped_with_the_reason_where_the_runtime_cannot_exist(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYBROADWAY_OTP28_ERL", raising=False)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(pytest.skip.Exception, match="x86_64 only"):
        erl_for("28")
