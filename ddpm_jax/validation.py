"""One home for checks of user-facing values: names from a fixed set, numbers in a range.

The Python API and the CLI call these same functions, so both refuse the same values with the same message.
"""

from __future__ import annotations

from typing import Iterable


def check_choice(kind: str, value, accepted: Iterable[str]) -> None:
    """Raise ValueError naming `value` and the accepted names unless it is one of them."""
    accepted = tuple(accepted)
    if value not in accepted:
        raise ValueError(f"Unknown {kind} {value!r}; accepted: {', '.join(accepted)}.")
