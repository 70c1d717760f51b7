"""The one shape of every name -> spec table (models, selection strategies, round strategies).

A registry is a plain dict from name to a frozen spec, as ``segment_anything``'s
``sam_model_registry`` maps a name to its builder: iterate it for the names, index it for a spec,
and :meth:`Registry.lookup` refuses an unknown name with the list of known ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from sugfw.errors import InvalidInputError

SpecT = TypeVar("SpecT")


class Registry(dict[str, SpecT]):
    """Names in registration order mapped to their specs.

    ``refusal`` is the message for an unknown name, a ``str.format`` template with the fields
    ``name`` (the name asked for), ``choices`` (the known names in order) and ``sorted_choices``.
    """

    def __init__(self, entries: Mapping[str, SpecT], refusal: str) -> None:
        super().__init__(entries)
        self.refusal = refusal

    def lookup(self, name: str) -> SpecT:
        """The spec registered as ``name``; an :class:`InvalidInputError` naming the choices
        otherwise (also for an unhashable name)."""
        try:
            return self[name]
        except (KeyError, TypeError):
            raise InvalidInputError(
                self.refusal.format(
                    name=name, choices=", ".join(self), sorted_choices=", ".join(sorted(self))
                )
            ) from None
