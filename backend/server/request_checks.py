"""What a request body must look like before the backend acts on it.

Everything here is a cheap structural check that runs before any work, so that a malformed or
hostile body is a 4xx naming the problem instead of a 500 (Python's recursion limit, a number too
large for a float) or a silent empty answer (a string task id).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from sugfw.errors import SugfwError

MAX_TASK_ID = 2**63 - 1
"""Label Studio's ids are 64-bit database keys."""


class RequestError(SugfwError, ValueError):
    """A request body the backend refuses; answered with ``status`` and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_json(raw: bytes, max_depth: int) -> Any:
    """``raw`` parsed as JSON, refused when it is not JSON or nests deeper than ``max_depth``.

    The depth is measured on the text before parsing: Python's parser recurses once per level
    and would hit the interpreter's recursion limit (a 500) long before any check after it.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("request body is not UTF-8 text; expected a JSON object") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise RequestError(
            f"request body nests {depth} levels deep; at most {max_depth} are accepted "
            "(SUGFW_JSON_MAX_DEPTH)"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise RequestError(f"request body is not valid JSON ({str(error)[:80]})") from None


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON ``text``, brackets inside strings ignored
    (a malformed text gets some number; the parser refuses it afterwards). Linear, in C: strings
    are cut out by one regular expression, the brackets summed by numpy."""
    bare = _STRING.sub("", text).encode("ascii", "ignore")
    steps = _STEP[np.frombuffer(bare, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STEP = np.zeros(256, dtype=np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


def task_id(value: Any, what: str = "task id") -> int:
    """A Label Studio task id: a positive integer (never a string, a bool or a float), so that it
    can go into a URL path as it is."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{what} must be an integer, got {_shown(value)}")
    if not 1 <= value <= MAX_TASK_ID:
        raise RequestError(f"{what} must be a positive 64-bit integer, got {_shown(value)}")
    return value


def check_predict_body(payload: dict[str, Any], max_tasks: int) -> tuple[list[dict], dict]:
    """(tasks, params) of a /predict body, each task an object with an integer ``id`` and an
    object ``data``; params an object (absent or null: empty), its ``context`` an object or null.
    """
    tasks = payload.get("tasks")
    if "tasks" not in payload:
        raise RequestError("missing key 'tasks' in the request body")
    if not isinstance(tasks, list):
        raise RequestError(f"key 'tasks' must be list, got {type(tasks).__name__}")
    if len(tasks) > max_tasks:
        raise RequestError(
            f"/predict names {len(tasks)} tasks; at most {max_tasks} per call are accepted "
            "(SUGFW_PREDICT_MAX_TASKS): select fewer tasks",
            413,
        )
    if not all(isinstance(task, dict) for task in tasks):
        raise RequestError("'tasks' must be a list of task objects")
    for index, task in enumerate(tasks):
        task_id(task.get("id"), f"tasks[{index}].id")
        data = task.get("data")
        if not isinstance(data, dict):
            raise RequestError(f"tasks[{index}].data must be an object, got {type(data).__name__}")
    params = payload.get("params")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise RequestError(f"'params' must be an object, got {type(params).__name__}")
    context = params.get("context")
    if context is not None and not isinstance(context, dict):
        raise RequestError(
            f"'params.context' must be an object or null, got {type(context).__name__}"
        )
    return tasks, params


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
