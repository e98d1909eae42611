"""Text difference as an operation, used to rebase pending edits onto a snapshot."""

from __future__ import annotations

from difflib import SequenceMatcher

from . import ot

__all__ = ["diff_operation"]


def _common_prefix_length(first: str, second: str) -> int:
    # Binary search over slice comparisons, which run in C, instead of a Python loop
    # over characters.
    low = 0
    high = min(len(first), len(second))
    while low < high:
        middle = (low + high + 1) // 2
        if first[:middle] == second[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix_length(first: str, second: str, limit: int) -> int:
    low = 0
    high = min(len(first), len(second), limit)
    while low < high:
        middle = (low + high + 1) // 2
        if first[len(first) - middle :] == second[len(second) - middle :]:
            low = middle
        else:
            high = middle - 1
    return low


def diff_operation(old: str, new: str) -> ot.Operation:
    """Return a normalized operation that turns old into new.

    Positions count code points, like every operation. The common prefix and suffix
    are cut first, and difflib.SequenceMatcher (without its autojunk heuristic)
    compares the rest.

    NOTE: SequenceMatcher takes time quadratic in the length of the changed middle
    in the worst case, so a snapshot that rewrites most of a large document is slow
    to diff.
    """
    prefix = _common_prefix_length(old, new)
    limit = min(len(old), len(new)) - prefix
    suffix = _common_suffix_length(old, new, limit)
    old_middle = old[prefix : len(old) - suffix]
    new_middle = new[prefix : len(new) - suffix]

    components: ot.Operation = []
    if prefix:
        components.append({"retain": prefix})

    matcher = SequenceMatcher(None, old_middle, new_middle, autojunk=False)
    for tag, old_start, old_end, new_start, new_end in matcher.get_opcodes():
        if tag == "equal":
            components.append({"retain": old_end - old_start})
            continue
        if new_end > new_start:
            components.append({"insert": new_middle[new_start:new_end]})
        if old_end > old_start:
            components.append({"delete": old_end - old_start})

    return ot.normalize(components)
