"""The emulator's aiohttp application and the context manager that runs it on a port.

:func:`serve` builds the state (store, clock, faults), opens the storage-policy drivers
(``emulator.policies.open_drivers``) for the app's lifetime, mounts every route (the drivers' own
storage routes included), seeds policies and users from the config, binds the port and yields a
:class:`Running` handle. Optional modules ``emulator.workflow`` and ``emulator.thumbs`` are set up
when present.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web

from emulator import callbacks, content, errors, faults, files, session, site, upload, user
from emulator.config import Clock, EmulatorConfig
from emulator.core import STATE, State, error_response
from emulator.errors import ApiError
from emulator.faults import Faults, RequestLog, fault_middleware
from emulator.policies import open_drivers
from emulator.policy import PolicyDriver, PolicyInfo, UploadHost
from emulator.store import Store
from emulator.upload import DEFAULT_LOCAL_CHUNK, UPLOADS, UploadCore

log = structlog.get_logger("emulator.app")
OPTIONAL_MODULES = ("emulator.workflow", "emulator.thumbs")


@web.middleware
async def error_middleware(request: web.Request, handler: faults.Handler) -> web.StreamResponse:
    """Turn API errors into envelopes and unknown routes into gin's ``404 page not found``.

    Like the real server's ``CurrentUser`` middleware, every ``/api/v4`` request resolves its
    bearer token first, so a token of an inactive user fails even on public routes (2.3).
    """
    try:
        if request.path.startswith("/api/v4/"):
            session.current_user(request)
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return web.Response(status=404, text="404 page not found")
    except web.HTTPException:
        raise
    except ConnectionError as exc:
        # The client went away mid-request (killed, or it gave up): nothing to answer.
        log.info("client_disconnected", path=request.path, error=str(exc) or type(exc).__name__)
        return error_response(request, ApiError(errors.NOT_SET, ""))
    except Exception as exc:
        log.exception("request_failed", path=request.path, error=str(exc))
        return error_response(request, ApiError(errors.NOT_SET, ""))


def create_app(st: State, core: UploadCore) -> web.Application:
    """Build the application around a prepared state (drivers already opened)."""
    app = web.Application(middlewares=[fault_middleware, error_middleware], client_max_size=0)
    app[STATE] = st
    app[UPLOADS] = core
    for table in (
        site.routes,
        session.routes,
        files.routes,
        upload.routes,
        content.routes,
        user.routes,
        faults.routes,
    ):
        app.router.add_routes(table)
    app.router.add_routes(callbacks.routes())
    for driver in st.drivers.values():
        app.router.add_routes(list(driver.routes()))
    for name in OPTIONAL_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).setup(app)

    return app


def seed(st: State) -> None:
    """Create one policy per type and the configured users (idempotent across restarts)."""
    cfg = st.config
    existing = {p.name: p for p in st.store.policies()}
    by_type: dict[str, PolicyInfo] = {}
    for kind in (
        "local",
        "remote",
        "relay",
        "s3",
        "onedrive",
        "cos",
        "obs",
        "oss",
        "qiniu",
        "upyun",
        "ks3",
    ):
        name = f"Default {kind} policy"
        if name in existing:
            by_type[kind] = existing[name]
            continue
        real_type = kind
        if kind == "relay":
            real_type = "s3" if "s3" in st.drivers else "local"
        chunk = cfg.chunk_size
        if kind in ("local", "remote") and not chunk:
            chunk = DEFAULT_LOCAL_CHUNK
        by_type[kind] = st.store.create_policy(
            real_type,
            name=name,
            chunk_size=chunk,
            chunk_concurrency=cfg.chunk_concurrency,
            relay=kind == "relay",
        )
    default = by_type[cfg.policy]
    totp = dict(cfg.totp_secrets)
    for pos, (email, password) in enumerate(cfg.users):
        found = st.store.user_by_email(email)
        if found is not None:
            continue
        admin = email in cfg.admins or (not cfg.admins and pos == 0)
        st.store.create_user(
            email,
            password,
            admin=admin,
            policy_id=default.id,
            quota=cfg.quota,
            totp_secret=totp.get(email, ""),
        )


def policy_by_type(st: State, kind: str) -> PolicyInfo:
    """Return the seeded policy of a type name (``local``, ``relay``, ``s3``...)."""
    for policy in st.store.policies():
        if policy.name == f"Default {kind} policy":
            return policy
    raise KeyError(kind)


@dataclass(slots=True)
class Running:
    """A running emulator."""

    url: str
    state: State
    app: web.Application


DriverOpener = Callable[[UploadHost, Path], AbstractAsyncContextManager[dict[str, PolicyDriver]]]


@asynccontextmanager
async def serve(
    config: EmulatorConfig,
    clock: Clock | None = None,
    drivers: DriverOpener | None = None,
) -> AsyncIterator[Running]:
    """Run an emulator on ``config.host:config.port`` (0 = a free port) until the block exits.

    ``drivers`` replaces ``emulator.policies.open_drivers`` (tests plug fake drivers in).
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    clock = clock or Clock()
    store = Store(config.data_dir, clock)
    st = State(config=config, clock=clock, store=store, faults=Faults(), requests=RequestLog())
    st.faults.bind(st)
    core = UploadCore(st)
    try:
        opener = (
            drivers(core, config.data_dir)
            if drivers is not None
            else open_drivers(core, config.data_dir, clock=clock.now)
        )
        async with opener as opened:
            st.drivers.update(opened)
            store.drivers = st.drivers
            seed(st)
            app = create_app(st, core)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            try:
                tcp = web.TCPSite(runner, config.host, config.port)
                await tcp.start()
                port = _bound_port(tcp, config.port)
                st.site_url = f"http://{config.host}:{port}"
                log.info("emulator_started", url=st.site_url)
                yield Running(url=st.site_url, state=st, app=app)
            finally:
                await runner.cleanup()
    finally:
        store.close()


def _bound_port(tcp: web.TCPSite, fallback: int) -> int:
    server = tcp._server  # aiohttp keeps the listening sockets on the site's server
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return fallback
