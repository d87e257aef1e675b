"""Command line of the package: `keras-batchopt compare [options]`.

Also reachable as `python -m keras_batchopt compare`. The job itself lives in
`runner.run_comparison()`; this file only parses and checks options.
"""

import argparse
import sys

from keras_batchopt.src.compare import data
from keras_batchopt.src.compare import runner

# `--quick` defaults, for smoke tests and CI; explicit options still win.
QUICK = dict(epochs=1, train_size=512, test_size=500, evals_per_epoch=4)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 1, got {text!r}"
        )
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a number in (0, 1], got {text!r}"
        )
    return value


def _optimizer_list(text):
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected at least one name")
    try:
        runner.check_optimizer_names(names)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"duplicate name in {text!r}")
    return names


def _learning_rate(text):
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if not sep:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE such as adan=0.01, got {text!r}"
        )
    try:
        runner.check_optimizer_names([name])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not rate > 0.0:
        raise argparse.ArgumentTypeError(
            f"expected a learning rate > 0 for {name}, got {value!r}"
        )
    return name, rate


def make_parser():
    """Returns the `argparse` parser of the `keras-batchopt` command."""
    parser = argparse.ArgumentParser(
        prog="keras-batchopt",
        description="Tools of keras_batchopt.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser(
        "compare",
        help="train one model with several optimizers and compare them",
        description=(
            "Trains one small model on real data once per optimizer, on the "
            "backend named by KERAS_BACKEND, and prints test loss, test "
            "accuracy, steps to a target accuracy and time per step. Writes "
            "results.json, results.csv and curves.png to --output-dir."
        ),
    )
    add = compare.add_argument
    add(
        "--optimizers",
        type=_optimizer_list,
        default=list(runner.DEFAULT_OPTIMIZERS),
        metavar="NAMES",
        help=(
            "comma-separated names from: "
            f"{', '.join(runner.OPTIMIZERS)} (default: "
            f"{','.join(runner.DEFAULT_OPTIMIZERS)})"
        ),
    )
    add(
        "--lr",
        type=_learning_rate,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="learning rate of one optimizer, e.g. adan=0.01 (repeatable)",
    )
    add(
        "--dataset",
        choices=data.DATASETS,
        default="auto",
        help=(
            "auto: fashion_mnist when its files are installed, else digits "
            "(default: auto)"
        ),
    )
    add(
        "--model",
        choices=runner.MODELS,
        default="mlp",
        help="mlp, or cnn for a small convnet (default: mlp)",
    )
    add("--epochs", type=_positive_int, help="default: per dataset")
    add("--batch-size", type=_positive_int, help="default: per dataset")
    add(
        "--train-size",
        type=_positive_int,
        help="training examples to use (default: per dataset)",
    )
    add(
        "--test-size",
        type=_positive_int,
        help="test examples to use (default: the whole test split)",
    )
    add(
        "--target-accuracy",
        type=_fraction,
        help="test accuracy to count steps to (default: per dataset)",
    )
    add(
        "--evals-per-epoch",
        type=_positive_int,
        help="test evaluations per epoch (default: about 20 in all)",
    )
    add("--seed", type=int, default=0, help="default: 0")
    add(
        "--output-dir",
        default="compare_output",
        help="folder for the result files (default: ./compare_output)",
    )
    add(
        "--quick",
        action="store_true",
        help="1 epoch on a small subset, for smoke tests",
    )
    return parser


def main(argv=None):
    """Runs the `keras-batchopt` command; returns the exit status."""
    parser = make_parser()
    args = parser.parse_args(argv)
    learning_rates = dict(args.lr)
    extra = sorted(set(learning_rates) - set(args.optimizers))
    if extra:
        parser.error(
            f"--lr sets {extra[0]}, which is not in --optimizers "
            f"({','.join(args.optimizers)})"
        )
    options = dict(
        epochs=args.epochs,
        train_size=args.train_size,
        test_size=args.test_size,
        evals_per_epoch=args.evals_per_epoch,
    )
    if args.quick:
        for key, value in QUICK.items():
            if options[key] is None:
                options[key] = value
    try:
        runner.run_comparison(
            optimizers=args.optimizers,
            dataset=args.dataset,
            model=args.model,
            batch_size=args.batch_size,
            target_accuracy=args.target_accuracy,
            learning_rates=learning_rates,
            seed=args.seed,
            output_dir=args.output_dir,
            **options,
        )
    except data.DatasetUnavailableError as e:
        print(f"{parser.prog} compare: error: {e}", file=sys.stderr)
        return 1
    return 0
