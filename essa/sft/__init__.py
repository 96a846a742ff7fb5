"""The SFT warm start of ESSA: a short LoRA SFT on the task's training split (loss on the answer
tokens only), saved as a standard PEFT adapter folder and cached per setting. ``sft.trainer``
picks the plain float32 loop (CPU) or TRL's SFTTrainer (CUDA: bf16, QLoRA); see essa/sft/setup.py.

    from essa.sft import ensure_warm_start, train_sft
    folder = ensure_warm_start(config)        # <output_dir>/warm-start/<key>, trained if missing
    result = train_sft(config, "runs/sft-x")  # always trains; SFTResult with losses and timing
"""

from essa.sft.cache import ensure_warm_start, warm_start_dir, warm_start_key
from essa.sft.data import IGNORE_INDEX, end_of_turn_id, tokenize_example, tokenize_examples
from essa.sft.publish import SUMMARY_FILE, read_summary
from essa.sft.train import SFTResult, train_sft

__all__ = ["IGNORE_INDEX", "SFTResult", "SUMMARY_FILE", "end_of_turn_id", "ensure_warm_start",
           "read_summary", "tokenize_example", "tokenize_examples", "train_sft", "warm_start_dir",
           "warm_start_key"]
