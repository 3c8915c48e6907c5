"""``python -m emulator serve``: one ready line with the real URL, clean shutdown on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import anyio
import pytest

from emulator.__main__ import build_parser, config_from_args
from emulator.config import ConfigError

pytestmark = pytest.mark.anyio


async def test_cli_serve_prints_url_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    """Port 0 picks a free port; the printed URL answers ping; SIGTERM exits with status 0.

    Takes a few seconds: a fresh interpreter imports aiohttp and the storage drivers (moto).
    """
    cmd = [
        sys.executable,
        "-m",
        "emulator",
        "serve",
        "--port",
        "0",
        "--data",
        str(tmp_path / "d"),
        "--user",
        "a@example.com:secret-pw",
        "--server-version",
        "4.17.2",
    ]
    async with await anyio.open_process(cmd, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with anyio.fail_after(60):
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive(1)
        text = line.decode().strip()
        assert text.startswith("emulator listening on http://127.0.0.1:")
        url = text.rpartition(" ")[2]
        assert not url.endswith(":0")
        async with aiohttp.ClientSession() as http, http.get(f"{url}/api/v4/site/ping") as r:
            assert (await r.json())["data"] == "4.17.2"
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(60):
            assert await proc.wait() == 0


def test_cli_rejects_bad_values() -> None:
    """Bad policy types are refused by the parser; bad passwords by the config."""
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--data", "x", "--policy", "ftp"])
    args = parser.parse_args(["serve", "--data", "x", "--user", "a@b.c:abc"])
    with pytest.raises(ConfigError, match="4-128"):
        config_from_args(args)
    args = parser.parse_args(["serve", "--data", "x", "--server-version", "four"])
    with pytest.raises(ConfigError, match="server_version"):
        config_from_args(args)


def test_cli_flags_map_to_config() -> None:
    """Every serve flag lands in the config."""
    args = build_parser().parse_args(
        [
            "serve", "--data", "d", "--port", "0", "--user", "a@x.io:pass1", "--user",
            "b@x.io:pass2", "--admin", "b@x.io", "--totp-secret", "a@x.io:JBSWY3DPEHPK3PXP",
            "--policy", "remote", "--chunk-size", "1024", "--chunk-concurrency", "3",
            "--quota", "99", "--token-ttl", "60", "--session-ttl", "120",
            "--obfuscate-thumbs",
        ]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert cfg.users == (("a@x.io", "pass1"), ("b@x.io", "pass2"))
    assert cfg.admins == ("b@x.io",)
    assert cfg.totp_secrets == (("a@x.io", "JBSWY3DPEHPK3PXP"),)
    assert (cfg.policy, cfg.chunk_size, cfg.chunk_concurrency) == ("remote", 1024, 3)
    assert (cfg.quota, cfg.token_ttl, cfg.session_ttl) == (99, 60, 120)
    assert cfg.obfuscate_thumbs is True
    assert cfg.legacy_upload is False


def test_cli_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A port already bound makes serve exit 1 with a one-line error."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable, "-m", "emulator", "serve", "--port", str(port),
                "--data", str(tmp_path / "d"), "--user", "a@example.com:secret-pw",
            ],
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in result.stderr.decode()
    assert result.stdout == b""


def test_cli_client_gone_mid_body_logs_no_traceback_and_no_password(tmp_path: Path) -> None:
    """A client that dies mid-request (kill -9 of ferry) leaves no traceback in the log.

    A traceback printed with its local variables used to show the ``--user`` passwords.
    """
    password = "secret-pw-8d1f"
    cmd = [sys.executable, "-m", "emulator", "serve", "--port", "0", "--data", str(tmp_path)]
    cmd += ["--user", f"a@example.com:{password}", "--log-level", "debug"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().decode().strip().rpartition(":")[2])
        head = b"POST /api/v4/session/token HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(head + b"{" * 10)
            time.sleep(0.3)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert err.count(b"client_disconnected") == 1, err.decode()
    assert b"Traceback" not in err, err.decode()
    assert password.encode() not in err
