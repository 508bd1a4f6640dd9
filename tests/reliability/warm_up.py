"""Imported by the kill storms' fork server: pays a first deterministic AdamW step's imports once."""

from storm_train import warm_up

warm_up()
