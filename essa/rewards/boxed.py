"""Find the final answer a solution puts in ``\\boxed{...}`` (or ``\\fbox{...}``).

The data layer imports :func:`last_boxed` to read gold answers out of solutions (minerva_math),
and the math reward uses it on completions. It is a linear scan with no regular expression that
could backtrack, so a 100,000-character completion costs well under a millisecond.
"""

from __future__ import annotations

_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Return the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, or None.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); escaped braces
    ``\\{`` and ``\\}`` are content, not structure. The brace-less form ``\\boxed 5`` gives ``5``.
    The box that starts last counts; if its braces never close (a truncated generation) the
    answer is None rather than an earlier, intermediate box.
    """
    if not isinstance(text, str):
        return None
    end = len(text)
    while True:
        start, command = _last_command(text, end)
        if start < 0:
            return None
        after = start + len(command)
        # "\boxedx" is another command, not a box: keep looking further left.
        if after < len(text) and text[after].isalpha():
            end = start
            continue
        return _box_content(text, after)


def _last_command(text: str, end: int) -> tuple[int, str]:
    """Position and name of the right-most box command starting before ``end`` (-1 if none)."""
    best, best_command = -1, ""
    for command in _COMMANDS:
        position = text.rfind(command, 0, end)
        if position > best:
            best, best_command = position, command
    return best, best_command


def _box_content(text: str, after: int) -> str | None:
    """Content of the box whose command name ends at ``after``."""
    position = after
    while position < len(text) and text[position] in " \t":
        position += 1
    if position >= len(text):
        return None
    if text[position] != "{":
        return _braceless_argument(text, position) if position > after else None
    return _matched_braces(text, position)


def _braceless_argument(text: str, position: int) -> str | None:
    """``\\boxed 5`` style: the argument runs to the next whitespace or ``$``."""
    stop = position
    while stop < len(text) and not text[stop].isspace() and text[stop] != "$":
        stop += 1
    return text[position:stop] or None


def _matched_braces(text: str, open_position: int) -> str | None:
    """Content between the ``{`` at ``open_position`` and its matching ``}``; None if unbalanced."""
    depth = 0
    position = open_position
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2  # "\{" and "\}" are literal braces; "\\" is a line break
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_position + 1 : position]
        position += 1
    return None
