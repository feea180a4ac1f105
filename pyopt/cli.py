"""The ``pyopt`` command: the optimizer chapter end to end, one training run, config, benchmarks.

::

    pyopt demo [--quick] [--out DIR] [--epochs N] [--seed S]   # the chapter's experiments
    pyopt train --optimizer adam --lr 1e-3 --clipnorm 2 --epochs 1000
    pyopt info | pyopt --version
    pyopt bench [args...]                                       # pyopt.bench_report.main(args)

Every command runs offline (the data ships with pyopt). Bad arguments exit with status 2
and a one-line message.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["main", "EXPERIMENTS", "IMPLEMENTATIONS"]


# --- the chapter's experiments ---------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    """One of the chapter's runs: an optimizer, its settings and how long to train."""

    name: str
    title: str
    optimizer: str  # a key of pyopt.training.OPTIMIZERS
    learning_rates: tuple
    epochs: int
    quick_epochs: int
    clipnorm: float | None = None
    batch_size: int | None = None  # None: full batch
    hyper: dict = field(default_factory=dict)


EXPERIMENTS = (
    Experiment(
        "gd_lr_sweep",
        "Full-batch gradient descent, learning rates 1e-3 ... 1e-9",
        "gd",
        (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9),
        epochs=3000,
        quick_epochs=200,
    ),
    Experiment(
        "gd_clipnorm",
        "Full-batch gradient descent, clipnorm=2",
        "gd",
        (1e-3,),
        epochs=3000,
        quick_epochs=400,
        clipnorm=2.0,
    ),
    Experiment(
        "sgd_minibatch",
        "Minibatch SGD (batch 32), clipnorm=2",
        "sgd",
        (1e-3,),
        epochs=200,
        quick_epochs=30,
        clipnorm=2.0,
        batch_size=32,
    ),
    Experiment(
        "momentum",
        "Momentum (beta=0.9), clipnorm=2",
        "momentum",
        (1e-3,),
        epochs=3000,
        quick_epochs=400,
        clipnorm=2.0,
        hyper={"beta": 0.9},
    ),
    Experiment("adam", "Adam, clipnorm=2", "adam", (1e-3,), epochs=3000, quick_epochs=400, clipnorm=2.0),
)

# label -> backend of pyopt.training.make_optimizer; the demo runs each experiment on each.
IMPLEMENTATIONS = {"pyopt fused": "fused", "pyopt tf": "tf", "keras": "keras"}

DEFAULT_HIDDEN = [4]
DEFAULT_SEED = 0


# --- argument parsing --------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``pyopt train: error: ... (see --help)``, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "number" if kind is float else "whole number"
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _batch_size(text):
    return 0 if text.lower() == "full" else _positive(int)(text)  # 0: full batch


def _hidden(text):
    try:
        units = [int(u) for u in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 16 or 32,16, got {text!r}"
        ) from None
    if any(u < 1 for u in units):
        raise argparse.ArgumentTypeError(f"layer widths must be >= 1, got {text!r}")
    return units


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


class _TrainingNames:
    """argparse ``choices`` read from :mod:`pyopt.training` on first use, so that ``pyopt
    --version`` and ``pyopt info --help`` do not import TensorFlow."""

    def __init__(self, attribute: str):
        self.attribute = attribute

    def _names(self):
        from . import training

        return list(getattr(training, self.attribute))

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name):
        return name in self._names()


def _add_common(p):
    p.add_argument(
        "--hidden",
        type=_hidden,
        default=DEFAULT_HIDDEN,
        metavar="H[,H...]",
        help=f"hidden layer width(s) of the MLP (default: {','.join(map(str, DEFAULT_HIDDEN))})",
    )
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED, help=f"random seed (default: {DEFAULT_SEED})")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bars on stderr (default: when stderr is a terminal)",
    )


def _parser():
    from . import __version__

    parser = _Parser(prog="pyopt", description="pyopt: fused optimizer kernels, and the optimizer chapter as a demo.")
    parser.add_argument("--version", action="version", version=f"pyopt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,train,info,bench}", required=True)

    demo = sub.add_parser("demo", help="run the chapter's experiments on pyopt (fused, tf) and Keras")
    demo.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("pyopt_out"),
        help="folder for histories (CSV), plots (PNG) and summary.md (default: pyopt_out)",
    )
    demo.add_argument(
        "--epochs",
        type=_positive(int),
        default=None,
        help="epochs of every experiment (default: each experiment's own)",
    )
    demo.add_argument(
        "--implementations",
        default=",".join(IMPLEMENTATIONS),
        metavar="LIST",
        help=f"comma-separated subset of: {', '.join(b for b in IMPLEMENTATIONS.values())} (default: all)",
    )
    _add_common(demo)

    train = sub.add_parser("train", help="train one configuration and print the final losses")
    train.add_argument(
        "--optimizer",
        choices=_TrainingNames("OPTIMIZERS"),
        default="gd",
        metavar="NAME",
        help="one of: %(choices)s (default: %(default)s)",
    )
    train.add_argument("--lr", type=_positive(float), default=1e-3, help="learning rate (default: 1e-3)")
    train.add_argument("--clipnorm", type=_positive(float), default=None, help="clip each gradient to this norm")
    train.add_argument("--epochs", type=_positive(int), default=1000, help="(default: 1000)")
    train.add_argument(
        "--batch-size",
        type=_batch_size,
        default=None,
        metavar="N|full",
        help="minibatch size, or 'full' (default: 32 for sgd, full batch otherwise)",
    )
    train.add_argument(
        "--backend",
        choices=_TrainingNames("BACKENDS"),
        default="auto",
        metavar="NAME",
        help="one of: %(choices)s: a pyopt backend, or the Keras built-in (default: %(default)s)",
    )
    train.add_argument("--his-freq", type=_positive(int), default=10, help="record losses every N epochs")
    train.add_argument("--history", type=Path, default=None, help="write the history to this CSV file")
    _add_common(train)

    sub.add_parser("info", help="print pyopt's build and runtime configuration")
    sub.add_parser("bench", help="benchmarks: forwards its arguments to pyopt.bench_report", add_help=False)
    return parser


# --- commands ------------------------------------------------------------------------------------
def _progress(args) -> bool:
    return sys.stderr.isatty() if args.progress is None else args.progress


def _load_data():
    from .data import boston_housing

    return boston_housing.load_data(dtype="float32", targets_as_columns=True)


def _run_one(
    optimizer_name,
    lr,
    backend,
    *,
    hidden,
    clipnorm,
    hyper,
    train_data,
    test_data,
    epochs,
    batch_size,
    his_freq,
    seed,
    progress,
    description,
):
    """Train a fresh seeded MLP; ``(history, backend that ran, dead ReLUs of the last hidden layer)``."""
    import keras

    from .models import MLP
    from .training import dead_hidden_units, make_optimizer, train

    optimizer = make_optimizer(optimizer_name, lr, backend=backend, clipnorm=clipnorm, **hyper)
    keras.utils.set_random_seed(seed)
    model = MLP(hidden, seed=seed)
    _, history = train(
        model,
        optimizer,
        train_data,
        test_data,
        epochs,
        batch_size=batch_size,
        his_freq=his_freq,
        seed=seed,
        progress=progress,
        description=description,
    )
    dead = dead_hidden_units(model, train_data[0]) if model.num_hidden_units else 0
    return history, getattr(optimizer, "last_backend", None) or "keras", dead


def cmd_train(args) -> int:
    from .training import constant_baseline_mse

    batch_size = (32 if args.optimizer == "sgd" else None) if args.batch_size is None else args.batch_size or None
    if args.history is not None and args.history.is_dir():
        raise _UsageError(f"--history must be a file name, got the folder {args.history}")
    (x_train, y_train), (x_test, y_test) = _load_data()
    history, ran, dead = _run_one(
        args.optimizer,
        args.lr,
        args.backend,
        hidden=args.hidden,
        clipnorm=args.clipnorm,
        hyper={},
        train_data=(x_train, y_train),
        test_data=(x_test, y_test),
        epochs=args.epochs,
        batch_size=batch_size,
        his_freq=args.his_freq,
        seed=args.seed,
        progress=_progress(args),
        description=args.optimizer,
    )
    if args.history is not None:
        args.history.parent.mkdir(parents=True, exist_ok=True)
        history.to_csv(args.history, index=False)
    last = history.iloc[-1]
    print(
        f"optimizer={args.optimizer} lr={args.lr:g} clipnorm={args.clipnorm} "
        f"batch_size={batch_size or 'full'} hidden={','.join(map(str, args.hidden))} seed={args.seed} "
        f"backend={args.backend} (ran: {ran})"
    )
    print(f"epochs={int(last.epoch)} steps={history.attrs['steps']} ms/step={history.attrs['ms_per_step']:.3f}")
    print(f"dead ReLUs (last hidden layer, on all training rows): {dead} of {args.hidden[-1]}")
    print(f"final training MSE: {last.training_loss:.6g}")
    print(f"final test MSE:     {last.testing_loss:.6g}")
    print(f"constant baseline:  {constant_baseline_mse(y_train, y_test):.6g}  (test MSE of predicting mean(y_train))")
    return 0


def cmd_demo(args) -> int:
    import pandas as pd
    from tqdm.auto import tqdm

    from .training import BackendUnavailable, constant_baseline_mse

    try:
        from .ops import FusedBackendError  # backend="fused" could not run a step

        unavailable_errors = (BackendUnavailable, FusedBackendError)
    except ImportError:  # pragma: no cover - pyopt.ops missing: make_optimizer says so
        unavailable_errors = (BackendUnavailable,)

    chosen = [b.strip() for b in args.implementations.split(",") if b.strip()]
    by_backend = {b: label for label, b in IMPLEMENTATIONS.items()}
    unknown = [b for b in chosen if b not in by_backend and b not in IMPLEMENTATIONS]
    if unknown or not chosen:
        raise _UsageError(f"--implementations must list some of {', '.join(by_backend)}, got {args.implementations!r}")
    implementations = {by_backend.get(b, b): IMPLEMENTATIONS.get(b, b) for b in chosen}

    train_data, test_data = _load_data()
    baseline = constant_baseline_mse(train_data[1], test_data[1])
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    progress = _progress(args)
    runs = [(e, lr, label) for e in EXPERIMENTS for lr in e.learning_rates for label in implementations]
    rows, notes, unavailable = [], [], {}
    started = time.perf_counter()
    bar = tqdm(runs, desc="demo", disable=not progress, file=sys.stderr)
    curves = {e.name: {} for e in EXPERIMENTS}
    for experiment, lr, label in bar:
        epochs = args.epochs or (experiment.quick_epochs if args.quick else experiment.epochs)
        backend = implementations[label]
        result = {
            "experiment": experiment.name,
            "lr": lr,
            "clipnorm": experiment.clipnorm,
            "batch_size": experiment.batch_size or "full",
            "epochs": epochs,
            "implementation": label,
        }
        if label in unavailable:
            rows.append({**result, "test_mse": math.nan, "ms_per_step": math.nan, "dead_relus": math.nan})
            continue
        try:
            history, ran, dead = _run_one(
                experiment.optimizer,
                lr,
                backend,
                hidden=args.hidden,
                clipnorm=experiment.clipnorm,
                hyper=experiment.hyper,
                train_data=train_data,
                test_data=test_data,
                epochs=epochs,
                batch_size=experiment.batch_size,
                his_freq=max(1, epochs // 100),
                seed=args.seed,
                progress=progress,
                description=f"{experiment.name} lr={lr:g} {label}",
            )
        except unavailable_errors as exc:  # report the implementation as unavailable, go on
            unavailable[label] = str(exc).splitlines()[0]
            rows.append({**result, "test_mse": math.nan, "ms_per_step": math.nan, "dead_relus": math.nan})
            continue
        if backend in ("fused", "tf") and ran != backend:
            notes.append(f"{label} ran on the {ran!r} backend for {experiment.name}")
        curves[experiment.name][(lr, label)] = history
        rows.append(
            {
                **result,
                "test_mse": history.testing_loss.iloc[-1],
                "ms_per_step": history.attrs["ms_per_step"],
                "dead_relus": dead,
            }
        )
    bar.close()

    results = pd.DataFrame(rows)
    results.to_csv(out / "results.csv", index=False)
    _write_histories_and_plots(out, curves, baseline)
    table = _summary_table(results, list(implementations), baseline, args.hidden[-1])
    notes = [f"{label}: unavailable ({why})" for label, why in unavailable.items()] + sorted(set(notes))
    header = (
        f"pyopt demo{' --quick' if args.quick else ''}: Boston housing, MLP hidden={args.hidden}, "
        f"seed={args.seed}, raw (unnormalised) features; constant-predictor baseline test MSE = {baseline:.4f}"
    )
    text = "\n".join(
        [
            header,
            "",
            table,
            *([""] + [f"- {n}" for n in notes] if notes else []),
            "",
            f"total {time.perf_counter() - started:.1f} s; outputs in {out}/",
        ]
    )
    (out / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _write_histories_and_plots(out: Path, curves: dict, baseline: float) -> None:
    import pandas as pd

    from .plots import plot_histories

    by_title = {e.name: e for e in EXPERIMENTS}
    compared = {}  # single-lr experiments side by side, first implementation that ran
    for name, runs in curves.items():
        if not runs:
            continue
        frame = pd.concat([h.assign(implementation=label, lr=lr) for (lr, label), h in runs.items()], ignore_index=True)
        frame[["implementation", "lr", "epoch", "training_loss", "testing_loss"]].to_csv(
            out / f"{name}.csv", index=False
        )
        experiment = by_title[name]
        if len(experiment.learning_rates) > 1:  # a sweep: one curve per lr, of the first implementation
            first = next(label for _, label in runs)
            histories = {f"lr={lr:g}": h for (lr, label), h in runs.items() if label == first}
            title = f"{experiment.title} ({first})"
            styles = None
        else:  # one curve per implementation: they should lie on top of each other
            histories = {label: h for (_, label), h in runs.items()}
            title = experiment.title
            styles = dict(zip(histories, ["-", "--", ":"]))
            (lr, label), history = next(iter(runs.items()))
            compared[f"{experiment.title}, lr={lr:g} ({label})"] = history
        plot_histories(histories, out / f"{name}.png", title=title, baseline=baseline, styles=styles)
    if len(compared) > 1:
        plot_histories(compared, out / "optimizers.png", title="The optimizers compared", baseline=baseline)


def _summary_table(results, labels, baseline, hidden_units) -> str:
    """Markdown: one row per (experiment, lr): test MSE and ms/step per implementation, the
    constant predictor's test MSE, and the dead ReLUs at the end (first implementation that ran)."""
    headers = [
        "experiment",
        "lr",
        "clipnorm",
        "batch",
        "epochs",
        *(f"test MSE {label}" for label in labels),
        "baseline",
        "dead ReLUs",
        *(f"ms/step {label}" for label in labels),
    ]
    lines = []
    for (name, lr), group in results.groupby(["experiment", "lr"], sort=False):
        by_label = group.set_index("implementation")
        first = group.iloc[0]
        clip = "-" if first.clipnorm is None or math.isnan(first.clipnorm) else f"{first.clipnorm:g}"
        row = [name, f"{lr:g}", clip, str(first.batch_size), str(first.epochs)]
        row += [_fmt(by_label.test_mse.get(label), ".4g") for label in labels] + [f"{baseline:.4g}"]
        dead = group.dead_relus.dropna()
        row.append(f"{int(dead.iloc[0])}/{hidden_units}" if len(dead) else "n/a")
        row += [_fmt(by_label.ms_per_step.get(label), ".3f") for label in labels]
        lines.append(row)
    return _markdown(headers, lines)


def _markdown(headers, rows) -> str:
    """A markdown table, aligned for the terminal: first column left, the others right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _fmt(value, spec) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def cmd_info(args) -> int:
    from . import show_config

    show_config()
    return 0


def cmd_bench(argv) -> int:
    import importlib

    try:
        bench_report = importlib.import_module("pyopt.bench_report")
    except ModuleNotFoundError as exc:
        if exc.name != "pyopt.bench_report":
            raise
        print(
            "pyopt bench: error: the benchmark report (pyopt.bench_report) is not part of this installation",
            file=sys.stderr,
        )
        return 2
    status = bench_report.main(list(argv))
    return 0 if status is None else int(status)


class _UsageError(ValueError):
    """A bad combination of arguments found after parsing."""


def main(argv=None) -> int:
    """Entry point of the ``pyopt`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ log quiet
    if argv[:1] == ["bench"]:
        return cmd_bench(argv[1:])  # everything after "bench" belongs to the report script
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        return cmd_info(args)  # needs no TensorFlow
    command = {"demo": cmd_demo, "train": cmd_train}[args.command]
    try:
        from .ops import FusedBackendError
        from .training import BackendUnavailable
    except ImportError as exc:  # an optional dependency is missing; the message says what to install
        print(f"pyopt {args.command}: error: {exc}", file=sys.stderr)
        return 1

    try:
        return command(args)
    except _UsageError as exc:
        print(f"pyopt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (BackendUnavailable, FusedBackendError) as exc:
        print(f"pyopt {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an output path that cannot be written (a file where a folder goes, no permission)
        print(f"pyopt {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pyopt {args.command}: interrupted", file=sys.stderr)
        return 130
