"""Downstream segmentation: the paper's UNet, its loss, training loop, inference, preprocessing."""

from sugfw.segmentation.infer import predict_volume
from sugfw.segmentation.losses import segmentation_loss, soft_dice_loss
from sugfw.segmentation.preprocess import normalise_volume
from sugfw.segmentation.train import TrainConfig, TrainResult, load_trained_unet, train
from sugfw.segmentation.unet import UNet

__all__ = [
    "TrainConfig",
    "TrainResult",
    "UNet",
    "load_trained_unet",
    "normalise_volume",
    "predict_volume",
    "segmentation_loss",
    "soft_dice_loss",
    "train",
]
