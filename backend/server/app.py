"""HTTP routes of the ML backend, as Label Studio calls them.

Every route answers at once: anything slow becomes a job for the background worker. Request
bodies are never logged verbatim (Label Studio puts tokens in them): only a summary at INFO and
the redacted body at DEBUG.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.config import BackendConfig
from backend.jobs.connected import ConnectedProjects
from backend.jobs.queue import JobQueue
from backend.jobs.training_history import (
    TrainingHistory,
    learning_curve_png,
    public_record,
    set_default_keep_last_runs,
)
from backend.labelstudio.address_guard import host_listed
from backend.labelstudio.brush import LabelConfigError, parse_label_config
from backend.labelstudio.image_policy import ImagePolicy, set_default_policy
from backend.labelstudio.prompts import MalformedPromptError
from backend.model import LabelStudioAccessError, SugfwModel
from backend.redact import redact, redact_url
from backend.server.request_checks import RequestError, check_predict_body, parse_json
from sugfw.cache import set_default_max_entries

log = logging.getLogger(__name__)
REALM = "sugfw"
# Label Studio sends /setup's project as "<id>.<timestamp>"; webhooks carry the bare id.
_PROJECT_ID = re.compile(r"^\s*([0-9]{1,18})(?:\.[0-9]+)?\s*$")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Host header names always accepted: a page on another origin cannot make a browser send them
(DNS rebinding hands the attacker's name to the browser, and the Host header carries it)."""
JSON_TYPES = ("application/json",)


class BadRequest(Exception):
    """A request this backend cannot act on; answered with 400 and the message."""


def create_app(config: BackendConfig, model: SugfwModel, jobs: JobQueue | None = None) -> Flask:
    """The Flask app. Without ``jobs``, a queue under the state dir is created, with the handlers of
    ``backend.server.handlers``, and its worker started."""
    if jobs is None:
        from backend.server.handlers import job_handlers

        handlers = job_handlers(config, model.scorer, model.predictions)
        jobs = JobQueue(config.state_dir, handlers, debounce_s=config.debounce_s)
        jobs.start()
    history = TrainingHistory(config.state_dir)
    connected = ConnectedProjects(config.state_dir)
    retention = _Retention(model, config.predictions_max_age_days * 86400.0)
    retention.run()
    # Every fetcher of this process, the jobs' included, follows the configured image limits;
    # every score cache and training history, the configured retention.
    set_default_policy(ImagePolicy.from_config(config))
    set_default_max_entries(config.score_cache_max_entries)
    set_default_keep_last_runs(config.keep_last_runs)
    app = Flask(__name__)
    app.config["SUGFW_JOBS"] = jobs
    # Larger bodies get 413 before they are read (Werkzeug checks Content-Length and the stream).
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    started = time.time()

    @app.before_request
    def require_basic_auth() -> Response | None:
        if not _host_accepted(config):
            # 421: this server does not answer for that name (a DNS-rebinding page's, typically).
            log.warning("request for Host %r refused (SUGFW_ALLOWED_HOSTS)", request.host[:80])
            return jsonify({"error": _host_refusal(config)}), 421
        if config.auth_enabled and not _credentials_match(config):
            response = jsonify({"error": "authentication required"})
            response.status_code = 401
            response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
            return response
        return None

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        return jsonify(
            {
                "status": "UP",
                "model_class": type(model).__name__,
                "model_version": model.model_version,
            }
        )

    @app.post("/setup")
    def setup() -> Response:
        payload = _json_body(config)
        project = _required(payload, "project", (str, int))
        project_id = _project_number(project, "'project'")
        _log_request("setup", payload, project=project_id)
        schema = payload.get("schema")
        if schema is not None:
            if not isinstance(schema, str):
                raise BadRequest(f"key 'schema' must be str, got {type(schema).__name__}")
            parse_label_config(schema)  # no BrushLabels/PolygonLabels tag → 400 saying so
        model.check_access(project_id)  # a wrong API key → 400 saying so, nothing queued
        connected.add(project_id)  # from now on its webhooks are acted on
        retention.run()  # at most once a day
        version = model.setup(str(project_id), schema)
        jobs.revive(str(project_id))  # a job set aside after crashes gets another chance
        # Connecting a project is the moment its queue needs an order: score it in the background.
        # Repeated /setup calls merge into one pending job.
        jobs.submit("score", str(project_id), gated=True)  # nothing changed → nothing queued
        return jsonify({"model_version": version})

    @app.post("/predict")
    def predict() -> Response:
        payload = _json_body(config)
        tasks, params = check_predict_body(payload, config.predict_max_tasks)
        _log_request("predict", payload, project=payload.get("project"), tasks=len(tasks))
        _check_image_urls(tasks, payload.get("label_config"))
        results = model.predict(
            tasks,
            context=params.get("context"),
            project=payload.get("project"),
            label_config=payload.get("label_config"),
        )
        if len(results) != len(tasks):
            raise RuntimeError(f"model returned {len(results)} predictions for {len(tasks)} tasks")
        return jsonify({"results": results})

    @app.post("/webhook")
    def webhook() -> Response:
        payload = _json_body(config)
        action = _required(payload, "action", str)
        kind = model.job_for(action)
        if kind is None:
            _log_request("webhook", payload, action=action)
            log.info("ignored webhook action %s", action)
            return jsonify({"status": "ignored", "action": action})
        project = _project_id(payload)
        _log_request("webhook", payload, action=action, project=project)
        if not config.webhook_any_project and project not in connected:
            log.warning("webhook %s for project %s refused: not connected", action, project)
            return jsonify(
                {
                    "error": f"project {project} is not connected to this backend: connect it "
                    "in Label Studio (Settings → Model), which calls /setup, or set "
                    "SUGFW_WEBHOOK_ANY_PROJECT=1"
                }
            ), 403
        new = jobs.submit(kind, project)
        return jsonify({"status": "queued" if new else "merged", "job": kind, "project": project})

    @app.get("/versions")
    def versions() -> Response:
        return jsonify({"versions": [model.model_version]})

    @app.get("/metrics")
    def metrics() -> Response:
        detail = config.metrics_detail
        training = history.all()
        if not detail:  # case ids name patients' volumes: only when asked for
            training = {key: [public_record(r) for r in runs] for key, runs in training.items()}
        return jsonify(
            {
                "model_version": model.model_version,
                "uptime_s": round(time.time() - started, 1),
                "jobs": jobs.snapshot(detail=detail),
                "training": training,
            }
        )

    @app.get("/metrics/plot")
    def metrics_plot() -> Response | tuple[Response, int]:
        """The learning curve (PNG) of ``?project=<id>``, or of every project that has trained."""
        project = request.args.get("project")
        if project is None:
            histories = history.all()
        else:
            project_id = _project_number(project, "'project'")
            records = history.records(project_id)
            if not records:
                return jsonify({"error": f"project {project_id} has no training run yet"}), 404
            histories = {str(project_id): records}
        response = Response(learning_curve_png(histories), mimetype="image/png")
        response.headers["Cache-Control"] = "no-store"  # a new run changes it
        return response

    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest) -> tuple[Response, int]:
        log.info("400 on %s %s: %s", request.method, request.path, error)
        return jsonify({"error": str(error)}), 400

    @app.errorhandler(RequestError)
    @app.errorhandler(MalformedPromptError)
    def refused_request(error: RequestError | MalformedPromptError) -> tuple[Response, int]:
        log.info("%d on %s %s: %s", error.status, request.method, request.path, error)
        return jsonify({"error": str(error)}), error.status

    @app.errorhandler(LabelStudioAccessError)
    def label_studio_access(error: LabelStudioAccessError) -> tuple[Response, int]:
        log.warning("/setup refused: %s", error)
        return jsonify({"error": str(error)}), error.status

    @app.errorhandler(LabelConfigError)
    def bad_label_config(error: LabelConfigError) -> tuple[Response, int]:
        log.warning("labelling config refused: %s", error)
        return jsonify({"error": str(error)}), 400

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return jsonify({"error": error.description}), error.code or 500

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        # The traceback goes to the log only; the client learns the kind of failure, no internals.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(
            {"error": f"internal error ({type(error).__name__}); see the backend log"}
        ), 500

    return app


class _Retention:
    """Deletes stored predictions older than the retention, at start and then at most daily."""

    EVERY_S = 86400.0

    def __init__(self, model: SugfwModel, max_age_s: float) -> None:
        self.model, self.max_age_s, self.last = model, max_age_s, -self.EVERY_S

    def run(self) -> None:
        now = time.monotonic()
        if self.max_age_s <= 0 or now - self.last < self.EVERY_S:
            return
        self.last = now
        try:
            self.model.predictions.prune(self.max_age_s)
        except OSError as error:  # a maintenance step: never fails a request
            log.warning("stored predictions not pruned: %s", error)


def _credentials_match(config: BackendConfig) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    user, password = auth.username or "", auth.password or ""
    # Both comparisons always run, in constant time, so timing reveals neither which part failed.
    user_ok = hmac.compare_digest(user.encode(), (config.basic_auth_user or "").encode())
    pass_ok = hmac.compare_digest(password.encode(), (config.basic_auth_pass or "").encode())
    return user_ok & pass_ok


def _json_body(config: BackendConfig) -> dict[str, Any]:
    # Only a JSON content type: a form or text/plain post is what a web page in a browser can send
    # to any address without the browser asking the server first (no CORS preflight).
    if request.mimetype not in JSON_TYPES:
        raise RequestError(
            f"request body of type {request.mimetype or 'none'!r}; expected application/json",
            415,
        )
    payload = parse_json(request.get_data(cache=True), config.json_max_depth)
    if not isinstance(payload, dict):
        raise BadRequest(f"request body is JSON {type(payload).__name__}; expected a JSON object")
    return payload


def _host_accepted(config: BackendConfig) -> bool:
    """Whether the Host header names this server: a loopback name or one of SUGFW_ALLOWED_HOSTS.

    Behind Basic auth a rebinding page has no credentials, so without a list any name is
    accepted there; without auth the list is enforced always.
    """
    if config.auth_enabled and not config.allowed_hosts:
        return True
    try:
        parsed = httpx.URL(f"http://{request.host}/")
    except (httpx.InvalidURL, ValueError):
        return False
    host, port = parsed.host.lower(), parsed.port or 80
    return host in LOOPBACK_HOSTS or host_listed(host, port, config.allowed_hosts)


def _host_refusal(config: BackendConfig) -> str:
    return (
        "this backend does not answer for that Host name; add it to SUGFW_ALLOWED_HOSTS "
        f"(accepted now: {', '.join(LOOPBACK_HOSTS + tuple(config.allowed_hosts))})"
    )


def _required(payload: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in payload:
        raise BadRequest(f"missing key {key!r} in the request body")
    value = payload[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(
            item.__name__ for item in (kind if isinstance(kind, tuple) else (kind,))
        )
        raise BadRequest(f"key {key!r} must be {names}, got {type(value).__name__}")
    return value


def _project_id(payload: dict[str, Any]) -> str:
    """Project id of a webhook: ``project`` is an object with ``id`` (or, from older servers, the
    id)."""
    project = payload.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    if (
        isinstance(project, bool)
        or not isinstance(project, (int, str))
        or str(project).strip() == ""
    ):
        raise BadRequest("webhook has no project id (expected 'project': {'id': ...})")
    return str(_project_number(project, "webhook project id"))


def _project_number(value: Any, what: str) -> int:
    """A Label Studio project id (a positive integer, or "<id>.<timestamp>" as /setup sends it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = _PROJECT_ID.match(value) if isinstance(value, str) else None
        if match is None:
            raise BadRequest(
                f"{what} must be a Label Studio project id such as 3 or '3.1700000000', "
                f"got {str(value)[:40]!r}"
            )
        number = int(match.group(1))
    if number < 1:
        raise BadRequest(f"{what} must be a positive project id, got {number}")
    return number


def _check_image_urls(tasks: list[dict[str, Any]], label_config: Any) -> None:
    """A syntactically broken image URL is the caller's error (400), found before any work."""
    try:
        control = parse_label_config(label_config) if isinstance(label_config, str) else None
    except LabelConfigError:
        return  # refused later, if a task needs the config at all
    if control is None:
        return
    image_key = control.image_key
    for task in tasks:
        data = task.get("data")
        url = data.get(image_key) if isinstance(data, dict) else None
        if not isinstance(url, str) or url.startswith("data:"):
            continue
        try:
            parts = urlsplit(url.strip())
            if parts.scheme in ("http", "https"):
                parts.port  # noqa: B018 - raises ValueError for a port out of range
                httpx.URL(url.strip())
        except (ValueError, httpx.InvalidURL) as error:
            raise BadRequest(
                f"task {task.get('id')!r}: data[{image_key!r}] {redact_url(url)!r} is not a valid "
                f"URL ({error})"
            ) from None


def _log_request(route: str, payload: dict[str, Any], **summary: Any) -> None:
    log.info("%s %s", route, " ".join(f"{key}={value}" for key, value in summary.items()))
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s body (redacted): %s", route, redact(payload))
