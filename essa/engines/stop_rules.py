"""Stop a completion once its reward is decided (``engine.stop_at_answer``): the pure-text rules.

A rule reads the text a completion has so far and says where its answer ends: the index just past
the decisive text, or None while the answer is still open. Every engine uses the same rules, in two
places: while generating (stop the request once the rule gives a cut) and on the finished text
(cut it there, dropping whatever the engine produced after the decision, e.g. the rest of the
token that completed it). A completion the rule never cuts is left exactly as it was.

- ``answer_line`` (rewards ``arithmetic`` and ``gsm8k``): the end of the first complete line
  (its newline included) whose ``####`` is followed by a number, read as the strict reward reads
  it (:func:`essa.rewards.numeric_answer.strict_answer`). Only a line ended by a newline counts:
  until then the number may still grow. The rewards take the *last* ``#### n`` line; after the cut
  the first one is the last, so the model's first stated answer is the one scored.
- ``boxed`` (reward ``math``): just past the closing brace of the first ``\\boxed{...}`` or
  ``\\fbox{...}`` to close (nested braces matched, ``\\{`` and ``\\}`` are content, as in
  :mod:`essa.rewards.boxed`). The brace-less ``\\boxed 5`` never cuts.

Other rewards (ifeval, reward models, a user's ``module:function``) have no rule. Every rule is one
left-to-right pass, linear in the text's length, with no regular expression that could backtrack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from essa.rewards.numeric_answer import MARKER, strict_answer

ANSWER_LINE = "answer_line"
BOXED = "boxed"

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def answer_line_cut(text: str) -> int | None:
    """Index just past the newline of the first line whose ``#### n`` gives a number, or None."""
    start = 0
    while True:
        marker = text.find(MARKER, start)
        if marker < 0:
            return None
        line_end = text.find("\n", marker)
        if line_end < 0:
            return None  # the line is not finished: its number may still grow
        # The strict reward reads the line's last marker; from the line's first marker on it
        # sees exactly this segment (a marker holds no newline, so none straddles lines).
        if _has_number(text[marker:line_end]):
            return line_end + 1
        start = line_end + 1


def _has_number(line: str) -> bool:
    """Whether the strict reward reads a number on this line (its value is not needed)."""
    try:
        return strict_answer(line) is not None
    except ValueError:  # it matched a number too long for int() (over 4,300 digits)
        return True


def boxed_cut(text: str) -> int | None:
    """Index just past the brace closing the first ``\\boxed{`` / ``\\fbox{`` to close, or None.

    One pass: ``depth`` counts unescaped braces from the start of the text (it may go negative in
    stray text before a box); each open box remembers the depth outside its brace, and the first
    closing brace that brings the depth back to the innermost open box's level closes it.
    """
    depth, open_boxes, position, size = 0, [], 0, len(text)
    while position < size:
        char = text[position]
        if char == "\\":
            brace = _box_brace(text, position)
            if brace < 0 and text.startswith("\\", position + 1):  # "\\boxed": a line break, then a box
                brace = _box_brace(text, position + 1)
            if brace >= 0:
                open_boxes.append(depth)
                depth += 1
                position = brace + 1
                continue
            position += 2  # "\{" and "\}" are literal braces; "\\" is a line break
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if open_boxes and depth == open_boxes[-1]:
                return position + 1
        position += 1
    return None


def _box_brace(text: str, position: int) -> int:
    """Index of the ``{`` of a box command starting at ``position``, or -1 if there is none."""
    for command in _BOX_COMMANDS:
        if text.startswith(command, position):
            after = position + len(command)
            while after < len(text) and text[after] in " \t":
                after += 1
            return after if after < len(text) and text[after] == "{" else -1
    return -1


@dataclass(frozen=True)
class StopRule:
    """A rule, and the characters an engine watches for so it decodes only when a cut is possible."""

    name: str
    cut: Callable[[str], int | None]
    triggers: str  # a cut ends in a token that holds one of these characters
    requires: str  # ... and needs a token holding one of these, earlier or the same one


RULES: dict[str, StopRule] = {
    ANSWER_LINE: StopRule(ANSWER_LINE, answer_line_cut, triggers="\n", requires="#"),
    BOXED: StopRule(BOXED, boxed_cut, triggers="}", requires="\\"),
}

REWARD_RULES: dict[str, str] = {"arithmetic": ANSWER_LINE, "gsm8k": ANSWER_LINE, "math": BOXED}


def rule_for_reward(reward: str | None, options: dict | None = None) -> str | None:
    """The stop rule of a reward name and its options, or None (ifeval, reward models, a user's
    module:function, and gsm8k's flexible mode, which reads the last number anywhere: a first
    answer line does not decide it)."""
    if reward == "gsm8k" and (options or {}).get("mode") == "flexible":
        return None
    return REWARD_RULES.get(reward or "")


def get_rule(name: str) -> StopRule:
    """The rule called ``name``; ValueError for an unknown name."""
    if name not in RULES:
        raise ValueError(f"unknown stop rule {name!r}; known: {', '.join(sorted(RULES))}")
    return RULES[name]


def cut_position(rule: str | None, text: str) -> int | None:
    """Where rule ``rule`` cuts ``text`` (None: no rule, or the answer is still open)."""
    return None if rule is None else get_rule(rule).cut(text)


def cut_text(rule: str | None, text: str) -> str:
    """``text`` ending at the rule's cut; unchanged when the rule does not cut it."""
    cut = cut_position(rule, text)
    return text if cut is None else text[:cut]
