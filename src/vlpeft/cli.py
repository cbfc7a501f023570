"""``vlpeft`` command line: small inspection commands around the study.

    vlpeft grid [--config config/config.yaml]     runs per task and method of a study config
    vlpeft params [--preset base]                 trainable parameters of every method x size (Table II)
    vlpeft model [--preset base]                  parameters per module of the model
    vlpeft cost [--config config/config.yaml]     samples, FLOPs, predicted GPU-hours and time limit of every run
    vlpeft plan --config X --profile P [-j N]     runs, GPU-hours, wall time, GPUs, disk and memory before launching
    vlpeft status --config config/config.yaml     each run's state, progress, ETA and GPU-hours (writes nothing)

A user error (missing config, invalid value) is one line on stderr and exit status 2; every command says on stderr
that it started before importing torch (seconds).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .console import announce
from .console import run as run_cli
from .model.config import PRESETS

PROG = "vlpeft"


def cmd_grid(args: argparse.Namespace) -> int:
    announce(PROG, f"checking {args.config} (loads torch to check the method options)")
    from .grid import counts, load_config

    table = counts(load_config(args.config))
    tasks = sorted({t for t, _ in table})
    methods = sorted({m for _, m in table})
    print(f"{'method':<18}" + "".join(f"{t:>8}" for t in tasks) + f"{'total':>8}")
    for m in methods:
        row = [table.get((t, m), 0) for t in tasks]
        print(f"{m:<18}" + "".join(f"{n:>8}" for n in row) + f"{sum(row):>8}")
    totals = [sum(table.get((t, m), 0) for m in methods) for t in tasks]
    print(f"{'total':<18}" + "".join(f"{n:>8}" for n in totals) + f"{sum(totals):>8}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    announce(PROG, "counting parameters (loading torch)")
    from .methods import table

    return table.main(["--preset", args.preset])


def cmd_model(args: argparse.Namespace) -> int:
    announce(PROG, f"building the {args.preset} model on the meta device (loading torch)")
    from .model.config import preset
    from .model.mplug import MPlug

    counts = MPlug(preset(args.preset)).parameter_counts()
    for name, n in counts.items():
        print(f"{name:<16}{n:>14,}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import main

    return main(args.config, args.all, args.active)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True, metavar="{grid,params,model,cost,plan,status}")
    p = sub.add_parser("grid", help="runs per task and method of a study config")
    p.add_argument(
        "--config",
        default="config/config.yaml",
        help="study config, checked as the workflow checks it (default: %(default)s, the paper's)",
    )
    p.set_defaults(func=cmd_grid)
    presets = sorted(PRESETS)
    p = sub.add_parser("params", help="trainable parameters of every method x size (Table II)")
    p.add_argument(
        "--preset",
        default="base",
        choices=presets,
        help="model size the counts are for (default: %(default)s, mPLUG-base)",
    )
    p.set_defaults(func=cmd_params)
    p = sub.add_parser("model", help="parameters per module of the model")
    p.add_argument("--preset", default="base", choices=presets, help="model size (default: %(default)s, mPLUG-base)")
    p.set_defaults(func=cmd_model)
    # `vlpeft cost` has its own options (vlpeft.cost); listed here so that `vlpeft --help` shows it.
    sub.add_parser(
        "cost", help="samples, FLOPs, predicted GPU-hours and SLURM time limit of every run", add_help=False
    )
    sub.add_parser(
        "plan",
        help="runs, GPU-hours, wall time at -j N, peak GPUs, disk per stage and the largest job's "
        "memory, before launching (writes nothing)",
        add_help=False,
    )
    p = sub.add_parser("status", help="where each run of a study stands (read-only)")
    p.add_argument("--config", default="config/config.yaml", help="study config (default: %(default)s, the paper's)")
    p.add_argument("--all", action="store_true", help="list every run (default: those not success or missing)")
    p.add_argument(
        "--active",
        type=float,
        default=900.0,
        help="a run whose train.log grew within this many seconds counts as running (default 900)",
    )
    p.set_defaults(func=cmd_status)
    return parser


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cost"]:  # its own options (vlpeft.cost)
        from .cost import main as cost_main

        return cost_main(argv[1:])
    if argv[:1] == ["plan"]:  # its own options (vlpeft.plan)
        from .plan import main as plan_main

        return plan_main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``vlpeft`` console script: user errors are one line on stderr and exit status 2."""
    return run_cli(_main, PROG, argv)


if __name__ == "__main__":
    sys.exit(main())
