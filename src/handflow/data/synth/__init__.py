"""Synthetic two-hand dataset in the InterHand2.6M on-disk format (``handflow synth``).

Modules: :mod:`~handflow.data.synth.cameras` (dome), :mod:`~handflow.data.synth.poses`
(articulations), :mod:`~handflow.data.synth.scenes` (two-hand placement and sequences),
:mod:`~handflow.data.synth.frames` (rendering one sequence),
:mod:`~handflow.data.synth.ih_writer` (the files, atomic IO, shards),
:mod:`~handflow.data.synth.generate` (plan, sharding, merge) and
:mod:`~handflow.data.synth.rerun` (settings record, resume, ``--overwrite``). See ``docs/synthetic.md``.
"""

from handflow.data.synth.cameras import Camera, dome_cameras, look_at
from handflow.data.synth.generate import SynthConfig, default_backends, make_plan, merge, stream
from handflow.data.synth.generate import generate as generate_dataset

__all__ = [
    "Camera",
    "SynthConfig",
    "default_backends",
    "dome_cameras",
    "generate_dataset",
    "look_at",
    "make_plan",
    "merge",
    "stream",
]
