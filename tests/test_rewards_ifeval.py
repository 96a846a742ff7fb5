"""ifeval reward: hand-made responses for every IFEval instruction id (strict and loose), levels,
the summary numbers, prompts, adversarial text, time limits, failing checkers, NLTK data."""

import functools
import json
import logging
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest

from essa.data.loading import default_data_dir
from essa.rewards import ifeval
from essa.rewards.ifeval import ifeval_results, ifeval_summary, make_ifeval_reward

TEST_FILE = default_data_dir() / "ifeval" / "test.jsonl"

# id -> (kwargs, a response that follows the constraint, one that breaks it, also loosely).
CASES = {
    "change_case:capital_word_frequency": (
        {"capital_frequency": 3, "capital_relation": "at least"},
        "The THREE BIG WORDS are here.",
        "Only ONE capital word is here.",
    ),
    "change_case:english_capital": (
        {},
        "THIS ANSWER IS WRITTEN ENTIRELY IN CAPITAL LETTERS AND TALKS ABOUT THE WEATHER TODAY.",
        "This answer is written in ordinary case and talks about the weather today.",
    ),
    "change_case:english_lowercase": (
        {},
        "this answer is written entirely in lowercase letters and talks about the weather today.",
        "This answer is written in ordinary case and talks about the weather today.",
    ),
    "combination:repeat_prompt": (
        {"prompt_to_repeat": "Write a haiku about rain."},
        "Write a haiku about rain.\nSoft rain on the roof\nthe gutters hum all evening\nsleep comes in puddles",
        "Here is a haiku about rain: soft rain on the roof.",
    ),
    "combination:two_responses": (
        {},
        "Paris is the capital of France.\n******\nThe capital of France is Paris, on the Seine.",
        "Paris is the capital of France.",
    ),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2},
        "Dear [name], your order ships to [address].",
        "Dear [name], your order ships today.",
    ),
    "detectable_content:postscript": (
        {"postscript_marker": "P.S."},
        "Thanks for reading.\nP.S. See you soon.",
        "Thanks for reading. See you soon.",
    ),
    "detectable_format:constrained_response": (
        {},
        "My answer is yes.",
        "Yes, definitely.",
    ),
    "detectable_format:json_format": (
        {},
        '```json\n{"city": "Paris", "country": "France"}\n```',
        "The city is Paris.",
    ),
    "detectable_format:multiple_sections": (
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nRain is coming.\nSection 2\nTake an umbrella.",
        "Section 1\nRain is coming. Take an umbrella.",
    ),
    "detectable_format:number_bullet_lists": (
        {"num_bullets": 2},
        "* Take an umbrella.\n* Wear boots.",
        "* Take an umbrella.",
    ),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 2},
        "Take *an umbrella* and *your boots* today.",
        "Take *an umbrella* and your boots today.",
    ),
    "detectable_format:title": (
        {},
        "<<A Rainy Day>>\nIt rained all day.",
        "A Rainy Day\nIt rained all day.",
    ),
    "keywords:existence": (
        {"keywords": ["rain", "umbrella"]},
        "Take an umbrella, rain is coming.",
        "Rain is coming.",
    ),
    "keywords:forbidden_words": (
        {"forbidden_words": ["sun"]},
        "It rained all day.",
        "The sun came out.",
    ),
    "keywords:frequency": (
        {"keyword": "rain", "frequency": 3, "relation": "at least"},
        "Rain, rain and more rain.",
        "Rain once and then sunshine.",
    ),
    "keywords:letter_frequency": (
        {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
        "Zebras zigzag in the zoo.",
        "No such letter appears here.",
    ),
    "language:response_language": (
        {"language": "fr"},
        "Bonjour, je suis très content de vous voir aujourd'hui. Il fait beau et nous allons nous "
        "promener dans le parc avec les enfants.",
        "Hello, I am very happy to see you today. The weather is nice and we are going for a walk "
        "in the park with the children.",
    ),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "finally"},
        "It rained all morning.\n\nFinally, the sun came out.",
        "It rained all morning.\n\nThen the sun came out.",
    ),
    "length_constraints:number_paragraphs": (
        {"num_paragraphs": 2},
        "It rained all morning.\n***\nThe sun came out later.",
        "It rained all morning and the sun came out later.",
    ),
    "length_constraints:number_sentences": (
        {"num_sentences": 3, "relation": "less than"},
        "It rained. Then it stopped.",
        "It rained. Then it stopped. The sun came out. We went outside.",
    ),
    "length_constraints:number_words": (
        {"num_words": 10, "relation": "less than"},
        "A short answer with few words.",
        "This answer has far more than ten words in it, so it breaks the limit.",
    ),
    "punctuation:no_comma": (
        {},
        "No commas appear in this answer.",
        "Well, a comma appears here.",
    ),
    "startend:end_checker": (
        {"end_phrase": "Any other questions?"},
        "Rain is expected tomorrow. Any other questions?",
        "Any other questions? Rain is expected tomorrow.",
    ),
    "startend:quotation": (
        {},
        '"Rain is expected tomorrow."',
        "Rain is expected tomorrow.",
    ),
}

# id -> a response that fails strictly and passes loosely (a chatty first or last line, or
# markdown stars), with the kwargs of CASES.
LOOSE_ONLY = {
    "change_case:english_capital":
        "Sure, here it is:\nTHIS ANSWER IS WRITTEN ENTIRELY IN CAPITAL LETTERS AND TALKS ABOUT THE WEATHER.",
    "change_case:english_lowercase":
        "Here is my answer:\nthis answer is written entirely in lowercase letters and talks about the weather.",
    "combination:repeat_prompt": "Sure!\nWrite a haiku about rain.\nSoft rain on the roof.",
    "detectable_format:json_format": 'Here is the JSON:\n{"city": "Paris"}',
    "detectable_format:multiple_sections": "*Section* 1\nRain is coming.\n*Section* 2\nTake an umbrella.",
    "detectable_format:number_bullet_lists": "* Take an umbrella.\n* Wear boots.\n- That is all.",
    "keywords:forbidden_words": "Sure, no sun in this one:\nIt rained all day.",
    "length_constraints:nth_paragraph_first_word": "It rained all morning.\n\n**Finally**, the sun came out.",
    "length_constraints:number_paragraphs":
        "It rained all morning.\n***\nThe sun came out later.\n***\nLet me know if you need more.",
    "length_constraints:number_sentences": "Sure. Here it is.\nIt rained. Then it stopped.",
    "length_constraints:number_words": "Here is my short answer for you today friend:\nRain.",
    "punctuation:no_comma": "Sure, here it is:\nNo commas appear in this answer.",
    "startend:end_checker": "Rain is expected tomorrow. **Any other questions?**",
    "startend:quotation": 'Here you go:\n"Rain is expected tomorrow."',
}


def spec(*pairs) -> str:
    """A JSON constraint spec from (id, kwargs) pairs, as the data loader carries it."""
    return json.dumps({"instruction_id_list": [i for i, _ in pairs], "kwargs": [k for _, k in pairs]})


@functools.lru_cache(maxsize=1)
def ifeval_test_rows() -> list[dict]:
    with open(TEST_FILE, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def row_answer(row: dict) -> str:
    return spec(*zip(row["instruction_id_list"], row["kwargs"]))


@pytest.fixture(scope="module")
def strict():
    return make_ifeval_reward()


@pytest.fixture(scope="module")
def loose():
    return make_ifeval_reward(loose=True)


def test_cases_cover_every_id_of_the_test_set():
    ids = {i for row in ifeval_test_rows() for i in row["instruction_id_list"]}
    assert len(ids) == 25
    assert set(CASES) == ids
    assert set(LOOSE_ONLY) <= ids


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_following_response_scores_one_and_breaking_response_zero(instruction_id, strict, loose):
    kwargs, follows, breaks = CASES[instruction_id]
    answer = spec((instruction_id, kwargs))
    assert strict([follows], [answer]) == [1.0]
    assert loose([follows], [answer]) == [1.0]
    assert strict([breaks], [answer]) == [0.0]
    assert loose([breaks], [answer]) == [0.0]


@pytest.mark.parametrize("instruction_id", sorted(LOOSE_ONLY))
def test_loose_variant_forgives_a_chatty_line_or_markdown(instruction_id, strict, loose):
    kwargs = CASES[instruction_id][0]
    answer = spec((instruction_id, kwargs))
    assert strict([LOOSE_ONLY[instruction_id]], [answer]) == [0.0]
    assert loose([LOOSE_ONLY[instruction_id]], [answer]) == [1.0]
    assert ifeval_results([LOOSE_ONLY[instruction_id]], [answer]) == [([False], [True])]


def test_non_letter_in_letter_frequency_is_counted_not_replaced(strict):
    """IFEval's checker swaps '#' (key 1122) and '!' (key 1129) for a random letter."""
    rows = {row["key"]: row for row in ifeval_test_rows()}
    hashtags = spec(("keywords:letter_frequency", rows[1122]["kwargs"][1]))
    assert strict(["#rain #sun #wind #snow"], [hashtags]) == [1.0]
    assert strict(["#rain #sun #wind and snow"], [hashtags]) == [0.0]
    bangs = spec(("keywords:letter_frequency", rows[1129]["kwargs"][0]))
    assert strict(["Wow! Yes! Great! Cold! Sweet! Gentle!"], [bangs]) == [1.0]
    assert strict(["Wow! Yes! Great!"], [bangs]) == [0.0]


def test_nth_paragraph_past_the_paragraph_count_is_kept_and_never_holds(strict):
    """IFEval's class would replace it with a random draw (the generated training set has 220)."""
    answer = spec(("length_constraints:nth_paragraph_first_word",
                   {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "so"}))
    responses = ["So it begins.\n\nSo it goes.", "A.\n\nB.\n\nSo it ends.", "So.\n\nSo."]
    assert all(strict(responses, [answer] * 3) == [0.0] * 3 for _ in range(3))
    assert ifeval._base_checker(*ifeval._spec(answer)[0]).get_instruction_args()["nth_paragraph"] == 3


def test_every_generated_training_row_parses():
    path = default_data_dir() / "ifeval_train" / "generated_gsm8k_train.jsonl"
    with open(path, encoding="utf-8") as handle:
        answers = [row_answer(json.loads(line)) for line in handle]
    assert len(answers) == 7473
    assert all(ifeval._spec(answer) for answer in answers)


def test_instruction_level_gives_the_fraction_held():
    reward = make_ifeval_reward(level="instruction")
    two = spec(("punctuation:no_comma", {}), ("detectable_format:title", {}))
    three = spec(("punctuation:no_comma", {}), ("detectable_format:title", {}),
                 ("keywords:existence", {"keywords": ["rain"]}))
    completions = ["No commas here.", "<<Title>> rain, commas", "<<Title>> no commas but rain", "Commas, yes."]
    assert reward(completions, [two, three, three, two]) == [0.5, 2 / 3, 1.0, 0.0]
    assert make_ifeval_reward()(completions, [two, three, three, two]) == [0.0, 0.0, 1.0, 0.0]


def test_dict_and_json_answers_score_alike(strict):
    completions = ["<<Title>>\nNo commas here.", "Commas, here.", "<<T>> x, y"]
    as_json = [spec(("punctuation:no_comma", {}), ("detectable_format:title", {}))] * 3
    as_dict = [json.loads(answer) for answer in as_json]
    assert strict(completions, as_dict) == strict(completions, as_json) == [1.0, 0.0, 0.0]


def test_unused_none_kwargs_are_dropped(strict):
    """The HF copy of IFEval fills every argument name with None."""
    answer = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"num_words": None, "keywords": None}]}
    assert strict(["No commas."], [answer]) == [1.0]


def test_summary_numbers_match_a_hand_count():
    completions = [
        "<<T>>\nNo commas here.",  # both hold
        "Sure, here:\nNo commas after the first line.",  # fails strict, holds loose
        "It is sunny.",  # neither holds
    ]
    answers = [
        spec(("punctuation:no_comma", {}), ("detectable_format:title", {})),
        spec(("punctuation:no_comma", {})),
        spec(("detectable_format:title", {}), ("keywords:existence", {"keywords": ["rain"]})),
    ]
    summary = ifeval_summary(completions, answers)
    assert summary["prompt_strict"] == pytest.approx(1 / 3)
    assert summary["prompt_loose"] == pytest.approx(2 / 3)
    assert summary["instruction_strict"] == pytest.approx(2 / 5)
    assert summary["instruction_loose"] == pytest.approx(3 / 5)
    assert summary["per_instruction"] == {
        "detectable_format:title": (1, 2),
        "keywords:existence": (0, 1),
        "punctuation:no_comma": (1, 2),
    }
    assert (summary["items"], summary["instructions"]) == (3, 5)
    assert ifeval_results(completions, answers) == [
        ([True, True], [True, True]), ([False], [True]), ([False, False], [False, False])
    ]


class _EchoChecker:
    """A registry entry whose checker needs the item's prompt: the response must start with it."""

    def __init__(self, instruction_id):
        self.id = instruction_id
        self._prompt = None

    def build_description(self, *, prompt=None):
        self._prompt = prompt
        return "Start by repeating the prompt."

    def get_instruction_args(self):
        return {"prompt": self._prompt}

    def get_instruction_args_keys(self):
        return ["prompt"]

    def check_following(self, value):
        return value.startswith(self._prompt)


def test_the_prompt_reaches_checkers_that_need_it(strict, monkeypatch):
    registry = ifeval._registry()
    monkeypatch.setitem(registry, "test:echo_prompt", _EchoChecker)
    answer = spec(("test:echo_prompt", {}))
    prompts = ["Name a colour.", "Name a fruit."]
    assert strict(["Name a colour. Blue.", "Name a colour. Apple."], [answer, answer], prompts) == [1.0, 0.0]
    with pytest.raises(ValueError, match="prompt"):
        strict(["Name a colour. Blue."], [answer])


def test_repeat_prompt_uses_the_text_in_kwargs(strict):
    row = next(r for r in ifeval_test_rows() if "combination:repeat_prompt" in r["instruction_id_list"])
    index = row["instruction_id_list"].index("combination:repeat_prompt")
    answer = spec(("combination:repeat_prompt", row["kwargs"][index]))
    repeated = row["kwargs"][index]["prompt_to_repeat"] + "\nMy answer follows."
    assert strict([repeated, "My answer follows."], [answer, answer], [row["prompt"]] * 2) == [1.0, 0.0]


def test_every_test_prompt_spec_parses_and_scores(strict):
    rows = ifeval_test_rows()
    assert len(rows) == 541
    answers = [row_answer(row) for row in rows]
    assert sum(len(ifeval._spec(answer)) for answer in answers) == 834
    assert strict([""] * len(rows), answers, [row["prompt"] for row in rows]) == [0.0] * len(rows)
    scores = strict(["A plain answer, with a comma."] * len(rows), answers, [row["prompt"] for row in rows])
    assert len(scores) == 541 and set(scores) <= {0.0, 1.0}


def test_prompt_level_stops_early_but_agrees_with_all_results(strict, loose):
    """At prompt level an item stops at its first failed constraint (slow checkers last)."""
    rows = ifeval_test_rows()
    texts = [text for _, follows, breaks in CASES.values() for text in (follows, breaks)]
    texts += list(LOOSE_ONLY.values())
    completions = [texts[i % len(texts)] for i in range(len(rows))]
    answers = [row_answer(row) for row in rows]
    prompts = [row["prompt"] for row in rows]
    results = ifeval_results(completions, answers, prompts)
    assert strict(completions, answers, prompts) == [float(all(s)) for s, _ in results]
    assert loose(completions, answers, prompts) == [float(all(l)) for _, l in results]
    assert 0 < sum(all(l) for _, l in results) < len(rows)


def test_bad_specs_raise_value_error(strict):
    with pytest.raises(ValueError, match=r"'keywords:nonexistent'.*25"):
        strict(["x"], [spec(("keywords:nonexistent", {}))])
    with pytest.raises(ValueError, match="JSON"):
        strict(["x"], ["not json"])
    with pytest.raises(ValueError, match="instruction_id_list"):
        strict(["x"], [json.dumps({"kwargs": [{}]})])
    with pytest.raises(ValueError, match="kwargs"):
        strict(["x"], [json.dumps({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]})])
    with pytest.raises(ValueError, match="num_words"):  # would be drawn at random
        strict(["x"], [spec(("length_constraints:number_words", {"relation": "at least"}))])
    with pytest.raises(ValueError, match="num_highlights"):  # negative: redrawn at random
        strict(["x"], [spec(("detectable_format:number_highlighted_sections", {"num_highlights": -1}))])
    with pytest.raises(ValueError, match="rejects"):
        strict(["x"], [spec(("punctuation:no_comma", {"extra": 1}))])
    with pytest.raises(ValueError, match="spec"):
        strict(["x"], [None])


def test_caller_bugs_raise():
    with pytest.raises(ValueError, match="level.*prompt, instruction"):
        make_ifeval_reward(level="item")
    with pytest.raises(ValueError, match="timeout_s"):
        make_ifeval_reward(timeout_s=0)
    reward = make_ifeval_reward()
    answer = spec(("punctuation:no_comma", {}))
    with pytest.raises(ValueError, match="2 completions but 1"):
        reward(["a", "b"], [answer])
    with pytest.raises(ValueError, match="prompts"):
        reward(["a"], [answer], ["p1", "p2"])
    with pytest.raises(TypeError):
        reward("a", [answer])


def one_spec_per_id() -> list[str]:
    return [spec((instruction_id, CASES[instruction_id][0])) for instruction_id in sorted(CASES)]


@pytest.mark.parametrize("text", ["", "   \n\t ", None, 42])
def test_empty_or_missing_completions_score_zero(text, strict, loose):
    answers = one_spec_per_id()
    for reward in (strict, loose, make_ifeval_reward(level="instruction")):
        assert reward([text] * len(answers), answers) == [0.0] * len(answers)


ADVERSARIAL = {
    "100k words": "rain " * 20_000,
    "100k brackets": "[" * 100_000,
    "100k stars": "*" * 100_000,
    "100k newlines": "a\n" * 50_000,
    "nested parens": "(" * 10_000 + ")" * 10_000,
    "nested json": "[" * 10_000 + "]" * 10_000,
    "lone surrogate": "\udcff",
    "invalid utf-8": b"caf\xc3\xa9 \xff\xfe ok, fine".decode("utf-8", "surrogateescape"),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_completions_never_raise(name, strict, loose):
    answers = one_spec_per_id()
    text = ADVERSARIAL[name]
    start = time.monotonic()
    for reward in (strict, loose):
        scores = reward([text] * len(answers), answers)
        assert len(scores) == len(answers) and all(score in (0.0, 1.0) for score in scores)
    # 25 constraints, each under its 2 s limit; in practice only the placeholder regex on
    # 100k brackets (quadratic) runs into it.
    assert time.monotonic() - start < 30


def test_deep_json_fails_the_json_constraint_and_logs(strict, caplog, monkeypatch):
    monkeypatch.setattr(ifeval, "_warned", set())
    answer = spec(("detectable_format:json_format", {}))
    with caplog.at_level(logging.WARNING, logger="essa.rewards.ifeval"):
        assert strict([ADVERSARIAL["nested json"]], [answer]) == [0.0]
    assert "RecursionError" in caplog.text


def test_language_checks_are_deterministic():
    from langdetect import DetectorFactory

    reward = make_ifeval_reward()
    assert DetectorFactory.seed == 0
    # Texts langdetect reads differently from one unseeded call to the next (lv or pt; it or tl).
    texts = ["pasta e basta", "Hola amigo, ciao bella, salut mon ami"]
    answers = [spec(("language:response_language", {"language": code})) for code in ("pt", "it")]
    first = reward(texts, answers)
    assert all(reward(texts, answers) == first for _ in range(20))


def test_a_slow_checker_times_out_and_the_run_goes_on(monkeypatch, caplog):
    from if_verifiable.ifeval import instructions

    monkeypatch.setattr(ifeval, "_warned", set())

    def sleepy(self, value):
        time.sleep(5)
        return True

    monkeypatch.setattr(instructions.CommaChecker, "check_following", sleepy)
    reward = make_ifeval_reward(level="instruction", timeout_s=0.2)
    answer = spec(("punctuation:no_comma", {}), ("detectable_format:title", {}))
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="essa.rewards.ifeval"):
        assert reward(["<<T>> text", "<<T>> text"], [answer, answer]) == [0.5, 0.5]
    assert time.monotonic() - start < 2
    assert caplog.text.count("punctuation:no_comma") == 1 and "timeout" in caplog.text


def test_a_checker_that_swallows_the_timeout_is_still_stopped(monkeypatch):
    from if_verifiable.ifeval import instructions

    def stubborn(self, value):
        try:
            time.sleep(5)
        except BaseException:  # noqa: BLE001 -- a checker that catches everything
            pass
        time.sleep(5)
        return True

    monkeypatch.setattr(instructions.QuotationChecker, "check_following", stubborn)
    start = time.monotonic()
    assert make_ifeval_reward(timeout_s=0.2)(['"quoted"'], [spec(("startend:quotation", {}))]) == [0.0]
    assert time.monotonic() - start < 2


def test_first_use_loading_does_not_count_against_the_time_limit():
    """In a fresh process langdetect and NLTK load their data (0.3-1 s) on first use: without
    the warm-up at build time both checks here would run past their limit."""
    code = (
        "import json; from essa.rewards.ifeval import make_ifeval_reward; "
        "spec = json.dumps({'instruction_id_list': ['language:response_language', "
        "'length_constraints:number_sentences'], 'kwargs': [{'language': 'fr'}, "
        "{'num_sentences': 2, 'relation': 'at least'}]}); "
        "print(make_ifeval_reward(level='instruction', timeout_s=0.15)([%r], [spec]))"
        % CASES["language:response_language"][1]
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1.0]"


def test_the_callers_alarm_handler_and_timer_are_restored():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        make_ifeval_reward()(["No commas."], [spec(("punctuation:no_comma", {}))])
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # still armed
        time.sleep(0.7)
        assert fired == [True]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_works_outside_the_main_thread():
    reward = make_ifeval_reward()
    results = []
    worker = threading.Thread(target=lambda: results.append(
        reward(["No commas.", "Yes, commas."], [spec(("punctuation:no_comma", {}))] * 2)))
    worker.start()
    worker.join()
    assert results == [[1.0, 0.0]]


class _Boom(RuntimeError):
    pass


def test_a_raising_checker_scores_zero_and_is_logged_once(monkeypatch, caplog):
    from if_verifiable.ifeval import instructions

    def explode(self, value):
        raise _Boom("checker bug")

    monkeypatch.setattr(instructions.TitleChecker, "check_following", explode)
    reward = make_ifeval_reward()
    answers = [spec(("detectable_format:title", {}))] * 3
    with caplog.at_level(logging.WARNING, logger="essa.rewards.ifeval"):
        assert reward(["<<T>> a", "<<T>> b", "<<T>> c"], answers) == [0.0, 0.0, 0.0]
        assert reward(["<<T>> d"], answers[:1]) == [0.0]
    records = [r for r in caplog.records if "_Boom" in r.getMessage()]
    assert len(records) == 1 and "detectable_format:title" in records[0].getMessage()


def test_unreadable_language_is_not_logged_in_full(caplog):
    reward = make_ifeval_reward()
    with caplog.at_level(logging.ERROR):
        reward(["12345 " * 1000], [spec(("language:response_language", {"language": "fr"}))])
    assert "12345" not in caplog.text


def test_reward_pickles():
    reward = pickle.loads(pickle.dumps(make_ifeval_reward(level="instruction", loose=True)))
    answer = spec(("punctuation:no_comma", {}), ("detectable_format:title", {}))
    assert reward(["Sure, ok:\n<<T>> no commas"], [answer]) == [1.0]


def test_missing_nltk_data_fails_at_build_time_with_instructions(monkeypatch, tmp_path):
    import nltk

    monkeypatch.setenv("ESSA_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nowhere")])
    with pytest.raises(RuntimeError, match=r"NLTK_DATA.*punkt_tab.*nltk\.downloader punkt_tab"):
        make_ifeval_reward()


def test_nltk_data_is_found_in_the_data_dir(monkeypatch):
    import nltk

    shared = default_data_dir()
    assert (shared / "nltk_data" / "tokenizers" / "punkt_tab" / "english").is_dir()
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setenv("ESSA_DATA_DIR", str(shared))
    reward = make_ifeval_reward()
    assert str(shared / "nltk_data") in nltk.data.path
    answer = spec(("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"}))
    assert reward(["One. Two. Three.", "Just one."], [answer, answer]) == [1.0, 0.0]
