"""Static figure export, run as a child process by :mod:`mi_cluster.plotting.export` so a
stuck browser can be killed after a time-out instead of hanging the caller.

Reads ``{"figure": <plotly JSON>, "targets": [[path, format], ...], "scale": s}`` from
stdin and writes every target with one kaleido session (one Chromium start).
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    import kaleido
    import plotly.io as pio

    job = json.loads(sys.stdin.read())
    fig = pio.from_json(job["figure"])
    kaleido.write_fig_from_object_sync(
        [
            {"fig": fig, "path": path, "opts": {"format": fmt, "scale": job["scale"]}}
            for path, fmt in job["targets"]
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
