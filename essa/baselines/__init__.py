"""Baselines ESSA is measured against, writing the same run-directory format as ``essa-train``.

    from essa.baselines.grpo import run_grpo
    summary = run_grpo(config)   # TRL GRPO on the config's model, adapter, data and reward
"""
