"""The IFEval reward: does a completion follow the verifiable constraints of its prompt?

Each gold answer is the item's constraint spec, ``{"instruction_id_list": [...], "kwargs": [...]}``
(as a JSON string, how the data loader carries it, or as the dict). Every constraint is judged by
the matching checker class of IFEval's own registry (``if_verifiable.ifeval``, Apache-2.0); this
module only runs them: strict (the response as it is) and loose (any of IFEval's 8 variants of
the response: first line, last line or both dropped, markdown ``*`` removed), each checker under a
time limit, and a checker that fails scores its constraint as not followed.

IFEval's rules are kept as its checkers have them, odd ones included: a response in which
langdetect finds no letters (digits, punctuation) passes ``language:response_language``; an empty
response follows nothing. Two arguments the checkers would swap for random draws are kept as the
spec states them (see :func:`_keep_asked_values`); other missing or invalid arguments are an error.

``if_verifiable`` is imported on first use (its package import pulls in ``datasets``, about 1.3 s),
so importing this module, like all of ``essa.rewards``, stays cheap.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Mapping, Sequence

from essa.data_dir import default_data_dir
from essa.rewards.batch import checked_prompts

logger = logging.getLogger(__name__)

LEVELS = ("prompt", "instruction")

# IFEval's slow checkers (langdetect, NLTK's tokenizers: milliseconds where the others take
# microseconds). At prompt level they run last, and only if the item's other constraints held.
_SLOW = frozenset({
    "language:response_language", "change_case:capital_word_frequency",
    "length_constraints:number_sentences", "length_constraints:number_words",
})

# Checkers whose first use loads data (langdetect's language profiles, NLTK's punkt tables):
# about a second, run once per process before any time limit applies.
_WARM_UP = (
    ("language:response_language", {"language": "en"}),
    ("change_case:capital_word_frequency", {"capital_frequency": 1, "capital_relation": "at least"}),
    ("length_constraints:number_sentences", {"num_sentences": 1, "relation": "at least"}),
)

# After the limit the alarm repeats at this interval until the check is stopped: a timeout
# raised where Python drops it (an object's __del__) or a checker swallows it comes again.
_ALARM_REPEAT_S = 0.05

_warned: set[tuple[str, str]] = set()
_ready_pid = 0


def make_ifeval_reward(level: str = "prompt", loose: bool = False, timeout_s: float = 2.0):
    """Build the ifeval reward ``reward(completions, answers, prompts=None) -> list[float]``.

    Each answer is the item's constraint spec, ``{"instruction_id_list": [...], "kwargs": [...]}``,
    as a JSON string or a dict; a spec that does not parse or names an unknown id raises
    ValueError. ``prompts`` (the items' prompts) reach checkers whose arguments include
    ``prompt``; IFEval's own need none (``combination:repeat_prompt`` carries its text in kwargs).

    Args:
        level: "prompt" (1.0 when every constraint of the item holds, else 0.0: IFEval's
            prompt-level accuracy) or "instruction" (the fraction of the item's constraints that
            hold: a denser fitness).
        loose: judge with IFEval's loose variant instead of the strict one.
        timeout_s: wall-clock limit per constraint (all its checks together); past it the
            constraint counts as not followed. Enforced only when called from the main thread.

    Raises at build time, not in a worker: ImportError if if-verifiable is missing,
    RuntimeError if NLTK's punkt_tab English tables cannot be found (see
    :func:`ensure_nltk_data`).
    """
    if level not in LEVELS:
        raise ValueError(f"ifeval level must be one of {', '.join(LEVELS)}, got {level!r}")
    timeout_s = float(timeout_s)
    if not timeout_s > 0:
        raise ValueError(f"ifeval timeout_s must be positive, got {timeout_s}")
    ensure_nltk_data()
    _ready()
    # A partial of a module-level function pickles, so the reward can be shipped to other ranks.
    return functools.partial(score_ifeval, level=level, loose=bool(loose), timeout_s=timeout_s)


def score_ifeval(
    completions: Sequence[object],
    answers: Sequence[object],
    prompts: Sequence[str] | None = None,
    *,
    level: str = "prompt",
    loose: bool = False,
    timeout_s: float = 2.0,
) -> list[float]:
    """Score completions against IFEval constraint specs (see :func:`make_ifeval_reward`)."""
    if level not in LEVELS:
        raise ValueError(f"ifeval level must be one of {', '.join(LEVELS)}, got {level!r}")
    scores = []
    # At prompt level one failed constraint decides the item: the rest are not checked.
    results = _evaluate(completions, answers, prompts, loose, timeout_s, all_or_nothing=level == "prompt")
    for strict, loose_results in results:
        held = loose_results if loose else strict
        if level == "prompt":
            scores.append(float(all(held)))
        else:
            scores.append(sum(held) / len(held))
    return scores


def ifeval_results(
    completions: Sequence[object],
    answers: Sequence[object],
    prompts: Sequence[str] | None = None,
    *,
    timeout_s: float = 2.0,
) -> list[tuple[list[bool], list[bool]]]:
    """Per item: (strict result per constraint, loose result per constraint), in spec order."""
    return _evaluate(completions, answers, prompts, True, timeout_s)


def ifeval_summary(
    completions: Sequence[object],
    answers: Sequence[object],
    prompts: Sequence[str] | None = None,
    *,
    timeout_s: float = 2.0,
) -> dict:
    """IFEval's four standard numbers over a batch, plus a per-instruction breakdown.

    ``prompt_strict`` / ``prompt_loose``: the fraction of items whose constraints all hold.
    ``instruction_strict`` / ``instruction_loose``: held constraints over all constraints, pooled
    over items (as IFEval computes it). ``per_instruction``: ``{id: (held strict, total)}``.
    ``items`` and ``instructions`` count what was scored.
    """
    results = ifeval_results(completions, answers, prompts, timeout_s=timeout_s)
    specs = [_spec(answer) for answer in answers]
    per_instruction: dict[str, list[int]] = {}
    for spec, (strict, _) in zip(specs, results):
        for (instruction_id, _kwargs), held in zip(spec, strict):
            counts = per_instruction.setdefault(instruction_id, [0, 0])
            counts[0] += held
            counts[1] += 1
    items = len(results)
    instructions = sum(len(strict) for strict, _ in results)
    return {
        "prompt_strict": _ratio(sum(all(strict) for strict, _ in results), items),
        "prompt_loose": _ratio(sum(all(loose) for _, loose in results), items),
        "instruction_strict": _ratio(sum(sum(strict) for strict, _ in results), instructions),
        "instruction_loose": _ratio(sum(sum(loose) for _, loose in results), instructions),
        "per_instruction": {key: tuple(per_instruction[key]) for key in sorted(per_instruction)},
        "items": items,
        "instructions": instructions,
    }


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


# --- the library and its data ---------------------------------------------------------------


def _registry() -> dict:
    """IFEval's ``INSTRUCTION_DICT`` (imported on first use)."""
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    from langdetect import DetectorFactory

    # langdetect samples n-grams with a Random seeded from DetectorFactory.seed, which is None
    # (fresh entropy) by default: the same text could then be judged English in one generation
    # and not in the next. A fixed seed makes every language check a function of the text.
    DetectorFactory.seed = 0
    root = logging.getLogger()
    if not any(isinstance(f, _UnreadableLanguageFilter) for f in root.filters):
        root.addFilter(_UnreadableLanguageFilter())
    return INSTRUCTION_DICT


class _UnreadableLanguageFilter(logging.Filter):
    """Drop the library's "Unable to detect language for text ..." records.

    IFEval's language checkers log, at ERROR on the root logger, every response langdetect finds
    no letters in, quoting it whole: a 100,000-character completion would land in the run log.
    (IFEval then counts the constraint as followed; that is its rule, kept.)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and str(record.msg).startswith("Unable to detect language"))


def ensure_nltk_data() -> None:
    """Make sure NLTK finds its punkt_tab English tables (sentence and word counts need them).

    Looks on NLTK's own path (``$NLTK_DATA`` first), then in ``<data dir>/nltk_data``, which is
    added to ``nltk.data.path`` if it holds them. Never downloads anything. Raises RuntimeError
    saying what to do when the tables are nowhere.
    """
    import nltk

    resource = "tokenizers/punkt_tab/english/"
    try:
        nltk.data.find(resource)
        return
    except LookupError:
        pass
    candidate = str(default_data_dir() / "nltk_data")
    if candidate not in nltk.data.path:
        nltk.data.path.append(candidate)
    try:
        nltk.data.find(resource)
    except LookupError:
        raise RuntimeError(
            "the ifeval reward needs NLTK's punkt_tab English tables (tokenizers/punkt_tab/english), "
            f"not found on NLTK's path nor in {candidate}. Set NLTK_DATA to a folder holding "
            "tokenizers/punkt_tab/english (e.g. ../shared/data/nltk_data), or run "
            "`python -m nltk.downloader punkt_tab`."
        ) from None


def _ready() -> None:
    """Once per process: check NLTK's data (a reward built elsewhere and pickled here carries
    none of the builder's ``nltk.data.path`` changes) and warm up the checkers that load data on
    first use, so that loading does not count against the first check's time limit."""
    global _ready_pid
    if _ready_pid == os.getpid():
        return
    _registry()
    ensure_nltk_data()
    for instruction_id, kwargs in _WARM_UP:
        _base_checker(instruction_id, json.dumps(kwargs, sort_keys=True)).check_following("Warm up. Done.")
    _ready_pid = os.getpid()


# --- constraint specs -------------------------------------------------------------------------


def _spec(answer: object) -> tuple[tuple[str, str], ...]:
    """((instruction id, kwargs as canonical JSON), ...) of one gold answer.

    Bad specs raise ValueError: they are bad data, not bad model output.
    """
    if isinstance(answer, str):
        return _spec_from_json(answer)
    if isinstance(answer, Mapping):
        return _spec_from_dict(answer)
    raise ValueError(f"an ifeval answer is a constraint spec (JSON string or dict), got {type(answer).__name__}")


@functools.lru_cache(maxsize=65536)
def _spec_from_json(text: str) -> tuple[tuple[str, str], ...]:
    # Cached: the same answers come back every generation.
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"ifeval answer is not a JSON constraint spec: {text[:100]!r}") from error
    if not isinstance(value, Mapping):
        raise ValueError(f"ifeval answer is not a JSON object: {text[:100]!r}")
    return _spec_from_dict(value)


def _spec_from_dict(spec: Mapping) -> tuple[tuple[str, str], ...]:
    ids, kwargs_list = spec.get("instruction_id_list"), spec.get("kwargs")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"ifeval spec needs a non-empty 'instruction_id_list' of strings, got {ids!r}")
    if kwargs_list is None:
        kwargs_list = [{}] * len(ids)
    if not isinstance(kwargs_list, list) or len(kwargs_list) != len(ids):
        raise ValueError(f"ifeval spec needs one 'kwargs' entry per instruction id ({len(ids)}), got {kwargs_list!r}")
    registry = _registry()
    constraints = []
    for instruction_id, kwargs in zip(ids, kwargs_list):
        if instruction_id not in registry:
            raise ValueError(
                f"unknown IFEval instruction id {instruction_id!r}; the registry knows {len(registry)}: "
                + ", ".join(sorted(registry))
            )
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ValueError(f"ifeval kwargs of {instruction_id!r} must be an object, got {kwargs!r}")
        # IFEval's data (and its HF copy) fill unused arguments with None: the checkers'
        # defaults mean "draw at random", so they are dropped and then must not be needed.
        given = {key: value for key, value in (kwargs or {}).items() if value is not None}
        canonical = json.dumps(given, sort_keys=True)
        _base_checker(instruction_id, canonical)  # build now: a bad spec fails here, clearly
        constraints.append((instruction_id, canonical))
    return tuple(constraints)


@functools.lru_cache(maxsize=16384)
def _base_checker(instruction_id: str, kwargs_json: str):
    """The checker built from its kwargs.

    Cached and shared: IFEval's checkers keep only their arguments after ``build_description``
    (``EndChecker`` lower-cases its phrase on every check, which changes nothing after the first).
    """
    kwargs = json.loads(kwargs_json)
    checker = _registry()[instruction_id](instruction_id)
    try:
        _seeded_build(checker, kwargs)
    except Exception as error:  # noqa: BLE001 -- TypeError, KeyError...: all mean bad kwargs
        raise ValueError(f"ifeval checker {instruction_id!r} rejects kwargs {kwargs}: {error}") from error
    _keep_asked_values(instruction_id, checker, kwargs)
    built = checker.get_instruction_args() or {}
    for key in checker.get_instruction_args_keys():
        if key == "prompt":
            continue  # filled from the item's prompt at scoring time
        if key not in kwargs or not _same_value(kwargs[key], built.get(key)):
            # The checker replaced a missing or invalid argument (a negative count, a
            # two-letter "letter") with a random draw: it would check a constraint other than
            # the one the prompt states. (Values are compared up to the case, spacing and
            # order the checkers normalise.)
            raise ValueError(
                f"ifeval kwargs {kwargs} of {instruction_id!r} leave {key!r} missing or invalid "
                "(the checker would draw it at random)"
            )
    return checker


def _keep_asked_values(instruction_id: str, checker, kwargs: dict) -> None:
    """Put back two values IFEval's checkers swap for random draws, so they check what the
    prompt states.

    The letter-frequency checker takes only a-z and draws a random letter for anything else:
    two test prompts ask for '#' (key 1122) and '!' (key 1129), and its count works for any
    character. The nth-paragraph checker redraws an ``nth_paragraph`` past ``num_paragraphs``;
    IFEval's own class draws such values when it makes prompts (220 rows of the generated
    training set have one), and kept as asked the constraint simply never holds.
    """
    letter = kwargs.get("letter")
    if instruction_id == "keywords:letter_frequency" and isinstance(letter, str) and len(letter) == 1:
        if hasattr(checker, "_letter"):
            checker._letter = letter.lower()
    nth = kwargs.get("nth_paragraph")
    if instruction_id == "length_constraints:nth_paragraph_first_word" and isinstance(nth, int) and nth > 0:
        if hasattr(checker, "_nth_paragraph"):
            checker._nth_paragraph = nth


def _same_value(given: object, built: object) -> bool:
    """Whether the checker kept a given argument, up to the case, spacing and order it normalises."""
    if isinstance(given, str) and isinstance(built, str):
        return given.strip().lower() == built.strip().lower()
    if isinstance(given, list) and isinstance(built, list):
        return sorted(set(map(str, given))) == sorted(set(map(str, built)))
    return given == built


def _needs_prompt(checker) -> bool:
    return "prompt" in (checker.get_instruction_args() or {})


def _seeded_build(checker, kwargs: dict) -> None:
    """``checker.build_description(**kwargs)`` with Python's global ``random`` at a fixed state.

    IFEval's checkers draw from the global ``random`` any argument the kwargs leave open; a
    fixed state makes such a draw the same in every process, so a checker (built once, then
    cached) judges alike everywhere. The caller's random state is put back.
    """
    state = random.getstate()
    random.seed(0)
    try:
        checker.build_description(**kwargs)
    finally:
        random.setstate(state)


@functools.lru_cache(maxsize=4096)
def _prompt_checker(instruction_id: str, kwargs_json: str, prompt: str):
    """A checker that also needs the item's prompt (built as IFEval does: kwargs, then prompt)."""
    checker = _registry()[instruction_id](instruction_id)
    _seeded_build(checker, json.loads(kwargs_json))
    _seeded_build(checker, {"prompt": prompt})
    return checker


def _checker(instruction_id: str, kwargs_json: str, prompt: str | None):
    checker = _base_checker(instruction_id, kwargs_json)
    if not _needs_prompt(checker):
        return checker
    if prompt is None:
        raise ValueError(f"ifeval instruction {instruction_id!r} needs the item's prompt: pass prompts")
    return _prompt_checker(instruction_id, kwargs_json, prompt)


# --- judging ----------------------------------------------------------------------------------


def _evaluate(
    completions, answers, prompts, loose: bool, timeout_s: float, all_or_nothing: bool = False
) -> list[tuple[list[bool], list[bool]]]:
    """(strict, loose) results per item; loose results equal strict ones when ``loose`` is False.

    ``all_or_nothing``: stop at an item's first failed constraint (slow checkers last), leaving
    the unchecked ones False; only whether all constraints held is then meaningful.
    """
    if isinstance(completions, str) or isinstance(answers, str):
        raise TypeError("a reward takes lists of completions and answers, not single strings")
    if len(completions) != len(answers):
        raise ValueError(f"{len(completions)} completions but {len(answers)} gold answers")
    prompts = checked_prompts(prompts, len(completions))
    _ready()
    specs = [_spec(answer) for answer in answers]  # bad data fails before any scoring
    results = []
    with _Deadline(timeout_s) as deadline:
        for index, (completion, spec) in enumerate(zip(completions, specs)):
            text = completion if isinstance(completion, str) else ""
            prompt = prompts[index] if prompts is not None else None
            results.append(_judge_item(text, spec, prompt, loose, all_or_nothing, deadline))
    return results


def _judge_item(
    text: str, spec, prompt: str | None, loose: bool, all_or_nothing: bool, deadline: _Deadline
) -> tuple[list[bool], list[bool]]:
    strict_results, loose_results = [False] * len(spec), [False] * len(spec)
    if not text.strip():
        return strict_results, loose_results  # IFEval: an empty response follows nothing
    order = range(len(spec))
    if all_or_nothing:
        order = sorted(order, key=lambda index: spec[index][0] in _SLOW)
    variants = _loose_variants(text) if loose else ()
    for index in order:
        instruction_id, kwargs_json = spec[index]
        checker = _checker(instruction_id, kwargs_json, prompt)
        strict, relaxed = deadline.run(instruction_id, _judge_constraint, checker, text, variants)
        strict_results[index], loose_results[index] = strict, relaxed if loose else strict
        if all_or_nothing and not loose_results[index]:
            break
    return strict_results, loose_results


def _judge_constraint(checker, text: str, variants: Sequence[str]) -> tuple[bool, bool]:
    """(strict, loose) for one constraint; the loose variants are tried only if strict fails."""
    if checker.check_following(text):
        return True, True
    return False, any(checker.check_following(variant) for variant in variants)


def _loose_variants(text: str) -> list[str]:
    """IFEval's loose variants other than the response itself, empty ones and repeats dropped.

    Its eight: the response, without its first line, last line, or both (stripped), and each of
    those with every ``*`` removed.
    """
    lines = text.split("\n")
    trimmed = [text, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    variants = []
    for candidate in trimmed + [t.replace("*", "") for t in trimmed]:
        if candidate.strip() and candidate != text and candidate not in variants:
            variants.append(candidate)
    return variants


class _CheckerTimeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that checkers' ``except Exception``
    blocks cannot swallow it."""


class _Deadline:
    """Runs checks under a wall-clock limit and turns failures into "not followed".

    The limit uses SIGALRM (``setitimer``), which Python delivers only to the main thread; from
    any other thread checks run without a limit. The previous handler and timer are put back on
    exit (a timer that would have expired meanwhile fires right away).
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.active = False
        self.armed = False

    def __enter__(self) -> _Deadline:
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            self.previous_handler = signal.signal(signal.SIGALRM, self._expired)
        except ValueError:  # not the main interpreter
            return self
        self.previous_timer = signal.getitimer(signal.ITIMER_REAL)
        self.entered = time.monotonic()
        self.active = True
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.active:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        # None: the previous handler was not installed from Python and cannot be put back.
        previous = self.previous_handler if self.previous_handler is not None else signal.SIG_DFL
        signal.signal(signal.SIGALRM, previous)
        remaining, interval = self.previous_timer
        if remaining > 0:
            left = remaining - (time.monotonic() - self.entered)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), interval)

    def _expired(self, signum, frame) -> None:
        if self.armed:  # a late signal after disarming is ignored
            raise _CheckerTimeout

    def run(self, instruction_id: str, check, *args) -> tuple[bool, bool]:
        """``check(*args)`` as (strict, loose) booleans; (False, False) if it raises or times out."""
        try:
            try:
                if self.active:
                    self.armed = True
                    signal.setitimer(signal.ITIMER_REAL, self.timeout_s, _ALARM_REPEAT_S)
                strict, loose = check(*args)
            finally:
                if self.active:
                    self.armed = False
                    signal.setitimer(signal.ITIMER_REAL, 0)
            return bool(strict), bool(loose)
        except _CheckerTimeout:
            _warn_once(instruction_id, "timeout", f"ran past {self.timeout_s} s")
        except Exception as error:  # noqa: BLE001 -- includes RecursionError, re.error, MemoryError
            _warn_once(instruction_id, type(error).__name__, str(error)[:200])
        return False, False


def _warn_once(instruction_id: str, kind: str, detail: str) -> None:
    if (instruction_id, kind) in _warned:
        return
    _warned.add((instruction_id, kind))
    logger.warning(
        "ifeval checker %s failed (%s: %s); the constraint scores as not followed "
        "(logged once per instruction id and error type)", instruction_id, kind, detail,
    )
