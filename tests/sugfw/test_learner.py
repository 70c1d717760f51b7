"""The few-slice learner: MONAI augmentation keeps labels on their pixels; the recipe learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sugfw.errors import InvalidInputError
from sugfw.segmentation.augmentation import augment_pairs, monai_pipeline
from sugfw.segmentation.train import TrainConfig, load_trained_unet, train
from sugfw.segmentation.unet import UNet, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def disk_case(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """An off-centre disk (label 1, intensity 3) and a bar (label 0, intensity 3 too) on noise:
    a transform that moved image and label differently would put label 1 off the disk."""
    yy, xx = np.mgrid[:size, :size]
    label = ((yy - 14) ** 2 + (xx - 30) ** 2 <= 64).astype(np.uint8)
    image = np.random.default_rng(0).normal(0, 0.05, (size, size)).astype(np.float32)
    image[label == 1] = 3.0
    image[36:40, 4:20] = -3.0  # an unlabelled bar, dark, for orientation
    return image, label


def test_monai_law_keeps_shape_dtype_and_label_alignment():
    image, label = disk_case()
    rng = np.random.default_rng(1)
    moved = 0
    for _ in range(20):
        x, y = augment_pairs([image] * 4, [label] * 4, "monai", rng)
        assert x.shape == (4, 1, 48, 48) and x.dtype == torch.float32
        assert y.shape == (4, 48, 48) and y.dtype == torch.int64
        assert type(x) is torch.Tensor and type(y) is torch.Tensor  # no MONAI metadata
        assert set(torch.unique(y).tolist()) <= {0, 1}
        for xi, yi in zip(x[:, 0], y):
            if yi.sum() < 20:
                continue  # scaled or rotated mostly out of the field of view
            inside, outside = xi[yi == 1], xi[yi == 0]
            # The bright disk stays under label 1 whatever the intensity transforms did.
            assert inside.median() > outside.median() + 0.15 * (xi.max() - xi.min())
            moved += int(not torch.equal(yi, torch.from_numpy(label).long()))
    assert moved > 10  # the spatial transforms did act


def test_monai_spatial_part_moves_label_exactly_like_image():
    """Image = label as floats through the spatial transforms only: bilinear image thresholded at
    0.5 and nearest label agree except on the disk's rim."""
    _, label = disk_case()
    spatial = monai_pipeline().transforms[:3]
    for seed in range(10):
        data = {
            "image": torch.from_numpy(label[None].astype(np.float32)),
            "label": torch.from_numpy(label[None].astype(np.float32)),
        }
        for transform in spatial:
            transform.set_random_state(seed)
            data = transform(data)
        image_mask = np.asarray(data["image"][0]) > 0.5
        label_mask = np.asarray(data["label"][0]) > 0.5
        assert (image_mask != label_mask).sum() <= 0.25 * max(label_mask.sum(), 1)


def test_same_generator_state_gives_the_same_batch():
    image, label = disk_case()
    first = augment_pairs([image] * 2, [label] * 2, "monai", np.random.default_rng(7))
    second = augment_pairs([image] * 2, [label] * 2, "monai", np.random.default_rng(7))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_augmentation_rejects_mixed_shapes_and_unknown_law():
    image, label = disk_case()
    with pytest.raises(InvalidInputError, match="one shape"):
        augment_pairs([image, image[:40]], [label, label[:40]], "monai", np.random.default_rng())
    with pytest.raises(InvalidInputError, match="unknown augmentation"):
        augment_pairs([image], [label], "elastic", np.random.default_rng())


def test_instance_norm_unet_has_the_paper_parameter_count():
    assert count_parameters(UNet(norm="instance")) == count_parameters(UNet()) == 1_813_474
    with pytest.raises(InvalidInputError, match="norm"):
        UNet(norm="group")


def test_few_slice_recipe_learns_from_four_slices_and_reloads(tmp_path):
    """Four 32-px slices, whole-slice batches, instance norm, AdamW, MONAI augmentation: the
    model finds the bright disk on an unseen slice; best.pt reloads with its instance norm."""
    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(6):
        image = rng.normal(0, 1, (32, 32)).astype(np.float32)
        mask = np.zeros((32, 32), np.int64)
        top, left = rng.integers(4, 18, 2)
        image[top : top + 10, left : left + 10] += 2.5
        mask[top : top + 10, left : left + 10] = 1
        images.append(image)
        masks.append(mask)
    config = TrainConfig.few_slice(120, batch_size=4, eval_every=40, seed=0, device="cpu")
    assert (config.optimizer, config.norm, config.augmentation, config.crop_size) == (
        "adamw",
        "instance",
        "monai",
        None,
    )
    result = train(images[:4], masks[:4], (images[4:], masks[4:]), config, tmp_path, progress=False)
    assert result.best_val_dice > 0.6
    model = load_trained_unet(tmp_path / "best.pt")
    assert model.norm == "instance"


def test_whole_slice_training_needs_one_shape(tmp_path):
    config = TrainConfig.few_slice(2, batch_size=2, seed=0, device="cpu")
    images = [np.zeros((32, 32), np.float32), np.zeros((32, 48), np.float32)]
    masks = [np.zeros((32, 32), np.int64), np.zeros((32, 48), np.int64)]
    with pytest.raises(InvalidInputError, match="one shape"):
        train(images, masks, lambda model: 0.0, config, tmp_path, progress=False)
