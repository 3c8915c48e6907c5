"""The ``ferry`` process itself: how it ends when its output or its start-up is cut short.

These start ``python -m jobs`` as a real process (about 1.5 s each); none needs a server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """\
[remotes.home]
url = "http://127.0.0.1:9"
email = "me@example.com"
password_env = "FERRY_CLI_TEST_PASSWORD"

[state]
path = "state"

[[jobs]]
name = "photos"
kind = "upload"
source = "photos"
target = "home:/backup"
"""


def ferry_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ferry with its stdout a pipe whose reader has already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "jobs", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write)


@pytest.mark.parametrize("command", ["history", "status", "validate"])
def test_closed_stdout_exits_141_quietly(tmp_path: Path, command: str) -> None:
    """A reader that closed stdout early (``ferry history | head``) gets no error message."""
    config = tmp_path / "ferry.toml"
    config.write_text(CONFIG)
    done = ferry_into_closed_pipe(command, str(config))
    assert (done.returncode, done.stderr.decode()) == (141, "")
