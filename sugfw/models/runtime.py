"""SAM's two costly stages on a CPU inference runtime: OpenVINO or ONNX Runtime, torch as
reference.

The image encoder (LiteMedSAM's TinyViT: 75 GFLOP per 256² view) and the factored IoU pass of
everything mode (``sugfw.models.iou_first``: 0.86 GFLOP per prompt, ~70 prompts per view) are
most of a slice's arithmetic. On this project's 2-core CPU, OpenVINO and ONNX Runtime run both
faster than torch for the same weights, most of all when the cores are shared
(``docs/benchmarks.md``, "Scoring speed"). Each stage is exported once to ONNX with static
shapes (one canvas; a chunk of prompts, padded) and kept under the user's cache folder, keyed
by model, weights, shapes and torch version; both runtimes read that file. Nothing is
downloaded. A runtime that is not installed, or fails to export or load, leaves torch in place
with a log line.

Outputs differ from torch's by rounding only (~3e-6); the record cache keys on the runtime, so
torch's cached records stay valid for torch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
"""``auto``: OpenVINO when installed, else ONNX Runtime, else torch (CPU, fp32 only)."""
_PREFERENCE = ("openvino", "onnxruntime")
ONNX_OPSET = 18

Runner = Callable[..., tuple[torch.Tensor, ...]]
"""Tensors in (the exported module's arguments, in order), every output of the graph back."""


@dataclass(frozen=True)
class Graph:
    """A module to run on a runtime with static shapes: exported once per ``key``."""

    name: str
    module: nn.Module
    example: tuple[torch.Tensor, ...]
    dynamo: bool
    """The exporter: torch.export (functional graphs, e.g. the IoU pass) or TorchScript tracing
    (the encoders: torch.export does not take TinyViT's windowed attention)."""

    def code_digest(self) -> str:
        """A digest of the source files that define the module and its submodules, so a change
        to the code that builds the graph exports it again instead of reusing a stale file."""
        digest = hashlib.sha256()
        files = {inspect.getsourcefile(type(m)) for m in self.module.modules()}
        for name in sorted(f for f in files if f):
            digest.update(Path(name).read_bytes())
        return digest.hexdigest()[:16]


def cache_folder() -> Path:
    """Where exported graphs are kept: ``$SUGFW_CACHE`` or ``$XDG_CACHE_HOME/sugfw`` or
    ``~/.cache/sugfw``; the temporary folder when the home is not writable (containers)."""
    configured = os.environ.get("SUGFW_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "sugfw"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / "sugfw-cache"
    return folder


def installed(runtime: str) -> bool:
    return importlib.util.find_spec(runtime) is not None


def choose_runtime(requested: str, device: torch.device, precision: str = "fp32") -> str:
    """The runtime that will run the exported stages: torch on a GPU, under reduced precision,
    or when the requested runtime is missing (logged); ``auto`` takes the first installed of
    OpenVINO, ONNX Runtime."""
    if requested not in RUNTIMES:
        raise ValueError(f"runtime={requested!r}: use one of {', '.join(RUNTIMES)}")
    if requested == "torch" or device.type != "cpu" or precision != "fp32":
        return "torch"
    candidates = _PREFERENCE if requested == "auto" else (requested,)
    for runtime in candidates:
        if installed(runtime):
            return runtime
    log.warning("%s is not installed: the model runs in torch", " or ".join(candidates))
    return "torch"


def export_key(*parts: object) -> str:
    """A file name part for one graph of one model: its identity (with its code's digest) plus
    torch and opset versions."""
    text = ":".join(map(str, (*parts, torch.__version__, ONNX_OPSET)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def export_graph(graph: Graph, folder: Path, key: str) -> Path:
    """``graph`` as an ONNX file in ``folder``, exported on first use; written to a temporary
    name, then renamed, so a concurrent process never reads half a file."""
    path = folder / f"{graph.name}-{key}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".onnx", delete=False) as handle:
        partial = Path(handle.name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' tracer warnings are not the user's
            torch.onnx.export(
                graph.module.float().cpu().eval(),
                graph.example,
                str(partial),
                opset_version=ONNX_OPSET,
                dynamo=graph.dynamo,
                external_data=False,
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _openvino_runner(path: Path, threads: int) -> Runner:
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(path),
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",  # never bf16/f16 behind the user's back
        },
    )
    request = compiled.create_infer_request()

    outputs = range(len(compiled.outputs))

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        request.infer([x.contiguous().numpy() for x in inputs])
        return tuple(torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in outputs)

    return run


def _onnxruntime_runner(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {name: x.contiguous().numpy() for name, x in zip(names, inputs, strict=True)}
        return tuple(torch.from_numpy(out) for out in session.run(None, feed))

    return run


_RUNNERS = {"openvino": _openvino_runner, "onnxruntime": _onnxruntime_runner}


def runtime_version(runtime: str) -> str:
    """``openvino 2026.4.1``: what the record cache keys on."""
    return f"{runtime} {importlib.metadata.version(runtime)}"


def load_runner(
    graph: Graph, runtime: str, key: str | None, threads: int | None = None
) -> Runner | None:
    """``graph`` on ``runtime``: None for torch, or (logged) when the export or the runtime
    fails. ``key`` None: exported to a temporary folder removed once the runtime has loaded it
    (random weights, never seen twice)."""
    if runtime == "torch":
        return None
    threads = threads or torch.get_num_threads()
    try:
        if key is None:
            with tempfile.TemporaryDirectory() as folder:
                return _RUNNERS[runtime](export_graph(graph, Path(folder), "once"), threads)
        return _RUNNERS[runtime](export_graph(graph, cache_folder(), key), threads)
    except Exception as error:  # any failure leaves the reference path working
        log.warning("%s stays in torch: %s failed (%s)", graph.name, runtime, error)
        return None


def in_chunks(runners: dict[int, Runner]) -> Callable[..., torch.Tensor]:
    """Runners of one graph exported for several chunk sizes of its second argument's rows,
    applied to any number of rows: the largest chunk that fits, then the smallest padded with
    copies of its first row (static shapes run faster than a dynamic one, and two sizes keep
    the padding small). The padding's outputs are dropped."""
    sizes = sorted(runners, reverse=True)

    def run(first: torch.Tensor, rows: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        outputs, start = [], 0
        while start < len(rows):
            left = len(rows) - start
            size = next((n for n in sizes if n <= left), sizes[-1])
            part = rows[start : start + size]
            if len(part) < size:
                part = torch.cat([part, part[:1].expand(size - len(part), *part.shape[1:])])
            outputs.append(runners[size](first, part, *rest)[0][: min(size, left)])
            start += size
        return torch.cat(outputs)

    return run
