"""Editing a committed checkpoint's manifest the way a tool (or an attacker) would: change it,
then re-sign ``COMMIT`` so only the content, not the commit check, can catch it.

Tests import it as ``from manifests import rewrite_manifest`` (pytest puts this folder on ``sys.path``).
"""

import json

from savegame.checkpoint.safetensors_io import hash_file


def rewrite_manifest(path, change):
    """Apply ``change(manifest_dict)`` to ``path``'s manifest.json and write COMMIT to match."""
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    info = hash_file(path / "manifest.json")
    (path / "COMMIT").write_text(json.dumps({"manifest.json": {"size": info.size, "hash": info.hash}}))
