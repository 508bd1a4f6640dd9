"""``python -m savegame.cli``: the ``savegame`` command."""

if __name__ == "__main__":
    from . import console_main

    console_main()
