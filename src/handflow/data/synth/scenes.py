"""Two-hand scenes: relative placement around interaction templates, contact by approach,
collision rejection, and short smooth sequences (slerp between keyframes).

A *template* fixes, in a canonical pair frame (mm, +z up), each hand's finger direction and
palm normal, the articulations to draw from (:data:`handflow.data.synth.poses.POSE_LIBRARY`
names, or ``None`` = the model's pose prior), the direction ``axis`` along which the left
hand approaches the right one and a lateral ``offset``. The left wrist is placed at
``offset + d · axis``; ``d`` is the smallest distance on a grid at which the hands do not
collide (``handflow.hand.collision.collide``), plus a small random gap, so hands touch or
nearly touch. Orientations, offsets and poses are perturbed randomly; with probability ½
the roles are swapped by mirroring the scene (x → −x), which maps a right hand onto a left
hand.

A sequence has 2–3 keyframes of the same template (independent perturbations, a slowly
changing global rotation of the pair); frames in between interpolate every rotation with
slerp and the wrists linearly. A sequence in which any frame collides or has its wrists
outside ``WRIST_DISTANCE_MM`` is rejected and redrawn (counted in the statistics).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from handflow.constants import IH_WRIST, Side
from handflow.data.synth.poses import sample_articulation
from handflow.geometry import axis_angle_to_matrix, matrix_to_axis_angle
from handflow.hand.base import HandModel, HandOutput

__all__ = [
    "HandPlacement",
    "SceneKey",
    "Sequence",
    "TEMPLATES",
    "orient",
    "slerp",
    "interpolate_keys",
    "sample_keyframe",
    "KeyframeRejected",
    "sample_sequence",
    "WRIST_DISTANCE_MM",
]

#: allowed distance between the two wrists (mm)
WRIST_DISTANCE_MM = (60.0, 250.0)
#: approach distances tried when looking for contact (mm, from far to near)
APPROACH_GRID_MM = torch.linspace(320.0, -80.0, 41, dtype=torch.float64)
#: extra gap after contact (mm): mostly touching, sometimes just close
GAP_TOUCH_MM = (0.0, 8.0)
GAP_CLOSE_MM = (8.0, 60.0)
P_CLOSE = 0.25
#: std of the per-hand orientation jitter (degrees) and of the pair's drift between keys
ORIENT_JITTER_DEG = 12.0
KEY_DRIFT_DEG = 18.0
#: maximal tilt of the pair away from upright (degrees); the yaw is uniform
MAX_PAIR_TILT_DEG = 70.0
P_PRIOR_POSE = 0.25
MAX_SEQUENCE_TRIES = 8
#: further static tries, each from a new first keyframe: a keyframe passes the approach test on a
#: 10 mm grid, and its final placement (a gap added) can still collide
MAX_STATIC_TRIES = 32
MAX_KEY_TRIES = 12
REST_FINGER_DIR = {"right": (-1.0, 0.0, 0.0), "left": (1.0, 0.0, 0.0)}
REST_PALM_NORMAL = (0.0, -1.0, 0.0)
MIRROR_X = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))


def _t(v: tuple[float, ...] | list[float]) -> Tensor:
    return torch.tensor(v, dtype=torch.float64)


def orient(side: Side, finger_dir: Tensor, palm_normal: Tensor) -> Tensor:
    """(3, 3) global rotation making ``side``'s fingers point along ``finger_dir`` and its palm
    face ``palm_normal`` (orthogonalized against ``finger_dir``)."""

    def frame(f: Tensor, n: Tensor) -> Tensor:
        f = f / torch.linalg.norm(f)
        n = n - (n @ f) * f
        n = n / torch.linalg.norm(n)
        return torch.stack([f, n, torch.linalg.cross(f, n)], 1)

    return frame(finger_dir.to(torch.float64), palm_normal.to(torch.float64)) @ frame(
        _t(REST_FINGER_DIR[side]), _t(REST_PALM_NORMAL)
    ).T


def _rot(axis_angle: Tensor) -> Tensor:
    return axis_angle_to_matrix(axis_angle)


def _random_rotation(std_deg: float, g: torch.Generator) -> Tensor:
    return _rot(torch.randn(3, generator=g, dtype=torch.float64) * math.radians(std_deg))


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64))


def _choice(g: torch.Generator, items: tuple[str | None, ...] | list[str]) -> str | None:
    return items[int(torch.randint(len(items), (1,), generator=g))]


@dataclass
class TemplateSample:
    """Canonical placement of both hands (before the contact search)."""

    poses: tuple[str | None, str | None]  # right, left
    finger: tuple[Tensor, Tensor]
    palm: tuple[Tensor, Tensor]
    axis: Tensor
    offset: Tensor


_Vec3 = tuple[float, float, float]


def _tmpl(poses_r: tuple[str | None, ...], poses_l: tuple[str | None, ...], fr: _Vec3, nr: _Vec3, fl: _Vec3, nl: _Vec3,
          axis: _Vec3, offset_fn: Callable[[torch.Generator], Tensor]) -> Callable[[torch.Generator], TemplateSample]:
    def make(g: torch.Generator) -> TemplateSample:
        return TemplateSample(
            (_choice(g, poses_r), _choice(g, poses_l)), (_t(fr), _t(fl)), (_t(nr), _t(nl)), _t(axis), offset_fn(g)
        )

    return make


def _jit(*ranges: tuple[float, float]) -> Callable[[torch.Generator], Tensor]:
    return lambda g: _t([_u(g, lo, hi) for lo, hi in ranges])


#: interaction templates: name -> sampler of a canonical placement
TEMPLATES: dict[str, Callable[[torch.Generator], TemplateSample]] = {
    # palms pressed together, fingers up
    "pray": _tmpl(("flat", "relaxed", "spread"), ("flat", "relaxed"), (0, 0, 1), (-1, 0, 0), (0, 0, 1), (1, 0, 0),
                  (-1, 0, 0), _jit((0, 0), (-25, 25), (-30, 30))),
    # handshake-like clasp: fingers wrap the other palm
    "clasp": _tmpl(("hook", "cup", "fist"), ("hook", "cup"), (0, 1, 0), (-1, 0, 0.3), (0, -1, 0), (1, 0, 0.3),
                   (-1, 0, 0), _jit((0, 0), (110, 170), (-25, 25))),
    # fingertips touching (steeple)
    "fingertip_touch": _tmpl(("relaxed", "spread", "cup", "claw"), ("relaxed", "spread", "cup", "claw"),
                             (-0.35, 0, 1), (-1, 0, -0.35), (0.35, 0, 1), (1, 0, -0.35), (-1, 0, 0),
                             _jit((0, 0), (-15, 15), (-20, 20))),
    # forearms crossed: hands cross over each other, palms down
    "crossed": _tmpl(("flat", "relaxed", "fist", "spread", None), ("flat", "relaxed", "fist", None),
                     (-0.7, 0.7, 0), (0, 0, -1), (0.7, 0.7, 0), (0, 0, -1), (0, 0, 1),
                     _jit((-170, -70), (-40, 40), (0, 0))),
    # one hand over the other, both palms down, same direction: heavy occlusion
    "stacked": _tmpl(("flat", "relaxed", "cup", "spread"), ("flat", "relaxed", "fist", "spread"),
                     (0, 1, 0), (0, 0, -1), (0, 1, 0), (0, 0, -1), (0, 0, -1), _jit((-40, 40), (-40, 40), (0, 0))),
    # fist resting on the other, upturned palm
    "fist_on_palm": _tmpl(("fist",), ("flat", "relaxed", "cup"), (0, 1, 0), (0, 0, -1), (0, 1, 0), (0, 0, 1),
                          (0, 0, -1), _jit((-25, 25), (-30, 30), (0, 0))),
    # index finger pressing the other palm
    "point_touch": _tmpl(("point",), ("flat", "relaxed", "spread"), (-1, 0, 0), (0, 0, -1), (0, 0, 1), (1, 0, 0),
                         (-1, 0, 0), _jit((0, 0), (-25, 25), (-100, -40))),
    # both hands pinching, fingertips meeting
    "pinch_touch": _tmpl(("pinch", "ok"), ("pinch", "ok"), (-0.6, 0.8, 0), (0, 0, -1), (0.6, 0.8, 0), (0, 0, -1),
                         (-1, 0, 0), _jit((0, 0), (-20, 20), (-20, 20))),
    # crossed fingers shown next to the other hand's palm
    "crossed_fingers": _tmpl(("crossed_fingers", "victory"), ("flat", "relaxed", "thumbs_up", None), (0, 0, 1),
                             (0, -1, 0), (0, 0, 1), (-1, 0, 0), (-1, 0, 0), _jit((0, 0), (-40, 10), (-40, 40))),
    # one hand cupping the other's fist
    "cover": _tmpl(("cup", "hook"), ("fist", "thumbs_up"), (0, 1, 0), (0, 0, -1), (0, 1, 0), (-1, 0, 0),
                   (0, 0, -1), _jit((-20, 20), (-60, 0), (0, 0))),
}


def _free(g: torch.Generator) -> TemplateSample:
    """Random orientations, prior articulations, random approach direction."""

    def unit() -> Tensor:
        v = torch.randn(3, generator=g, dtype=torch.float64)
        return v / torch.linalg.norm(v)

    f = (unit(), unit())
    n = tuple(torch.linalg.cross(fk, unit()) for fk in f)  # orthogonal to the finger direction
    return TemplateSample((None, None), f, n, unit(), torch.zeros(3, dtype=torch.float64))


TEMPLATES["free"] = _free


@dataclass
class HandPlacement:
    """One hand in the world: ``rotmats`` (16, 3, 3) float64 (global + 15 local, MANO order)
    and ``wrist`` (3,) mm."""

    rotmats: Tensor
    wrist: Tensor


@dataclass
class SceneKey:
    """Both hands at one keyframe (pair frame)."""

    right: HandPlacement
    left: HandPlacement


@dataclass
class Sequence:
    """A smooth two-hand sequence in the world frame.

    Attributes:
        template: interaction template name.
        rotmats: {side: (L, 16, 3, 3) float64}.
        wrists: {side: (L, 3) float64 mm}.
        stats: counters (collision / distance rejections, fallbacks).
    """

    template: str
    rotmats: dict[str, Tensor]
    wrists: dict[str, Tensor]
    stats: dict[str, int] = field(default_factory=dict)


def slerp(R0: Tensor, R1: Tensor, t: Tensor) -> Tensor:
    """Geodesic interpolation of rotations: R0 (*, 3, 3), R1 (*, 3, 3), t (T,) in [0, 1]
    -> (T, *, 3, 3) ``R0 · exp(t · log(R0ᵀ R1))``."""
    w = matrix_to_axis_angle(R0.transpose(-1, -2) @ R1)  # (*, 3)
    shape = (-1,) + (1,) * w.dim()
    return R0 @ axis_angle_to_matrix(t.to(w.dtype).reshape(shape) * w)


class KeyframeRejected(RuntimeError):
    """No valid keyframe in :data:`MAX_KEY_TRIES` placements (:func:`sample_keyframe`)."""


def _mirror_key(key: SceneKey) -> SceneKey:
    """Swap roles by the x-reflection: the mirror of a right hand is a left hand."""

    def m(p: HandPlacement) -> HandPlacement:
        R = p.rotmats.clone()
        R[0] = MIRROR_X @ R[0] @ MIRROR_X
        R[1:] = MIRROR_X @ R[1:] @ MIRROR_X
        return HandPlacement(R, MIRROR_X @ p.wrist)

    return SceneKey(right=m(key.left), left=m(key.right))


def _pose(model: HandModel, side: Side, key: SceneKey | HandPlacement, betas: Tensor) -> HandOutput:
    p = key
    out = model(p.rotmats[None], betas[None].to(torch.float64), side)
    return out.translate(p.wrist[None])


def sample_keyframe(
    template: str,
    model: HandModel,
    collide: Callable,
    betas: dict[str, Tensor],
    g: torch.Generator,
    stats: dict[str, int],
    poses: tuple[str | None, str | None] | None = None,
    swap: bool = False,
) -> tuple[SceneKey, tuple[str | None, str | None]]:
    """One non-colliding keyframe of ``template`` in the canonical pair frame.

    Args:
        template: key of :data:`TEMPLATES`.
        model: hand model (``model(rotmats (B,16,3,3), betas (B,10), side) -> HandOutput``).
        collide: ``collide(right_out, left_out) -> (B,) bool``.
        betas: {side: (10,)} shape of each hand.
        g: RNG.
        stats: counters updated in place (``collision_rejections``, ``distance_rejections``).
        poses: force the pose names (right, left) (used for the keyframes of one sequence).
        swap: mirror the scene so the roles of the hands are exchanged.

    Returns:
        ``(key, pose_names)``.

    Raises:
        KeyframeRejected: no valid placement in :data:`MAX_KEY_TRIES` tries (with ``poses``
            forced, some pose pairs collide in most placements); :func:`sample_sequence` then
            draws the sequence again.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}: expected one of {sorted(TEMPLATES)}")
    for _ in range(MAX_KEY_TRIES):
        ts = TEMPLATES[template](g)
        names = poses if poses is not None else tuple(
            None if float(torch.rand(1, generator=g)) < P_PRIOR_POSE else n for n in ts.poses
        )
        # in the mirrored scene the roles swap: the canonical right hand becomes the left one
        sides: tuple[Side, Side] = ("left", "right") if swap else ("right", "left")
        place = []
        for k in range(2):
            Rg = _random_rotation(ORIENT_JITTER_DEG, g) @ orient(("right", "left")[k], ts.finger[k], ts.palm[k])
            fingers = sample_articulation(names[k], sides[k], g, model.pose_prior)
            if swap:  # articulation drawn for the final side; express it in canonical terms
                fingers = MIRROR_X @ fingers @ MIRROR_X
            place.append(torch.cat([Rg[None], fingers], 0))
        offset = ts.offset + torch.randn(3, generator=g, dtype=torch.float64) * 5.0
        right = HandPlacement(place[0], torch.zeros(3, dtype=torch.float64))
        bR = betas[sides[0]]
        bL = betas[sides[1]]
        out_r = _pose(model, "right", right, bR)
        out_l = _pose(model, "left", HandPlacement(place[1], offset), bL)
        G = APPROACH_GRID_MM.shape[0]
        shifts = APPROACH_GRID_MM[:, None] * ts.axis[None]  # (G, 3)
        cand = HandOutput(out_l.vertices.expand(G, -1, -1) + shifts[:, None], out_l.joints.expand(G, -1, -1) + shifts[:, None])
        ref = HandOutput(out_r.vertices.expand(G, -1, -1), out_r.joints.expand(G, -1, -1))
        hit = collide(ref, cand)  # (G,) from far to near
        if bool(hit[0]):
            stats["collision_rejections"] = stats.get("collision_rejections", 0) + 1
            continue
        first = int(hit.to(torch.int64).argmax()) if bool(hit.any()) else G
        d_contact = float(APPROACH_GRID_MM[first - 1])
        gap = _u(g, *(GAP_CLOSE_MM if float(torch.rand(1, generator=g)) < P_CLOSE else GAP_TOUCH_MM))
        wrist_l = offset + (d_contact + gap) * ts.axis
        dist = float(torch.linalg.norm(wrist_l))
        if not WRIST_DISTANCE_MM[0] <= dist <= WRIST_DISTANCE_MM[1]:
            stats["distance_rejections"] = stats.get("distance_rejections", 0) + 1
            continue
        key = SceneKey(right, HandPlacement(place[1], wrist_l))
        return (_mirror_key(key) if swap else key), names  # type: ignore[return-value]
    raise KeyframeRejected(f"template {template!r}: no valid keyframe in {MAX_KEY_TRIES} tries")


def _pair_rotation(g: torch.Generator) -> Tensor:
    yaw = _u(g, -math.pi, math.pi)
    tilt_axis = _u(g, -math.pi, math.pi)
    tilt = math.radians(MAX_PAIR_TILT_DEG) * math.sqrt(_u(g, 0.0, 1.0))
    Rz = _rot(_t([0.0, 0.0, yaw]))
    Rt = _rot(_t([math.cos(tilt_axis) * tilt, math.sin(tilt_axis) * tilt, 0.0]))
    return Rt @ Rz


def interpolate_keys(keys: list[tuple[SceneKey, Tensor, Tensor]], length: int) -> tuple[dict, dict]:
    """Frames between world-frame keyframes.

    Args:
        keys: list of ``(key, pair_rotation (3,3), pair_translation (3,))``, evenly spaced.
        length: number of frames L (keyframes at ``linspace(0, L−1, len(keys))``).

    Returns:
        ``(rotmats {side: (L,16,3,3)}, wrists {side: (L,3)})`` in the world frame.
    """
    world = []
    for key, P, t in keys:
        w = {}
        for side, hp in (("right", key.right), ("left", key.left)):
            R = hp.rotmats.clone()
            R[0] = P @ R[0]
            w[side] = (R, P @ hp.wrist + t)
        world.append(w)
    rot = {s: torch.empty(length, 16, 3, 3, dtype=torch.float64) for s in ("right", "left")}
    wr = {s: torch.empty(length, 3, dtype=torch.float64) for s in ("right", "left")}
    pos = torch.linspace(0, length - 1, len(keys), dtype=torch.float64) if len(keys) > 1 else torch.zeros(1)
    for f in range(length):
        k = min(int(torch.searchsorted(pos, torch.tensor(float(f), dtype=torch.float64), right=True)) - 1, len(keys) - 2)
        k = max(k, 0)
        for s in ("right", "left"):
            if len(keys) == 1:
                rot[s][f], wr[s][f] = world[0][s]
                continue
            a = (f - float(pos[k])) / max(float(pos[k + 1] - pos[k]), 1e-9)
            (R0, p0), (R1, p1) = world[k][s], world[k + 1][s]
            rot[s][f] = slerp(R0, R1, torch.tensor([a], dtype=torch.float64))[0]
            wr[s][f] = (1 - a) * p0 + a * p1
    return rot, wr


def sample_sequence(
    length: int,
    model: HandModel,
    collide: Callable,
    betas: dict[str, Tensor],
    g: torch.Generator,
    template: str | None = None,
    center_jitter_mm: float = 30.0,
) -> Sequence:
    """A smooth, non-colliding sequence of ``length`` frames in the world frame (pair centred
    near the world origin). See the module docstring."""
    if length < 1:
        raise ValueError(f"sequence length must be >= 1, got {length}")
    stats: dict[str, int] = {"collision_rejections": 0, "distance_rejections": 0, "sequence_rejections": 0,
                             "static_fallbacks": 0}
    name = template if template is not None else _choice(g, sorted(TEMPLATES))
    swap = float(torch.rand(1, generator=g)) < 0.5
    P0 = _pair_rotation(g)
    center = torch.randn(3, generator=g, dtype=torch.float64) * center_jitter_mm
    n_keys = 1 if length == 1 else (2 if length < 10 else 3)
    for attempt in range(MAX_SEQUENCE_TRIES + 1 + MAX_STATIC_TRIES):
        static = attempt >= MAX_SEQUENCE_TRIES  # give up on motion: the first keyframe held still
        first = None
        try:
            first, names = sample_keyframe(name, model, collide, betas, g, stats, swap=swap)
            if attempt <= MAX_SEQUENCE_TRIES:  # (the first static try draws them too: same data as before)
                keys = [first] + [sample_keyframe(name, model, collide, betas, g, stats, poses=names, swap=swap)[0]
                                  for _ in range(n_keys - 1)]
        except KeyframeRejected:  # e.g. a pose pair that collides in most placements: draw the sequence again
            if first is None or not static:
                stats["sequence_rejections"] += 1
                continue
        if static:
            keys = [first]
        placed = []
        for i, key in enumerate(keys):
            P = P0 if i == 0 else _random_rotation(KEY_DRIFT_DEG / math.sqrt(3), g) @ P0
            mid = 0.5 * (key.right.wrist + key.left.wrist)
            placed.append((key, P, center - P @ mid))
        rot, wr = interpolate_keys(placed, length)
        out_r = model(rot["right"], betas["right"].expand(length, -1).to(torch.float64), "right").translate(wr["right"])
        out_l = model(rot["left"], betas["left"].expand(length, -1).to(torch.float64), "left").translate(wr["left"])
        d = torch.linalg.norm(out_r.joints[:, IH_WRIST] - out_l.joints[:, IH_WRIST], dim=-1)
        bad = collide(out_r, out_l) | (d < WRIST_DISTANCE_MM[0]) | (d > WRIST_DISTANCE_MM[1])
        if not bool(bad.any()):
            stats["static_fallbacks"] += int(static)
            return Sequence(name, rot, wr, stats)
        stats["sequence_rejections"] += 1
    raise RuntimeError(f"template {name!r}: no valid sequence in {MAX_SEQUENCE_TRIES + 1 + MAX_STATIC_TRIES} tries "
                       f"({MAX_STATIC_TRIES + 1} of them static): the hand model, the template or the collision test "
                       "is inconsistent")
