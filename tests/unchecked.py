"""Bad input as a user gives it, without the runtime type checker the suite runs under
(``--jaxtyping-packages`` in ``pyproject.toml``), so that a test sees the library's own
named error rather than the checker's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import jaxtyping


@contextmanager
def unchecked() -> Iterator[None]:
    """Run the block with runtime type checking off (restored after)."""
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)
