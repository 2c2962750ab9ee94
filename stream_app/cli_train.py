"""`riskmon train` and `riskmon evaluate`: the deep models' training and evaluation drivers.

Thin dispatch: the options belong to the drivers (``stream_app.train_lstm_copula`` and
``stream_app.train_cnn``), so ``riskmon train cnn --help`` shows exactly what they accept.
"""

from __future__ import annotations

import argparse

_TRAIN_HELP = """\
examples:
  riskmon train lstm-copula                           # retrain the shipped artifact on the shipped history
  riskmon train lstm-copula --data ../shared/data/daily --until 2019-12-31 --out runs/art
  riskmon train cnn --data ../shared/data/daily --until 2019-12-31 --out runs/art
  riskmon train cnn --help                            # every option of one driver
"""

_EVAL_HELP = """\
examples:
  riskmon evaluate lstm-copula --data ../shared/data/daily --walk-forward 2007-2023
  riskmon evaluate cnn --data ../shared/data/daily --years 2008,2012-2023 --retrain yearly
"""


def _train(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    if args.model == "lstm-copula":
        from stream_app.train_lstm_copula import main

        return main(rest)
    from stream_app.train_cnn import main as cnn_main

    return cnn_main(["train", *rest])


def _evaluate(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    if args.model == "lstm-copula":
        from stream_app.train_lstm_copula import main

        if not any(a.startswith("--walk-forward") for a in rest):
            rest = ["--walk-forward", "2007-2023", *rest]
        return main(rest)
    from stream_app.train_cnn import main as cnn_main

    return cnn_main(["evaluate", *rest])


def register(sub: argparse._SubParsersAction) -> None:
    """Add `train` and `evaluate` to the `riskmon` command line."""
    for name, func, helptext, epilog in (
        ("train", _train, "train a deep model and write a versioned artifact", _TRAIN_HELP),
        (
            "evaluate",
            _evaluate,
            "walk-forward evaluation of a deep model, retrained yearly",
            _EVAL_HELP,
        ),
    ):
        p = sub.add_parser(
            name,
            help=helptext,
            description=f"{helptext[0].upper()}{helptext[1:]}. Options after the model name "
            f"go to its driver: `riskmon {name} MODEL --help` lists them.",
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("model", choices=("lstm-copula", "cnn"), help="which model")
        p.add_argument("rest", nargs=argparse.REMAINDER, help="options of the driver")
        p.set_defaults(func=func)
