""":func:`fit`: a folder of images in, a trained classifier and its run folder out.

The story, top to bottom: check the arguments (:mod:`~effnet_tl.train.settings`), read and
doctor the data, decide every ``None`` knob from it (:mod:`~effnet_tl.train.defaults`),
prepare the run folder (resume, refuse or start afresh), build the classifier inside the
strategy's scope, run each phase (:mod:`~effnet_tl.train.phases`: the head on the frozen
backbone, then the top blocks with BatchNorm frozen), put the kept epoch's weights back
(:mod:`~effnet_tl.train.selection`) and write the report (:mod:`~effnet_tl.train.evaluation`).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import sys
import time

import keras
import tensorflow as tf

from effnet_tl.classifier import build_classifier
from effnet_tl.data.examples import known_count
from effnet_tl.train import cluster
from effnet_tl.train.adaptive import decide, describe, effective, needs_decisions
from effnet_tl.train.callbacks import read_history
from effnet_tl.train.defaults import DataFacts, block_names, resolve
from effnet_tl.train.evaluation import evaluate_splits, write_plots
from effnet_tl.train.phase_data import PhaseData
from effnet_tl.train.phases import plan, run_phase
from effnet_tl.train.run import (
    FitResult,
    RunPaths,
    default_run_name,
    finish_run_dir,
    load_run,
    prepare_run_dir,
    read_json,
    write_json,
)
from effnet_tl.train.selection import Ranking
from effnet_tl.train.settings import FitOptions, arguments_doc, keyword_parameters
from effnet_tl.train.strategy import get_strategy, mixed_precision_policy_for
from effnet_tl.train.tpu import is_tpu
from effnet_tl.train.tpu_data import tpu_source

__all__ = ["fit"]

SKIPPED_SHOWN = 20  # skipped files named in the log; data_report.json lists every one


def fit(dataset_dir, num_classes: int | None = None, **options) -> FitResult:
    started = time.perf_counter()
    options = FitOptions.from_kwargs(**options)
    strategy = _strategy(options.run.strategy, options.run.tpu_address)
    worker = cluster.worker_of(strategy)
    try:
        return _fit(dataset_dir, num_classes, options, strategy, worker, started)
    except _PEER_ERRORS as error:
        if worker.count == 1:
            raise
        raise cluster.WorkerLost(
            f"worker {worker.index} of {worker.count}: {cluster.describe_peer_error(error)}; "
            "start every worker again with the same command: training resumes after the last "
            "finished epoch") from None


# What a collective op raises when a peer is gone: killed (heartbeats stop), unreachable, or
# the coordination service cancelled the step on its behalf.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.AbortedError, tf.errors.CancelledError, tf.errors.InternalError)


def _fit(dataset_dir, num_classes, options, strategy, worker, started) -> FitResult:
    budget = options.recipe.budget
    deadline = time.time() + budget if isinstance(budget, (int, float)) else None
    # Several workers: the chief logs, the others stay quiet (the same lines N times is noise).
    verbose = _verbosity(options.run.verbose) if worker.is_chief else 0

    # 1. Data first: a wrong num_classes or an empty split fails here, in seconds.
    source, scan, num_classes = _load_source(dataset_dir, num_classes, options.data,
                                             options.run, verbose)
    settings = resolve(options, _facts(source, scan, strategy, num_classes))
    if is_tpu(strategy):
        source = tpu_source(source, settings, verbose=verbose)
        asked = options.data.batch_size
        if verbose and asked is not None and settings.data.batch_size != asked:
            print(f"effnet_tl: batch_size {asked} -> "
                  f"{settings.data.batch_size} (a multiple of 8 x {strategy.num_replicas_in_sync}"
                  " TPU cores)", flush=True)
    if isinstance(settings.data.class_weight, dict) and verbose:
        print(f"effnet_tl: classes are imbalanced (largest/smallest = {scan.imbalance_ratio}); "
              f"training with class weights "
              f"{ {k: round(v, 3) for k, v in settings.data.class_weight.items()} }", flush=True)

    # 2. The run folder: resume the same call, refuse other settings, start afresh otherwise.
    run = settings.run
    chief_paths = RunPaths(_run_root(run, dataset_dir, settings.model.variant))
    paths = RunPaths(cluster.worker_folder(chief_paths.root, worker))
    config = _config(settings, source, num_classes, dataset_dir, strategy)
    try:
        return _train(source, scan, settings, config, strategy, worker,
                      chief_paths, paths, deadline=deadline, verbose=verbose, started=started)
    finally:
        if not worker.is_chief:  # only the chief keeps a run folder
            shutil.rmtree(paths.root, ignore_errors=True)


def _train(source, scan, settings, config, strategy, worker, chief_paths, paths, *,
           deadline, verbose, started) -> FitResult:
    run = settings.run
    if _prepare_folders(chief_paths, paths, config, run, strategy, worker) == "finished":
        if verbose:
            print(f"effnet_tl: {paths.root} already holds this finished run; loaded it without "
                  "training (overwrite=True trains again)", flush=True)
        return load_run(chief_paths.root)

    # 3. Build and train in the strategy's scope, phase after phase; what the settings leave
    #    to the data is decided once the head has trained (effnet_tl.train.adaptive).
    phases = read_json(paths.phases) or {}
    decisions = phases.get("decisions")
    if decisions:
        config["decisions"] = decisions
    current = effective(settings, decisions)
    # The head's initial weights, dropout and stochastic depth draw from Keras' global seed:
    # unseeded, the head phase (and the decisions taken from it) differed from run to run.
    keras.utils.set_random_seed(settings.data.seed)
    with _dtype_policy(settings.model.mixed_precision), strategy.scope():
        from effnet_tl.augment import augmentation_off, build_augmenter, choose_placement
        from effnet_tl.data import write_labels

        write_labels(paths.root, source.class_names)
        scan.to_json(paths.data_report)
        placement = choose_placement(strategy)
        in_model = placement == "model" and not augmentation_off(current.data.augment)
        input_block = build_augmenter(current.data.augment, seed=settings.data.seed) \
            if in_model else None
        model = build_classifier(
            config["num_classes"], variant=settings.model.variant, weights=settings.model.weights,
            image_size=settings.model.image_size, dropout_rate=settings.model.dropout_rate,
            drop_path_rate=settings.model.drop_path_rate,
            extra_blocks=settings.model.extra_blocks, input_block=input_block)
        pending = [p.name for p in plan(current) if not phases.get(p.name, {}).get("done")]
        halted = any(phases.get(name, {}).get("nonfinite") for name in ("head", "finetune"))
        data = PhaseData(source, current, model=model, replicas=strategy.num_replicas_in_sync,
                         in_model_augment=in_model,
                         finetune_pending=not halted and "finetune" in pending, worker=worker)
        config["pixel_range_action"] = data.pixel_action
        write_json(paths.config, config)
        _announce_whole_batches(data, strategy, verbose)
        timings = {"setup": round(time.perf_counter() - started, 2)}

        # Epochs continue across phases (history.csv, the schedule of a resumed phase).
        first_epoch = sum(phases[name]["epochs"] for name in ("head", "finetune")
                          if phases.get(name, {}).get("done"))
        # After a phase the model holds the run's kept weights (KeepBest): read the file only
        # when this call has not trained yet (a resumed or finished run).
        trained_here = False
        for name in [] if halted else pending:
            if not trained_here and paths.model.exists():
                model.load_weights(paths.model)
            if name == "finetune" and decisions is None and needs_decisions(settings):
                decisions = _decide(settings, model, data, paths, phases, config, verbose,
                                    strategy=strategy, worker=worker)
                current = effective(settings, decisions)
                if input_block is not None:  # the in-model augmenter reads its spec when traced
                    input_block.spec = current.data.augment
                data.retarget(current, model)
            phase = next((p for p in plan(current) if p.name == name), None)
            if phase is None:  # the decision left nothing to unfreeze
                continue
            outcome = run_phase(phase, model, data, paths=paths, settings=current,
                                first_epoch=first_epoch, placement=placement, verbose=verbose,
                                tensorboard=run.tensorboard, deadline=deadline)
            phases[phase.name] = outcome.to_dict()
            if data.cache_summary():
                phases["finetune_cache"] = data.cache_summary()
            write_json(paths.phases, phases)
            first_epoch += outcome.epochs
            trained_here = True
            if outcome.nonfinite:
                break
        data.release()
        if not worker.is_chief:  # the chief writes the report; the model is the same here
            return FitResult(model=model, class_names=tuple(source.class_names),
                             metrics={"worker": worker.index, "workers": worker.count},
                             paths=chief_paths, config=config,
                             history=read_history(paths.history))

        # 4. The kept model, the report and the plots.
        report_start = time.perf_counter()
        if not paths.model.exists():  # nothing trained (every phase has 0 epochs): as built
            model.save(paths.model)
        elif not trained_here:
            model.load_weights(paths.model)
        kept = _kept_epoch(paths, settings)
        test = None if source.test is None else data.evaluation_images(source.test)
        reports, mistakes = evaluate_splits(model, {"val": data.val_images, "test": test},
                                            source.class_names, run.top_k)
        write_plots(paths, reports, mistakes, source.class_names,
                    kept_epoch=None if kept is None else kept["epoch"])

    metrics = _metrics(source, reports, kept, phases, decisions,
                       seconds={**timings, **data.timings}, report_start=report_start,
                       started=started)
    write_json(paths.report, metrics)
    finish_run_dir(paths, phases, keep_backups=run.keep_backups)
    if verbose and kept:
        print(f"effnet_tl: kept epoch {kept['epoch']} ({kept['phase']} phase; "
              f"{Ranking(settings.recipe.monitor).describe(kept)}) in {paths.model}", flush=True)
    return FitResult(model=model, class_names=tuple(source.class_names), metrics=metrics,
                     paths=paths, config=config, history=read_history(paths.history),
                     stopped=metrics["nonfinite_stop"])


fit.__signature__ = inspect.Signature([
    inspect.Parameter("dataset_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    inspect.Parameter("num_classes", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                      annotation=int | None),
    *keyword_parameters()], return_annotation=FitResult)
fit.__doc__ = f"""Fine-tune an ImageNet EfficientNet on a dataset; write a run folder; return the result.

    Two phases: the head on the frozen backbone (on its cached output), then the top blocks
    with BatchNorm frozen, augmentation and a much lower learning rate. The kept model is
    the best epoch of both phases (validation accuracy, ties broken by validation loss).
    Rerunning the same call after a kill resumes after the last finished epoch; rerunning a
    finished call loads it without training.

    Args:
        dataset_dir: Anything :func:`effnet_tl.data.resolve_source` accepts: a folder of class
            folders (or ``train/ val/ test/`` split folders), a CSV, a DataFrame,
            ``"tfds:NAME"``, ``(images, labels)`` arrays, a ``tf.data.Dataset``, or a
            :class:`~effnet_tl.data.DatasetSource`.
        num_classes: Number of classes, checked against the source before any training;
            ``None`` counts them from the source (at least 2).
{arguments_doc()}

    Returns:
        A :class:`~effnet_tl.train.run.FitResult`.

    Raises:
        TypeError: an unknown keyword argument (the message lists the accepted ones).
        ValueError: a bad value (echoed, with what is accepted), a class count that does not
            match the data, or a run folder holding another run (``overwrite=True``).

    Example (not run here: it trains):
        >>> result = fit("data/flowers", 5, variant="lite0")            # doctest: +SKIP
        >>> result.metrics["val"]["accuracy"], result.paths.model       # doctest: +SKIP
        >>> labels, probabilities = result.predict(["a.jpg", "b.jpg"])  # doctest: +SKIP
    """


# --------------------------------------------------------------------------- steps of fit


def _verbosity(verbose: int | None) -> int:
    """Progress bars in a terminal or notebook, one line per epoch in logs and pipes."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() or "ipykernel" in sys.modules else 2


def _strategy(strategy, tpu_address) -> tf.distribute.Strategy:
    return strategy if isinstance(strategy, tf.distribute.Strategy) \
        else get_strategy(strategy or "auto", tpu_address=tpu_address)


def _load_source(dataset, num_classes, data_settings, run_settings, verbose):
    """Resolve + doctor the source; returns it, its scan and the class count (``num_classes``,
    or the classes counted when it is ``None``). A wrong ``num_classes`` raises here, before
    any training."""
    from effnet_tl.data import DatasetSource, scan
    from effnet_tl.data.classes import check_num_classes, class_count
    from effnet_tl.data.sources import resolve_source

    if isinstance(dataset, DatasetSource):
        check_num_classes(dataset.class_names, num_classes, what=dataset.described)
        resolved = dataset
    else:
        resolved = resolve_source(dataset, val_fraction=data_settings.val_fraction,
                                  seed=data_settings.seed, num_classes=num_classes,
                                  data_dir=run_settings.data_dir,
                                  download=run_settings.download)
    report = scan(resolved)
    if report.skipped and verbose:
        shown = report.skipped[:SKIPPED_SHOWN]
        more = len(report.skipped) - len(shown)
        print(f"effnet_tl: skipping {len(report.skipped)} unusable files (all listed in the run "
              "folder's data_report.json):\n" + "\n".join(
                  f"  {issue.path}: {issue.reason}" for issue in shown)
              + (f"\n  ... and {more} more" if more else ""), flush=True)
    if report.source.val is None:
        raise ValueError(
            "fit needs a validation split: the source has none and val_fraction="
            f"{data_settings.val_fraction!r}; pass val_fraction > 0 or add a val/ folder.")
    source = report.source
    return source, report, class_count(source.class_names, num_classes, what=source.described)


def _facts(source, scan, strategy, num_classes) -> DataFacts:
    from effnet_tl.data import class_weights

    labels = getattr(source.train, "labels", None)
    return DataFacts(
        num_train=known_count(source.train), num_val=known_count(source.val),
        replicas=strategy.num_replicas_in_sync,
        device_policy=mixed_precision_policy_for(strategy), imbalanced=scan.imbalanced,
        balanced_weights=None if labels is None else class_weights(labels, num_classes),
        tpu=is_tpu(strategy))


def _run_root(run, dataset_dir, variant):
    from pathlib import Path

    from effnet_tl.models import get_variant

    if run.run_dir is not None:
        return Path(run.run_dir)
    name = run.name or default_run_name(dataset_dir, get_variant(variant).name)
    return Path(run.runs_root) / name


def _config(settings, source, num_classes, dataset_dir, strategy) -> dict:
    return {
        "settings": settings.to_dict(),
        "num_classes": num_classes,
        "class_names": list(source.class_names),
        "source": {
            "kind": source.kind,
            "dataset": str(dataset_dir) if isinstance(dataset_dir, (str, os.PathLike))
            else type(dataset_dir).__name__,
            "num_train": known_count(source.train), "num_val": known_count(source.val),
            "num_test": known_count(source.test), "notes": list(source.notes),
        },
        "strategy": _strategy_name(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": sys.version.split()[0]},
    }


def _strategy_name(strategy) -> str:
    if strategy is tf.distribute.get_strategy():
        return "default (one device)"
    if cluster.is_multi_worker(strategy):  # its class is CollectiveAllReduceStrategy
        count = cluster.worker_of(strategy).count
        return f"MultiWorkerMirroredStrategy ({count} worker{'s' if count > 1 else ''})"
    return type(strategy).__name__


@contextlib.contextmanager
def _dtype_policy(name: str):
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _announce_whole_batches(data, strategy, verbose) -> None:
    if not data.whole or not verbose:
        return
    left_out = data.num_train - data.steps * data.batch_size
    sitting_out = (f" ({left_out} of the {data.num_train} images sit out, different ones each "
                   "epoch)") if left_out else ""
    print(f"effnet_tl: {strategy.num_replicas_in_sync} replicas: every epoch trains on "
          f"{data.steps} whole batches of {data.batch_size}{sitting_out} and validates on "
          f"{data.val_steps * data.val_batch} of {data.num_val} images; "
          "report.json evaluates every image", flush=True)


def _prepare_folders(chief_paths, paths, config, run, strategy, worker) -> str:
    """:func:`prepare_run_dir` for one process or several workers (``"fresh"``, ``"resume"``
    or ``"finished"``): the chief decides on the run folder; the others copy its resume
    state into their own folder, and all check that they see the same state."""
    if worker.count == 1:
        return prepare_run_dir(paths, config, overwrite=run.overwrite)
    if worker.is_chief:
        state = prepare_run_dir(paths, config, overwrite=run.overwrite)
    cluster.any_worker(strategy, False)  # a barrier: the chief's folder is ready
    if not worker.is_chief:
        cluster.copy_resume_state(chief_paths.root, paths.root)
        state = prepare_run_dir(paths, config, overwrite=run.overwrite)
    epochs = len(read_history(paths.history))
    if not cluster.all_agree(strategy, 3 * epochs + ("fresh", "resume", "finished").index(state)):
        raise ValueError(
            f"worker {worker.index} of {worker.count} sees another state of the run folder "
            f"{chief_paths.root} than the other workers (here: {state}, {epochs} finished "
            "epochs): put the run folder on storage every worker reads (one machine, NFS, a "
            "mounted bucket) and pass the same run_dir to every worker")
    return state


def _decide(settings, model, data, paths, phases, config, verbose, *, strategy,
            worker) -> dict:
    """Take the data's decisions after the head phase; record them before anything uses them,
    so a killed run resumes with the same ones. With several workers the chief decides."""
    decisions = decide(settings, model, data,
                       [row for row in read_history(paths.history) if row.get("phase") == "head"],
                       num_blocks=len(block_names(settings.model.variant))) \
        if worker.is_chief else {}
    decisions = cluster.broadcast_from_chief(strategy, decisions)
    phases["decisions"] = config["decisions"] = decisions
    write_json(paths.phases, phases)
    write_json(paths.config, config)
    if verbose:
        print(f"effnet_tl: decided from the data: {describe(decisions)}", flush=True)
    return decisions


def _metrics(source, reports, kept, phases, decisions, *, seconds, report_start, started):
    """``report.json``: the split reports, the kept epoch, decisions, stops and timings."""
    trained = ("head", "finetune")
    return {
        "class_names": list(source.class_names), **reports, "kept": kept,
        "nonfinite_stop": next((phases[name]["nonfinite"] for name in trained
                         if phases.get(name, {}).get("nonfinite")), None),
        "decisions": decisions,
        "stopped_early": {name: phases[name]["stopped_early"] for name in trained
                          if phases.get(name, {}).get("stopped_early")},
        "epochs": {name: phases.get(name, {}).get("epochs", 0) for name in trained},
        "phase_seconds": {**seconds, **{name: phases[name]["seconds"] for name in trained
                                        if name in phases},
                          "report": round(time.perf_counter() - report_start, 2)},
        "seconds": round(time.perf_counter() - started, 2),
    }


def _kept_epoch(paths, settings) -> dict | None:
    """The kept epoch's history row (``epoch`` 1-based, as Keras prints it), or ``None``."""
    row = Ranking(settings.recipe.monitor).best_row(read_history(paths.history))
    if row is None:
        return None
    return {**{k: v for k, v in row.items() if k != "epoch"}, "epoch": row["epoch"] + 1}
