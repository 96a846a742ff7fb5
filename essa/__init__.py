"""ESSA: gradient-free alignment of LLMs by evolution strategies over SVD-LoRA singular values."""
