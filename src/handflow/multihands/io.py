"""Moved to :mod:`handflow.data.multihands_io` (the on-disk format is data, below the
generator in the layers); these names stay importable from here."""

from handflow.data.multihands_io import (
    FORMAT_VERSION,
    MultiHandsIndex,
    MultiHandsRecord,
    load,
    part_name,
    read_part_meta,
    write_json_atomic,
    write_part,
)

__all__ = ["MultiHandsRecord", "MultiHandsIndex", "write_part", "load", "part_name", "read_part_meta", "write_json_atomic",
           "FORMAT_VERSION"]
