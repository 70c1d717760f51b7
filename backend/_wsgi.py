"""Entry point: ``python -m backend._wsgi --port 9090`` (local use, 127.0.0.1 by default) or
``gunicorn --config docker/gunicorn.conf.py 'backend._wsgi:create_app_from_env()'`` (the image).

A non-loopback bind without Basic auth is refused unless SUGFW_ALLOW_UNAUTHENTICATED=1 (or
``--allow-unauthenticated``): anyone who reaches the port could queue jobs and read predictions.

Settings come from environment variables (see ``backend/config.py``); flags override them.
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
from pathlib import Path
from typing import Any

from backend.config import BackendConfig, parse_grid, parse_optional_budget
from backend.jobs.cold_start_ranking import COLD_START_STRATEGIES
from sugfw.active.round_strategies import ROUND_STRATEGIES
from sugfw.errors import InvalidInputError, SugfwError
from sugfw.segmentation.train import RECIPES as TRAIN_RECIPES

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
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        default=None,
        help="[SUGFW_ALLOW_UNAUTHENTICATED] serve a non-loopback address without Basic auth",
    )
    parser.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    parser.add_argument(
        "--label-studio-url", help="[LABEL_STUDIO_URL] e.g. http://label-studio:8080"
    )
    parser.add_argument(
        "--model", help="[SUGFW_MODEL] litemedsam (default), sam_vit_b, sam_vit_l, sam_vit_h"
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="[SUGFW_CHECKPOINT] checkpoint file (SAM variants)"
    )
    parser.add_argument("--device", help="[SUGFW_DEVICE] auto (default), cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--k", type=int, help="[SUGFW_K] augmented everything-mode runs per slice (default 10)"
    )
    parser.add_argument(
        "--budget",
        help="[SUGFW_BUDGET] annotations to plan for: count (35) or ratio (0.01, default)",
    )
    parser.add_argument(
        "--grid",
        help="[SUGFW_GRID] everything-mode grid, e.g. 128 or 64,96,128 (default per model)",
    )
    parser.add_argument(
        "--seed", type=int, help="[SUGFW_SEED] seed of the augmentations and of GSCU (default 0)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="[SUGFW_STATE_DIR] job state and caches (default .sugfw-backend)",
    )
    parser.add_argument(
        "--test-data", type=Path, help="[SUGFW_TEST_DATA] held-out labelled volumes for evaluation"
    )
    parser.add_argument(
        "--train-iterations",
        type=int,
        help="[SUGFW_TRAIN_ITERATIONS] deprecated: a fixed SGD iteration count per retraining "
        "run instead of [SUGFW_TRAIN_EPOCHS] epochs capped at [SUGFW_TRAIN_MAX_ITERATIONS] "
        "(unset by default)",
    )
    parser.add_argument(
        "--cold-start-strategy",
        choices=COLD_START_STRATEGIES,
        help="[SUGFW_COLD_START_STRATEGY] queue order before any training run (default gscu; "
        "gscu_content_aware also queues dark-centred slices last, a prior for organ-centred "
        "scans)",
    )
    parser.add_argument(
        "--round-strategy",
        choices=ROUND_STRATEGIES,
        help="[SUGFW_ROUND_STRATEGY] queue order after each training run (default entropy: the "
        "new UNet's Monte-Carlo dropout entropy, most uncertain first; cold_start keeps GSCU's)",
    )
    parser.add_argument(
        "--train-recipe",
        choices=TRAIN_RECIPES,
        help="[SUGFW_TRAIN_RECIPE] UNet training recipe (default few_slice: whole slices, "
        "instance norm, AdamW, MONAI augmentation; paper: SGD, BatchNorm, crops, rot90/flip)",
    )
    parser.add_argument(
        "--train-crop",
        type=int,
        help="[SUGFW_TRAIN_CROP] largest training window side in pixels (default 256: "
        "few_slice trains on whole slices up to this side)",
    )
    parser.add_argument(
        "--train-batch", type=int, help="[SUGFW_TRAIN_BATCH] slices per training batch (default 8)"
    )
    parser.add_argument(
        "--local-files-root",
        type=Path,
        help="[LOCAL_FILES_DOCUMENT_ROOT] read /data/local-files/ images here",
    )
    parser.add_argument(
        "--debounce",
        type=float,
        help="[SUGFW_DEBOUNCE_S] seconds a burst of events is merged over (default 5)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def config_from_args(args: argparse.Namespace) -> BackendConfig:
    return BackendConfig.from_env().replace(
        label_studio_url=args.label_studio_url,
        model=args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        k=args.k,
        budget=parse_optional_budget(args.budget, "--budget"),
        grid=parse_grid(args.grid, "--grid"),
        seed=args.seed,
        state_dir=args.state_dir,
        test_data=args.test_data,
        train_iterations=args.train_iterations,
        cold_start_strategy=args.cold_start_strategy,
        round_strategy=args.round_strategy,
        train_recipe=args.train_recipe,
        train_crop=args.train_crop,
        train_batch_size=args.train_batch,
        local_files_document_root=args.local_files_root,
        debounce_s=args.debounce,
        allow_unauthenticated=args.allow_unauthenticated,
    )


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
