"""UNet architecture, training loss and slice-wise inference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sugfw.errors import InvalidInputError
from sugfw.segmentation.infer import predict_volume
from sugfw.segmentation.losses import segmentation_loss, soft_dice_loss
from sugfw.segmentation.unet import UNet, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_parameter_count_matches_the_described_architecture_and_the_papers_1_81_m():
    # Conv block (i -> o), biased convs + BN (2 per channel): 9io + o + 2o + 9o² + o + 2o = 9io +
    # 9o² + 6o.
    # Encoder (1,16) 2544 + (16,32) 14016 + (32,64) 55680 + (64,128) 221952 + (128,256) 886272 =
    # 1,180,464.
    # Up block (d -> s): 1×1 conv ds + s, then conv block (2s -> s) = 27s² + 6s:
    #   256->128: 32896 + 443136; 128->64: 8256 + 110976; 64->32: 2080 + 27840; 32->16: 528 + 7008
    #   = 632,720.  Head 3×3 conv 16 -> 2: 288 + 2 = 290.  Total 1,813,474.
    count = count_parameters(UNet(in_channels=1, n_classes=2))
    assert count == 1_813_474
    assert abs(count - 1.81e6) / 1.81e6 < 0.01


def test_dropout_is_encoder_only_with_the_papers_rates():
    model = UNet()
    encoder_rates = [m.p for m in model.encoder.modules() if isinstance(m, nn.Dropout)]
    decoder_rates = [m.p for m in model.decoder.modules() if isinstance(m, nn.Dropout)]
    assert encoder_rates == [0.05, 0.1, 0.2, 0.3, 0.5]
    assert decoder_rates == [0.0] * 4


def test_sides_not_multiple_of_16_are_padded_with_zeros_and_cropped_back():
    torch.manual_seed(0)
    model = UNet(in_channels=1, n_classes=3).eval()
    x = torch.randn(2, 1, 50, 70)
    with torch.no_grad():
        out = model(x)
        padded = model(F.pad(x, (0, 10, 0, 14)))  # 50 -> 64, 70 -> 80
    assert out.shape == (2, 3, 50, 70)
    torch.testing.assert_close(out, padded[..., :50, :70])


def test_rejects_fewer_than_two_classes():
    with pytest.raises(InvalidInputError, match="n_classes"):
        UNet(n_classes=1)


def test_loss_on_a_hand_computed_2x2_case():
    # Class-1 logit minus class-0 logit = ln 3, 0, −ln 3, ln 3  ->  p1 = 0.75, 0.5, 0.25, 0.75.
    log3 = math.log(3.0)
    logits = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]], [[log3, 0.0], [-log3, log3]]]])
    target = torch.tensor([[[1, 1], [0, 0]]])
    # CE: −ln .75, −ln .5, −ln .75 (p0 = .75), −ln .25 (p0 = .25)  ->  (2 ln 4/3 + ln 2 + ln 4) / 4.
    cross_entropy = (2 * math.log(4 / 3) + math.log(2) + math.log(4)) / 4
    # Dice (class 1): Σpt = .75 + .5 = 1.25, Σp = 2.25, Σt = 2  ->  1 − (2.5 + ε)/(4.25 + ε).
    eps = 1e-5
    dice = 1 - (2.5 + eps) / (4.25 + eps)
    expected = 0.5 * (cross_entropy + dice)  # ≈ 0.53773
    assert segmentation_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_averages_foreground_classes_only():
    # Pixels (target 0, 1, 2, 2) with probabilities over 3 classes:
    probs = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0.5, 0.5]]).T.reshape(1, 3, 2, 2)
    target = torch.tensor([[[0, 1], [2, 2]]])
    # Class 1: Σpt = 1, Σp = 1.5, Σt = 1 -> 1 − 2/2.5 = 0.2.  Class 2: Σpt = 1.5, Σp = 1.5, Σt = 2
    # -> 1 − 3/3.5 = 1/7.  Mean 0.171429 (with the perfect background included it would be
    # 0.114286).
    eps = 1e-5
    expected = ((1 - (2 + eps) / (2.5 + eps)) + (1 - (3 + eps) / (3.5 + eps))) / 2
    assert soft_dice_loss(probs, target).item() == pytest.approx(expected, rel=1e-6)


def test_predict_volume_gives_per_slice_argmax_as_int64_and_restores_train_mode():
    torch.manual_seed(0)
    model = UNet(n_classes=3)
    volume = np.random.default_rng(0).normal(size=(5, 20, 36)).astype(np.float32)
    labels = predict_volume(model, volume, "cpu", batch_size=2)
    assert labels.shape == (5, 20, 36) and labels.dtype == np.int64
    assert model.training
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(volume)[:, None]).argmax(1).numpy()
    np.testing.assert_array_equal(labels, expected)


def test_predict_volume_rejects_a_single_slice():
    with pytest.raises(InvalidInputError, match=r"\(Z, H, W\)"):
        predict_volume(UNet(), np.zeros((32, 32), np.float32), "cpu", batch_size=4)
