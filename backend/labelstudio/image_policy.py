"""Where task images may come from and how large and slow they may be, and the error when one is
refused.

The backend's settings (SUGFW_IMAGE_*) become the process's default policy when the app starts,
so every fetcher built without explicit limits follows them (the jobs' fetchers included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sugfw.errors import SugfwError

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_IMAGE_PIXELS = 16_777_216
"""4096 × 4096: a decoded slice is float32, so about 64 MB each (the scorer runs 8 threads)."""


class ImageFetchError(SugfwError):
    """A task's image could not be found, downloaded or read as a slice."""


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from and how large and slow they may be (see ``ImageFetcher``)."""

    allowed_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS
    deadline_s: float = 60.0

    @classmethod
    def from_config(cls, config: Any) -> ImagePolicy:
        """From a ``BackendConfig`` (SUGFW_IMAGE_* settings)."""
        return cls(
            tuple(config.image_hosts),
            config.image_allow_private,
            config.image_max_bytes,
            config.image_max_pixels,
            config.image_deadline_s,
        )


_default_policy = ImagePolicy()


def set_default_policy(policy: ImagePolicy) -> None:
    """The policy of every fetcher built without explicit limits (the jobs' fetchers included)."""
    global _default_policy
    _default_policy = policy


def default_policy() -> ImagePolicy:
    return _default_policy
