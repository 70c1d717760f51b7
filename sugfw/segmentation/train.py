"""Training loop of the downstream UNet: poly-decayed SGD or AdamW, 0.5·(CE + Dice), best model.

Two recipes:
- The paper's (``TrainConfig`` defaults, :meth:`TrainConfig.paper`; the authors' code):
  SGD lr 0.01, momentum 0.9, weight decay 1e-4, lr = lr0 · (1 − it / max_it)^0.9, BatchNorm,
  random crop (224 Promise12, 480 UTAH) plus random rot90/flip, validation every 200 iterations
  keeping the best model. Kept for GPU fidelity runs.
- The few-slice recipe (:meth:`TrainConfig.few_slice`), for a handful of annotated slices on a
  CPU: whole slices, instance norm (a batch of 8 drawn from 4 slices makes batch statistics
  meaningless), AdamW with the same poly decay, MONAI's standard spatial and intensity
  augmentation (``sugfw.segmentation.augmentation``), validation every 25 iterations.
 Here validation also runs after the last
iteration, so a run shorter than ``eval_every`` still yields a best model. With
``TrainConfig.patience`` set, a run also stops early once that many validations in a row brought no
new best, and ``min_iterations`` have run (the poly schedule stays that of ``iterations``); unset,
every iteration runs.

Reproducibility: model init and dropout draw from torch's global generator, seeded with
``config.seed`` inside a forked RNG scope (the caller's state is left untouched); sampling and
augmentation draw from a numpy generator seeded the same way. Both generator states, the sampling
queue, the optimizer and the best model so far go into ``last.pt`` at every validation, so a run
that stops and is restarted with the same arguments ends with the same weights as one that did not
stop (bit-for-bit on CPU with the same torch thread count, which changes summation order; CUDA's
bilinear-upsampling backward is not deterministic).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sugfw.atomic import atomic_path
from sugfw.checkpoints import read_checkpoint
from sugfw.errors import CheckpointError, InvalidInputError
from sugfw.metrics import foreground_dice, mask_dice
from sugfw.segmentation.augmentation import AUGMENTATION_LAWS, AugmentationLaw, augment_pairs
from sugfw.segmentation.infer import predict_volume
from sugfw.segmentation.losses import segmentation_loss
from sugfw.segmentation.unet import NORMS, Norm, UNet

PAPER_EPOCHS, PAPER_BATCH_SIZE = 1000, 8
AUTHORS_CODE_EPOCHS, AUTHORS_CODE_BATCH_SIZE = 400, 16
LAST_CHECKPOINT, BEST_CHECKPOINT = "last.pt", "best.pt"
OPTIMIZERS = ("sgd", "adamw")
# The few-slice recipe (TrainConfig.few_slice); chosen in docs/benchmarks.md, "The few-slice
# learner".
FEW_SLICE_LR = 2e-3
FEW_SLICE_WEIGHT_DECAY = 1e-2
FEW_SLICE_EVAL_EVERY = 25
RECIPES = ("few_slice", "paper")
"""Named training recipes (``recipe_config``)."""
# Fields that may change between a run and its resumption without changing the result.
_RESUME_FREE_FIELDS = ("device",)

Validator = Callable[[nn.Module], float]
StateDict = dict[str, torch.Tensor]


def iterations_for_epochs(epochs: int, n_train: int, batch_size: int) -> int:
    """epochs × ceil(n_train / batch_size): the iteration count of an epoch-based schedule."""
    if epochs < 1 or n_train < 1 or batch_size < 1:
        raise InvalidInputError(
            f"epochs, n_train and batch_size must be >= 1, got {epochs}, {n_train}, {batch_size}"
        )
    return epochs * math.ceil(n_train / batch_size)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; defaults are the paper's optimiser settings."""

    iterations: int
    batch_size: int = PAPER_BATCH_SIZE
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    crop_size: int | None = 224
    """Side of the random square training crops; None: whole slices (all of one shape)."""
    eval_every: int = 200
    seed: int = 2025
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    n_classes: int = 2
    patience: int | None = None
    """Stop after this many validations in a row without a new best; None: never stop early."""
    min_iterations: int = 0
    """No early stop before this many iterations (a model still predicting nothing scores a flat
    0 on every validation at first)."""
    optimizer: str = "sgd"
    """"sgd" (momentum SGD, the paper's) or "adamw" (``momentum`` unused)."""
    norm: Norm = "batch"
    augmentation: AugmentationLaw = "rot_flip"

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise InvalidInputError(
                    f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        if self.crop_size is not None and self.crop_size < 1:
            raise InvalidInputError(f"TrainConfig.crop_size must be >= 1, got {self.crop_size}")
        if self.n_classes < 2:
            raise InvalidInputError(f"TrainConfig.n_classes must be >= 2, got {self.n_classes}")
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("norm", NORMS),
            ("augmentation", AUGMENTATION_LAWS),
        ):
            if getattr(self, name) not in choices:
                raise InvalidInputError(
                    f"TrainConfig.{name} must be one of {choices}, got {getattr(self, name)!r}"
                )
        if self.lr <= 0:
            raise InvalidInputError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.min_iterations < 0:
            raise InvalidInputError(
                f"TrainConfig.min_iterations must be >= 0, got {self.min_iterations}"
            )
        if self.patience is not None and self.patience < 1:
            raise InvalidInputError(
                f"TrainConfig.patience must be >= 1 or None, got {self.patience}"
            )

    @classmethod
    def paper(cls, n_train: int, **overrides: Any) -> TrainConfig:
        """The paper's schedule: batch 8 for 1000 epochs over ``n_train`` slices."""
        return cls._from_epochs(
            PAPER_EPOCHS, n_train, {"batch_size": PAPER_BATCH_SIZE, **overrides}
        )

    @classmethod
    def authors_code(cls, n_train: int, **overrides: Any) -> TrainConfig:
        """The authors' code: batch 16 for 400 epochs over ``n_train`` slices (last batch
        partial)."""
        return cls._from_epochs(
            AUTHORS_CODE_EPOCHS, n_train, {"batch_size": AUTHORS_CODE_BATCH_SIZE, **overrides}
        )

    @classmethod
    def few_slice(cls, iterations: int, **overrides: Any) -> TrainConfig:
        """The few-slice recipe (module docstring): whole slices, instance norm, AdamW, MONAI
        augmentation, validation every 25 iterations."""
        recipe: dict[str, Any] = {
            "iterations": iterations,
            "batch_size": PAPER_BATCH_SIZE,
            "lr": FEW_SLICE_LR,
            "weight_decay": FEW_SLICE_WEIGHT_DECAY,
            "crop_size": None,
            "eval_every": FEW_SLICE_EVAL_EVERY,
            "optimizer": "adamw",
            "norm": "instance",
            "augmentation": "monai",
        }
        return cls(**{**recipe, **overrides})

    @classmethod
    def _from_epochs(cls, epochs: int, n_train: int, fields: dict[str, Any]) -> TrainConfig:
        fields.setdefault(
            "iterations", iterations_for_epochs(epochs, n_train, fields["batch_size"])
        )
        return cls(**fields)


def recipe_config(recipe: str, iterations: int, **overrides: Any) -> TrainConfig:
    """The TrainConfig of a named recipe (``RECIPES``) with ``overrides`` on top."""
    if recipe == "few_slice":
        return TrainConfig.few_slice(iterations, **overrides)
    if recipe == "paper":
        return TrainConfig(iterations=iterations, **overrides)
    raise InvalidInputError(f"unknown training recipe {recipe!r}; expected one of {RECIPES}")


@dataclass
class TrainResult:
    """Weights (on CPU) with the best validation Dice, that Dice, and one record per validation."""

    best_state: StateDict
    best_val_dice: float
    history: list[dict[str, float]]
    iterations: int = 0
    """SGD iterations run (fewer than ``TrainConfig.iterations`` when stopped early)."""
    best_iteration: int = 0
    stopped_early: bool = False


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names, at ``config.lr`` (rescheduled every step)."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def poly_lr(base_lr: float, iteration: int, max_iterations: int, power: float = 0.9) -> float:
    """lr0 · (1 − it / max_it)^power."""
    return base_lr * (1 - iteration / max_iterations) ** power


def train(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    val: Validator | tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
    config: TrainConfig,
    checkpoint_dir: str | os.PathLike,
    init_state: Mapping[str, torch.Tensor] | str | os.PathLike | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a UNet on 2-D slices and their label maps (values 0..n_classes−1).

    ``val`` is either a function scoring the model (called in eval mode, higher is better) or
    (images, masks) scored by mean foreground Dice per slice. If ``checkpoint_dir/last.pt`` exists
    the run resumes from it (``init_state`` is then ignored); otherwise it starts from
    ``init_state`` (a state dict or a checkpoint file) or from a seeded random init.
    """
    _check_labelled_slices(images, masks, config.n_classes, "training")
    if config.crop_size is None and len({image.shape for image in images}) > 1:
        raise InvalidInputError(
            "whole-slice training (crop_size=None) needs training slices of one shape, got "
            f"{sorted({image.shape for image in images})}; resize them or set crop_size"
        )
    evaluate = val if callable(val) else _slice_dice_validator(*val, config)
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device)

    with torch.random.fork_rng(devices=_cuda_indices(device)):
        torch.manual_seed(config.seed)
        model = UNet(in_channels=1, n_classes=config.n_classes, norm=config.norm)
        if init_state is not None:
            _load_weights(model, _state_from(init_state), "init_state")
        model.to(device)
        optimizer = make_optimizer(model, config)
        run = _RunState(rng=np.random.default_rng(config.seed))
        last_path = checkpoint_dir / LAST_CHECKPOINT
        if last_path.exists():
            run.restore(last_path, model, optimizer, config, len(images), device)
        _fit(
            model, optimizer, run, images, masks, evaluate, config, checkpoint_dir, device, progress
        )

    if run.best_state is None:  # every validation returned NaN
        raise InvalidInputError(
            f"validation gave no finite score in {len(run.history)} evaluations"
        )
    return TrainResult(
        run.best_state,
        run.best_val_dice,
        run.history,
        iterations=run.iteration,
        best_iteration=run.best_iteration,
        stopped_early=run.iteration < config.iterations and _patience_spent(run, config),
    )


def load_trained_unet(path: str | os.PathLike, device: str | torch.device = "cpu") -> UNet:
    """The UNet stored in a ``best.pt`` or ``last.pt`` written by :func:`train`, in eval mode."""
    checkpoint = read_checkpoint(Path(path))
    try:
        n_classes = checkpoint["config"]["n_classes"]
        norm = checkpoint["config"].get("norm", "batch")  # written before the field existed
    except (KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{path} has no training config; expected best.pt or last.pt"
        ) from error
    model = UNet(in_channels=1, n_classes=n_classes, norm=norm)
    _load_weights(model, checkpoint.get("model", {}), str(path))
    return model.to(device).eval()


@dataclass
class _RunState:
    """Everything besides model and optimizer that a resumed run needs to continue identically."""

    rng: np.random.Generator
    iteration: int = 0
    lr: float = 0.0
    queue: list[int] = field(default_factory=list)
    best_state: StateDict | None = None
    best_val_dice: float = -math.inf
    best_iteration: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def next_batch(self, n_train: int, batch_size: int) -> list[int]:
        """Next indices from a stream of shuffled epochs (every slice seen once per epoch)."""
        while len(self.queue) < batch_size:
            self.queue.extend(int(i) for i in self.rng.permutation(n_train))
        batch, self.queue = self.queue[:batch_size], self.queue[batch_size:]
        return batch

    def save(
        self,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        n_train: int,
        device: torch.device,
    ) -> None:
        _atomic_save(
            {
                "config": asdict(config),
                "n_train": n_train,
                "iteration": self.iteration,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "numpy_rng": self.rng.bit_generator.state,
                "queue": list(self.queue),
                "best_state": self.best_state,
                "best_val_dice": self.best_val_dice,
                "best_iteration": self.best_iteration,
                "history": self.history,
            },
            path,
        )

    def restore(
        self,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        n_train: int,
        device: torch.device,
    ) -> None:
        saved = read_checkpoint(path)
        _check_same_run(path, saved, config, n_train)
        _load_weights(model, saved.get("model", {}), str(path))
        try:
            optimizer.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["torch_rng"])
            if device.type == "cuda" and saved["cuda_rng"] is not None:
                torch.cuda.set_rng_state(saved["cuda_rng"], device)
            self.rng.bit_generator.state = saved["numpy_rng"]
        except (KeyError, ValueError, TypeError, RuntimeError) as error:
            raise CheckpointError(
                f"{path} has an unreadable optimizer or RNG state: {error}"
            ) from error
        self.iteration = saved["iteration"]
        self.queue = list(saved["queue"])
        self.best_state = saved["best_state"]
        self.best_val_dice = saved["best_val_dice"]
        self.best_iteration = saved["best_iteration"]
        self.history = list(saved["history"])


def _fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run: _RunState,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    evaluate: Validator,
    config: TrainConfig,
    checkpoint_dir: Path,
    device: torch.device,
    progress: bool,
) -> None:
    losses: list[float] = []
    bar = tqdm(total=config.iterations, initial=run.iteration, disable=not progress, desc="UNet")
    model.train()
    try:
        # Checked before each step, so a resumed run that had already stopped stops again at once.
        while run.iteration < config.iterations and not _patience_spent(run, config):
            losses.append(_step(model, optimizer, run, images, masks, config, device))
            bar.update(1)
            if run.iteration % config.eval_every and run.iteration < config.iterations:
                continue
            _checkpoint(
                model,
                optimizer,
                run,
                float(np.mean(losses)),
                _validate(model, evaluate),
                config,
                checkpoint_dir,
                len(images),
                device,
            )
            losses.clear()
            record = run.history[-1]
            bar.set_postfix(
                loss=f"{record['train_loss']:.3f}",
                val_dice=f"{record['val_dice']:.3f}",
                best=f"{run.best_val_dice:.3f}",
            )
    finally:
        bar.close()


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run: _RunState,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    config: TrainConfig,
    device: torch.device,
) -> float:
    """One SGD step at the poly-decayed learning rate; returns the batch loss."""
    run.lr = poly_lr(config.lr, run.iteration, config.iterations, config.poly_power)
    for group in optimizer.param_groups:
        group["lr"] = run.lr
    batch = run.next_batch(len(images), config.batch_size)
    x, y = _augmented_batch(images, masks, batch, config, run.rng)
    loss = segmentation_loss(model(x.to(device)), y.to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    run.iteration += 1
    return loss.item()


def _checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    run: _RunState,
    train_loss: float,
    dice: float,
    config: TrainConfig,
    checkpoint_dir: Path,
    n_train: int,
    device: torch.device,
) -> None:
    """Record a validation, keep the model if it is the best so far, and write the checkpoints."""
    run.history.append(
        {"iteration": run.iteration, "lr": run.lr, "train_loss": train_loss, "val_dice": dice}
    )
    if dice > run.best_val_dice:
        run.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        run.best_val_dice, run.best_iteration = dice, run.iteration
        _atomic_save(
            {
                "config": asdict(config),
                "model": run.best_state,
                "val_dice": dice,
                "iteration": run.iteration,
            },
            checkpoint_dir / BEST_CHECKPOINT,
        )
    run.save(checkpoint_dir / LAST_CHECKPOINT, model, optimizer, config, n_train, device)


def _patience_spent(run: _RunState, config: TrainConfig) -> bool:
    """Whether the last ``config.patience`` validations all failed to beat the best so far."""
    if config.patience is None or run.iteration < config.min_iterations:
        return False
    since_best = sum(1 for record in run.history if record["iteration"] > run.best_iteration)
    return since_best >= config.patience


def _validate(model: nn.Module, evaluate: Validator) -> float:
    model.eval()
    try:
        with torch.no_grad():
            return float(evaluate(model))
    finally:
        model.train()


def _slice_dice_validator(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], config: TrainConfig
) -> Validator:
    """Mean over validation slices of the mean foreground-class Dice (1 where both are empty)."""
    _check_labelled_slices(images, masks, config.n_classes, "validation")
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(index)

    def evaluate(model: nn.Module) -> float:
        scores = []
        for indices in by_shape.values():
            volume = np.stack([images[i] for i in indices]).astype(np.float32, copy=False)
            predictions = predict_volume(model, volume, config.device, batch_size=config.batch_size)
            scores.extend(
                foreground_dice(p, masks[i], config.n_classes) for p, i in zip(predictions, indices)
            )
        return float(np.mean(scores))

    return evaluate


def case_dice_validator(
    cases: Sequence[tuple[np.ndarray, np.ndarray]], config: TrainConfig
) -> Validator:
    """Mean over validation cases of the 3-D foreground Dice of each case's slice stack.

    ``cases`` holds one (images (Z, H, W), labels (Z, H, W)) pair per case. Dice pools every
    voxel of the case, so slices without foreground weigh only through false positives, and an
    empty prediction of a case with foreground scores 0 (both empty: 1). This is the authors'
    criterion; the per-slice mean scores 1 for every empty/empty margin slice and so rewards
    checkpoints that predict nothing there.
    """
    if not cases:
        raise InvalidInputError("validation needs at least one case")
    for images, labels in cases:
        _check_labelled_slices(list(images), list(labels), config.n_classes, "validation")

    def evaluate(model: nn.Module) -> float:
        scores = []
        for images, labels in cases:
            volume = np.asarray(images, dtype=np.float32)
            predictions = predict_volume(model, volume, config.device, batch_size=config.batch_size)
            scores.append(mask_dice(predictions > 0, np.asarray(labels) > 0))
        return float(np.mean(scores))

    return evaluate


def _augmented_batch(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    batch: list[int],
    config: TrainConfig,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's slices, cropped (unless ``crop_size`` is None) and augmented."""
    size = config.crop_size
    window = None if size is None else (lambda image, mask: _random_crop(image, mask, size, rng))
    return augment_pairs(
        [images[i] for i in batch], [masks[i] for i in batch], config.augmentation, rng, window
    )


def _random_crop(
    image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A size × size window at a uniform offset; sides shorter than ``size`` are zero-padded
    evenly (0 is the z-scored mean intensity and the background label)."""
    pad_h, pad_w = max(size - image.shape[0], 0), max(size - image.shape[1], 0)
    if pad_h or pad_w:
        padding = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
        image, mask = np.pad(image, padding), np.pad(mask, padding)
    top = int(rng.integers(image.shape[0] - size + 1))
    left = int(rng.integers(image.shape[1] - size + 1))
    return image[top : top + size, left : left + size], mask[top : top + size, left : left + size]


def _check_labelled_slices(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_classes: int, role: str
) -> None:
    if len(images) == 0 or len(images) != len(masks):
        raise InvalidInputError(
            f"{role} data needs as many masks as images (at least one), got {len(images)} images "
            f"and {len(masks)} masks"
        )
    for index, (image, mask) in enumerate(zip(images, masks)):
        if image.ndim != 2 or mask.shape != image.shape:
            raise InvalidInputError(
                f"{role} slice {index}: expected a 2-D image and a mask of the same shape, got "
                f"image {image.shape} and mask {mask.shape}"
            )
        if not np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.bool_:
            raise InvalidInputError(
                f"{role} mask {index} has dtype {mask.dtype}; expected integer labels"
            )
        if mask.size and (mask.min() < 0 or mask.max() >= n_classes):
            raise InvalidInputError(
                f"{role} mask {index} has labels {mask.min()}..{mask.max()}; expected "
                f"0..{n_classes - 1} "
                f"for n_classes={n_classes}"
            )
        if not np.all(np.isfinite(image)):
            raise InvalidInputError(f"{role} image {index} contains NaN or infinite values")


def _check_same_run(path: Path, saved: dict[str, Any], config: TrainConfig, n_train: int) -> None:
    current = {k: v for k, v in asdict(config).items() if k not in _RESUME_FREE_FIELDS}
    # A field added after the checkpoint was written ran as its default, which was the old
    # behaviour: such checkpoints stay resumable.
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    stored = {
        k: v
        for k, v in {**defaults, **saved.get("config", {})}.items()
        if k not in _RESUME_FREE_FIELDS
    }
    changed = sorted(k for k in current.keys() | stored.keys() if current.get(k) != stored.get(k))
    differences = [f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed]
    if saved.get("n_train") != n_train:
        differences.append(f"training slices: {saved.get('n_train')} -> {n_train}")
    if differences:
        detail = ", ".join(differences)
        raise CheckpointError(
            f"{path} belongs to a different run ({detail}); pass the same data and config to "
            "resume, "
            f"or use an empty checkpoint_dir"
        )


def _state_from(
    source: Mapping[str, torch.Tensor] | str | os.PathLike,
) -> Mapping[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return source
    checkpoint = read_checkpoint(Path(source))
    return checkpoint.get("model", checkpoint)


def _load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{origin} does not fit UNet(n_classes={model.n_classes}): {error}"
        ) from error


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    """Write then rename, so a crash mid-write never leaves a truncated checkpoint behind."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _cuda_indices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
