"""``python -m savegame.cli``: the ``savegame`` command."""

import sys

if __name__ == "__main__":
    from . import main

    sys.exit(main())
