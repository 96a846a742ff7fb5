"""Prompt text: the question plus the task's instruction, wrapped in the model's chat template."""

from __future__ import annotations

from essa.data.example import Example


def user_message(question: str, instruction: str) -> str:
    """The user turn: the question, then the task's instruction on its own line."""
    return f"{question.strip()}\n{instruction.strip()}" if instruction else question.strip()


def build_prompt(tokenizer, question: str, instruction: str, chat_template: bool = True) -> str:
    """The full prompt string the engine completes (generation prompt included)."""
    message = user_message(question, instruction)
    if chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                             add_generation_prompt=True)
    return message + "\n"


def build_prompts(tokenizer, examples: list[Example], instruction: str,
                  chat_template: bool = True) -> list[str]:
    """Prompts of a list of examples, in order."""
    return [build_prompt(tokenizer, e.question, instruction, chat_template) for e in examples]
