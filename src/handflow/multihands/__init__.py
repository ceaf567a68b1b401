"""handflow.multihands: many plausible two-hand annotations per image (paper Sec. 4).

>>> from handflow.multihands import load
>>> records = load("multihands_out", "test")   # {image_id: MultiHandsRecord}  # doctest: +SKIP
>>> records[42].params.shape, records[42].joints.shape   # (n, 218), (n, 42, 3) mm  # doctest: +SKIP

(skipped as doctests: they read a folder written by ``handflow multihands``)
"""

from handflow.data.multihands_io import MultiHandsIndex, MultiHandsRecord, load

__all__ = ["MultiHandsIndex", "MultiHandsRecord", "load"]
