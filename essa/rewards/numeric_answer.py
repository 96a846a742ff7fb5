"""Read numeric final answers: the ``#### n`` line (strict) or the last number (flexible).

Shared by the gsm8k and arithmetic rewards. Numbers are compared exactly as fractions, so
``3.50`` equals ``3.5`` and ``1,234`` equals ``1234``; a ``$`` sign, a sign before or after it,
thousands commas and a sentence-ending period are accepted.
"""

from __future__ import annotations

import re
from fractions import Fraction

MARKER = "####"

# A number token. The look-behind keeps "5-3" from reading as "-3" and the ".5" of "3.5" from
# counting twice; the look-ahead stops "1,2345" from reading as "1,234". Every part is a simple
# class or fixed group, so matching stays linear on long or hostile text.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-+\u2212]?)[ \t]?\$?[ \t]?(?P<sign2>[-+\u2212]?)"
    r"(?P<digits>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?!\d)"
)
# A gold answer given bare: one number, optionally followed by a period.
_BARE_SUFFIX = re.compile(r"[ \t]*\.?[ \t]*")


MAX_DIGITS = 1000
"""A longer number is no answer (None): Python refuses int() past 4,300 digits, and no gold
answer is that long."""


def _token_value(match: re.Match[str]) -> Fraction | None:
    """Exact value of one matched number token; None for one over MAX_DIGITS characters."""
    digits = match.group("digits").replace(",", "")
    if len(digits) > MAX_DIGITS:
        return None
    value = Fraction(digits)
    negative = (match.group("sign") in ("-", "\u2212")) != (match.group("sign2") in ("-", "\u2212"))
    return -value if negative else value


def strict_answer(text: str) -> Fraction | None:
    """The number right after the last ``####`` marker in ``text`` (same line), or None.

    Only the last marker counts: if it is not followed by a number, the answer is None even when
    an earlier marker had one.
    """
    position = text.rfind(MARKER)
    if position < 0:
        return None
    line_end = text.find("\n", position)
    rest = text[position + len(MARKER) : line_end if line_end >= 0 else len(text)]
    match = _NUMBER.match(rest.lstrip(" \t"))
    return _token_value(match) if match else None


def flexible_answer(text: str) -> Fraction | None:
    """The last number anywhere in ``text``, or None."""
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return _token_value(last) if last else None


def parse_gold_number(answer: str) -> Fraction | None:
    """A gold answer: a bare number (``"1,234"``, ``"-5"``, ``"3.50"``) or a GSM8K answer text
    ending in ``#### n``. None when it is neither (such an item can never score).
    """
    if MARKER in answer:
        return strict_answer(answer)
    stripped = answer.strip()
    match = _NUMBER.match(stripped)
    if match is None or not _BARE_SUFFIX.fullmatch(stripped, match.end()):
        return None
    return _token_value(match)
