"""Auth (contract 2, BR-15): sign-in, 2FA, token cache, refresh, re-login, sign-out, secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import anyio
import pyotp
import pytest
from structlog.testing import capture_logs

from emulator.testing import EmulatorHandle, running_emulator
from tests.transfer.roundtrip import MemoryJournal, connected, remote_config
from transfer import AuthError, Drive, PacerConfig, ServerError

TOKEN_ROUTE = "/api/v4/session/token"
REFRESH_ROUTE = "/api/v4/session/token/refresh"


@pytest.mark.anyio
async def test_s2_1_wrong_password_is_fatal_auth_error_without_retries(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """40080 raises a fatal AuthError after exactly one sign-in request; no secret in its text."""
    remote = remote_config(emu)
    bad = type(remote)(url=remote.url, email=remote.email, password="wrong-secret-pw")
    with pytest.raises(AuthError) as info:
        async with connected(emu, tmp_path, remote=bad):
            pass
    assert info.value.fatal
    assert info.value.code == 40080
    assert "wrong-secret-pw" not in str(info.value)
    assert "wrong-secret-pw" not in repr(bad)
    assert emu.requests.count("POST", TOKEN_ROUTE) == 1


@pytest.mark.anyio
async def test_s2_1_two_factor_sign_in_with_totp_secret(tmp_path: Path) -> None:
    """A 203 challenge is answered with the TOTP of the configured secret."""
    secret = pyotp.random_base32()
    async with running_emulator(tmp_path, totp_secrets={"admin@example.com": secret}) as emu:
        async with connected(
            emu, tmp_path, remote=remote_config(emu, "admin@example.com", totp_secret=secret)
        ) as drive:
            assert (await drive.capacity()).total > 0
        assert emu.requests.count("POST", "/api/v4/session/token/2fa") == 1
        with pytest.raises(AuthError, match="totp_secret"):
            async with connected(
                emu, tmp_path / "other", remote=remote_config(emu, "admin@example.com")
            ):
                pass


@pytest.mark.anyio
async def test_s2_token_cache_is_0600_and_reused(emu: EmulatorHandle, tmp_path: Path) -> None:
    """Tokens land in a 0600 file; a second connect signs in no more."""
    async with connected(emu, tmp_path) as drive:
        cache = drive.client.token_cache
        await drive.capacity()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert emu.users[next(iter(emu.users))] not in cache.read_text()
    async with connected(emu, tmp_path) as drive:
        await drive.capacity()
    assert emu.requests.count("POST", TOKEN_ROUTE) == 1


@pytest.mark.anyio
async def test_s2_3_rejected_refresh_token_leads_to_a_new_sign_in(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A 401 triggers a refresh; a 40020 refresh answer triggers one password sign-in."""
    async with connected(emu, tmp_path) as drive:
        emu.faults.expire_tokens()
        emu.faults.fail("POST", REFRESH_ROUTE, code=40020, msg="Credential invalid")
        capacity = await drive.capacity()
    assert capacity.total > 0
    assert emu.requests.count("POST", REFRESH_ROUTE) == 1
    assert emu.requests.count("POST", TOKEN_ROUTE) == 2


@pytest.mark.anyio
async def test_br15_refresh_rejected_and_sign_in_failing_stops_every_worker(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """8 workers, refresh and sign-in both rejected: all stop with AuthError, requests bounded."""
    failures: list[AuthError] = []

    async def worker(drive: Drive) -> None:
        try:
            await drive.capacity()
        except AuthError as exc:
            failures.append(exc)

    async with connected(emu, tmp_path, pacer=PacerConfig(min_sleep_s=0.0)) as drive:
        emu.faults.expire_tokens()
        emu.requests.clear()
        emu.faults.fail("POST", REFRESH_ROUTE, code=40020, times=10)
        emu.faults.fail("POST", TOKEN_ROUTE, code=40080, times=10)
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker, drive)
    assert len(failures) == 8
    assert emu.requests.count("POST", REFRESH_ROUTE) == 1
    assert emu.requests.count("POST", TOKEN_ROUTE) == 1
    assert len(emu.requests.records) <= 8 + 1 + 8


@pytest.mark.anyio
async def test_br15_failing_refresh_route_is_tried_once_per_round_not_per_worker(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """8 workers, the refresh route answering 502: workers that waited on a failed refresh
    share its error, so refreshes are bounded by attempts x attempts, not x 8 workers."""
    failures: list[ServerError] = []

    async def worker(drive: Drive) -> None:
        try:
            await drive.capacity()
        except ServerError as exc:
            failures.append(exc)

    fast = PacerConfig(min_sleep_s=0.0, max_sleep_s=0.001, max_attempts=3)
    async with connected(emu, tmp_path, pacer=fast) as drive:
        emu.faults.expire_tokens()
        emu.requests.clear()
        emu.faults.fail("POST", REFRESH_ROUTE, status=502, html="<h1>Bad Gateway</h1>", times=999)
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker, drive)
    assert len(failures) == 8
    assert all(exc.retryable and not exc.fatal for exc in failures)
    assert emu.requests.count("POST", REFRESH_ROUTE) <= 3 * 3
    assert emu.requests.count("GET", "/api/v4/user/capacity") <= 8 * 3
    assert emu.requests.count("POST", TOKEN_ROUTE) == 0


@pytest.mark.anyio
async def test_br15_refresh_failing_once_then_recovering_serves_every_worker(
    emu: EmulatorHandle, tmp_path: Path
) -> None:
    """A refresh that fails once is tried again on the next round and all 8 workers finish."""
    fast = PacerConfig(min_sleep_s=0.0, max_sleep_s=0.001, max_attempts=3)
    results: list[int] = []

    async def worker(drive: Drive) -> None:
        results.append((await drive.capacity()).total)

    async with connected(emu, tmp_path, pacer=fast) as drive:
        emu.faults.expire_tokens()
        emu.requests.clear()
        emu.faults.fail("POST", REFRESH_ROUTE, status=502, html="<h1>Bad Gateway</h1>", times=1)
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker, drive)
    assert len(results) == 8
    assert emu.requests.count("POST", REFRESH_ROUTE) == 2


@pytest.mark.anyio
async def test_s2_sign_out_revokes_and_forgets_tokens(emu: EmulatorHandle, tmp_path: Path) -> None:
    """sign_out calls DELETE /session/token and removes the cache file."""
    async with connected(emu, tmp_path) as drive:
        cache = drive.client.token_cache
        await drive.sign_out()
    assert not cache.exists()
    assert emu.requests.count("DELETE", TOKEN_ROUTE) == 1


@pytest.mark.anyio
async def test_secrets_never_reach_logs(emu: EmulatorHandle, tmp_path: Path) -> None:
    """No log event carries the password or a token, through sign-in, upload and refresh."""
    src = tmp_path / "s.bin"
    src.write_bytes(b"x" * 100)
    with capture_logs() as events:
        async with connected(emu, tmp_path) as drive:
            await drive.upload(src, "/s/s.bin", overwrite=False, journal=MemoryJournal(), key="k")
            emu.faults.expire_tokens()
            await drive.capacity()
            token = drive.client._token
    assert token is not None
    text = repr(events)
    assert emu.users[next(iter(emu.users))] not in text
    assert token.access_token not in text
    assert token.refresh_token not in text
    assert token.access_token not in repr(token)


def test_callback_secret_and_signatures_are_redacted() -> None:
    """URLs in logs and errors lose their query and any callback secret."""
    from transfer.client import _strip_query

    assert (
        _strip_query("http://h/api/v4/callback/s3/sid/SECRET")
        == "http://h/api/v4/callback/s3/sid/***"
    )
    assert _strip_query("http://h/api/v4/file/content/e/0/a.txt?sign=abc%3D:1") == (
        "http://h/api/v4/file/content/e/0/a.txt"
    )


@pytest.mark.anyio
async def test_s2_3_proactive_refresh_before_expiry(tmp_path: Path) -> None:
    """A token with less than half its life (or 10 min) left is refreshed before use, no 401."""
    from transfer.client import DriveClient
    from transfer.pacer import Pacer

    async with running_emulator(tmp_path, token_ttl=60) as emu:
        now = [1_000_000.0]
        pacer = Pacer(PacerConfig(min_sleep_s=0.0))
        client = DriveClient(
            remote_config(emu), token_cache=tmp_path / "t.json", pacer=pacer, clock=lambda: now[0]
        )
        async with client:
            await client.ensure_signed_in()
            await client.capacity()
            assert client.refreshes == 0
            now[0] += 40
            await client.capacity()
            assert client.refreshes == 1
        assert emu.requests.count("POST", REFRESH_ROUTE) == 1
        assert emu.requests.count("GET", "/api/v4/user/capacity") == 2


@pytest.mark.anyio
async def test_br16_refresh_ahead_of_a_chunk_longer_than_the_token_has_left(
    tmp_path: Path,
) -> None:
    """With 23 min of token life left, no refresh for quick calls; once chunks take 25 min the
    token is refreshed before the next call instead of expiring mid-chunk."""
    from transfer.client import DriveClient
    from transfer.pacer import Pacer

    async with running_emulator(tmp_path, token_ttl=3600) as emu:
        now = [1_000_000.0]
        pacer = Pacer(PacerConfig(min_sleep_s=0.0))
        client = DriveClient(
            remote_config(emu), token_cache=tmp_path / "t.json", pacer=pacer, clock=lambda: now[0]
        )
        async with client:
            await client.ensure_signed_in()
            now[0] += 2220
            await client.capacity()
            assert client.refreshes == 0
            client.expected_call_s = 1500.0
            await client.capacity()
            assert client.refreshes == 1
        assert emu.requests.count("POST", REFRESH_ROUTE) == 1


@pytest.mark.anyio
async def test_s2_1_s6_4_no_token_to_refresh_storage_or_slave(tmp_path: Path) -> None:
    """Authorization never goes to refresh or content links; the slave gets only its credential."""
    import aiohttp

    seen: list[tuple[str, str, dict[str, str]]] = []

    async def on_start(
        session: aiohttp.ClientSession,
        ctx: object,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        seen.append((params.method, str(params.url), dict(params.headers)))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    trace.freeze()
    async with running_emulator(tmp_path, policy="remote", chunk_size=1024) as emu:
        src = tmp_path / "r.bin"
        src.write_bytes(b"r" * 3000)
        async with connected(emu, tmp_path) as drive:
            for session in (drive.client._api, drive.client._storage):
                session._trace_configs.append(trace)  # type: ignore[union-attr]
            entry = await drive.upload(
                src, "/r/r.bin", overwrite=False, journal=MemoryJournal(), key="k"
            )
            emu.faults.expire_tokens()
            await drive.download(entry, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    refresh = [h for m, u, h in seen if u.endswith("/session/token/refresh")]
    assert refresh
    assert all("Authorization" not in h for h in refresh)
    content = [h for m, u, h in seen if "/file/content/" in u]
    assert content
    assert all("Authorization" not in h for h in content)
    slave = [h for m, u, h in seen if "/slave/upload/" in u]
    assert len(slave) == 3
    for headers in slave:
        assert headers["Authorization"].startswith("Bearer Cr ")
        assert not [k for k in headers if k.lower().startswith("x-cr-")]


@pytest.mark.anyio
async def test_s2_1_short_grouped_totp_secret_signs_in(tmp_path: Path) -> None:
    """An 80-bit secret written in groups, lower case, as apps show it, still signs in."""
    secret = "JBSWY3DPEHPK3PXP"
    grouped = "jbsw y3dp-ehpk 3pxp"
    async with running_emulator(tmp_path, totp_secrets={"admin@example.com": secret}) as emu:
        remote = remote_config(emu, "admin@example.com", totp_secret=grouped)
        async with connected(emu, tmp_path, remote=remote) as drive:
            assert (await drive.capacity()).total > 0


@pytest.mark.anyio
async def test_s2_1_invalid_totp_secret_is_a_typed_auth_error(tmp_path: Path) -> None:
    """A secret that is not base32 is a fatal AuthError naming the problem, not the secret."""
    secret = pyotp.random_base32()
    async with running_emulator(tmp_path, totp_secrets={"admin@example.com": secret}) as emu:
        remote = remote_config(emu, "admin@example.com", totp_secret="not base32!!")
        with pytest.raises(AuthError, match="not valid base32") as info:
            async with connected(emu, tmp_path, remote=remote):
                pass
    assert info.value.fatal
    assert "base32!!" not in str(info.value)
