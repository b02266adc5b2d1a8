"""Argument parsing shared by the public functions."""

from __future__ import annotations

KERNEL_NAMES = ("nngp", "ntk")


def parse_get(get, allowed=KERNEL_NAMES, *, what="kernel"):
    """(names, single): the requested names in order, and whether one string was given.

    ``get`` is one of ``allowed`` (case-insensitive), a non-empty tuple or list of them,
    or None for all of ``KERNEL_NAMES``; anything else raises ValueError naming ``get``.
    """
    if get is None:
        return KERNEL_NAMES, False
    if isinstance(get, str):
        names, single = (get.lower(),), True
    elif isinstance(get, (tuple, list)) and len(get) > 0 and all(isinstance(g, str) for g in get):
        names, single = tuple(g.lower() for g in get), False
    else:
        raise ValueError(f"get must be one of {allowed} or a non-empty tuple of them, got {get!r}")
    for g in names:
        if g not in allowed:
            raise ValueError(f"get: unknown {what} {g!r}; expected one of {allowed}")
    if len(set(names)) != len(names):
        raise ValueError(f"get names a {what} twice: {get!r}")
    return names, single
