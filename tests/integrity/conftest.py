"""The index tests' tiny model and catalogue fixtures, shared with the integrity tests."""
from tests.index.conftest import catalogue_dir, checkpoint, other_checkpoint  # noqa: F401
