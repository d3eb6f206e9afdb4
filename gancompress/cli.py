"""The ``gancompress`` command line.

Every subcommand is a module of :mod:`gancompress.commands`; its docstring is its ``--help``
description (shown as plain text: :func:`plain_text`) and its ``EXAMPLE`` the example that ends
its ``--help``. User mistakes end in one line on stderr and exit status 2; an interrupted run says
how to resume. Every exit status is listed in :data:`EXIT_STATUSES`.

Several processes: ``torchrun --nproc_per_node=N --no-python gancompress compress RECIPE`` trains
data-parallel; rank 0 prints the results, and the other ranks log warnings only.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import textwrap

from . import __version__
from .commands import COMMANDS, command_module
from .commands.common import positive_int
from .errors import GanCompressError

log = logging.getLogger("gancompress")

THREADS_HELP = ("CPU threads per process (default: the environment's OMP_NUM_THREADS, else the cores "
                "available divided by torchrun's processes on this node)")

DESCRIPTION = ("Make a trained GAN small and fast: train a sparse model, prune it to a MACs budget,\n"
               "distil the student online against GCC's selective discriminator, export and report.")

#: Every status ``main`` returns (argparse's own usage errors exit 2 too).
EXIT_STATUSES: dict[int, str] = {
    0: "done",
    1: "some parts failed, each reported in one line, the rest done: a variant of 'ablate', a row of "
       "'gpu-check' (and any unforeseen error, with Python's traceback: a bug to report)",
    2: "a user error, in one line on stderr (a recipe key, a missing file, a command-line mistake), "
       "before training wherever it can be known before training",
    130: "interrupted (Ctrl-C); the same command with --resume continues",
}

EPILOG = ("exit status:\n"
          + "\n".join(textwrap.fill(text, 78, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
                      for code, text in EXIT_STATUSES.items())
          + "\n\nexample:\n  gancompress make-demo-data pix2pix && gancompress compress recipes/demo/pix2pix.yaml")

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`<]*?)\s*(?:<([^>`]*)>)?`")


def plain_text(doc: str, code: str = "") -> str:
    """A docstring as ``--help`` shows it: reStructuredText literals and roles as plain text.

    ``x`` -> x; :mod:`a.b` -> a.b; :func:`~a.b.c` -> c; :class:`text <a.B>` -> text. With
    ``code="`"`` literals and names are kept as Markdown code spans instead.
    """
    def role(m: re.Match) -> str:
        tilde, text, target = m.groups()
        if target is not None and text:
            return text
        name = text or target or ""
        return code + (name.rsplit(".", 1)[-1] if tilde else name) + code

    return _ROLE.sub(role, doc).replace("``", code)


def _subcommand_epilog(module) -> str | None:
    example = getattr(module, "EXAMPLE", None)
    return f"example:\n  {example}" if example else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gancompress", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gancompress {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help=THREADS_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = command_module(name)
        p = sub.add_parser(name, help=module.HELP, description=plain_text(module.__doc__ or module.HELP).strip(),
                           epilog=_subcommand_epilog(module), formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        # Also accepted after the command; SUPPRESS keeps an absent one from undoing the global one.
        p.add_argument("--threads", type=positive_int, default=argparse.SUPPRESS, metavar="N", help=THREADS_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (the console script exits with it)."""
    args = build_parser().parse_args(argv)
    # The OpenMP runtime reads OMP_WAIT_POLICY once, when torch loads it: choose the thread
    # settings before anything below imports torch (see gancompress/threads.py).
    from .system.threads import ThreadsError, configure

    try:
        configure(args.threads)
    except ThreadsError as exc:
        print(f"gancompress: error: {exc}", file=sys.stderr)
        return 2
    from .system.distributed import RankStoppedError, launch_env

    launch = None
    try:
        launch = launch_env()
        follower = launch is not None and launch.rank != 0
        # Ranks other than 0 would repeat rank 0's progress lines; they keep warnings only.
        level = logging.DEBUG if args.verbose else logging.WARNING if follower else logging.INFO
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
        return command_module(args.command).run(args)
    except GanCompressError as exc:
        follower = launch is not None and launch.rank != 0
        if not (follower and isinstance(exc, RankStoppedError)):  # rank 0 prints the cause itself
            where = f" (rank {launch.rank})" if follower else ""
            print(f"gancompress: error{where}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gancompress: interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
