"""The ``volgan`` command line. Bad input ends with one line on stderr and exit status 2.

One module per group of commands: the data in (:mod:`~volgan.cli.data_commands`), the models
(:mod:`~volgan.cli.model_commands`), the study (:mod:`~volgan.cli.study_command`); argument types and the parser
in :mod:`~volgan.cli.arguments`.
"""

from __future__ import annotations

import argparse
import os
import sys

from volgan.cli.arguments import OneLineParser
from volgan.cli.data_commands import add_check_parser, add_import_parser, add_phantom_parser
from volgan.cli.model_commands import add_evaluate_parser, add_infer_parser, add_quality_parser, add_synth_parser
from volgan.cli.study_command import add_study_parser
from volgan.errors import NonFiniteTraining, StageLost, VolganInputError


def build_parser() -> argparse.ArgumentParser:
    """The ``volgan`` command line: every sub-command and its options.

    Returns
    -------
    argparse.ArgumentParser
        the parser.
    """
    parser = OneLineParser(prog="volgan", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"volgan {__import__('volgan').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_phantom_parser, add_import_parser, add_check_parser, add_infer_parser, add_evaluate_parser,
                add_synth_parser,
                add_quality_parser, add_study_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``volgan`` command: bad input ends in one line on stderr naming the file and exit status 2, a training
    whose values stop being finite in status 1, Ctrl-C in 130.

    Parameters
    ----------
    argv : list[str] | None
        the arguments (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        the exit status.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # the output piped into a reader that stopped (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail too
        return 0
    except VolganInputError as exc:
        print(f"volgan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteTraining as exc:
        print(f"volgan {args.command}: error: {exc.message}", file=sys.stderr)
        return 1
    except StageLost as exc:
        print(f"volgan {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"volgan {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
