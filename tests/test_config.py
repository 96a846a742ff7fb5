"""The run config: YAML, overrides, and errors that name the field and what is allowed."""

import pytest

from essa.config import ConfigError, RunConfig, describe_fields, load_config, to_yaml
from tests.conftest import ROOT, run_cli


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_validate_and_round_trip_through_yaml(tmp_path):
    config = load_config()
    assert config == RunConfig()
    again = load_config(write(tmp_path, to_yaml(config)))
    assert again == config


def test_yaml_and_overrides_apply_in_order(tmp_path):
    path = write(tmp_path, "engine:\n  max_tokens: 32\ntask:\n  arithmetic:\n    max_steps: 3\n")
    config = load_config(path, ["engine.max_tokens=48", "task.arithmetic.operations=add,sub"])
    assert config.engine.max_tokens == 48
    assert config.task.arithmetic.max_steps == 3
    assert config.task.arithmetic.operations == ["add", "sub"]


def test_exponent_floats_parse_as_numbers():
    assert load_config(None, ["sft.learning_rate=5e-4"]).sft.learning_rate == 0.0005


def test_unknown_key_names_it_and_suggests_close_match(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "engine:\n  max_token: 32\n"))
    msg = str(err.value)
    assert "engine.max_token" in msg and "'max_tokens'" in msg and "temperature" in msg


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match="unknown config key 'engin'.*'engine'"):
        load_config(None, ["engin.max_tokens=3"])


def test_wrong_type_names_field_and_expected_type():
    with pytest.raises(ConfigError, match=r"engine.max_tokens: expected an integer, got 'many'"):
        load_config(None, ["engine.max_tokens=many"])
    with pytest.raises(ConfigError, match=r"model.chat_template: expected true or false"):
        load_config(None, ["model.chat_template=3"])


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.quantization=int3"])
    assert "model.quantization" in str(err.value) and "'int4'" in str(err.value)


def test_reward_options_reach_the_reward_and_a_wrong_option_is_named(tmp_path):
    path = write(tmp_path, "task:\n  dataset: ifeval\n  reward_options:\n    level: instruction\n")
    config = load_config(path)
    assert config.task.reward_options == {"level": "instruction"}
    assert load_config(None, ["task.dataset=gsm8k", "task.reward_options.mode=flexible"]
                       ).task.reward_options == {"mode": "flexible"}
    with pytest.raises(ConfigError, match="reward 'ifeval' has no option 'levle'; its options are level, loose"):
        load_config(None, ["task.dataset=ifeval", "task.reward_options.levle=instruction"])
    with pytest.raises(ConfigError, match="reward 'gsm8k' has no option 'level'"):
        load_config(None, ["task.dataset=gsm8k", "task.reward=gsm8k", "task.reward_options.level=x"])
    with pytest.raises(ConfigError, match="task.reward_options: expected a mapping"):
        load_config(None, ["task.reward_options=3"])


def test_out_of_range_values_are_refused():
    with pytest.raises(ConfigError, match="engine.temperature: must be >= 0"):
        load_config(None, ["engine.temperature=-1"])
    with pytest.raises(ConfigError, match="engine.memory_fraction"):
        load_config(None, ["engine.memory_fraction=1.5"])
    with pytest.raises(ConfigError, match="operations.*'div'"):
        load_config(None, ["task.arithmetic.operations=[add, div]"])


def test_missing_config_file_names_path(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_every_field_is_documented():
    rows = describe_fields()
    assert len(rows) > 20
    undocumented = [name for name, _, help_text in rows if len(help_text) < 8]
    assert undocumented == []


def test_print_config_cli_shows_resolved_values_and_config_errors_exit_2():
    ok = run_cli(["essa-train", "--config", str(ROOT / "launch/configs/demo-cpu.yaml"),
                  "--set", "engine.max_tokens=17", "--print-config"])
    assert ok.returncode == 0, ok.stderr
    assert "max_tokens: 17" in ok.stdout and "name: demo-cpu" in ok.stdout
    bad = run_cli(["essa-train", "--set", "engine.max_tokenz=3", "--print-config"])
    assert bad.returncode == 2
    assert "unknown config key 'engine.max_tokenz'" in bad.stderr and "'max_tokens'" in bad.stderr


def test_config_reference_doc_is_current():
    out = run_cli(["essa", "config", "--fields"])
    assert out.returncode == 0
    doc = (ROOT / "docs" / "config.md").read_text()
    assert out.stdout.strip() in doc, "regenerate docs/config.md with `essa config --fields`"
