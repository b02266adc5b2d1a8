"""The ``fastntk`` command: ``fastntk run``, ``fastntk bench``, ``fastntk info``.

``fastntk run``
    The main job, on scikit-learn's handwritten digits (bundled with scikit-learn, no
    download) or on your data (``--data``): the NNGP and NTK of an MLP, NTK (and NNGP)
    kernel regression, the test score (accuracy, or RMSE and R^2 for real-valued targets)
    of an infinitely wide network along
    gradient-descent time from :func:`fastntk.predict.gradient_descent_mse`, and a finite
    network of the same architecture trained by the same gradient descent
    (:func:`fastntk.train_mse`) for comparison. Prints a table and writes ``run.png``
    (test score and training loss against t) and ``run.json`` (every number) to ``--out``.
``fastntk bench``
    A built-in quick benchmark (the depth-5 kernel against one GEMM, measured like
    ``bench/bench_kernels.py``); ``--full`` runs the repository's benchmark suite
    (``bench/bench_*.py``), which is not part of the installed package.
``fastntk info``
    :func:`fastntk.build_info`.

Conventions of ``fastntk run``
------------------------------
- Inputs are standardized with the training set's per-feature mean and standard
  deviation (features constant on the training set are only centred).
- The task follows the targets (``--task auto``, :mod:`.labels`): class labels (integers,
  strings, one-hot rows) are classified: targets are one-hot (one output per class), the
  predicted class is the largest output, the score is the test accuracy. Real numbers that
  are not all integers are regressed: one output per target column, targets standardized
  with the training mean and standard deviation, scored by the test RMSE (in the targets'
  units) and R^2. The first line of the output says which.
- The network is ``DEPTH x [Dense(width), activation]`` then ``Dense(n_outputs)`` in the ntk
  parameterization; the kernels are its infinite-width limit (``width`` only matters for the
  finite network).
- Time ``t`` counts discrete gradient-descent steps on ``||f - Y||^2 / (2 n)``, ``n =
  Y.size`` (Neural Tangents' convention), with learning rate ``max_learning_rate / 2 =
  n / lambda_max``: the fastest mode of the NTK then converges in one step, and the finite
  network, whose empirical NTK differs from the limit by O(1/sqrt(width)), stays a factor of
  two away from the edge of stability.
- The finite network is *centred*: it is trained on ``Y + f(X; theta_0)``, so ``f(x; theta_t)
  - f(x; theta_0)`` follows the same gradient descent as a network with zero initial outputs,
  the setting of the analytic curve (``fx_train_0 = fx_test_0 = 0``). Without centring the
  random initial outputs, of the size of the targets, would blur the comparison.

Errors print one line on stderr, never a traceback: a bad option, file or data set exits
with status 2 (as argparse's usage errors), a failure of the job itself with 1;
``FASTNTK_TRACEBACK=1`` shows the traceback of an error raised inside fastntk (for a bug
report). A closed stdout (``fastntk run | head -1``) ends the command quietly with status 141
(128 + SIGPIPE). A warning is one line, said once.

The parts: :mod:`.data` (reading and splitting the data), :mod:`.labels` (class labels or
regression targets), :mod:`.arch` (``--arch``), :mod:`.run` (the job), :mod:`.plot`
(run.png), :mod:`.bench`, :mod:`.info`, :mod:`.parser` (the options), :mod:`.errors`.
"""

from __future__ import annotations

import os
import sys
import warnings

from .arch import Arch, parse_arch
from .bench import bench, bench_rows
from .data import Dataset, load_data
from .errors import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, PROG, CliError
from .info import info
from .parser import build_parser
from .run import run, time_grid

__all__ = [
    "Arch", "CliError", "Dataset", "EXIT_USAGE", "bench", "bench_rows", "build_parser", "info", "load_data",
    "main", "parse_arch", "run", "time_grid",
]  # fmt: skip


class _WarnOnce:
    """warnings.showwarning for the command: each warning as one line on stderr
    (``fastntk: warning: Category: message``), and a line already said is not said again
    (a warning raised from several places, or once per output, is one line)."""

    def __init__(self):
        self.said = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        text = f"{PROG}: warning: {category.__name__}: {message}".replace("\n", " ")
        if text not in self.said:
            self.said.add(text)
            print(text, file=sys.stderr)


def _dispatch(argv) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version
        return int(e.code or 0)
    if args.command is None:
        raise CliError(f"{PROG}: error: choose a command: run, bench or info (see '{PROG} --help')")
    if args.command == "run":
        quiet = args.quiet
        results = run(args, out=(lambda *a, **k: None) if quiet else print)
        for f in results["files"]:
            print(f if quiet else f"wrote {f}")
        return 0
    if args.command == "bench":
        return bench(args)
    return info(args)


def _stdout_closed() -> int:
    """The reader of stdout went away (``fastntk run | head -1``): end quietly, as a command
    killed by SIGPIPE would, with its status. stdout is pointed at /dev/null so that the
    interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (a test's capture)
        pass
    return EXIT_BROKEN_PIPE


def main(argv=None) -> int:
    """Entry point of the ``fastntk`` console script (and ``python -m fastntk``).

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success; 2 for a bad option, file or data set (one line on
        stderr, like argparse's usage errors); 1 when the job itself fails (an error raised
        inside fastntk, a benchmark script); 130 if interrupted; 141 (128 + SIGPIPE) when
        the reader of stdout goes away, quietly.
    """
    saved = warnings.showwarning
    warnings.showwarning = _WarnOnce()
    try:
        status = _dispatch(argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
        return status
    except CliError as e:
        msg = str(e)
        if not msg.startswith(PROG):
            msg = f"{PROG}: error: {msg}"
        print(msg.replace("\n", " "), file=sys.stderr)
        return e.code
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, MemoryError, FloatingPointError, OSError) as e:
        # What fastntk itself raises for inputs it cannot take (clear messages already):
        # shown as one line, like the command's own errors.
        if os.environ.get("FASTNTK_TRACEBACK"):
            raise
        print(f"{PROG}: error: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        return EXIT_FAILED
    finally:
        warnings.showwarning = saved
