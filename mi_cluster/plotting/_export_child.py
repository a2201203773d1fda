"""Static figure export, run as a child process by :mod:`mi_cluster.plotting.export` so a
stuck browser can be killed after a time-out instead of hanging the caller.

Reads ``{"figure": <plotly JSON>, "targets": [[path, format], ...], "scale": s}`` from
stdin and writes every target with one kaleido session (one Chromium start).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

RASTER = ("png", "jpg", "jpeg", "webp")


def _fixed_ids(path: str) -> None:
    """plotly.js names an SVG's defs, clip paths, gradients and colour bars with random hex
    strings: renumber them in order of appearance, so a figure always gives the same bytes.
    A random string is a run of six or more hex characters inside an id, a class or a
    ``url(#...)`` reference (plotly's own class names have no such run)."""
    svg = Path(path).read_text(encoding="utf-8")
    places = re.findall(r'(?:id|class)="([^"]*)"', svg) + re.findall(r"url\(['\"]?#([^'\")]*)", svg)
    hexrun = r"(?<![0-9a-f])([0-9a-f]{6,})(?![0-9a-f])"
    random = list(dict.fromkeys(re.findall(hexrun, " ".join(places))))
    if random:
        names = {old: f"r{k}" for k, old in enumerate(random)}
        alternatives = "|".join(map(re.escape, names))
        pattern = re.compile(r"(?<![0-9a-f])(" + alternatives + r")(?![0-9a-f])")
        svg = pattern.sub(lambda m: names[m.group(1)], svg)
        Path(path).write_text(svg, encoding="utf-8")


def main() -> int:
    import kaleido
    import plotly.io as pio

    from mi_cluster.plotting.font import embed_in_svg

    job = json.loads(sys.stdin.read())
    fig = pio.from_json(job["figure"])
    kaleido.write_fig_from_object_sync(
        [
            {
                "fig": fig,
                "path": path,
                "opts": {"format": fmt, "scale": job["scale"] if fmt in RASTER else 1},
            }
            for path, fmt in job["targets"]
        ]
    )
    for path, fmt in job["targets"]:
        if fmt == "svg":
            _fixed_ids(path)
            svg = Path(path).read_text(encoding="utf-8")
            Path(path).write_text(embed_in_svg(svg), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
