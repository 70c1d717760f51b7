"""Entry point: ``python -m backend._wsgi --port 9090`` (local use, 127.0.0.1 by default) or
``gunicorn --config docker/gunicorn.conf.py 'backend._wsgi:create_app_from_env()'`` (the image).

A non-loopback bind without Basic auth is refused unless SUGFW_ALLOW_UNAUTHENTICATED=1 (or
``--allow-unauthenticated``): anyone who reaches the port could queue jobs and read predictions.

Settings come from environment variables; flags override them. Both are generated from the
declarations in ``backend/config.py`` and ``sugfw/scorer_options.py`` (table: docs/settings.md).
Secrets (LABEL_STUDIO_API_KEY, BASIC_AUTH_PASS) are read from the environment only, because
command lines are visible to every user of the machine.

Run one process (gunicorn ``--workers 1 --threads 8``): each process has its own job worker,
and two workers would train the same project twice.

Stopping: SIGTERM (``docker stop``, gunicorn's graceful stop, Ctrl-C) writes the running job
back as pending without counting the start, so an ordinary restart runs it again from its last
checkpoint and is never taken for a crash (three crashes set a job aside); only a process that
dies without exiting (SIGKILL, out of memory) counts.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import logging
import signal
import socket
import sys
from typing import Any

from backend.config import BackendConfig
from sugfw.errors import InvalidInputError, SugfwError
from sugfw.settings import add_flags, from_args

log = logging.getLogger("backend")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend._wsgi",
        description="sugfw Label Studio ML backend. Flags override the environment variables "
        "named in brackets.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1; 0.0.0.0 needs Basic auth "
        "or --allow-unauthenticated)",
    )
    parser.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    add_flags(parser, BackendConfig)  # not given: the environment's value (or the default)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def config_from_args(args: argparse.Namespace) -> BackendConfig:
    return BackendConfig.from_env().replace(**from_args(BackendConfig, args))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only ever means this machine."""
    host = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host == "":
        return False  # "" binds every interface
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(
        ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses
    )


def check_bind(host: str, config: BackendConfig) -> None:
    """Refuse to serve ``host`` beyond this machine without Basic auth, unless allowed."""
    if is_loopback(host) or config.auth_enabled or config.allow_unauthenticated:
        if not is_loopback(host) and not config.auth_enabled:
            log.warning(
                "serving %s without Basic auth (SUGFW_ALLOW_UNAUTHENTICATED): anyone who "
                "reaches the port can queue jobs",
                host,
            )
        return
    raise InvalidInputError(
        f"refusing to listen on {host} without Basic auth: set BASIC_AUTH_USER and BASIC_AUTH_PASS "
        "(and give Label Studio the same pair), or SUGFW_ALLOW_UNAUTHENTICATED=1 "
        "(--allow-unauthenticated) on a network you trust, or listen on 127.0.0.1"
    )


def build_app(config: BackendConfig):
    from backend.jobs.slice_scorer import SliceScorer
    from backend.model import SugfwModel
    from backend.server.app import create_app

    log.info("configuration: %s", config.redacted())
    if config.label_studio_api_key is None:
        log.warning(
            "LABEL_STUDIO_API_KEY is not set: images uploaded to Label Studio cannot be downloaded"
        )
    app = create_app(config, SugfwModel(config, scorer=SliceScorer(config)))
    # On any orderly exit (SIGTERM below, gunicorn's worker exit, Ctrl-C) the running job is
    # handed back uncounted.
    atexit.register(app.config["SUGFW_JOBS"].interrupt)
    return app


def exit_on_sigterm() -> None:
    """SIGTERM exits like Ctrl-C, through the exit handlers (Python's default ends the process
    without running them)."""

    def stop(signum: int, frame: Any) -> None:
        log.info("SIGTERM: stopping")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
        check_bind(args.host, config)
        app = build_app(config)
    except SugfwError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    exit_on_sigterm()
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    return 0


def create_app_from_env() -> Any:
    """The app from the environment: gunicorn's factory (``'backend._wsgi:create_app_from_env()'``);
    the bind is checked by the gunicorn config (``docker/gunicorn.conf.py``), which knows it."""
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=log_format)
    return build_app(BackendConfig.from_env())


def check_gunicorn_binds(binds: list[str], environ: Any = None) -> None:
    """``check_bind`` for each gunicorn bind ("host:port", "[::]:port", "unix:/path")."""
    config = BackendConfig.from_env(environ)
    for bind in binds:
        if bind.startswith(("unix:", "fd://")):
            continue
        if bind.startswith("["):
            host = bind[1:].split("]", 1)[0]
        elif bind.count(":") == 1:
            host = bind.split(":", 1)[0]
        else:
            host = bind  # a bare host, or an IPv6 address without a port
        check_bind(host, config)


def __getattr__(name: str) -> Any:
    # `gunicorn backend._wsgi:app` asks for `app`; building it lazily keeps `--help` and imports
    # free of side effects (state directory, worker thread).
    if name == "app":
        global app
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        app = build_app(BackendConfig.from_env())
        return app
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
