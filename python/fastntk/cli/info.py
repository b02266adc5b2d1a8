"""``fastntk info``: :func:`fastntk.build_info` (the GPUs the CUDA backend sees included), the
thread count and the versions."""

from __future__ import annotations

import json
import sys

import numpy as np


def info(args, out=print) -> int:
    import fastntk as nt

    data = dict(nt.build_info())
    data["threads"] = nt.get_num_threads()
    data["numpy"] = np.__version__
    data["python"] = sys.version.split()[0]
    if args.json:
        out(json.dumps(data, indent=1))
    else:
        width = max(len(k) for k in data)
        for k, v in data.items():
            if isinstance(v, list):  # the GPUs, one per line
                v = "\n".join([v[0]] + [" " * (width + 2) + item for item in v[1:]]) if v else "none"
            out(f"{k:<{width}}  {v}")
    return 0
