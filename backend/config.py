"""Backend configuration: environment variables first, CLI flags (see ``_wsgi.py``) on top.

Every setting is declared once below (and the scoring ones in ``sugfw.scorer_options``, shared with
the ``sugfw`` command line): its variable, flag, type, default, check and help. docs/settings.md
is generated from these declarations (``python -m backend.settings_doc``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from backend.redact import REDACTED, redact_url
from sugfw.active.round_strategies import ROUND_STRATEGIES
from sugfw.errors import InvalidInputError
from sugfw.scorer_options import RayOptions, ScoringOptions
from sugfw.segmentation.train import RECIPES as TRAIN_RECIPES
from sugfw.selection.budget import check_budget, parse_budget
from sugfw.settings import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    PATH,
    Kind,
    above,
    at_least,
    check_all,
    declared,
    from_environ,
    setting,
)

DEFAULT_BUDGET = 0.01
"""1 % of the pool: between the paper's 0.5 % and 1.5 % settings on the left atrium data."""

DEFAULT_COLD_START = "gscu"
COLD_START_STRATEGIES = ("gscu", "gscu_tie_aware", "gscu_content_aware")
"""Strategies that may order a project before any training run (``SUGFW_COLD_START_STRATEGY``):
faithful GSCU by default, since the benchmark has not shown the label-free remedies better."""


def parse_hosts(text: str | None, name: str = "SUGFW_IMAGE_HOSTS") -> tuple[str, ...] | None:
    """ "a.org, *.s3.amazonaws.com host:8443" → lower-cased entries; ``None`` stays ``None``."""
    if text is None:
        return None
    hosts = tuple(part.strip().lower() for part in text.replace(",", " ").split() if part.strip())
    for host in hosts:
        if "/" in host or "@" in host:
            raise InvalidInputError(
                f"{name} entry {host!r}: expected a host name, host:port or *.domain, not a URL"
            )
    return hosts


def _check_url(url: str, name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInputError(
            f"{name}={redact_url(url)!r}: expected an http(s) URL such as http://label-studio:8080"
        )


def _check_document_root(root: Path, name: str) -> None:
    if root.resolve() == Path("/"):  # "/" would let any task read any file the backend can read
        raise InvalidInputError(f"{name}=/ is refused: point it at the folder Label Studio serves")


def _check_share(value: float, name: str) -> None:
    if not 0.0 <= value < 1.0:
        raise InvalidInputError(f"{name}={value}: expected a share in [0, 1), e.g. 0.2")


BUDGET = Kind("count or ratio", parse_budget)
HOSTS = Kind("hosts", parse_hosts)
POSITIVE = at_least(1, "a positive integer")
SECONDS = at_least(0, "seconds >= 0")
POSITIVE_NUMBER = above(0, "a positive number")


@dataclass(frozen=True, repr=False)
class BackendConfig(ScoringOptions, RayOptions):
    """The scoring settings (``ScoringOptions``, ``RayOptions``) and the backend's own."""

    label_studio_url: str | None = setting(
        None,
        "LABEL_STUDIO_URL",
        "where Label Studio answers, e.g. http://label-studio:8080",
        check=_check_url,
        redact=redact_url,
    )
    label_studio_api_key: str | None = setting(
        None,
        "LABEL_STUDIO_API_KEY",
        "legacy token or personal access token (a JWT, exchanged)",
        secret=True,
    )
    budget: int | float = setting(
        DEFAULT_BUDGET,
        "SUGFW_BUDGET",
        "annotations to plan for: a count (35) or a ratio of the pool (0.01)",
        kind=BUDGET,
        check=check_budget,
    )
    predict_deadline_s: float = setting(
        60.0,
        "SUGFW_PREDICT_DEADLINE_S",
        "seconds /predict may spend scoring slices not scored yet (Label Studio gives up after "
        "~100 s)",
        kind=NUMBER,
        check=SECONDS,
    )
    state_dir: Path = setting(
        Path(".sugfw-backend"),
        "SUGFW_STATE_DIR",
        "job state, score cache, pre-annotations",
        kind=PATH,
    )
    test_data: Path | None = setting(
        None,
        "SUGFW_TEST_DATA",
        "held-out labelled volumes for evaluating the retrained UNet",
        kind=PATH,
    )
    train_epochs: int = setting(
        100,
        "SUGFW_TRAIN_EPOCHS",
        "epochs over the training slices per retraining run",
        kind=INTEGER,
        check=POSITIVE,
    )
    train_max_iterations: int = setting(
        400,
        "SUGFW_TRAIN_MAX_ITERATIONS",
        "cap on the SGD iterations of one run (short on purpose: a run follows every burst of "
        "annotations and warm-starts from the best weights of the last one)",
        kind=INTEGER,
        check=POSITIVE,
    )
    train_iterations: int | None = setting(
        None,
        "SUGFW_TRAIN_ITERATIONS",
        "deprecated: a fixed SGD iteration count per run instead of the epoch schedule and its cap",
        kind=INTEGER,
        check=POSITIVE,
    )
    train_recipe: str = setting(
        "few_slice",
        "SUGFW_TRAIN_RECIPE",
        "UNet training recipe: few_slice (whole slices, instance norm, AdamW, MONAI augmentation) "
        "or paper (SGD, BatchNorm, crops, rot90/flip); ``sugfw.segmentation.train``",
        choices=lambda: tuple(TRAIN_RECIPES),
    )
    train_crop: int = setting(
        256,
        "SUGFW_TRAIN_CROP",
        "largest training window side in pixels: few_slice trains on whole slices padded to the "
        "largest one when that fits, paper on random crops of this side",
        kind=INTEGER,
        check=POSITIVE,
    )
    train_batch_size: int = setting(
        8,
        "SUGFW_TRAIN_BATCH",
        "slices per training batch",
        kind=INTEGER,
        check=POSITIVE,
        flag="--train-batch",
    )
    val_fraction: float = setting(
        0.2,
        "SUGFW_VAL_FRACTION",
        "share of the annotated cases held out for validation (0: none); tasks with "
        '``data.split = "val"`` are used instead if any',
        kind=NUMBER,
        check=_check_share,
    )
    val_every: int = setting(
        20, "SUGFW_VAL_EVERY", "SGD iterations between validations", kind=INTEGER, check=POSITIVE
    )
    early_stop_patience: int = setting(
        5,
        "SUGFW_EARLY_STOP_PATIENCE",
        "stop after this many validations without a better Dice, never in the first half of a "
        "run (0: never stop early, keep the best)",
        kind=INTEGER,
        check=at_least(0, "validations >= 0 (0: never stop early)"),
    )
    cold_start_strategy: str = setting(
        DEFAULT_COLD_START,
        "SUGFW_COLD_START_STRATEGY",
        "queue order before any training run (gscu_content_aware also queues dark-centred "
        "slices last, a prior for organ-centred scans)",
        choices=lambda: COLD_START_STRATEGIES,
    )
    round_strategy: str = setting(
        "entropy",
        "SUGFW_ROUND_STRATEGY",
        "queue order after each training run (entropy: the new UNet's Monte-Carlo dropout "
        "entropy, most uncertain first; cold_start keeps GSCU's)",
        choices=lambda: tuple(ROUND_STRATEGIES),
    )
    mc_passes: int = setting(
        8,
        "SUGFW_MC_PASSES",
        "Monte-Carlo dropout passes per unlabelled slice",
        kind=INTEGER,
        check=at_least(2),
    )
    round_budget: int = setting(
        10,
        "SUGFW_ROUND_BUDGET",
        "annotations a round plans for: entropy_diversity's clusters",
        kind=INTEGER,
        check=at_least(1),
    )
    interactive_cache_slices: int = setting(
        16,
        "SUGFW_INTERACTIVE_CACHE_SLICES",
        "image embeddings kept for boxes drawn on the page (LRU, about 4 MB each)",
        kind=INTEGER,
        check=at_least(1),
    )
    debounce_s: float = setting(
        5.0,
        "SUGFW_DEBOUNCE_S",
        "quiet seconds before a burst of events becomes one job",
        kind=NUMBER,
        check=SECONDS,
        flag="--debounce",
    )
    image_timeout_s: float = setting(
        30.0,
        "SUGFW_IMAGE_TIMEOUT_S",
        "per-request timeout when downloading task images",
        kind=NUMBER,
        check=above(0, "seconds > 0"),
    )
    image_deadline_s: float = setting(
        60.0,
        "SUGFW_IMAGE_DEADLINE_S",
        "whole download of one image, redirects included (so a server dripping a byte per read "
        "timeout cannot hold a job)",
        kind=NUMBER,
        check=POSITIVE_NUMBER,
    )
    image_hosts: tuple[str, ...] = setting(
        (),
        "SUGFW_IMAGE_HOSTS",
        "besides Label Studio's own host, the only hosts absolute image URLs may point at: "
        "host, host:port, *.domain, ...",
        kind=HOSTS,
    )
    image_allow_private: bool = setting(
        False,
        "SUGFW_IMAGE_ALLOW_PRIVATE",
        "1: listed hosts may be on private/loopback addresses (never link-local)",
        kind=BOOLEAN,
    )
    image_max_bytes: int = setting(
        64 * 1024 * 1024,
        "SUGFW_IMAGE_MAX_BYTES",
        "largest image download in bytes (64 MiB)",
        kind=INTEGER,
        check=POSITIVE_NUMBER,
    )
    image_max_pixels: int = setting(
        16_777_216,
        "SUGFW_IMAGE_MAX_PIXELS",
        "largest image, width × height (4096²)",
        kind=INTEGER,
        check=POSITIVE_NUMBER,
    )
    max_request_bytes: int = setting(
        8 * 1024 * 1024,
        "SUGFW_MAX_REQUEST_BYTES",
        "largest request body in bytes; larger ones get 413 (8 MiB)",
        kind=INTEGER,
        check=POSITIVE_NUMBER,
    )
    allow_unauthenticated: bool = setting(
        False,
        "SUGFW_ALLOW_UNAUTHENTICATED",
        "1: serve on a non-loopback address without Basic auth",
        kind=BOOLEAN,
    )
    basic_auth_user: str | None = setting(
        None,
        "BASIC_AUTH_USER",
        "protect every route with HTTP Basic auth (with BASIC_AUTH_PASS: both or neither)",
        flag=False,
        strip=False,
    )
    basic_auth_pass: str | None = setting(
        None,
        "BASIC_AUTH_PASS",
        "the Basic auth password (taken verbatim: surrounding spaces may be part of it)",
        secret=True,
        strip=False,
    )
    local_files_document_root: Path | None = setting(
        None,
        "LOCAL_FILES_DOCUMENT_ROOT",
        "read ``/data/local-files/?d=...`` images from this folder",
        kind=PATH,
        check=_check_document_root,
        flag="--local-files-root",
    )
    # -- limits of an exposed server (docs/backend.md, "Exposure and limits") --
    predict_max_tasks: int = setting(
        10_000,
        "SUGFW_PREDICT_MAX_TASKS",
        'tasks one /predict may name; more get 413 (Label Studio\'s bulk "retrieve predictions" '
        "sends every selected task in one call)",
        kind=INTEGER,
        check=at_least(1),
    )
    json_max_depth: int = setting(
        32,
        "SUGFW_JSON_MAX_DEPTH",
        "deepest nesting of a request body; deeper gets 400 (Label Studio's own need < 10)",
        kind=INTEGER,
        check=at_least(4),
    )
    interactive_max_points: int = setting(
        64,
        "SUGFW_INTERACTIVE_MAX_POINTS",
        "keypoints one interactive /predict may carry",
        kind=INTEGER,
        check=at_least(1),
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        "SUGFW_ALLOWED_HOSTS",
        "Host header names accepted besides loopback names and the name the server listens on; "
        "others get 421 (DNS rebinding)",
        kind=HOSTS,
    )
    webhook_any_project: bool = setting(
        False,
        "SUGFW_WEBHOOK_ANY_PROJECT",
        "1: queue webhooks of projects that never called /setup",
        kind=BOOLEAN,
    )
    metrics_detail: bool = setting(
        False,
        "SUGFW_METRICS_DETAIL",
        "1: /metrics shows case ids and full job errors",
        kind=BOOLEAN,
    )
    predictions_max_age_days: float = setting(
        90.0,
        "SUGFW_PREDICTIONS_MAX_AGE_DAYS",
        "stored pre-annotations not rewritten for this long are deleted (0: kept for ever); a "
        "task asked for again is scored again",
        kind=NUMBER,
        check=at_least(0, "days >= 0 (0: keep for ever)"),
    )
    score_cache_max_entries: int = setting(
        100_000,
        "SUGFW_SCORE_CACHE_MAX_ENTRIES",
        "slices the score cache keeps, least recently used dropped",
        kind=INTEGER,
        check=at_least(1),
    )
    keep_last_runs: int = setting(
        3,
        "SUGFW_KEEP_LAST_RUNS",
        "training runs whose checkpoints are kept besides the best one",
        kind=INTEGER,
        check=at_least(1),
    )

    def __post_init__(self) -> None:
        check_all(self)
        if (self.basic_auth_user is None) != (self.basic_auth_pass is None):
            missing = "BASIC_AUTH_PASS" if self.basic_auth_pass is None else "BASIC_AUTH_USER"
            raise InvalidInputError(
                f"{missing} is not set: Basic auth needs both BASIC_AUTH_USER and BASIC_AUTH_PASS"
            )

    def __repr__(self) -> str:
        # Tracebacks and debuggers print objects: the plain dataclass repr would show the URL's
        # credentials.
        fields = ", ".join(f"{key}={value!r}" for key, value in self.redacted().items())
        return f"BackendConfig({fields})"

    @property
    def auth_enabled(self) -> bool:
        return self.basic_auth_user is not None

    @property
    def model_version(self) -> str:
        """What predictions carry; Label Studio orders its queue only by predictions of the
        project's version."""
        return f"sugfw-{self.model}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BackendConfig:
        """Read every setting from ``environ`` (default ``os.environ``); unset or empty →
        default."""
        return cls(**from_environ(cls, os.environ if environ is None else environ))

    def replace(self, **changes: Any) -> BackendConfig:
        """A copy with ``changes`` applied (CLI flags over the environment); ``None`` values are
        ignored."""
        return dataclasses.replace(
            self, **{key: value for key, value in changes.items() if value is not None}
        )

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain values for logs: secrets masked, URLs stripped of credentials."""
        view: dict[str, Any] = {}
        for name, declaration, _ in declared(type(self)):
            value = getattr(self, name)
            if declaration.secret:
                value = None if value is None else REDACTED
            elif declaration.redact is not None and value is not None:
                value = declaration.redact(value)
            elif isinstance(value, Path):
                value = str(value)
            view[name] = value
        return view
