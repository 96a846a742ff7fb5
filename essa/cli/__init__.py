"""Command-line entry points: essa, essa-train, essa-sft, essa-eval."""
