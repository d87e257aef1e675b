"""Command line of the package: `keras-batchopt compare [options]`.

Also reachable as `python -m keras_batchopt compare`. The jobs themselves
live in `runner.run_comparison()` (optimizers) and
`runner.run_layer_comparison()` (`--layers`, normalization layers); this
file only parses and checks options. Every bad option ends the command
with one line on stderr and exit status 2.
"""

import argparse
import math
import sys

from keras_batchopt.src.compare import catalog
from keras_batchopt.src.compare import data
from keras_batchopt.src.compare import runner
from keras_batchopt.src.compare import stats

# `--quick` defaults, for smoke tests and CI; explicit options still win.
QUICK = dict(
    epochs=1, train_size=512, test_size=500, evals_per_epoch=4, seeds=2
)
DEFAULT_SEEDS = 3


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


def _names(text):
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected at least one name, got {text!r}"
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"duplicate name in {text!r}")
    return names


def _optimizer_list(text):
    names = _names(text)
    if names == ["all"]:
        return list(runner.OPTIMIZERS)
    try:
        runner.check_optimizer_names(names)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return names


def _positive_list(convert, what):
    def parse(text):
        values = []
        for item in text.split(","):
            if not item.strip():
                continue
            try:
                value = convert(item)
            except ValueError:
                value = None
            if value is None or not value > 0 or not math.isfinite(value):
                raise argparse.ArgumentTypeError(
                    f"expected {what} > 0, got {item.strip()!r} in {text!r}"
                )
            values.append(value)
        if not values:
            raise argparse.ArgumentTypeError(
                f"expected at least one value ({what} > 0), got {text!r}"
            )
        return values

    return parse


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
    if not (rate > 0.0 and math.isfinite(rate)):
        raise argparse.ArgumentTypeError(
            f"expected a learning rate > 0 for {name}, got {value!r}"
        )
    return name, rate


def _add_job_options(add):
    add(
        "--optimizers",
        type=_optimizer_list,
        metavar="NAMES",
        help=(
            "comma-separated names, or all: "
            f"{', '.join(runner.OPTIMIZERS)} (default: "
            f"{','.join(runner.DEFAULT_OPTIMIZERS)}; with --layers: one "
            "name, default adam)"
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
        "--layers",
        type=_names,
        nargs="?",
        const=["default"],
        metavar="NAMES",
        help=(
            "compare normalization layers instead of optimizers: "
            "comma-separated names, all, or nothing for a default set. "
            f"cnn: {', '.join(catalog.layers_for('cnn'))}; transformer: "
            f"{', '.join(catalog.layers_for('transformer'))}"
        ),
    )
    add(
        "--batch-sizes",
        type=_positive_list(int, "an integer"),
        metavar="SIZES",
        help=(
            "with --layers: batch sizes, a micro-batch and a large one "
            "(default: "
            f"{','.join(map(str, runner.DEFAULT_BATCH_SIZES))})"
        ),
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
        help=(
            "mlp, cnn (a small convnet) or transformer (one block on image "
            "patches) (default: mlp; with --layers: cnn)"
        ),
    )


def _add_run_options(add):
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
    add("--seed", type=int, default=0, help="first seed (default: 0)")
    add(
        "--seeds",
        type=_positive_int,
        help=(
            f"runs per optimizer or layer, seeds --seed, --seed + 1, ... "
            f"(default: {DEFAULT_SEEDS}; {QUICK['seeds']} with --quick)"
        ),
    )
    add(
        "--tune",
        action="store_true",
        help=(
            "first pick each optimizer's learning rate from a grid, on a "
            f"{100 * runner.VALIDATION_FRACTION:.0f}%% validation split of the "
            "training set"
        ),
    )
    add(
        "--tune-grid",
        type=_positive_list(float, "a factor"),
        metavar="FACTORS",
        help=(
            "factors of each default learning rate to try; implies --tune "
            f"(default: {','.join(f'{g:g}' for g in runner.TUNE_GRID)})"
        ),
    )
    add(
        "--baseline",
        type=str.lower,
        metavar="NAME",
        help=(
            "optimizer or layer the others are tested against, or best "
            "(default: adam, with --layers batch_norm for the cnn and "
            "layer_norm for the transformer; best when not compared)"
        ),
    )
    add(
        "--output-dir",
        default="compare_output",
        help="folder for the result files (default: ./compare_output)",
    )
    add(
        "--quick",
        action="store_true",
        help="1 epoch on a small subset, 2 seeds, for smoke tests",
    )


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
            "Trains one small model on real data with each optimizer (or, "
            "with --layers, each normalization layer), once per seed, on "
            "the backend named by KERAS_BACKEND. Prints, per optimizer, the "
            "mean and standard deviation over seeds of the final test "
            "accuracy and loss, a 95% t interval of the mean accuracy, "
            f"and {stats.TEST_NAME} against the baseline (* at p < "
            f"{stats.ALPHA:g}). Writes results.json, results.csv, "
            "table.txt and curves.png to --output-dir."
        ),
    )
    _add_job_options(compare.add_argument)
    _add_run_options(compare.add_argument)
    parser.commands = {"compare": compare}
    return parser


def _check_layers_mode(parser, args):
    """Resolves and checks the options of `--layers`; returns the names."""
    model = args.model or "cnn"
    if model not in catalog.DEFAULT_LAYERS:
        parser.error(
            f"--layers needs --model cnn or transformer, got {model!r}"
        )
    names = args.layers
    if names == ["default"]:
        names = list(catalog.DEFAULT_LAYERS[model])
    elif names == ["all"]:
        names = catalog.layers_for(model)
    try:
        catalog.check_layer_names(names, model)
    except ValueError as e:
        parser.error(f"--layers: {e}")
    optimizers = args.optimizers or ["adam"]
    if len(optimizers) != 1:
        parser.error(
            f"--layers trains with one optimizer, got {','.join(optimizers)}"
        )
    if args.tune or args.tune_grid:
        parser.error("--tune is for comparing optimizers, not with --layers")
    if args.batch_size:
        parser.error("with --layers, give batch sizes with --batch-sizes")
    _check_baseline(parser, args.baseline, names, "--layers")
    _check_learning_rates(parser, args.lr, optimizers)
    args.model, args.layers, args.optimizers = model, names, optimizers


def _check_baseline(parser, baseline, names, option):
    if baseline is not None and baseline != "best" and baseline not in names:
        parser.error(
            f"--baseline {baseline!r} is not in {option} "
            f"({','.join(names)}); use one of them or best"
        )


def _check_learning_rates(parser, pairs, optimizers):
    extra = sorted(set(dict(pairs)) - set(optimizers))
    if extra:
        parser.error(
            f"--lr sets {extra[0]}, which is not in --optimizers "
            f"({','.join(optimizers)})"
        )


def _check_options(parser, args):
    if args.layers is not None:
        _check_layers_mode(parser, args)
    else:
        args.optimizers = args.optimizers or list(runner.DEFAULT_OPTIMIZERS)
        args.model = args.model or "mlp"
        if args.batch_sizes:
            parser.error("--batch-sizes goes with --layers; use --batch-size")
        _check_baseline(parser, args.baseline, args.optimizers, "--optimizers")
        _check_learning_rates(parser, args.lr, args.optimizers)
    try:
        runner.check_output_dir(args.output_dir)
    except ValueError as e:
        parser.error(str(e))


def _options(args):
    options = dict(
        epochs=args.epochs,
        train_size=args.train_size,
        test_size=args.test_size,
        evals_per_epoch=args.evals_per_epoch,
        seeds=args.seeds,
    )
    if args.quick:
        for key, value in QUICK.items():
            if options[key] is None:
                options[key] = value
    if options["seeds"] is None:
        options["seeds"] = DEFAULT_SEEDS
    common = dict(
        dataset=args.dataset,
        model=args.model,
        target_accuracy=args.target_accuracy,
        seed=args.seed,
        output_dir=args.output_dir,
        **options,
    )
    if args.layers is not None:
        if common["epochs"] is None:
            resolved = data.resolve_name(args.dataset)
            common["epochs"] = runner.LAYER_EPOCHS[resolved]
        return runner.run_layer_comparison, dict(
            layers=args.layers,
            batch_sizes=args.batch_sizes or runner.DEFAULT_BATCH_SIZES,
            optimizer=args.optimizers[0],
            learning_rate=dict(args.lr).get(args.optimizers[0]),
            baseline=args.baseline,
            **common,
        )
    return runner.run_comparison, dict(
        optimizers=args.optimizers,
        batch_size=args.batch_size,
        learning_rates=dict(args.lr),
        tune=args.tune or bool(args.tune_grid),
        tune_grid=args.tune_grid or runner.TUNE_GRID,
        baseline=args.baseline or "adam",
        **common,
    )


def main(argv=None):
    """Runs the `keras-batchopt` command; returns the exit status."""
    parser = make_parser()
    args = parser.parse_args(argv)
    parser = parser.commands[args.command]
    _check_options(parser, args)
    job, kwargs = _options(args)
    try:
        job(**kwargs)
    except data.DatasetUnavailableError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0
