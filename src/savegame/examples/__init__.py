"""Training loops that use savegame, each through the public API only (``import savegame`` and
the names of ``savegame.__all__``), as a user's script would: ``digits`` is ``savegame demo``."""
