"""`python -m studio` opens the window; `python -m studio COMMAND ...` runs the CLI."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    from studio.cli import is_command

    if args and is_command(args[0]):
        from studio.cli import main as cli_main

        return cli_main(args)
    from studio.app import main as app_main

    return app_main(args)


if __name__ == "__main__":
    sys.exit(main())
