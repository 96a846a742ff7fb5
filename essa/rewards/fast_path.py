"""A cheap verdict on two LaTeX answers before paying for math-verify.

Most completions either copy the gold answer's form exactly or give a different number. Exact
matches, and pairs of integers or integer fractions (``\\frac{3}{4}`` against ``6``), are decided
here in microseconds; everything else (fractions against decimals, radicals,
intervals...) goes to math-verify. The normalisation only removes spelling that never changes
a value (spacing, ``\\left``/``\\right``, ``\\dfrac``, ``$``, a final period, degree signs, text
wrappers), so a "same" verdict here is one math-verify would also give.
"""

from __future__ import annotations

import re
from fractions import Fraction

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\{([^{}]*)\}")
_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")
_SPACING = re.compile(r"\\[,;:! ]|~|\s+")
_DEGREES = re.compile(r"\^\{?\\circ\}?")
_RATIONAL = re.compile(r"(-?)(?:(\d+)|\\frac\{(-?\d+)\}\{(-?\d+)\}|\\frac(\d)(\d))")
_DECIMAL = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")


def normalize_answer(answer: str) -> str:
    """A canonical spelling of a LaTeX answer for exact comparison."""
    text = answer.replace("$", "")
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = _SIZING.sub("", text)
    text = _SPACING.sub("", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _DEGREES.sub("", text)
    return text.rstrip(".")


def fast_verdict(gold: str, predicted: str) -> bool | None:
    """True (same answer), False (surely different) or None (ask math-verify)."""
    gold_norm, predicted_norm = normalize_answer(gold), normalize_answer(predicted)
    if not predicted_norm:
        return False
    if gold_norm == predicted_norm:
        return True
    gold_value, predicted_value = _exact_rational(gold_norm), _exact_rational(predicted_norm)
    if gold_value is not None and predicted_value is not None:
        # Integers and integer fractions are exact: sympy compares them exactly too.
        return gold_value == predicted_value
    if _DECIMAL.fullmatch(gold_norm) and _DECIMAL.fullmatch(predicted_norm):
        if Fraction(gold_norm) == Fraction(predicted_norm):
            return True  # "3.50" and "3.5"; unequal decimals may still agree after rounding
    return None


def _exact_rational(text: str) -> Fraction | None:
    """The value of ``12``, ``-7``, ``\\frac{3}{4}``, ``-\\frac{-3}{4}`` or ``\\frac34``; else None.

    Decimals are left out on purpose: math-verify rounds them, so an exact verdict here could
    disagree with it.
    """
    match = _RATIONAL.fullmatch(text)
    if match is None:
        return None
    sign, integer, numerator, denominator, digit_numerator, digit_denominator = match.groups()
    if integer is not None:
        value = Fraction(int(integer))
    else:
        top, bottom = (numerator, denominator) if numerator is not None else (digit_numerator, digit_denominator)
        if int(bottom) == 0:
            return None
        value = Fraction(int(top), int(bottom))
    return -value if sign else value
