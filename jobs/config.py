"""Loads the ferry TOML file into one frozen :class:`AppConfig`; contacts nothing.

Every problem becomes a :class:`~jobs.errors.ConfigIssue` naming the file, the line and the
dotted key (``jobs[2].exclude``). ``tomllib`` reports no positions for keys, so
:class:`_Locator` scans the source text for table headers and ``key =`` lines.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from jobs.errors import ConfigError, ConfigIssue
from jobs.spec import REMOTE_RE as _REMOTE_RE
from jobs.spec import DefaultsSpec, Endpoint, JobSpec, RemoteSpec, StateSpec, parse_endpoint
from jobs.units import parse_size

__all__ = ["AppConfig", "load_config"]

_TOP_LEVEL = ("remotes", "state", "defaults", "jobs")
_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_RE = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_TOML_POS_RE = re.compile(r"\(at line (\d+), column (\d+)\)")

Loc = tuple[str | int, ...]
_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")


def _split_dotted(text: str) -> tuple[str, ...]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return tuple(p[1:-1] if p[0] in "\"'" else p for p in parts)


class _Locator:
    """Finds the line of a table or key in TOML source text (1-based; 1 when unknown)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Loc, int] = {}
        section: Loc = ()
        jobs_seen = 0
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER_RE.match(line)
            if header and not _KEY_RE.match(line):
                names = _split_dotted(header[2])
                section = names
                if header[1] == "[[" and names == ("jobs",):
                    section = ("jobs", jobs_seen)
                    jobs_seen += 1
                self.lines.setdefault(section, number)
                continue
            key = _KEY_RE.match(line)
            if key:
                self.lines.setdefault(section + _split_dotted(key[1]), number)

    def line(self, loc: Loc) -> int:
        """Return the line of the longest known prefix of ``loc``."""
        for end in range(len(loc), 0, -1):
            number = self.lines.get(loc[:end])
            if number is not None:
                return number
        return 1


def _key_name(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(file)"


@dataclass(frozen=True, slots=True)
class AppConfig:
    """The whole config file, validated. ``jobs`` keep the file's order."""

    file: Path
    remotes: Mapping[str, RemoteSpec]
    state_dir: Path
    jobs: tuple[JobSpec, ...]
    _locator: _Locator = field(repr=False, compare=False)

    def job(self, name: str) -> JobSpec | None:
        """Return the job called ``name``, or None."""
        return next((job for job in self.jobs if job.name == name), None)

    def issue(self, loc: Sequence[str | int], message: str) -> ConfigIssue:
        """Build an issue located at ``loc`` (``("remotes", "home", "password_env")``)."""
        return ConfigIssue(
            self.file, self._locator.line(tuple(loc)), _key_name(tuple(loc)), message
        )


class _Collector:
    def __init__(self, file: Path, locator: _Locator) -> None:
        self.file = file
        self.locator = locator
        self.issues: list[ConfigIssue] = []

    def add(self, loc: Loc, message: str, line_loc: Loc | None = None) -> None:
        line = self.locator.line(line_loc if line_loc is not None else loc)
        self.issues.append(ConfigIssue(self.file, line, _key_name(loc), message))

    def validate(
        self,
        model: type[_M],
        data: object,
        loc: Loc,
        context: dict[str, Any],
        skip: frozenset[str] = frozenset(),
    ) -> _M | None:
        """Validate ``data`` as ``model``; report each error not under a key in ``skip``."""
        return self.validate_fields(model, data, loc, context, skip)[0]

    def validate_fields(
        self,
        model: type[_M],
        data: object,
        loc: Loc,
        context: dict[str, Any],
        skip: frozenset[str] = frozenset(),
    ) -> tuple[_M | None, frozenset[str]]:
        """Like :meth:`validate`, and also return the top-level keys that failed."""
        try:
            return model.model_validate(data, context=context), frozenset()
        except ValidationError as exc:
            broken: set[str] = set()
            for error in exc.errors():
                err_loc = tuple(error["loc"])
                if err_loc:
                    broken.add(str(err_loc[0]))
                if err_loc and err_loc[0] in skip:
                    continue
                message = _message(error["type"], error["msg"])
                line_loc = loc if error["type"] == "missing" else loc + err_loc
                self.add(loc + err_loc, message, line_loc)
            return None, frozenset(broken)


def _message(kind: str, text: str) -> str:
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    return text.removeprefix("Value error, ")


def load_config(path: Path, default_state_dir: Path) -> AppConfig:
    """Read and validate the config file at ``path``.

    Args:
        path: the TOML file.
        default_state_dir: where state lives when ``[state] path`` is not set.

    Raises:
        ConfigError: the file is unreadable, not TOML, or any key is invalid; every problem
            found is listed, each with its file, line and key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(path, 0, "(file)", f"cannot read: {exc}")]) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_issue(path, text, exc)]) from exc

    locator = _Locator(text)
    collect = _Collector(path, locator)
    context = {"base": path.parent.resolve()}
    for key in raw:
        if key not in _TOP_LEVEL:
            collect.add((key,), f"unknown table or key (expected one of {', '.join(_TOP_LEVEL)})")

    remotes = _load_remotes(raw.get("remotes", {}), collect, context)
    state = collect.validate(StateSpec, raw.get("state", {}), ("state",), context)
    defaults_raw = raw.get("defaults", {})
    defaults_ok = collect.validate(DefaultsSpec, defaults_raw, ("defaults",), context)
    jobs, views = _load_jobs(
        raw.get("jobs", []), defaults_raw, defaults_ok is not None, collect, context
    )
    _check_remote_refs(raw.get("jobs", []), raw.get("remotes", {}), collect)
    _check_jobs(views, collect)
    if collect.issues:
        raise ConfigError(sorted(collect.issues, key=lambda issue: issue.line))
    state_dir = state.path if state is not None and state.path is not None else default_state_dir

    return AppConfig(path, remotes, state_dir, tuple(jobs), locator)


def _syntax_issue(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> ConfigIssue:
    match = _TOML_POS_RE.search(str(exc))
    line = int(match[1]) if match else 1
    lines = text.splitlines()
    key = _KEY_RE.match(lines[line - 1]) if 0 < line <= len(lines) else None
    name = ".".join(_split_dotted(key[1])) if key else "(syntax)"

    return ConfigIssue(path, line, name, f"not valid TOML: {exc}")


def _load_remotes(
    raw: object, collect: _Collector, context: dict[str, Any]
) -> dict[str, RemoteSpec]:
    if not isinstance(raw, dict):
        collect.add(("remotes",), "expected a table of [remotes.NAME] sections")
        return {}
    remotes: dict[str, RemoteSpec] = {}
    for name, body in raw.items():
        loc: Loc = ("remotes", name)
        if not re.match(r"^[A-Za-z][A-Za-z0-9_-]*$", name):
            collect.add(
                loc, "remote names use letters, digits, '-' and '_' and start with a letter"
            )
            continue
        if isinstance(body, dict) and "password" in body:
            collect.add(
                (*loc, "password"),
                "secrets are never read from the config file: use password_env or password_command",
            )
            body = {k: v for k, v in body.items() if k != "password"}
        # Checked on the keys present, so that it is reported together with any bad value.
        one_secret = not isinstance(body, dict) or (
            ("password_env" in body) != ("password_command" in body)
        )
        if not one_secret:
            collect.add(loc, "set exactly one of password_env or password_command")
        spec = collect.validate(RemoteSpec, body, loc, context)
        if spec is not None and one_secret:
            remotes[name] = spec

    return remotes


def _load_jobs(
    raw: object,
    defaults: object,
    defaults_ok: bool,
    collect: _Collector,
    context: dict[str, Any],
) -> tuple[list[JobSpec], list[_JobView]]:
    """Validate every job; return the valid ones and a view of each job for the rules."""
    if not isinstance(raw, list):
        collect.add(("jobs",), "expected [[jobs]] entries")
        return [], []
    base = defaults if isinstance(defaults, dict) and defaults_ok else {}
    jobs: list[JobSpec] = []
    views: list[_JobView] = []
    for index, body in enumerate(raw):
        loc: Loc = ("jobs", index)
        if not isinstance(body, dict):
            collect.add(loc, "expected a [[jobs]] table")
            continue
        inherited = frozenset(k for k in base if k not in body)
        merged = {**base, **body}
        spec, broken = collect.validate_fields(JobSpec, merged, loc, context, skip=inherited)
        if spec is not None:
            jobs.append(spec)
        views.append(_JobView.build(loc, merged, frozenset(body), broken, context["base"]))

    return jobs, views


@dataclass(frozen=True, slots=True)
class _JobView:
    """What the cross-field rules read of one job: each field whose own value is valid.

    A field that is unset, or broken (already reported), is None, so a job with bad fields is
    still checked for every rule its good fields allow.
    """

    loc: Loc
    own: frozenset[str]
    name: str | None
    kind: str | None
    mode: str | None
    source: Endpoint | None
    target: Endpoint | None
    min_size: int | None
    max_size: int | None
    thumbnails: bool
    follow_symlinks: bool

    @classmethod
    def build(
        cls,
        loc: Loc,
        merged: dict[str, object],
        own: frozenset[str],
        broken: frozenset[str],
        base: Path,
    ) -> _JobView:
        """Read the fields of ``merged`` (defaults and job keys) that are not ``broken``;
        ``own`` are the keys the job sets itself."""

        def good(key: str) -> object:
            return None if key in broken else merged.get(key)

        def parsed(key: str, parse: Callable[[Any], _T]) -> _T | None:
            value = good(key)
            return None if value is None else parse(value)

        mode = good("mode")

        return cls(
            loc=loc,
            own=own,
            name=parsed("name", str),
            kind=parsed("kind", str),
            mode=None if "mode" in broken else str(mode or "copy"),
            source=parsed("source", lambda text: parse_endpoint(text, base)),
            target=parsed("target", lambda text: parse_endpoint(text, base)),
            min_size=parsed("min_size", parse_size),
            max_size=parsed("max_size", parse_size),
            thumbnails=good("thumbnails") not in (None, False),
            follow_symlinks=good("follow_symlinks") is True,
        )

    @property
    def uploads(self) -> bool | None:
        """True when the job copies local files to a drive; None when its sides are unknown."""
        if self.kind in ("upload", "download"):
            return self.kind == "upload"
        if self.kind != "sync" or self.source is None or self.target is None:
            return None
        if self.source.is_remote == self.target.is_remote:
            return None
        return self.target.is_remote


def _check_jobs(views: list[_JobView], collect: _Collector) -> None:
    seen: set[str] = set()
    for job in views:
        if job.name is not None:
            if job.name in seen:
                collect.add((*job.loc, "name"), f"duplicate job name {job.name!r}")
            seen.add(job.name)
        _check_direction(job, collect)
        if job.mode == "mirror" and job.kind in ("upload", "download"):
            collect.add((*job.loc, "mode"), 'mode = "mirror" applies to kind = "sync" only')
        if job.min_size is not None and job.max_size is not None and job.min_size > job.max_size:
            collect.add((*job.loc, "min_size"), "min_size is larger than max_size")
        _check_applies(job, collect)


def _check_applies(job: _JobView, collect: _Collector) -> None:
    """Report keys a job sets itself that do nothing for its kind.

    ``[defaults]`` values apply to every job, so an inherited one that does not apply to this
    job is not reported.
    """
    if "max_delete" in job.own and job.mode == "copy":
        collect.add(
            (*job.loc, "max_delete"),
            'max_delete applies to mode = "mirror" only; this job never deletes',
        )
    uploads = job.uploads
    if "thumbnails" in job.own and job.thumbnails and uploads is True:
        collect.add(
            (*job.loc, "thumbnails"),
            "thumbnails applies to jobs that download (a REMOTE:/path source); this job uploads",
        )
    if "follow_symlinks" in job.own and job.follow_symlinks and uploads is False:
        collect.add(
            (*job.loc, "follow_symlinks"),
            "follow_symlinks applies to jobs with a local source; this job downloads",
        )


def _check_remote_refs(raw: object, remotes: Mapping[str, object], collect: _Collector) -> None:
    """Report ``REMOTE:`` prefixes naming no ``[remotes.NAME]``, even in otherwise bad jobs."""
    for index, body in enumerate(raw if isinstance(raw, list) else []):
        for side in ("source", "target"):
            value = body.get(side) if isinstance(body, dict) else None
            match = _REMOTE_RE.match(value) if isinstance(value, str) else None
            if match and match[1] not in remotes:
                known = ", ".join(sorted(remotes)) or "none defined"
                collect.add(("jobs", index, side), f"unknown remote {match[1]!r} (known: {known})")


def _check_direction(job: _JobView, collect: _Collector) -> None:
    if job.source is None or job.target is None:
        return
    loc = job.loc
    src, dst = job.source.is_remote, job.target.is_remote
    if job.kind == "upload" and (src or not dst):
        collect.add((*loc, "kind"), "upload needs a local source and a REMOTE:/path target")
    elif job.kind == "download" and (dst or not src):
        collect.add((*loc, "kind"), "download needs a REMOTE:/path source and a local target")
    elif job.kind == "sync" and src == dst:
        collect.add((*loc, "kind"), "sync needs exactly one side to be a REMOTE:/path")
