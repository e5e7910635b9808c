"""Test support: the tiny model builder, reference scores and session servers (not shipped)."""
