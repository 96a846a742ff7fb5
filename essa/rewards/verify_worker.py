"""The math-verify worker process: reads jobs on stdin, answers "1" or "0" on stdout.

Started by :mod:`essa.rewards.verify_pool` as
``python -m essa.rewards.verify_worker MEMORY_LIMIT_MB PARENT_PID``. It calls
math-verify with its own (signal based) timeouts disabled; the parent kills this process when an
item runs past its deadline. One job per line, as JSON: ``{"gold": ..., "pred": ..., "raw": b}``;
``raw`` false means ``pred`` is the content of a box, true means it is a whole completion for
math-verify's own extraction. Protocol lines are the only thing written to the real stdout.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import sys


def _protocol_channel():
    """Keep the real stdout for answers and send stray prints from libraries to stderr."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return channel


def _limit_memory(megabytes: int) -> None:
    """Cap the address space, so a runaway sympy expansion fails with MemoryError early."""
    if megabytes > 0:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this worker when its parent goes, even if it is stuck in C code.

    (Closing stdin only reaches an idle worker.) Elsewhere this is a no-op.
    """
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent_pid and os.getppid() != parent_pid:
        os._exit(0)  # the parent died before the request took effect


def main() -> None:
    """Serve jobs until stdin closes (the parent exited or closed the pool)."""
    memory_limit_mb, parent_pid = (int(arg) for arg in (sys.argv[1:] + ["0", "0"])[:2])
    _die_with_parent(parent_pid)
    channel = _protocol_channel()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())

    @functools.lru_cache(maxsize=4096)
    def parsed(text: str):
        # Gold answers repeat across the samples of one prompt: parse each once.
        return parse(text, extraction_config=configs, parsing_timeout=None)

    def judge(job: dict) -> bool:
        gold = parsed("\\boxed{" + job["gold"] + "}")
        predicted = parsed(job["pred"] if job["raw"] else "\\boxed{" + job["pred"] + "}")
        if not gold or not predicted:
            return False
        return bool(verify(gold, predicted, timeout_seconds=None))

    judge({"gold": "\\frac{1}{2}", "pred": "0.5", "raw": False})  # warm up the parsers
    _limit_memory(memory_limit_mb)
    channel.write("ready\n")
    for line in sys.stdin:
        try:
            verdict = judge(json.loads(line))
        except Exception:  # includes MemoryError and RecursionError
            verdict = False  # unscorable is a wrong answer, never a crash
        channel.write("1\n" if verdict else "0\n")


if __name__ == "__main__":
    main()
