"""``--arch ACT:DEPTH[:W_STD[:B_STD]]``: the MLP of ``fastntk run``, built by
:func:`fastntk.mlp` from the one activation table (:mod:`fastntk.architectures`)."""

from __future__ import annotations

import dataclasses
import math

from ..architectures import ACTIVATIONS, DEFAULT_B_STD, default_W_std, mlp
from .errors import CliError, number

MAX_DEPTH = 100


@dataclasses.dataclass(frozen=True)
class Arch:
    """``--arch ACT:DEPTH[:W_STD[:B_STD]]``: DEPTH hidden layers of ACT."""

    activation: str
    depth: int
    W_std: float
    b_std: float

    def __str__(self) -> str:
        return f"{self.activation}:{self.depth}:{self.W_std:.6g}:{self.b_std:.6g}"

    def network(self, width: int, n_out: int):
        """The MLP ``depth x [Dense(width), act]`` then ``Dense(n_out)``, ntk parameterization."""
        return mlp(self.activation, self.depth, W_std=self.W_std, b_std=self.b_std, width=width, n_out=n_out)


def _usage(text: str, message: str) -> CliError:
    return CliError(f"--arch {text!r}: {message}")


def parse_arch(text: str) -> Arch:
    """Parse ``ACT:DEPTH[:W_STD[:B_STD]]`` (e.g. ``relu:3``, ``erf:5:1.2:0.1``); ACT is a name
    of :data:`fastntk.architectures.ACTIVATIONS`, W_STD defaults to the activation's.

    Raises
    ------
    CliError
        Naming what is wrong.
    """
    parts = text.split(":")
    names = ", ".join(ACTIVATIONS)
    if not 2 <= len(parts) <= 4:
        raise _usage(text, f"expected ACT:DEPTH[:W_STD[:B_STD]], e.g. relu:3 (ACT one of {names})")
    act = parts[0].strip().lower()
    if act not in ACTIVATIONS:
        raise _usage(text, f"unknown activation {parts[0]!r}; choose one of {names}")
    try:
        depth = int(parts[1])
    except ValueError:
        depth = -1
    if not 1 <= depth <= MAX_DEPTH:
        raise _usage(text, f"DEPTH must be an integer from 1 to {MAX_DEPTH}, got {parts[1]!r}")
    stds = [default_W_std(act), DEFAULT_B_STD]
    for k, (name, bound) in enumerate((("W_STD", "> 0"), ("B_STD", ">= 0"))):
        if len(parts) > k + 2:
            v = number(parts[k + 2])
            if v is None or not math.isfinite(v) or v < 0 or (k == 0 and v == 0):
                raise _usage(text, f"{name} must be a finite number {bound}, got {parts[k + 2]!r}")
            stds[k] = v
    return Arch(act, depth, stds[0], stds[1])
