"""Active learning after the cold start: what a trained UNet says about the unlabelled slices
(``unet_signals``) and the round strategies that rank them (``round_strategies``)."""

from sugfw.active.round_strategies import ROUND_STRATEGIES, RoundStrategy, rank_unlabelled
from sugfw.active.unet_signals import UnetSignals, unet_signals

__all__ = ["ROUND_STRATEGIES", "RoundStrategy", "UnetSignals", "rank_unlabelled", "unet_signals"]
