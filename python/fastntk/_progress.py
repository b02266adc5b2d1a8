"""Progress bars: one small helper over tqdm that every long computation uses.

The policy, the same everywhere (kernels into an ``out=`` array, solves, ``fastntk run``),
is set by the caller's ``progress`` argument:

- ``None`` (the default): automatic. A bar appears only when standard error is a
  terminal, and only once the work has taken more than :data:`AUTO_DELAY` seconds, so
  that short calls, scripts writing to a log and test runs stay silent;
- ``True``: always, from the start (also into a file or a pipe);
- ``False``: never.

Use::

    with progress_bar(total=n_tiles, desc="kernel", progress=progress, unit="tile") as bar:
        for tile in tiles:
            ...
            bar.update(1)

The object returned always has ``update(n)``, ``set_postfix_str(s)`` and ``close()``; a
silenced bar is a no-op object, so callers never test whether a bar exists.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

__all__ = ["AUTO_DELAY", "bar_shown", "check_progress", "progress_bar", "printing"]

# Seconds before an automatic bar appears: the issue's "computations longer than a couple of
# seconds"; anything shorter finishes before a bar would be readable anyway.
AUTO_DELAY = 2.0


def check_progress(progress, name: str = "progress"):
    """``progress`` itself if it is None, True or False (NumPy booleans too), else ValueError
    naming the argument (before any work starts)."""
    if progress is None:
        return None
    if isinstance(progress, (bool, np.bool_)):
        return bool(progress)
    raise ValueError(f"{name} must be None (automatic: a bar in a terminal), True or False, got {progress!r}")


class _Silent:
    """The bar of a silenced computation: every method does nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def refresh(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def progress_bar(total, desc: str, progress=None, unit: str = "it", initial: int = 0, **kwargs):
    """A progress bar (a context manager with ``update(n)``), or a silent stand-in.

    Parameters
    ----------
    total : int or None
        The number of units the work has (None: unknown; tqdm shows a count and a rate).
    desc : str
        Shown before the bar (e.g. ``"kernel"``, ``"cg"``).
    progress : None, True or False
        See the module docstring: None shows a bar only in a terminal and only after
        :data:`AUTO_DELAY` seconds; True always; False never.
    unit : str
        The name of one unit (``"tile"``, ``"it"``).
    initial : int
        Units already done (a resumed computation): the bar starts there and the rate
        counts only the new ones.
    **kwargs
        Passed to ``tqdm.tqdm`` (e.g. ``unit_scale``, ``leave``).
    """
    progress = check_progress(progress)
    if progress is False or (progress is None and not _stderr_is_terminal()):
        return _Silent()
    from tqdm import tqdm

    options = {"delay": AUTO_DELAY if progress is None else 0.0, "dynamic_ncols": True, "file": sys.stderr}
    options.update(kwargs)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, **options)


def bar_shown(bar) -> bool:
    """False for the silent stand-in of a silenced bar (nothing to report to)."""
    return not isinstance(bar, _Silent)


@contextlib.contextmanager
def printing(file=None):
    """Prints to ``file`` (default stdout) inside this block go above any open bar instead
    of through it: the bars are cleared first and redrawn after."""
    from tqdm import tqdm

    with tqdm.external_write_mode(file=file if file is not None else sys.stdout):
        yield
