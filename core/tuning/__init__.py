"""Tuning lambda (loss.reg_weight) and the triplet margin (loss.margin) with Optuna, ``python reproduce/tune.py``,
along its pipeline: ``spec`` (the search space and the study a spec resolves to) -> ``study`` and ``trial`` (the
Optuna code: storage, sampler, budget, the objective) -> ``testsplit`` (chosen values and defaults on the test split)
-> ``compare`` (do they differ?) -> ``report`` (reports/<study>.md) and ``figures``; ``run`` strings them together.
"""
