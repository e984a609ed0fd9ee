"""The `fulmen` console command: a small dispatcher to one function per subcommand."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def _plot(argv: Sequence[str]) -> int:
    from fulmen.plot import main as plot_main

    return plot_main(argv)


def _exec(argv: Sequence[str]) -> int:
    from fulmen.compat import run

    return run(argv)


def _run(argv: Sequence[str]) -> int:
    from fulmen.cli import run_main

    return run_main(argv)


# subcommand -> (handler taking the remaining arguments, one-line help)
COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "exec": (_exec, "run a Lightning script unchanged on fulmen: fulmen exec train.py ARGS (or -m MODULE)"),
    "plot": (_plot, "draw a run's training curves: fulmen plot lightning_logs/version_0"),
    "run": (_run, "run a module by import path: fulmen run examples.mnist:MNISTClassifier [DATA] fit ..."),
}


def _usage() -> str:
    lines = ["usage: fulmen <command> [options]   (fulmen <command> --help for its options)", ""]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append(f"  {'--version':<10} print the fulmen version")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `fulmen <command> ...` or `fulmen --version`."""
    from fulmen import __version__

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        print(__version__)
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"fulmen: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return command[0](args[1:])


if __name__ == "__main__":
    sys.exit(main())
