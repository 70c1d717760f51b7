"""Exceptions raised at the library's boundaries, each with a message a user can act on."""


class SugfwError(Exception):
    """Base class for every error this project raises on purpose."""


class InvalidInputError(SugfwError, ValueError):
    """An image, folder or volume that cannot be used as a 2-D slice."""


class CheckpointError(SugfwError):
    """A model checkpoint that is missing, truncated or does not fit the architecture."""


class BudgetError(InvalidInputError):
    """An annotation budget that cannot be met for the given number of slices."""
