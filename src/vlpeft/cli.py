"""``vlpeft`` command line: small inspection commands around the study.

    vlpeft grid [--config config/config.yaml]     runs per task and method of a study config
    vlpeft params [--preset base]                 trainable parameters of every method x size (Table II)
    vlpeft model [--preset base]                  parameters per module of the model
    vlpeft status --config config/config.yaml     each run's state, progress, ETA and GPU-hours (writes nothing)
"""

from __future__ import annotations

import argparse
import sys


def cmd_grid(args: argparse.Namespace) -> int:
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
    from .methods import table

    return table.main(["--preset", args.preset])


def cmd_model(args: argparse.Namespace) -> int:
    from .model.config import preset
    from .model.mplug import MPlug

    counts = MPlug(preset(args.preset)).parameter_counts()
    for name, n in counts.items():
        print(f"{name:<16}{n:>14,}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import main

    return main(args.config, args.all, args.active)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlpeft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("grid", help="runs per task and method")
    p.add_argument("--config", default="config/config.yaml")
    p.set_defaults(func=cmd_grid)
    p = sub.add_parser("params", help="trainable parameters per method and size")
    p.add_argument("--preset", default="base")
    p.set_defaults(func=cmd_params)
    p = sub.add_parser("model", help="parameters per module")
    p.add_argument("--preset", default="base")
    p.set_defaults(func=cmd_model)
    p = sub.add_parser("status", help="where each run of a study stands (read-only)")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--all", action="store_true", help="list every run (default: those not success or missing)")
    p.add_argument("--active", type=float, default=900.0,
                   help="a run whose train.log grew within this many seconds counts as running (default 900)")
    p.set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
