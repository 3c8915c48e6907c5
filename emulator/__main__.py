"""``python -m emulator serve``: run the emulator until SIGINT/SIGTERM.

Prints one line, ``emulator listening on http://HOST:PORT``, once the port is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import structlog

from emulator.app import serve
from emulator.config import DEFAULT_VERSION, POLICY_TYPES, ConfigError, EmulatorConfig


def _pair(text: str) -> tuple[str, str]:
    left, sep, right = text.partition(":")
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected EMAIL:VALUE, got {text!r}")
    return left, right


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m emulator")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run a Cloudreve v4 emulator")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=5212, help="0 picks a free port")
    run.add_argument("--data", type=Path, required=True, help="data directory")
    run.add_argument("--user", type=_pair, action="append", default=[], help="EMAIL:PASSWORD")
    run.add_argument("--admin", action="append", default=[], help="EMAIL of an admin")
    run.add_argument("--totp-secret", type=_pair, action="append", default=[], help="EMAIL:SECRET")
    run.add_argument("--policy", choices=POLICY_TYPES, default="local")
    run.add_argument("--chunk-size", type=int, default=0)
    run.add_argument("--chunk-concurrency", type=int, default=1)
    run.add_argument("--quota", type=int, default=None, help="bytes per user")
    run.add_argument("--token-ttl", type=int, default=3600)
    run.add_argument("--session-ttl", type=int, default=86400)
    run.add_argument("--server-version", default=DEFAULT_VERSION)
    run.add_argument("--obfuscate-thumbs", action="store_true")
    run.add_argument("--log-level", default="warning")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Turn parsed arguments into a config (ConfigError on bad values)."""
    return EmulatorConfig(
        data_dir=args.data,
        host=args.host,
        port=args.port,
        users=tuple(args.user),
        admins=tuple(args.admin),
        totp_secrets=tuple(args.totp_secret),
        policy=args.policy,
        chunk_size=args.chunk_size,
        chunk_concurrency=args.chunk_concurrency,
        quota=args.quota,
        token_ttl=args.token_ttl,
        session_ttl=args.session_ttl,
        server_version=args.server_version,
        obfuscate_thumbs=args.obfuscate_thumbs,
    )


async def _run(config: EmulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(config) as running:
        print(f"emulator listening on {running.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            # Tracebacks without local variables: they would print the users' passwords.
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(),
                exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(config))
    except OSError as exc:
        print(f"error: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
