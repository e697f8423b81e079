"""Callbacks and small models used by tests through ``--trainer.callbacks+=`` class paths."""
