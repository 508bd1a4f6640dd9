"""``savegame preflight [TARGET]``: the preflight checks on the demo or on ``module:function``; its
code is :mod:`savegame.preflight.command`.

    savegame preflight                          # the demo
    savegame preflight mypkg.train:setup --quick --json
"""

from ..preflight.command import add_arguments, run

__all__ = ["add_arguments", "run"]
