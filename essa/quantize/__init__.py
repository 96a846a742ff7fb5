"""Quantized copies of a base model (``essa quantize``; docs/quantization.md).

``paths`` (where copies live, no torch), ``schemes`` (what is quantized, the int4 group size),
``calibration`` (the calibration texts), ``run`` (the command), ``oneshot_script`` (the child
program run in the quantize venv). Nothing is imported here, so ``essa.quantize.paths`` stays light.
"""
