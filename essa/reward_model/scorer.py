"""A local reward model that scores (prompt, completion) pairs: one per worker, loaded once.

The pair is written as the reward model's own chat (a user turn holding the question, an
assistant turn holding the completion) through its tokenizer's chat template; a tokenizer
without one gets ``"{prompt}\\n\\n{completion}"``. Batches are right-padded with an attention
mask: the real tokens keep positions 0..n-1 whatever the batch (with left padding, a model that
does not derive positions from the mask gives shorter pairs other positions), and transformers'
classifiers read the logits of the last token that is not ``config.pad_token_id``, set from the
tokenizer when the model has none. So a pair scores the same alone and in a batch
(tests/test_reward_model.py). Pairs longer than ``max_length`` tokens lose the start of the
prompt: the end, where the score is read, is kept.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import torch

from essa.models.dtype import probe_device, resolve_dtype
from essa.reward_model.folder import RewardModelError, check_reward_model

log = logging.getLogger("essa")


def resolve_device(device: str, dtype: str = "auto") -> str:
    """``auto``: cuda when this process sees a GPU, else cpu. int8 is refused on the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "int8" and device == "cpu":
        raise RewardModelError(CPU_INT8_REFUSED)
    return device


# Measured (docs/fitness.md): torch 2.13's dynamic int8 linear layers (torch.ao quantize_dynamic,
# per-tensor or per-channel weights) run, but change a SmolLM2-135M backbone's last hidden state by
# 40-60% (cosine 0.79-0.91 to float32): activation outliers, which bitsandbytes' LLM.int8 on CUDA
# keeps in 16 bits and a per-tensor CPU scheme cannot.
CPU_INT8_REFUSED = ("fitness.reward_model.dtype int8 runs on CUDA only (bitsandbytes 8-bit); on the "
                    "CPU torch's dynamic int8 quantization changes a reward model's scores as much "
                    "as they differ between answers (docs/fitness.md): use bfloat16 or float32")


class RewardModelScorer:
    """Tokenizer and ``AutoModelForSequenceClassification`` in eval mode; ``score(prompts,
    completions)`` returns one float per pair. Independent of the generation engine: it stays
    loaded while candidates come and go."""

    def __init__(self, cfg):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils.logging import disable_progress_bar
        disable_progress_bar()  # a quiet worker console: one log line says what was loaded
        self.info = check_reward_model(cfg.path, cfg.output)
        self.batch_size, self.max_length = cfg.batch_size, cfg.max_length
        self.device = resolve_device(cfg.device, cfg.dtype)
        self.dtype = _torch_dtype(cfg.dtype, self.device)
        self.seconds, self.pairs = 0.0, 0  # scoring time so far, to compare with generation
        t0 = time.time()
        tok = AutoTokenizer.from_pretrained(self.info.folder)
        tok.padding_side, tok.truncation_side = "right", "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        self.tokenizer = tok
        self.templated = bool(getattr(tok, "chat_template", None))
        kw = {"dtype": self.dtype}
        if cfg.dtype == "int8":  # CUDA only (resolve_device refuses the CPU)
            kw.update(quantization_config=_bnb_int8(), device_map={"": self.device})
        model = AutoModelForSequenceClassification.from_pretrained(self.info.folder, **kw)
        if model.config.pad_token_id is None:  # needed to find each pair's last token in a batch
            model.config.pad_token_id = tok.pad_token_id
        if "device_map" not in kw:
            model = model.to(self.device)
        self.model = model.eval()
        self.description = (f"{self.info.architecture} from {self.info.folder}, output "
                            f"{self.info.index} ({self.info.label!r}), {cfg.dtype} -> "
                            f"{_dtype_name(self.dtype, cfg.dtype)} on {self.device}")
        log.info("reward model loaded in %.1f s: %s; %s", time.time() - t0, self.description,
                 _memory(self.model, self.device))

    def text(self, prompt: str, completion: str) -> str:
        """The pair as the reward model reads it."""
        if not self.templated:
            return f"{prompt}\n\n{completion}"
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        return self.tokenizer.apply_chat_template(chat, tokenize=False)

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """(n,) float64 reward of each (prompt, completion) pair, in order."""
        t0 = time.time()
        texts = [self.text(p, c) for p, c in zip(prompts, completions, strict=True)]
        out = np.empty(len(texts), dtype=np.float64)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths: less padding
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            # A chat template writes its own special tokens (BOS included where the model has one).
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, add_special_tokens=not self.templated,
                                 return_tensors="pt").to(self.device)
            logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            out[idx] = logits[:, self.info.index].float().cpu().numpy()  # logits (b, num_labels)
        self.seconds += time.time() - t0
        self.pairs += len(texts)
        return out

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _torch_dtype(requested: str, device: str) -> torch.dtype:
    """auto: bfloat16 where the device computes it natively, else float32 (the base model's rule,
    essa/models/dtype.py); int8 (CUDA): 8-bit linear layers, the rest in auto's dtype."""
    auto = requested in ("auto", "int8")
    return getattr(torch, resolve_dtype("auto", probe_device(device)).dtype if auto else requested)


def _dtype_name(dtype: torch.dtype, requested: str) -> str:
    return "bitsandbytes int8" if requested == "int8" else str(dtype).replace("torch.", "")


def _bnb_int8():
    """transformers' bitsandbytes 8-bit loading (CUDA only)."""
    from transformers import BitsAndBytesConfig
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise RewardModelError("fitness.reward_model.dtype int8 on CUDA needs the bitsandbytes "
                               "package (pip install -e '.[gpu]'), which is not installed") from None
    return BitsAndBytesConfig(load_in_8bit=True)


def _memory(model, device: str) -> str:
    """Parameter bytes (buffers and int8 scales included) and the process's memory."""
    import psutil
    tensors = list(model.state_dict().values())
    weights = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    params = sum(p.numel() for p in model.parameters())
    line = (f"{params / 1e6:.1f} M parameters, {weights / 2**20:.0f} MiB of weights, process RSS "
            f"{psutil.Process().memory_info().rss / 2**30:.2f} GiB")
    if device.startswith("cuda"):
        line += f", CUDA allocated {torch.cuda.memory_allocated(device) / 2**30:.2f} GiB"
    return line
