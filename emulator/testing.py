"""In-process emulator for tests: ``async with running_emulator(tmp_path) as emu: ...``.

The handle gives the base ``url``, the ``users`` (email -> password, the first one is the admin
unless ``admins`` says otherwise), the fault API (``faults``), the ``store`` for assertions, the
``requests`` log and the ``clock`` (``emu.clock.advance(3600)`` expires tokens, sessions, locks
and URLs without waiting).

Faults (see ``emulator.faults``)::

    emu.faults.fail("POST", "/api/v4/file/upload/{id}/{index}", nth=2, status=502)
    emu.faults.fail("GET", "/api/v4/file", retry_after=7)           # 429 + Retry-After
    emu.faults.fail("PUT", "/api/v4/file/upload", code=40051)       # HTTP 200 + code
    emu.faults.fail("GET", "/api/v4/file/content/*", cut_response_after=1000)
    emu.faults.expire_tokens(); emu.faults.expire_session(session_id)
    emu.faults.set_quota(email, 10); emu.faults.cap_bandwidth(1 << 20)
    emu.faults.fail_completions(1)

Request log::

    emu.requests.param_values("POST", "/api/v4/file/upload/{id}/{index}", "index")  # ["0", "1"]
    emu.requests.statuses("POST", "/api/v4/file/upload/{id}/{index}")             # [200, 502]
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.app import DriverOpener, policy_by_type, serve
from emulator.config import Clock, EmulatorConfig
from emulator.core import State
from emulator.faults import Faults, RequestLog
from emulator.policy import PolicyInfo
from emulator.store import FileRow, Store, User

DEFAULT_USERS: Mapping[str, str] = {
    "admin@example.com": "admin-password",
    "user@example.com": "user-password",
}


@dataclass(slots=True)
class EmulatorHandle:
    """A running in-process emulator."""

    url: str
    users: dict[str, str]
    faults: Faults
    store: Store
    requests: RequestLog
    clock: Clock
    state: State

    @property
    def api(self) -> str:
        """The ``/api/v4`` base URL."""
        return self.url + "/api/v4"

    def user(self, email: str) -> User:
        """Return a user by email."""
        found = self.store.user_by_email(email)
        if found is None:
            raise KeyError(email)
        return found

    def policy(self, kind: str) -> PolicyInfo:
        """Return the seeded policy of a type name (``local``, ``relay``, ``remote``, ``s3``...)."""
        return policy_by_type(self.state, kind)

    def use_policy(self, email: str, folder: str, kind: str) -> FileRow:
        """Make uploads under ``folder`` (created if missing) of a user use a policy type."""
        user = self.user(email)
        item = self.store.mkdirs(user.id, folder)
        self.store.set_folder_policy(item, self.policy(kind).id)
        return item

    def file(self, email: str, path: str) -> FileRow | None:
        """Return the item at a decoded path of a user's drive, or None."""
        return self.store.lookup(self.user(email).id, path)


@asynccontextmanager
async def running_emulator(
    tmp_path: Path,
    users: Mapping[str, str] | None = None,
    policy: str = "local",
    drivers: DriverOpener | None = None,
    **opts: Any,
) -> AsyncIterator[EmulatorHandle]:
    """Run an emulator on a free loopback port with data under ``tmp_path``.

    ``drivers`` replaces ``emulator.policies.open_drivers`` (e.g. a fake driver for a test).

    ``opts`` are further :class:`emulator.config.EmulatorConfig` fields (``chunk_size``,
    ``quota``, ``server_version``, ``session_ttl``, ``admins``, ``totp_secrets``...).
    """
    accounts = dict(users if users is not None else DEFAULT_USERS)
    for key in ("admins", "totp_secrets"):
        if key in opts:
            value = opts[key]
            opts[key] = tuple(value.items()) if isinstance(value, Mapping) else tuple(value)
    config = EmulatorConfig(
        data_dir=Path(tmp_path) / "emulator",
        host="127.0.0.1",
        port=0,
        users=tuple(accounts.items()),
        policy=policy,
        **opts,
    )
    async with serve(config, drivers=drivers) as running:
        st = running.state
        yield EmulatorHandle(
            url=running.url,
            users=accounts,
            faults=st.faults,
            store=st.store,
            requests=st.requests,
            clock=st.clock,
            state=st,
        )
