"""Backend configuration: environment variables first, CLI flags (see ``_wsgi.py``) on top.

| variable                    | meaning                                                          |
|-----------------------------|------------------------------------------------------------------|
| LABEL_STUDIO_URL            | where Label Studio answers, e.g. http://label-studio:8080        |
| LABEL_STUDIO_API_KEY        | legacy token or personal access token (a JWT, exchanged)         |
| SUGFW_MODEL                 | litemedsam (default) or sam_vit_b / sam_vit_l / sam_vit_h         |
| SUGFW_CHECKPOINT            | checkpoint file (needed by the SAM variants)                     |
| SUGFW_DEVICE                | auto (default: CUDA when available), cpu, cuda, cuda:1 ...       |
| SUGFW_K                     | augmented everything-mode runs per slice (default 10)            |
| SUGFW_BUDGET                | annotations to plan for: a count (35) or a ratio (0.01, default) |
| SUGFW_GRID                  | everything-mode grid: box sides (LiteMedSAM) or points per side  |
|                             | (SAM), e.g. "128" or "64,96,128"; default per model              |
| SUGFW_SEED                  | seed of the augmentations and of GSCU's k-means (default 0)      |
| SUGFW_COLD_START_STRATEGY   | queue order before any training run: gscu (default),             |
|                             | gscu_tie_aware or gscu_content_aware                             |
| SUGFW_PREDICT_DEADLINE_S    | seconds /predict may spend scoring slices not scored yet (60)    |
| SUGFW_STATE_DIR             | job state, score cache, pre-annotations (default .sugfw-backend) |
| SUGFW_TEST_DATA             | held-out labelled volumes for evaluating the retrained UNet      |
| SUGFW_TRAIN_EPOCHS          | epochs over the training slices per retraining run (100)         |
| SUGFW_TRAIN_MAX_ITERATIONS  | cap on the SGD iterations of one run (400)                       |
| SUGFW_TRAIN_ITERATIONS      | deprecated: a fixed iteration count per run instead of the epoch |
|                             | schedule and its cap (unset by default)                          |
| SUGFW_TRAIN_RECIPE          | few_slice (default: instance norm, AdamW, MONAI augmentation) or |
|                             | paper (SGD, BatchNorm, rot90/flip): ``sugfw.segmentation.train`` |
| SUGFW_TRAIN_CROP            | largest training window side in pixels (256): few_slice trains   |
|                             | on whole slices padded to the largest one when that fits, paper  |
|                             | on random crops of this side                                     |
| SUGFW_TRAIN_BATCH           | slices per training batch (8)                                    |
| SUGFW_VAL_FRACTION          | share of the annotated cases held out for validation (0.2; 0:    |
|                             | none). Tasks with ``data.split = "val"`` are used instead if any |
| SUGFW_VAL_EVERY             | SGD iterations between validations (20)                          |
| SUGFW_EARLY_STOP_PATIENCE   | stop after this many validations without a better Dice, never in |
|                             | the first half of a run (5; 0: never stop early, keep the best)  |
| SUGFW_ROUND_STRATEGY        | queue order after each training run: entropy (default),          |
|                             | mutual_information, entropy_diversity or cold_start              |
| SUGFW_MC_PASSES             | Monte-Carlo dropout passes per unlabelled slice (8)              |
| SUGFW_ROUND_BUDGET          | annotations a round plans for: entropy_diversity's clusters (10) |
| SUGFW_INTERACTIVE_CACHE_SLICES | embeddings kept for boxes drawn on the page (16, ~4 MB each) |
| SUGFW_DEBOUNCE_S            | quiet seconds before a burst of events becomes one job (5)       |
| SUGFW_IMAGE_TIMEOUT_S       | per-request timeout when downloading task images (30)            |
| SUGFW_IMAGE_DEADLINE_S      | whole download of one image, redirects included (60)             |
| SUGFW_IMAGE_HOSTS           | other image hosts: ``host``, ``host:port``, ``*.domain``, ...    |
| SUGFW_IMAGE_ALLOW_PRIVATE   | 1: listed hosts may be on private/loopback (never link-local)    |
| SUGFW_IMAGE_MAX_BYTES       | largest image download (64 MiB)                                  |
| SUGFW_IMAGE_MAX_PIXELS      | largest image, width × height (16,777,216 = 4096²)               |
| SUGFW_MAX_REQUEST_BYTES     | largest request body; larger ones get 413 (8 MiB)                |
| SUGFW_ALLOW_UNAUTHENTICATED | 1: serve on a non-loopback address without Basic auth            |
| BASIC_AUTH_USER / _PASS     | protect every route with HTTP Basic auth (both or neither)       |
| LOCAL_FILES_DOCUMENT_ROOT   | read ``/data/local-files/?d=...`` images from this folder        |
| SUGFW_PREDICT_MAX_TASKS     | tasks one /predict may name; more get 413 (10,000)               |
| SUGFW_JSON_MAX_DEPTH        | deepest nesting of a request body; deeper gets 400 (32)          |
| SUGFW_INTERACTIVE_MAX_POINTS | keypoints one interactive /predict may carry (64)              |
| SUGFW_ALLOWED_HOSTS         | Host header names accepted besides loopback ones (421 otherwise) |
| SUGFW_WEBHOOK_ANY_PROJECT   | 1: queue webhooks of projects that never called /setup (0)       |
| SUGFW_METRICS_DETAIL        | 1: /metrics shows case ids and full job errors (0)               |
| SUGFW_PREDICTIONS_MAX_AGE_DAYS | stored pre-annotations older than this are deleted (90, 0: no) |
| SUGFW_SCORE_CACHE_MAX_ENTRIES | slices the score cache keeps, least recently used out (100,000) |
| SUGFW_KEEP_LAST_RUNS        | training runs whose checkpoints are kept besides the best (3)    |
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from backend.jobs.cold_start_ranking import COLD_START_STRATEGIES, DEFAULT_COLD_START
from backend.redact import REDACTED, redact_url
from sugfw.active.round_strategies import ROUND_STRATEGIES
from sugfw.errors import InvalidInputError
from sugfw.segmentation.train import RECIPES as TRAIN_RECIPES
from sugfw.selection.budget import check_budget, parse_budget

DEFAULT_BUDGET = 0.01
"""1 % of the pool: between the paper's 0.5 % and 1.5 % settings on the left atrium data."""


@dataclass(frozen=True, repr=False)
class BackendConfig:
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    model: str = "litemedsam"
    checkpoint: Path | None = None
    device: str = "auto"
    k: int = 10
    budget: int | float = DEFAULT_BUDGET
    grid: tuple[int, ...] | None = None
    """Everything-mode grid; ``None`` keeps the model's default."""
    seed: int = 0
    predict_deadline_s: float = 60.0
    """Label Studio gives up on /predict after ~100 s: stop scoring new slices after this long."""
    state_dir: Path = Path(".sugfw-backend")
    test_data: Path | None = None
    train_epochs: int = 100
    train_max_iterations: int = 400
    """Short on purpose: a run follows every burst of annotations, and warm-starts from the best
    weights of the last one."""
    train_iterations: int | None = None
    """Deprecated: when set, every run takes exactly this many iterations (no epochs, no cap)."""
    train_recipe: str = "few_slice"
    train_crop: int = 256
    """few_slice: whole slices (padded to the largest) up to this side, else crops of it."""
    train_batch_size: int = 8
    val_fraction: float = 0.2
    val_every: int = 20
    early_stop_patience: int = 5
    cold_start_strategy: str = DEFAULT_COLD_START
    """How the scored tasks are ranked before any training run (``backend.jobs.ranking``)."""
    round_strategy: str = "entropy"
    """How the unlabelled tasks are re-ranked after a training run (``sugfw.active``)."""
    mc_passes: int = 8
    round_budget: int = 10
    interactive_cache_slices: int = 16
    """Image embeddings kept for interactive box prompts (LRU), about 4 MB each."""
    debounce_s: float = 5.0
    image_timeout_s: float = 30.0
    image_deadline_s: float = 60.0
    """Across the whole download, so a server dripping a byte per read timeout cannot hold a job."""
    image_hosts: tuple[str, ...] = ()
    """Besides Label Studio's own host, the only hosts absolute image URLs may point at."""
    image_allow_private: bool = False
    image_max_bytes: int = 64 * 1024 * 1024
    image_max_pixels: int = 16_777_216
    max_request_bytes: int = 8 * 1024 * 1024
    ray_address: str | None = None
    """Score new tasks on this Ray cluster (``auto``, or ``host:port``); None: in this process."""
    ray_actors: int | None = None
    """At most this many Ray actors (default: one per GPU, else one per CPU of the cluster)."""
    allow_unauthenticated: bool = False
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    local_files_document_root: Path | None = None
    # -- limits of an exposed server (each SUGFW_* variable below; README "Exposure and limits") --
    predict_max_tasks: int = 10_000
    """SUGFW_PREDICT_MAX_TASKS: tasks one /predict may name; more is a 413 (Label Studio's bulk
    "retrieve predictions" sends every selected task in one call)."""
    json_max_depth: int = 32
    """SUGFW_JSON_MAX_DEPTH: nesting of a request body (Label Studio's own bodies need < 10)."""
    interactive_max_points: int = 64
    """SUGFW_INTERACTIVE_MAX_POINTS: keypoints one interactive /predict may carry."""
    allowed_hosts: tuple[str, ...] = ()
    """SUGFW_ALLOWED_HOSTS: names the Host header may carry besides loopback names (localhost,
    127.0.0.1, [::1]) and the name the server listens on; others get 421 (DNS rebinding)."""
    webhook_any_project: bool = False
    """SUGFW_WEBHOOK_ANY_PROJECT: 1 queues webhooks of projects that never went through /setup."""
    metrics_detail: bool = False
    """SUGFW_METRICS_DETAIL: 1 shows case ids and full job errors in /metrics."""
    predictions_max_age_days: float = 90.0
    """SUGFW_PREDICTIONS_MAX_AGE_DAYS: stored pre-annotations not rewritten for this long are
    deleted (0: kept for ever); a task asked for again is scored again."""
    score_cache_max_entries: int = 100_000
    """SUGFW_SCORE_CACHE_MAX_ENTRIES: slices the score cache keeps, least recently used dropped."""
    keep_last_runs: int = 3
    """SUGFW_KEEP_LAST_RUNS: training runs whose checkpoints are kept besides the best one."""

    def __post_init__(self) -> None:
        if self.label_studio_url is not None:
            parts = urlsplit(self.label_studio_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidInputError(
                    f"LABEL_STUDIO_URL={redact_url(self.label_studio_url)!r}: expected an http(s) "
                    "URL "
                    "such as http://label-studio:8080"
                )
        if self.k < 1:
            raise InvalidInputError(
                f"SUGFW_K={self.k}: expected at least 1 augmented run per slice"
            )
        check_budget(self.budget, "SUGFW_BUDGET")
        if self.grid is not None and (not self.grid or any(size < 1 for size in self.grid)):
            raise InvalidInputError(
                f"SUGFW_GRID={self.grid}: expected one or more positive integers such as 128 or "
                "64,96,128"
            )
        for name, value in (
            ("SUGFW_TRAIN_ITERATIONS", self.train_iterations),
            ("SUGFW_TRAIN_EPOCHS", self.train_epochs),
            ("SUGFW_TRAIN_MAX_ITERATIONS", self.train_max_iterations),
            ("SUGFW_TRAIN_CROP", self.train_crop),
            ("SUGFW_TRAIN_BATCH", self.train_batch_size),
            ("SUGFW_VAL_EVERY", self.val_every),
        ):
            if value is not None and value < 1:
                raise InvalidInputError(f"{name}={value}: expected a positive integer")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InvalidInputError(
                f"SUGFW_VAL_FRACTION={self.val_fraction}: expected a share in [0, 1), e.g. 0.2"
            )
        if self.cold_start_strategy not in COLD_START_STRATEGIES:
            raise InvalidInputError(
                f"SUGFW_COLD_START_STRATEGY={self.cold_start_strategy!r}: expected one of "
                f"{', '.join(COLD_START_STRATEGIES)}"
            )
        if self.train_recipe not in TRAIN_RECIPES:
            raise InvalidInputError(
                f"SUGFW_TRAIN_RECIPE={self.train_recipe!r}: expected one of "
                f"{', '.join(TRAIN_RECIPES)}"
            )
        if self.round_strategy not in ROUND_STRATEGIES:
            raise InvalidInputError(
                f"SUGFW_ROUND_STRATEGY={self.round_strategy!r}: expected one of "
                f"{', '.join(ROUND_STRATEGIES)}"
            )
        for name, value, least in (
            ("SUGFW_MC_PASSES", self.mc_passes, 2),
            ("SUGFW_ROUND_BUDGET", self.round_budget, 1),
            ("SUGFW_INTERACTIVE_CACHE_SLICES", self.interactive_cache_slices, 1),
        ):
            if value < least:
                raise InvalidInputError(f"{name}={value}: expected an integer >= {least}")
        if self.early_stop_patience < 0:
            raise InvalidInputError(
                f"SUGFW_EARLY_STOP_PATIENCE={self.early_stop_patience}: expected validations >= 0"
                " (0: never stop early)"
            )
        if self.predict_deadline_s < 0:
            raise InvalidInputError(
                f"SUGFW_PREDICT_DEADLINE_S={self.predict_deadline_s}: expected seconds >= 0"
            )
        if self.debounce_s < 0:
            raise InvalidInputError(f"SUGFW_DEBOUNCE_S={self.debounce_s}: expected seconds >= 0")
        if self.image_timeout_s <= 0:
            raise InvalidInputError(
                f"SUGFW_IMAGE_TIMEOUT_S={self.image_timeout_s}: expected seconds > 0"
            )
        for name, value in (
            ("SUGFW_IMAGE_DEADLINE_S", self.image_deadline_s),
            ("SUGFW_IMAGE_MAX_BYTES", self.image_max_bytes),
            ("SUGFW_IMAGE_MAX_PIXELS", self.image_max_pixels),
            ("SUGFW_MAX_REQUEST_BYTES", self.max_request_bytes),
        ):
            if value <= 0:
                raise InvalidInputError(f"{name}={value}: expected a positive number")
        if (self.basic_auth_user is None) != (self.basic_auth_pass is None):
            missing = "BASIC_AUTH_PASS" if self.basic_auth_pass is None else "BASIC_AUTH_USER"
            raise InvalidInputError(
                f"{missing} is not set: Basic auth needs both BASIC_AUTH_USER and BASIC_AUTH_PASS"
            )
        if (
            self.local_files_document_root is not None
            and self.local_files_document_root.resolve() == Path("/")
        ):
            # "/" would let any task read any file the backend can read.
            raise InvalidInputError(
                "LOCAL_FILES_DOCUMENT_ROOT=/ is refused: point it at the folder Label Studio serves"
            )
        for name, value, least in (
            ("SUGFW_PREDICT_MAX_TASKS", self.predict_max_tasks, 1),
            ("SUGFW_JSON_MAX_DEPTH", self.json_max_depth, 4),
            ("SUGFW_INTERACTIVE_MAX_POINTS", self.interactive_max_points, 1),
            ("SUGFW_SCORE_CACHE_MAX_ENTRIES", self.score_cache_max_entries, 1),
            ("SUGFW_KEEP_LAST_RUNS", self.keep_last_runs, 1),
        ):
            if value < least:
                raise InvalidInputError(f"{name}={value}: expected an integer >= {least}")
        if self.predictions_max_age_days < 0:
            raise InvalidInputError(
                f"SUGFW_PREDICTIONS_MAX_AGE_DAYS={self.predictions_max_age_days}: expected days "
                ">= 0 (0: keep for ever)"
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
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        values: dict[str, Any] = {
            "label_studio_url": text("LABEL_STUDIO_URL"),
            "label_studio_api_key": text("LABEL_STUDIO_API_KEY"),
            "model": text("SUGFW_MODEL"),
            "checkpoint": _path(text("SUGFW_CHECKPOINT")),
            "device": text("SUGFW_DEVICE"),
            "k": _number(text("SUGFW_K"), "SUGFW_K", int),
            "budget": parse_optional_budget(text("SUGFW_BUDGET"), "SUGFW_BUDGET"),
            "grid": parse_grid(text("SUGFW_GRID"), "SUGFW_GRID"),
            "seed": _number(text("SUGFW_SEED"), "SUGFW_SEED", int),
            "predict_deadline_s": _number(
                text("SUGFW_PREDICT_DEADLINE_S"), "SUGFW_PREDICT_DEADLINE_S", float
            ),
            "state_dir": _path(text("SUGFW_STATE_DIR")),
            "test_data": _path(text("SUGFW_TEST_DATA")),
            "train_iterations": _number(
                text("SUGFW_TRAIN_ITERATIONS"), "SUGFW_TRAIN_ITERATIONS", int
            ),
            "train_epochs": _setting(env, "SUGFW_TRAIN_EPOCHS", int),
            "train_max_iterations": _setting(env, "SUGFW_TRAIN_MAX_ITERATIONS", int),
            "val_fraction": _setting(env, "SUGFW_VAL_FRACTION", float),
            "val_every": _setting(env, "SUGFW_VAL_EVERY", int),
            "early_stop_patience": _setting(env, "SUGFW_EARLY_STOP_PATIENCE", int),
            "cold_start_strategy": text("SUGFW_COLD_START_STRATEGY"),
            "round_strategy": text("SUGFW_ROUND_STRATEGY"),
            "mc_passes": _setting(env, "SUGFW_MC_PASSES", int),
            "round_budget": _setting(env, "SUGFW_ROUND_BUDGET", int),
            "interactive_cache_slices": _setting(env, "SUGFW_INTERACTIVE_CACHE_SLICES", int),
            "train_recipe": text("SUGFW_TRAIN_RECIPE"),
            "train_crop": _number(text("SUGFW_TRAIN_CROP"), "SUGFW_TRAIN_CROP", int),
            "train_batch_size": _number(text("SUGFW_TRAIN_BATCH"), "SUGFW_TRAIN_BATCH", int),
            "debounce_s": _number(text("SUGFW_DEBOUNCE_S"), "SUGFW_DEBOUNCE_S", float),
            "image_timeout_s": _number(
                text("SUGFW_IMAGE_TIMEOUT_S"), "SUGFW_IMAGE_TIMEOUT_S", float
            ),
            "image_deadline_s": _setting(env, "SUGFW_IMAGE_DEADLINE_S", float),
            "image_hosts": parse_hosts(text("SUGFW_IMAGE_HOSTS")),
            "image_allow_private": _setting(env, "SUGFW_IMAGE_ALLOW_PRIVATE", bool),
            "image_max_bytes": _setting(env, "SUGFW_IMAGE_MAX_BYTES", int),
            "image_max_pixels": _setting(env, "SUGFW_IMAGE_MAX_PIXELS", int),
            "max_request_bytes": _setting(env, "SUGFW_MAX_REQUEST_BYTES", int),
            "ray_address": text("SUGFW_RAY_ADDRESS"),
            "ray_actors": _number(text("SUGFW_RAY_ACTORS"), "SUGFW_RAY_ACTORS", int),
            "allow_unauthenticated": _setting(env, "SUGFW_ALLOW_UNAUTHENTICATED", bool),
            # Passwords are taken verbatim: surrounding spaces may be part of them.
            "basic_auth_user": env.get("BASIC_AUTH_USER") or None,
            "basic_auth_pass": env.get("BASIC_AUTH_PASS") or None,
            "local_files_document_root": _path(text("LOCAL_FILES_DOCUMENT_ROOT")),
            "predict_max_tasks": _setting(env, "SUGFW_PREDICT_MAX_TASKS", int),
            "json_max_depth": _setting(env, "SUGFW_JSON_MAX_DEPTH", int),
            "interactive_max_points": _setting(env, "SUGFW_INTERACTIVE_MAX_POINTS", int),
            "allowed_hosts": parse_hosts(text("SUGFW_ALLOWED_HOSTS"), "SUGFW_ALLOWED_HOSTS"),
            "webhook_any_project": _setting(env, "SUGFW_WEBHOOK_ANY_PROJECT", bool),
            "metrics_detail": _setting(env, "SUGFW_METRICS_DETAIL", bool),
            "predictions_max_age_days": _setting(env, "SUGFW_PREDICTIONS_MAX_AGE_DAYS", float),
            "score_cache_max_entries": _setting(env, "SUGFW_SCORE_CACHE_MAX_ENTRIES", int),
            "keep_last_runs": _setting(env, "SUGFW_KEEP_LAST_RUNS", int),
        }
        config = cls(**{key: value for key, value in values.items() if value is not None})
        config.check_model()
        return config

    def replace(self, **changes: Any) -> BackendConfig:
        """A copy with ``changes`` applied (CLI flags over the environment); ``None`` values are
        ignored."""
        config = dataclasses.replace(
            self, **{key: value for key, value in changes.items() if value is not None}
        )
        config.check_model()
        return config

    def check_model(self) -> None:
        from sugfw.models import MODEL_NAMES  # imports torch: only when a config is actually built

        if self.model not in MODEL_NAMES:
            raise InvalidInputError(
                f"SUGFW_MODEL={self.model!r} is unknown; choose one of {', '.join(MODEL_NAMES)}"
            )

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain values for logs: secrets masked, URLs stripped of credentials."""
        view: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name in ("label_studio_api_key", "basic_auth_pass"):
                value = None if value is None else REDACTED
            elif item.name == "label_studio_url" and value is not None:
                value = redact_url(value)
            elif isinstance(value, Path):
                value = str(value)
            view[item.name] = value
        return view


def parse_optional_budget(text: str | None, name: str = "budget") -> int | float | None:
    """``sugfw.selection.parse_budget``, with ``None`` (not set) staying ``None``."""
    return None if text is None else parse_budget(text, name)


def parse_grid(text: str | None, name: str = "grid") -> tuple[int, ...] | None:
    """ "128" → (128,), "64,96,128" (commas or spaces) → (64, 96, 128); ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        grid = tuple(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise InvalidInputError(
            f"{name}={text!r}: expected positive integers such as 128 or 64,96,128"
        ) from None
    if not grid or any(size < 1 for size in grid):
        raise InvalidInputError(
            f"{name}={text!r}: expected positive integers such as 128 or 64,96,128"
        )
    return grid


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


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _setting(env: Mapping[str, str], name: str, kind: type) -> Any:
    """``env[name]`` as ``kind`` (bool: 1/0, true/false); unset or empty → ``None``."""
    text = env.get(name, "").strip() or None
    return _flag(text, name) if kind is bool else _number(text, name, kind)


def _flag(text: str | None, name: str) -> bool | None:
    if text is None:
        return None
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise InvalidInputError(f"{name}={text!r}: expected 1 or 0 (true/false)")


def _number(text: str | None, name: str, kind: type) -> Any:
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise InvalidInputError(
            f"{name}={text!r}: expected {'an integer' if kind is int else 'a number'}"
        ) from None


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text).expanduser()
