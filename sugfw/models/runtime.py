"""The image encoder on a CPU inference runtime: OpenVINO or ONNX Runtime, torch as reference.

The encoder is most of a slice's arithmetic (LiteMedSAM's TinyViT: 75 GFLOP per 256² view). On
this project's CPUs OpenVINO and ONNX Runtime run it 2.1-2.4× faster than torch for the same
weights (``docs/benchmarks.md``, "Scoring speed"). The encoder is exported once to ONNX (static
batch of one: TinyViT's reshapes bake the batch in) and the file is kept under the user's cache
folder, keyed by model, weights and torch version; both runtimes read that file. Nothing is
downloaded. A runtime that is not installed, or fails to load the file, leaves torch in place
with a log line.

Embeddings differ from torch's by rounding only (max |Δ| ~3e-6 on LiteMedSAM); the record
cache keys on the runtime, so torch's cached records stay valid for torch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
"""``auto``: OpenVINO when installed, else ONNX Runtime, else torch (CPU, fp32 only)."""
_PREFERENCE = ("openvino", "onnxruntime")
ONNX_OPSET = 17

EncoderRunner = Callable[[torch.Tensor], torch.Tensor]


def cache_folder() -> Path:
    """Where exported encoders are kept: ``$SUGFW_CACHE`` or ``$XDG_CACHE_HOME/sugfw`` or
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
    """The runtime that will run the encoder: torch on a GPU, under reduced precision, or when
    the requested runtime is missing (logged); ``auto`` takes the first installed of OpenVINO,
    ONNX Runtime."""
    if requested not in RUNTIMES:
        raise ValueError(f"runtime={requested!r}: use one of {', '.join(RUNTIMES)}")
    if requested == "torch" or device.type != "cpu" or precision != "fp32":
        return "torch"
    candidates = _PREFERENCE if requested == "auto" else (requested,)
    for runtime in candidates:
        if installed(runtime):
            return runtime
    log.warning("%s is not installed: the image encoder runs in torch", " or ".join(candidates))
    return "torch"


def export_encoder(encoder: torch.nn.Module, canvas: int, folder: Path, key: str) -> Path:
    """The encoder as an ONNX file for one (1, 3, canvas, canvas) input, exported on first use
    and kept in ``folder`` under ``key``; written to a temporary name, then renamed, so a
    concurrent process never reads half a file."""
    path = folder / f"encoder-{key}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, canvas, canvas)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".onnx", delete=False) as handle:
        partial = Path(handle.name)
    try:
        # The TorchScript exporter: the dynamo one does not export TinyViT's windowed attention.
        torch.onnx.export(
            encoder.float().cpu().eval(),
            (example,),
            str(partial),
            opset_version=ONNX_OPSET,
            input_names=["canvas"],
            output_names=["embedding"],
            dynamo=False,
        )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def export_key(model_name: str, checkpoint_id: str, canvas: int) -> str:
    text = f"{model_name}:{checkpoint_id}:{canvas}:{torch.__version__}:{ONNX_OPSET}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _openvino_runner(path: Path, threads: int) -> EncoderRunner:
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

    def run(canvas: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.array(request.infer([canvas.numpy()])[0]))

    return run


def _onnxruntime_runner(path: Path, threads: int) -> EncoderRunner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(canvas: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"canvas": canvas.numpy()})[0])

    return run


_RUNNERS = {"openvino": _openvino_runner, "onnxruntime": _onnxruntime_runner}


def runtime_version(runtime: str) -> str:
    """``openvino 2026.4.1``: what the record cache keys on."""
    if runtime == "torch":
        return f"torch {torch.__version__}"
    return f"{runtime} {importlib.metadata.version(runtime)}"


def load_encoder_runner(
    encoder: torch.nn.Module,
    runtime: str,
    canvas: int,
    key: str | None,
    threads: int | None = None,
) -> EncoderRunner | None:
    """A function (1, 3, S, S) canvas → (1, C, h, w) embedding on ``runtime``; None for torch,
    or (logged) when the export or the runtime fails. ``key`` None: exported to a temporary
    folder removed once the runtime has loaded it (random weights)."""
    if runtime == "torch":
        return None
    threads = threads or torch.get_num_threads()
    try:
        if key is None:
            with tempfile.TemporaryDirectory() as folder:
                path = export_encoder(encoder, canvas, Path(folder), "once")
                return _RUNNERS[runtime](path, threads)
        path = export_encoder(encoder, canvas, cache_folder(), key)
        return _RUNNERS[runtime](path, threads)
    except Exception as error:  # any failure leaves the reference path working
        log.warning("the image encoder stays in torch: %s failed (%s)", runtime, error)
        return None
