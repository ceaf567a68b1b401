"""The two records shared by the synthetic generator's driver (:mod:`~handflow.data.synth.generate`)
and its per-sequence worker (:mod:`~handflow.data.synth.frames`): one sequence of the plan, and
the injectable pieces (hand model, renderer, ...). Kept apart so the two modules do not import
each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SeqPlan", "Backends"]


@dataclass(frozen=True)
class SeqPlan:
    """One sequence of the plan (``index`` is global, over all splits)."""

    index: int
    split: str
    capture: int
    subject: int
    seq_name: str
    template: str
    length: int
    frame_start: int  # frame_idx of the first frame within its capture
    global_frame: int  # index of the first frame over the whole dataset (image ids)



@dataclass
class Backends:
    """The pieces ``generate`` needs (injectable for tests).

    Attributes:
        model: hand model (``handflow.hand.base.HandModel``).
        collide: ``collide(right_out, left_out) -> (B,) bool``.
        make_renderer: ``(width, height) -> renderer`` with ``.render(meshes, K, background,
            light) -> RenderOutput(rgb, depth, hand_id, part_id, face_id)``.
        make_mesh: ``(vertices (V,3), faces (F,3), color (3,), part_labels (V,), hand_id) -> Mesh``.
        joint_visibility: ``(meshes, joints_list, K, (H, W), render=...) -> list[(J,) bool]``.
        to_neuralannot: ``(rotmats, betas, root_cam, camrot, campos, model, side) ->
            (pose (B,48), shape (B,10), trans (B,3) m)``.
        random_light, random_skin_tone: ``(generator) -> ...``.
        random_background: ``(h, w, generator) -> image``.
    """

    model: Any
    collide: Callable
    make_renderer: Callable
    make_mesh: Callable
    joint_visibility: Callable
    to_neuralannot: Callable
    random_light: Callable
    random_skin_tone: Callable
    random_background: Callable
