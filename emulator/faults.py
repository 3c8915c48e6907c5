"""Fault injection and the request log.

Every route served by the app (drivers' storage routes included) passes the fault middleware.
Rules fire on the Nth request matching a method and a path pattern, then ``times`` times in a row:

* answer with an HTTP ``status``, an envelope ``code`` (HTTP 200 unless ``status`` is given), or an
  ``html`` body;
* answer 429 with ``Retry-After`` (``retry_after`` seconds, or an HTTP date when
  ``retry_after_date`` is set);
* ``delay_s`` before handling;
* cut the connection after ``cut_request_after`` bytes of the request body, or after
  ``cut_response_after`` bytes of the response body.

Besides rules: expire all access tokens now, expire an upload session, set a user's quota, make
the next upload completions fail, and cap bandwidth (bytes/s over all request and response bodies
that stream through the emulator).

HTTP API (admin only, same JSON envelope as the rest of the API):

* ``POST /api/v4/admin/faults`` with a rule object (fields of :class:`FaultRule`, ``path`` is
  an ``fnmatch`` glob or a route pattern such as ``/api/v4/file/upload/{id}/{index}``) -> rule id.
* ``GET /api/v4/admin/faults`` lists rules; ``DELETE /api/v4/admin/faults`` clears them.
* ``POST /api/v4/admin/faults/actions`` with ``{"action": "expire_tokens"}``,
  ``{"action": "expire_session", "session_id"}``, ``{"action": "set_quota", "email", "bytes"}``,
  ``{"action": "bandwidth", "bytes_per_s"}`` (0 = unlimited),
  ``{"action": "fail_completions", "count"}`` (the next uploads fail to finish, 50001).
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from aiohttp import web

if TYPE_CHECKING:
    from emulator.core import State

log = structlog.get_logger("emulator.faults")
CUT_RESPONSE_AFTER = web.RequestKey("emulator_cut_response_after", int)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class FaultRule:
    """One injected fault; see the module docstring for the fields' meaning."""

    method: str = "*"
    path: str = "*"
    nth: int = 1
    times: int = 1
    status: int | None = None
    code: int | None = None
    msg: str = "Injected fault"
    html: str | None = None
    retry_after: float | None = None
    retry_after_date: bool = False
    delay_s: float = 0.0
    cut_request_after: int | None = None
    cut_response_after: int | None = None
    id: int = 0
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, path: str, pattern: str) -> bool:
        """True when the rule's method and path pattern match a request."""
        if self.method not in ("*", method.upper()):
            return False
        if _normalise(self.path) == _normalise(pattern):
            return True
        return fnmatch.fnmatchcase(path, self.path)


def _normalise(pattern: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", pattern)


@dataclass(slots=True)
class RequestRecord:
    """One request seen by the emulator; ``status`` is set once the answer is ready.

    ``status`` stays None when the connection was cut or the handler crashed, and ``code`` is
    the envelope code of JSON answers (None for other bodies).
    """

    method: str
    pattern: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    status: int | None = None
    code: int | None = None


@dataclass(slots=True)
class RequestLog:
    """Every request seen, by method and route pattern (``/api/v4/file/upload/{id}/{index}``).

    Route parameter names do not matter when matching: ``{id}`` and ``{session_id}`` are equal.
    """

    records: list[RequestRecord] = field(default_factory=list)

    def add(self, record: RequestRecord) -> None:
        """Record a request."""
        self.records.append(record)

    def matching(self, method: str, pattern: str) -> list[RequestRecord]:
        """Return the requests with this method and route pattern (or fnmatch glob of paths)."""
        want = _normalise(pattern)
        return [
            r
            for r in self.records
            if r.method == method.upper()
            and (_normalise(r.pattern) == want or fnmatch.fnmatchcase(r.path, pattern))
        ]

    def count(self, method: str, pattern: str) -> int:
        """Return how many requests matched."""
        return len(self.matching(method, pattern))

    def param_values(self, method: str, pattern: str, param: str) -> list[str]:
        """Return a route parameter (or query value) of each matching request, in order."""
        return [r.params.get(param, r.query.get(param, "")) for r in self.matching(method, pattern)]

    def statuses(self, method: str, pattern: str) -> list[int | None]:
        """Return the HTTP status of each matching request, in order."""
        return [r.status for r in self.matching(method, pattern)]

    def by_route(self) -> Counter[tuple[str, str]]:
        """Return counts keyed by ``(method, pattern)``."""
        return Counter((r.method, r.pattern) for r in self.records)

    def clear(self) -> None:
        """Forget all recorded requests."""
        self.records.clear()


class Faults:
    """Fault rules and global degradations of one emulator."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self.bytes_per_s = 0
        self.failing_completions = 0
        self._next_id = 1
        self._state: State | None = None

    def bind(self, st: State) -> None:
        """Attach the emulator state (for token, session and quota actions)."""
        self._state = st

    def add(self, rule: FaultRule | None = None, **fields: Any) -> FaultRule:
        """Add a rule (a :class:`FaultRule` or its fields) and return it."""
        rule = rule or FaultRule(**fields)
        if rule.nth < 1 or rule.times < 1:
            raise ValueError("nth and times must be at least 1")
        rule.method = rule.method.upper()
        rule.id = self._next_id
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def fail(self, method: str, path: str, **fields: Any) -> FaultRule:
        """Shorthand for :meth:`add` with a method and path pattern."""
        return self.add(method=method, path=path, **fields)

    def clear(self) -> None:
        """Remove every rule and the bandwidth cap."""
        self.rules.clear()
        self.bytes_per_s = 0
        self.failing_completions = 0

    def _st(self) -> State:
        if self._state is None:
            raise RuntimeError("faults are not bound to a running emulator")
        return self._state

    def expire_tokens(self) -> None:
        """Make every access token issued so far count as expired (requests become anonymous)."""
        st = self._st()
        st.store.tokens_not_before = st.clock.now() + 1e-6
        log.info("fault_injected", kind="expire_tokens")

    def expire_session(self, session_id: str) -> bool:
        """Expire one upload session now; False when unknown."""
        from emulator.upload import UploadCore

        done = UploadCore(self._st()).expire(session_id)
        log.info("fault_injected", kind="expire_session", session_id=session_id, found=done)
        return done

    def set_quota(self, email: str, quota_bytes: int) -> None:
        """Set a user's quota in bytes."""
        st = self._st()
        user = st.store.user_by_email(email)
        if user is None:
            raise ValueError(f"unknown user {email}")
        st.store.update_user(user.id, quota=quota_bytes)
        log.info("fault_injected", kind="set_quota", quota_bytes=quota_bytes)

    def fail_completions(self, count: int = 1) -> None:
        """Make the next ``count`` upload completions fail with 50001 (contract 6.4)."""
        self.failing_completions = max(0, count)
        log.info("fault_injected", kind="fail_completions", count=count)

    def take_completion_failure(self) -> bool:
        """Consume one pending completion failure; True when this completion must fail."""
        if self.failing_completions <= 0:
            return False
        self.failing_completions -= 1
        log.warning("fault_injected", kind="completion_failed")
        return True

    def cap_bandwidth(self, bytes_per_s: int) -> None:
        """Cap streamed body bandwidth (0 = unlimited)."""
        self.bytes_per_s = max(0, bytes_per_s)
        log.info("fault_injected", kind="bandwidth", bytes_per_s=self.bytes_per_s)

    async def throttle(self, nbytes: int) -> None:
        """Sleep as long as ``nbytes`` take under the bandwidth cap."""
        if self.bytes_per_s:
            await anyio.sleep(nbytes / self.bytes_per_s)

    def pick(self, method: str, path: str, pattern: str) -> FaultRule | None:
        """Count a request against the rules and return the one that fires, if any."""
        chosen = None
        for rule in self.rules:
            if not rule.matches(method, path, pattern):
                continue
            rule.seen += 1
            if chosen is None and rule.seen >= rule.nth and rule.fired < rule.times:
                rule.fired += 1
                chosen = rule
        return chosen


def route_pattern(request: web.Request) -> str:
    """Return the route pattern a request matched (its path when no route matched)."""
    resource = request.match_info.route.resource
    if resource is None:
        return request.path
    return resource.canonical


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record the request and apply the first firing fault rule."""
    from emulator.core import STATE

    st = request.app[STATE]
    pattern = route_pattern(request)
    record = RequestRecord(
        method=request.method,
        pattern=pattern,
        path=request.path,
        params=dict(request.match_info),
        query=dict(request.query),
    )
    st.requests.add(record)
    try:
        response = await _apply(
            request, handler, st.faults.pick(request.method, request.path, pattern)
        )
    except web.HTTPException as exc:
        record.status = exc.status
        raise
    record.status = response.status
    if isinstance(response, web.Response) and response.content_type == "application/json":
        record.code = _envelope_code(response.body)
    return response


def _envelope_code(body: Any) -> int | None:
    if not isinstance(body, bytes):
        return None
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


async def _apply(
    request: web.Request, handler: Handler, rule: FaultRule | None
) -> web.StreamResponse:
    if rule is None:
        return await handler(request)
    log.warning("fault_injected", rule_id=rule.id, method=request.method, path=request.path)
    if rule.delay_s:
        await anyio.sleep(rule.delay_s)
    if rule.cut_request_after is not None:
        await request.content.read(rule.cut_request_after)
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)
    if rule.cut_response_after is not None:
        request[CUT_RESPONSE_AFTER] = rule.cut_response_after
        response = await handler(request)
        if isinstance(response, web.Response) and response.body is not None:
            return await _cut(request, response, rule.cut_response_after)
        return response
    answer = _answer(rule)
    if answer is not None:
        return answer
    return await handler(request)


async def _cut(request: web.Request, response: web.Response, after: int) -> web.StreamResponse:
    body = response.body
    raw = body if isinstance(body, bytes) else b""
    cut = web.StreamResponse(status=response.status, headers=response.headers)
    cut.content_length = len(raw)
    await cut.prepare(request)
    await cut.write(raw[:after])
    if request.transport is not None:
        request.transport.abort()
    return cut


def _answer(rule: FaultRule) -> web.Response | None:
    if rule.retry_after is not None:
        value = (
            formatdate(time.time() + rule.retry_after, usegmt=True)
            if rule.retry_after_date
            else str(int(rule.retry_after))
        )
        return web.Response(
            status=rule.status or 429, text="Too Many Requests", headers={"Retry-After": value}
        )
    if rule.html is not None:
        return web.Response(status=rule.status or 502, text=rule.html, content_type="text/html")
    if rule.code is not None:
        body = {"code": rule.code, "msg": rule.msg, "correlation_id": "fault-injected"}
        return web.json_response(body, status=rule.status or 200)
    if rule.status is not None:
        return web.Response(status=rule.status, text=f"{rule.status} injected fault")
    return None


def rule_json(rule: FaultRule) -> dict[str, Any]:
    """Return a rule as JSON."""
    return asdict(rule)


routes = web.RouteTableDef()


def _admin_state(request: web.Request) -> State:
    from emulator.core import STATE
    from emulator.session import require_admin

    require_admin(request)
    return request.app[STATE]


@routes.post("/api/v4/admin/faults")
async def add_rule(request: web.Request) -> web.Response:
    """Add a fault rule (admin only); answers the rule with its id."""
    from emulator import errors
    from emulator.core import ok, read_json

    st = _admin_state(request)
    body = await read_json(request)
    allowed = {f for f in FaultRule.__dataclass_fields__ if f not in ("id", "seen", "fired")}
    unknown = set(body) - allowed
    if unknown:
        raise errors.param_error(f"Unknown fault fields: {sorted(unknown)}")
    try:
        rule = st.faults.add(FaultRule(**body))
    except (TypeError, ValueError) as exc:
        raise errors.param_error(str(exc)) from exc
    return ok(rule_json(rule))


@routes.get("/api/v4/admin/faults")
async def list_rules(request: web.Request) -> web.Response:
    """List fault rules (admin only)."""
    from emulator.core import ok

    st = _admin_state(request)
    return ok([rule_json(r) for r in st.faults.rules])


@routes.delete("/api/v4/admin/faults")
async def clear_rules(request: web.Request) -> web.Response:
    """Remove every fault rule and the bandwidth cap (admin only)."""
    from emulator.core import ok

    _admin_state(request).faults.clear()
    return ok()


@routes.post("/api/v4/admin/faults/actions")
async def run_action(request: web.Request) -> web.Response:
    """Run a one-off fault action (admin only); see the module docstring."""
    from emulator import errors
    from emulator.core import field_int, field_str, ok, read_json

    st = _admin_state(request)
    body = await read_json(request)
    action = field_str(body, "action", required=True)
    if action == "expire_tokens":
        st.faults.expire_tokens()
    elif action == "expire_session":
        if not st.faults.expire_session(field_str(body, "session_id", required=True)):
            raise errors.ApiError(errors.NOT_FOUND, "Upload session not found")
    elif action == "set_quota":
        try:
            st.faults.set_quota(
                field_str(body, "email", required=True), field_int(body, "bytes", minimum=0)
            )
        except ValueError as exc:
            raise errors.ApiError(errors.NOT_FOUND, str(exc)) from exc
    elif action == "fail_completions":
        st.faults.fail_completions(field_int(body, "count", 1, minimum=0))
    elif action == "bandwidth":
        st.faults.cap_bandwidth(field_int(body, "bytes_per_s", minimum=0))
    else:
        raise errors.param_error(f"Unknown fault action: {action}")
    return ok()
