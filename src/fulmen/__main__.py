"""The `fulmen` console command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point: `fulmen --version`."""
    from fulmen import __version__

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: fulmen --version")
        return 0
    if args[0] == "--version":
        print(__version__)
        return 0
    print(f"fulmen: unknown command {args[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
