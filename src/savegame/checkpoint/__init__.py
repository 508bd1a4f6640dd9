"""Checkpoints on disk: the pickle-free codec, the safetensors reader/writer and the commit protocol.

The modules here are the building blocks; the public entry points are ``savegame.save``,
``savegame.load`` and ``savegame.Run``.

>>> from savegame.checkpoint.store import checkpoint_dirname
>>> checkpoint_dirname(480)
'step-000480'
"""
