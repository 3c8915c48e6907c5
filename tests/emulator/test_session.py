"""Sign-in, 2FA, refresh and sign-out (contract 2.1-2.3)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pyotp
import pytest

from emulator.testing import EmulatorHandle, running_emulator
from tests.emulator.apiclient import Api
from tests.emulator.conftest import USER, no_drivers

pytestmark = pytest.mark.anyio


async def test_s2_1_prepare_knows_registered_emails_only(api: Api) -> None:
    """``/session/prepare`` reports password sign-in for a user and 404 for an unknown email."""
    data = await api.ok("GET", "/session/prepare", params={"email": USER}, auth=False)
    assert data == {"webauthn_enabled": False, "password_enabled": True}
    _, body = await api.call("GET", "/session/prepare", params={"email": "x@y.z"}, auth=False)
    assert body["code"] == 404


async def test_s2_1_wrong_password_is_40080(api: Api) -> None:
    """A wrong password is 40080; a too short one fails validation without correlation id."""
    _, body = await api.call(
        "POST", "/session/token", json={"email": USER, "password": "wrong-pass"}, auth=False
    )
    assert body["code"] == 40080
    assert "correlation_id" in body
    _, body = await api.call(
        "POST", "/session/token", json={"email": USER, "password": "abc"}, auth=False
    )
    assert body["code"] == 40001
    assert "correlation_id" not in body


async def test_s2_2_login_response_shape(api: Api, emu: EmulatorHandle) -> None:
    """Sign-in answers the user and a token pair with RFC 3339 expiry times."""
    data = await api.sign_in(USER, emu.users[USER])
    assert data["user"]["email"] == USER
    assert data["user"]["group"]["name"] == "User"
    token = data["token"]
    assert set(token) == {"access_token", "refresh_token", "access_expires", "refresh_expires"}
    assert "T" in token["access_expires"]


async def test_s2_1_two_factor_sign_in(tmp_path: Path) -> None:
    """With 2FA the password step answers 203 + session id; a wrong OTP is 40022."""
    secret = pyotp.random_base32()
    async with (
        running_emulator(tmp_path, totp_secrets={USER: secret}, drivers=no_drivers) as emu,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, emu.url)
        _, body = await api.call(
            "POST", "/session/token", json={"email": USER, "password": emu.users[USER]}
        )
        assert body["code"] == 203
        session_id = body["data"]
        _, body = await api.call(
            "POST", "/session/token/2fa", json={"otp": "000000", "session_id": session_id}
        )
        assert body["code"] == 40022
        otp = pyotp.TOTP(secret).at(int(emu.clock.now()))
        data = await api.ok(
            "POST", "/session/token/2fa", json={"otp": otp, "session_id": session_id}
        )
        assert data["user"]["email"] == USER
        _, body = await api.call(
            "POST", "/session/token/2fa", json={"otp": otp, "session_id": "nope"}
        )
        assert body["code"] == 404


async def test_s2_2_refresh_gives_new_pair_and_old_token_stays_valid(api: Api) -> None:
    """Refresh answers a Token only; the old refresh token can be used again."""
    old = api.refresh_token
    first = await api.ok("POST", "/session/token/refresh", json={"refresh_token": old}, auth=False)
    assert set(first) == {"access_token", "refresh_token", "access_expires", "refresh_expires"}
    second = await api.ok("POST", "/session/token/refresh", json={"refresh_token": old}, auth=False)
    assert second["access_token"]
    api.token = first["access_token"]
    await api.ok("GET", "/user/me")


async def test_s2_1_sign_out_revokes_the_whole_family(api: Api) -> None:
    """Sign-out revokes every refresh token of the sign-in; access tokens live on."""
    root = api.refresh_token
    child = (await api.ok("POST", "/session/token/refresh", json={"refresh_token": root}))[
        "refresh_token"
    ]
    await api.ok("DELETE", "/session/token", json={"refresh_token": child})
    for token in (root, child):
        _, body = await api.call("POST", "/session/token/refresh", json={"refresh_token": token})
        assert body["code"] == 40020
    await api.ok("GET", "/user/me")


async def test_s2_3_refresh_token_as_access_is_40020(api: Api) -> None:
    """A refresh token in the Authorization header is 40020."""
    api.token = api.refresh_token
    _, body = await api.call("GET", "/user/me")
    assert body["code"] == 40020


async def test_s2_3_expired_access_token_is_anonymous(api: Api, emu: EmulatorHandle) -> None:
    """An expired token is anonymous: 401 on login routes and ``my``, public routes work."""
    emu.clock.advance(3601)
    _, body = await api.call("GET", "/user/me")
    assert body["code"] == 401
    _, body = await api.call("GET", "/file", params={"uri": "cloudreve://my"})
    assert body["code"] == 401
    assert await api.ok("GET", "/site/ping") == "4.18.0"
    config = await api.ok("GET", "/site/config/basic")
    assert config["user"]["anonymous"] is True


async def test_s2_3_garbage_token_is_anonymous(api: Api) -> None:
    """An unparsable bearer token is anonymous, not an error, on public routes."""
    api.token = "not-a-jwt"
    assert await api.ok("GET", "/site/ping") == "4.18.0"
    _, body = await api.call("GET", "/user/capacity")
    assert body["code"] == 401


async def test_s2_3_fault_expires_all_access_tokens(api: Api, emu: EmulatorHandle) -> None:
    """The expire-tokens fault makes issued access tokens anonymous; refresh still works."""
    emu.faults.expire_tokens()
    _, body = await api.call("GET", "/user/me")
    assert body["code"] == 401
    data = await api.ok("POST", "/session/token/refresh", json={"refresh_token": api.refresh_token})
    api.token = data["access_token"]
    await api.ok("GET", "/user/me")


async def test_s2_2_refresh_expires_with_refresh_ttl(api: Api, emu: EmulatorHandle) -> None:
    """A refresh token past its 14-day TTL is 40020."""
    emu.clock.advance(1209601)
    _, body = await api.call(
        "POST", "/session/token/refresh", json={"refresh_token": api.refresh_token}
    )
    assert body["code"] == 40020


async def test_s9_2_password_change_invalidates_refresh_tokens(
    api: Api, emu: EmulatorHandle
) -> None:
    """Changing the password makes every earlier refresh token fail with 40020."""
    await api.ok(
        "PATCH",
        "/user/setting",
        json={"current_password": emu.users[USER], "new_password": "brand-new-pass"},
    )
    _, body = await api.call(
        "POST", "/session/token/refresh", json={"refresh_token": api.refresh_token}
    )
    assert body["code"] == 40020
    await api.sign_in(USER, "brand-new-pass")


async def test_s2_3_banned_user_token_is_50001(api: Api, emu: EmulatorHandle) -> None:
    """A valid token of a user who is no longer active gives 50001 even on public routes."""
    emu.store.update_user(emu.user(USER).id, status="manual_banned")
    _, body = await api.call("GET", "/site/ping")
    assert body["code"] == 50001


def _claims(token: str) -> dict:
    import base64
    import json

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


async def test_s2_2_refresh_keeps_the_root_token_id(api: Api) -> None:
    """A refreshed pair carries the same root_token_id; token types are access/refresh."""
    data = await api.ok("POST", "/session/token/refresh", json={"refresh_token": api.refresh_token})
    old, new = _claims(api.refresh_token), _claims(data["refresh_token"])
    assert new["root_token_id"] == old["root_token_id"]
    assert new["token_type"] == "refresh"
    assert _claims(data["access_token"])["token_type"] == "access"
    assert new["sub"] == old["sub"]


async def test_s2_admin_flag_selects_the_admin_user(tmp_path: Path) -> None:
    """``admins`` picks the admin; otherwise the first user is the admin."""
    users = {"a@example.com": "password-a", "b@example.com": "password-b"}
    async with (
        running_emulator(
            tmp_path, users=users, admins=["b@example.com"], drivers=no_drivers
        ) as emu,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, emu.url)
        first = await api.sign_in("a@example.com", "password-a")
        second = await api.sign_in("b@example.com", "password-b")
        assert (first["user"]["group"]["name"], second["user"]["group"]["name"]) == (
            "User",
            "Admin",
        )
        assert (await api.ok("GET", "/user/capacity"))["total"] == 1 << 40
