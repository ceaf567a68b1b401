"""Test and benchmark utilities (fixtures written in real on-disk formats)."""
