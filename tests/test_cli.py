"""The ``pyopt`` command line (pyopt.cli) and the plots it writes (pyopt.plots)."""

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pyopt
from pyopt import cli
from pyopt.plots import plot_histories

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run_main(argv, capsys):
    """(exit status, stdout, stderr) of cli.main, whether it returns or exits."""
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


# --- info, version, bench -----------------------------------------------------------------
def test_version(capsys):
    status, out, _ = _run_main(["--version"], capsys)
    assert status == 0 and out.strip() == f"pyopt {pyopt.__version__}"


def test_console_script_and_python_m():
    for command in ([str(Path(sys.executable).parent / "pyopt")], [sys.executable, "-m", "pyopt"]):
        result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"pyopt {pyopt.__version__}"
        assert "tensorflow" not in result.stderr.lower()  # --version does not load TensorFlow


def test_info_prints_the_config(capsys):
    status, out, _ = _run_main(["info"], capsys)
    assert status == 0
    for key in ("pyopt", "isa", "tf_ops"):
        assert f"{key}:" in out
    assert pyopt.__version__ in out


def test_cpu_details_read_family_model_and_the_last_level_cache(tmp_path):
    from pyopt import _config

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\ncpu family\t: 99\n"
    )
    cache = tmp_path / "cache"
    for index, (level, size) in enumerate([(1, "32K"), (1, "32K"), (2, "1024K"), (3, "32768K")]):
        (cache / f"index{index}").mkdir(parents=True)
        (cache / f"index{index}" / "level").write_text(f"{level}\n")
        (cache / f"index{index}" / "size").write_text(f"{size}\n")
    (cache / "uevent").write_text("")  # not a cache level: skipped
    details = _config._cpu_details(str(cpuinfo), str(cache))
    assert details == {"cpu_signature": "family 25, model 17, stepping 1", "last_level_cache": "L3 32768K"}
    assert _config._cpu_details(str(tmp_path / "missing"), str(tmp_path / "missing")) == {}


def test_bench_forwards_its_arguments(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("pyopt.bench_report")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "pyopt.bench_report", fake)
    status, _, _ = _run_main(["bench", "--quick", "-k", "adam", "--help"], capsys)
    assert status == 3 and seen == [["--quick", "-k", "adam", "--help"]]
    fake.main = lambda argv: None
    assert _run_main(["bench"], capsys)[0] == 0


def test_bench_without_the_report_module(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyopt.bench_report", None)  # import fails: not installed
    status, out, err = _run_main(["bench", "--x"], capsys)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "pyopt.bench_report" in err and "Traceback" not in err


# --- argument errors: one line, status 2 ----------------------------------------------------
@pytest.mark.parametrize(
    "argv, match",
    [
        ([], "required"),
        (["fly"], "invalid choice"),
        (["train", "--lr", "-1"], "--lr: must be > 0"),
        (["train", "--lr", "fast"], "--lr: expected a number"),
        (["train", "--epochs", "0"], "--epochs: must be > 0"),
        (["train", "--epochs", "1.5"], "--epochs: expected a whole number"),
        (["train", "--clipnorm", "0"], "--clipnorm: must be > 0"),
        (["train", "--clipnorm", "nan"], "--clipnorm: must be > 0"),
        (["train", "--batch-size", "0"], "--batch-size: must be > 0"),
        (["train", "--optimizer", "adadelta"], "--optimizer: invalid choice: 'adadelta'"),
        (["train", "--backend", "cuda"], "--backend: invalid choice"),
        (["train", "--hidden", "4,x"], "--hidden"),
        (["train", "--hidden", "0"], "--hidden: layer widths must be >= 1"),
        (["train", "--seed", "-2"], "--seed: must be >= 0"),
        (["demo", "--epochs", "-5"], "--epochs"),
        (["demo", "--implementations", "fused,cuda"], "--implementations"),
        (["demo", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_one_line(argv, match, capsys, tmp_path):
    argv = argv + (["--out", str(tmp_path)] if argv[:1] == ["demo"] else [])
    status, out, err = _run_main(argv, capsys)
    assert status == 2
    assert err.count("\n") == 1 and match in err and "Traceback" not in err
    assert err.startswith("pyopt") and "error:" in err


# --- train ----------------------------------------------------------------------------------
def test_train_prints_the_final_losses(capsys, tmp_path):
    history_path = tmp_path / "run" / "history.csv"
    argv = [
        "train",
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
        "--clipnorm",
        "2",
        "--epochs",
        "30",
        "--backend",
        "keras",
        "--hidden",
        "4",
        "--seed",
        "3",
        "--his-freq",
        "10",
        "--history",
        str(history_path),
        "--no-progress",
    ]
    status, out, err = _run_main(argv, capsys)
    assert status == 0, err
    history = pd.read_csv(history_path)
    assert history.epoch.tolist() == [0, 10, 20, 30]
    lines = dict(line.split(":", 1) for line in out.splitlines() if line.startswith(("final", "constant")))
    assert float(lines["final test MSE"]) == pytest.approx(history.testing_loss.iloc[-1], rel=1e-5)
    assert float(lines["final training MSE"]) == pytest.approx(history.training_loss.iloc[-1], rel=1e-5)
    assert float(lines["constant baseline"].split()[0]) == pytest.approx(83.7109, abs=1e-4)
    assert "batch_size=full" in out and "ran: keras" in out and "steps=30" in out
    assert "dead ReLUs (last hidden layer, on all training rows):" in out and " of 4" in out


def test_train_sgd_defaults_to_minibatches_of_32(capsys):
    status, out, err = _run_main(
        ["train", "--optimizer", "sgd", "--clipnorm", "2", "--epochs", "2", "--backend", "tf", "--no-progress"], capsys
    )
    assert status == 0, err
    assert "batch_size=32" in out and "steps=26" in out and "ran: tf" in out  # 404 rows: 13 batches
    status, out, _ = _run_main(
        ["train", "--optimizer", "sgd", "--batch-size", "full", "--epochs", "2", "--no-progress"], capsys
    )
    assert "batch_size=full" in out and "steps=2" in out


def test_train_reports_an_unavailable_backend(monkeypatch, capsys):
    from pyopt import _loader

    monkeypatch.setattr(_loader, "unavailable_reason", lambda: "op library not built")
    status, out, err = _run_main(["train", "--backend", "fused", "--epochs", "1", "--no-progress"], capsys)
    assert status == 1 and "op library not built" in err and "Traceback" not in err


def test_unwritable_outputs_are_one_line(capsys, tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    status, out, err = _run_main(["demo", "--epochs", "1", "--out", str(a_file), "--no-progress"], capsys)
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("pyopt demo: error:") and str(a_file) in err
    status, out, err = _run_main(["train", "--epochs", "1", "--history", str(tmp_path), "--no-progress"], capsys)
    assert status == 2 and err.count("\n") == 1 and "--history must be a file name" in err


def test_train_reports_a_fused_step_that_cannot_run(monkeypatch, capsys):
    from pyopt import ops
    from pyopt.ops._api import Step

    def refuse(*args, **kwargs):
        raise ops.FusedBackendError("backend='fused' cannot run this step: simulated")

    monkeypatch.setattr(Step, "__call__", refuse)  # the step of every pyopt optimizer
    status, out, err = _run_main(
        ["train", "--optimizer", "adam", "--backend", "fused", "--epochs", "1", "--no-progress"], capsys
    )
    assert status == 1 and "simulated" in err and "Traceback" not in err


# --- demo -----------------------------------------------------------------------------------
def _table_rows(text):
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and "experiment" not in line
    ]


@pytest.mark.slow
def test_demo_end_to_end(capsys, tmp_path):
    status, out, err = _run_main(["demo", "--epochs", "3", "--out", str(tmp_path), "--no-progress"], capsys)
    assert status == 0, err
    rows = _table_rows(out)
    assert len(rows) == sum(len(e.learning_rates) for e in cli.EXPERIMENTS) == 11
    header = next(line for line in out.splitlines() if line.startswith("| experiment"))
    for label in cli.IMPLEMENTATIONS:
        assert f"test MSE {label}" in header and f"ms/step {label}" in header
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == 11 * len(cli.IMPLEMENTATIONS)
    assert np.isfinite(results.test_mse).all() and (results.ms_per_step > 0).all()
    # the three implementations agree on these 3-epoch runs
    spread = results.groupby(["experiment", "lr"]).test_mse.agg(lambda s: s.max() / s.min() - 1)
    assert (spread < 1e-3).all()
    assert (tmp_path / "summary.md").read_text() == out
    for experiment in cli.EXPERIMENTS:
        history = pd.read_csv(tmp_path / f"{experiment.name}.csv")
        assert list(history.columns) == ["implementation", "lr", "epoch", "training_loss", "testing_loss"]
        assert set(history.epoch) == {0, 1, 2, 3}
        assert (tmp_path / f"{experiment.name}.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "optimizers.png").read_bytes()[:8] == PNG_MAGIC
    assert results.dead_relus.between(0, 4).all()
    # the table's numbers are the histories' last test losses
    adam = pd.read_csv(tmp_path / "adam.csv").query("epoch == 3").set_index("implementation").testing_loss
    row = next(r for r in rows if r[0] == "adam")
    assert float(row[5]) == pytest.approx(adam[list(cli.IMPLEMENTATIONS)[0]], rel=1e-3)
    assert float(row[5 + len(cli.IMPLEMENTATIONS)]) == pytest.approx(83.71, abs=0.01)  # the baseline column


def test_demo_reports_an_unavailable_implementation(monkeypatch, capsys, tmp_path):
    from pyopt import _loader

    monkeypatch.setattr(_loader, "unavailable_reason", lambda: "op library not built")
    monkeypatch.setattr(
        cli,
        "EXPERIMENTS",
        (
            cli.Experiment("gd_sweep", "GD", "gd", (1e-3, 1e-5), epochs=2, quick_epochs=2),
            cli.Experiment("adam", "Adam", "adam", (1e-3,), epochs=2, quick_epochs=2, clipnorm=2.0),
        ),
    )
    status, out, err = _run_main(
        ["demo", "--quick", "--implementations", "fused,keras", "--out", str(tmp_path), "--no-progress"], capsys
    )
    assert status == 0, err
    rows = _table_rows(out)
    assert len(rows) == 3
    assert all(r[5] == "n/a" and r[6] != "n/a" for r in rows)  # fused column empty, keras filled
    assert "pyopt fused: unavailable (the fused ops are unavailable: op library not built)" in out
    results = pd.read_csv(tmp_path / "results.csv")
    assert results.query("implementation == 'pyopt fused'").test_mse.isna().all()


# --- plots ----------------------------------------------------------------------------------
def test_plot_histories(tmp_path):
    good = pd.DataFrame({"epoch": [0, 10, 20], "testing_loss": [100.0, 10.0, 1.0], "training_loss": [1.0, 1, 1]})
    broken = pd.DataFrame({"epoch": [0, 10, 20], "testing_loss": [np.nan, np.inf, -1.0], "training_loss": [1.0] * 3})
    path = plot_histories(
        {"good": good, "broken": broken}, tmp_path / "new" / "plot.png", title="t", baseline=5.0, styles={"good": "--"}
    )
    assert path == tmp_path / "new" / "plot.png"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    assert plot_histories({}, tmp_path / "empty.svg", column="training_loss").read_bytes().startswith(b"<?xml")
