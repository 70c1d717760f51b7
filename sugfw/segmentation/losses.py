"""Training loss: 0.5 · (cross-entropy + soft Dice), as in the paper.

Soft Dice here is the mean over the foreground classes c = 1..C−1 of
1 − (2 Σ p_c t_c + ε) / (Σ p_c + Σ t_c + ε), ε = 1e-5, with sums over the batch and all pixels,
p the softmax probabilities and t the one-hot labels. The authors' code differs: it averages over
all C classes (background included) and squares the terms of the denominator (Σ p² + Σ t²).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DICE_EPS = 1e-5


def soft_dice_loss(
    probs: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS
) -> torch.Tensor:
    """Soft multi-class Dice loss over foreground classes; probs (B, C, H, W), target (B, H, W)."""
    n_classes = probs.shape[1]
    one_hot = F.one_hot(target.long(), n_classes).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    denominator = probs.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + eps) / (denominator + eps)
    return (1 - dice[1:]).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 · (CE + soft Dice) for logits (B, C, H, W) and integer labels (B, H, W) in 0..C−1."""
    target = target.long()
    cross_entropy = F.cross_entropy(logits, target)
    return 0.5 * (cross_entropy + soft_dice_loss(torch.softmax(logits, dim=1), target))
