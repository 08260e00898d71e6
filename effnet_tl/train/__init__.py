"""effnet_tl.train: fit (settings, defaults, phases, selection), callbacks, strategies, LR finder.

Names are loaded on first use (PEP 562), so importing a submodule such as
``effnet_tl.train.step`` never drags in the whole recipe (and its model imports).

Example:
    >>> from effnet_tl.train import WarmupCosine
    >>> float(WarmupCosine(peak_lr=1.0, total_steps=10)(10))
    0.0
"""

from effnet_tl.lazy import export_lazily

_EXPORTS = {
    "fit": "recipe",
    "FitOptions": "settings",
    "ModelSettings": "settings",
    "DataSettings": "settings",
    "RecipeSettings": "settings",
    "RunSettings": "settings",
    "FitResult": "run",
    "Predictions": "run",
    "RunPaths": "run",
    "load_run": "run",
    "find_lr": "lr_finder",
    "LRFinderResult": "lr_finder",
    "plot_lr_finder": "lr_finder",
    "WarmupCosine": "schedules",
    "resume_callbacks": "selection",
    "StopOnNonFinite": "callbacks",
    "SharedStepModel": "step",
    "distributed_fit": "distributed",
    "distributed_evaluate": "distributed",
    "replica_train_step": "step",
    "get_strategy": "strategy",
    "mixed_precision_policy_for": "strategy",
}

export_lazily(__name__, _EXPORTS)
