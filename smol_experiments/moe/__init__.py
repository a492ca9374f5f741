"""Dense → MoE upcycling of SmolLM-135M, continued pretraining, expert specialization, routing analysis.

See README.md in this folder; every stage is `python -m smol_experiments.moe.<stage> --help`.
"""
