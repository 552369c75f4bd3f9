"""Entry script of the frozen app: the same dispatch as `python -m studio`.

`latent-studio` opens the window; `latent-studio COMMAND ...` runs the CLI.
"""

from __future__ import annotations

import multiprocessing
import sys

if __name__ == "__main__":
    # A frozen program that spawns worker processes re-executes itself; without
    # this the children would open another window instead of doing the work.
    multiprocessing.freeze_support()
    from studio.__main__ import main

    sys.exit(main())
