"""Build the ``openhand`` template once: anatomy table, implicit surface, mesh, skinning
weights and shape basis (numpy float64, no data files).

Frame (the same as MANO's right hand, see ``docs/openhand.md``): millimetres, wrist joint at
the origin, fingers point towards −x, the thumb side is +z, the palm faces −y (the back of
the hand +y).

Construction:

1. A smooth implicit function (negative inside): tapered capsules for the phalanges, a
   flattened fan of metacarpal cones for the palm, thenar/hypothenar pads and a short wrist
   stub, combined with polynomial smooth-minimum blends.
2. Naive *surface nets* on a regular grid give one closed quad mesh (every grid edge with a
   sign change becomes one outward-oriented quad), split into triangles.
3. A few rounds of Laplacian smoothing, each followed by projection back onto the surface.
4. Skinning weights along each finger chain with smoothstep transitions around the joints
   and soft chain membership (no seams in the finger webs).
5. Ten linear shape directions: bone-length/width scalings per bone, blended by the
   skinning weights (the secant of the exact deformation at β = ±1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from handflow.constants import FINGER_NAMES, MANO_FINGERS, MANO_PARENTS, MANO_WRIST, NUM_BETAS, NUM_MANO_JOINTS

# ------------------------------------------------------------------------- anatomy (mm)
#: palm normal (out of the palm) of the right hand in the rest frame
PALM_NORMAL = np.array([0.0, -1.0, 0.0])
#: per finger: MCP (thumb: CMC) position, direction, 3 bone lengths (joint->joint->joint->tip
#: surface), radii at the 3 joints and the tip
FINGER_ANATOMY: dict[str, dict[str, object]] = {
    "index": dict(root=(-86.0, 3.0, 23.0), dir=(-1.0, 0.0, 0.12), lengths=(41.0, 24.0, 21.0), radii=(9.6, 8.6, 7.7, 6.9)),
    "middle": dict(root=(-90.0, 3.0, 4.0), dir=(-1.0, 0.0, 0.02), lengths=(46.0, 27.0, 22.0), radii=(9.9, 8.9, 7.9, 7.1)),
    "ring": dict(root=(-85.0, 2.0, -15.0), dir=(-1.0, 0.0, -0.14), lengths=(43.0, 26.0, 21.0), radii=(9.3, 8.4, 7.5, 6.8)),
    "pinky": dict(root=(-76.0, 0.0, -30.0), dir=(-1.0, 0.0, -0.30), lengths=(33.0, 20.0, 19.0), radii=(8.3, 7.5, 6.8, 6.2)),
    "thumb": dict(root=(-24.0, -9.0, 19.0), dir=(-0.72, -0.20, 0.66), lengths=(42.0, 32.0, 27.0), radii=(12.5, 10.4, 9.4, 8.2)),
}  # fmt: skip
#: width of the smooth transition of skinning weights around each joint (root, 2nd, 3rd)
WEIGHT_HALF_WIDTH = {"finger": (8.0, 5.0, 4.0), "thumb": (13.0, 7.0, 5.0)}
#: softness (mm) of assigning a vertex to the nearest finger chain
CHAIN_SOFTNESS = 3.0
#: grid spacings (mm) tried in turn for the surface-net extraction; the first giving a closed
#: genus-0 manifold is used (the choice is deterministic)
GRID_SPACINGS = (4.6, 4.5, 4.7, 4.4, 4.8)
SMOOTH_ROUNDS = 6
#: shape directions: name and the per-σ relative change of each scale factor
BETA_NAMES: tuple[str, ...] = (
    "size", "finger_length", "palm_width", "finger_girth", "palm_thickness",
    "thumb_length", "index_ring_ratio", "pinky_length", "distal_proportion", "palm_length",
)  # fmt: skip


def _unit(v: object) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def rest_joints() -> tuple[np.ndarray, np.ndarray]:
    """Rest skeleton: ``(joints (16, 3), tip_centres (5, 3))``; tip centres are the centres
    of the fingertip end caps (FINGER_NAMES order), the surface tip lies one radius further."""
    J = np.zeros((NUM_MANO_JOINTS, 3))
    tips = np.zeros((len(FINGER_NAMES), 3))
    for k, f in enumerate(FINGER_NAMES):
        a = FINGER_ANATOMY[f]
        d = _unit(a["dir"])
        p = np.asarray(a["root"], dtype=np.float64)
        L = a["lengths"]
        r_tip = a["radii"][3]
        for level, j in enumerate(MANO_FINGERS[f]):
            J[j] = p
            p = p + d * (L[level] - (r_tip if level == 2 else 0.0))
        tips[k] = p
    J[MANO_WRIST] = 0.0
    return J, tips


# ------------------------------------------------------------------ implicit surface
def _round_cone(P: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float, rb: float, yscale: float = 1.0) -> np.ndarray:
    """Approximate signed distance to a tapered capsule a->b (radii ra, rb); ``yscale`` > 1
    flattens it along y. P (N, 3) -> (N,)."""
    Q = P.copy()
    Q[:, 1] *= yscale
    a = a * np.array([1.0, yscale, 1.0])
    b = b * np.array([1.0, yscale, 1.0])
    ab = b - a
    t = np.clip(((Q - a) @ ab) / (ab @ ab), 0.0, 1.0)
    d = np.linalg.norm(Q - (a + t[:, None] * ab), axis=1)
    return d - (ra + t * (rb - ra))


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum with blend radius ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def hand_sdf(P: np.ndarray) -> np.ndarray:
    """Implicit function of the rest right hand (negative inside), P (N, 3) mm -> (N,)."""
    J, tips = rest_joints()
    # palm: a flattened fan of metacarpal cones, wrist stub, thenar and hypothenar pads
    wrist_z = {"index": 11.0, "middle": 3.0, "ring": -5.0, "pinky": -12.0}
    palm = None
    for f, zw in wrist_z.items():
        mcp = J[MANO_FINGERS[f][0]] + np.array([0.0, -4.0, 0.0])
        d = _round_cone(P, np.array([-10.0, -2.0, zw]), mcp, 15.0, 14.0, yscale=1.35)
        palm = d if palm is None else _smin(palm, d, 8.0)
    wrist = _round_cone(P, np.array([6.0, 0.0, -13.0]), np.array([6.0, 0.0, 11.0]), 17.0, 17.0, yscale=1.25)
    palm = _smin(palm, wrist, 12.0)
    hypo = _round_cone(P, np.array([-18.0, -5.0, -17.0]), np.array([-62.0, -5.0, -28.0]), 13.0, 11.0, yscale=1.2)
    palm = _smin(palm, hypo, 8.0)
    t1, t2 = J[MANO_FINGERS["thumb"][0]], J[MANO_FINGERS["thumb"][1]]
    thenar_tip = 0.35 * t1 + 0.65 * t2 + np.array([0.0, -2.0, -6.0])
    thenar = _round_cone(P, np.array([-12.0, -6.0, 10.0]), thenar_tip, 15.0, 11.0, yscale=1.15)
    palm = _smin(palm, thenar, 10.0)
    # fingers: hard union inside a finger, hard union between fingers, smooth into the palm
    fingers = None
    for k, f in enumerate(FINGER_NAMES):
        r = FINGER_ANATOMY[f]["radii"]
        pts = [J[j] for j in MANO_FINGERS[f]] + [tips[k]]
        d = np.minimum.reduce([_round_cone(P, pts[i], pts[i + 1], r[i], r[i + 1]) for i in range(3)])
        if f == "thumb":
            palm = _smin(palm, d, 9.0)
        else:
            fingers = d if fingers is None else np.minimum(fingers, d)
    return _smin(palm, fingers, 7.0)


def _gradient(P: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    g = np.zeros_like(P)
    for a in range(3):
        e = np.zeros(3)
        e[a] = eps
        g[:, a] = (hand_sdf(P + e) - hand_sdf(P - e)) / (2 * eps)
    return g


def _project(P: np.ndarray, steps: int = 3) -> np.ndarray:
    """Newton steps onto the zero level set."""
    for _ in range(steps):
        g = _gradient(P)
        P = P - (hand_sdf(P) / np.maximum((g * g).sum(1), 1e-9))[:, None] * g
    return P


# ----------------------------------------------------------------------- surface nets
def surface_nets(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed triangle mesh of :func:`hand_sdf` by naive surface nets on a regular grid.

    Returns ``(vertices (V, 3), faces (F, 3))`` with outward (counter-clockwise) winding.
    """
    lo, hi = np.array([-205.0, -55.0, -60.0]), np.array([40.0, 35.0, 100.0])
    n = np.ceil((hi - lo) / spacing).astype(int) + 1
    axes = [lo[a] + spacing * np.arange(n[a]) for a in range(3)]
    G = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    F = hand_sdf(G.reshape(-1, 3)).reshape(G.shape[:3])
    if (F[[0, -1]] < 0).any() or (F[:, [0, -1]] < 0).any() or (F[:, :, [0, -1]] < 0).any():
        raise RuntimeError("openhand: the hand leaves the meshing grid")
    inside = F < 0
    # a vertex in every cell whose 8 corners disagree: mean of the edge crossings
    corners = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    cell_shape = tuple(n - 1)
    acc = np.zeros(cell_shape + (3,))
    cnt = np.zeros(cell_shape)
    for c0 in corners:
        for a in range(3):
            if c0[a] == 1:
                continue
            c1 = list(c0)
            c1[a] = 1
            s0 = tuple(slice(c, c + cell_shape[d]) for d, c in enumerate(c0))
            s1 = tuple(slice(c, c + cell_shape[d]) for d, c in enumerate(c1))
            f0, f1 = F[s0], F[s1]
            cross = (f0 < 0) != (f1 < 0)
            t = np.where(cross, f0 / np.where(cross, f0 - f1, 1.0), 0.0)
            p = G[s0] + t[..., None] * (G[s1] - G[s0])
            acc += np.where(cross[..., None], p, 0.0)
            cnt += cross
    active = cnt > 0
    index = -np.ones(cell_shape, dtype=np.int64)
    index[active] = np.arange(int(active.sum()))
    verts = acc[active] / cnt[active][:, None]
    # one quad per grid edge with a sign change, ordered counter-clockwise about its axis
    quads = []
    offsets = {0: [(0, -1, -1), (0, 0, -1), (0, 0, 0), (0, -1, 0)],
               1: [(-1, 0, -1), (-1, 0, 0), (0, 0, 0), (0, 0, -1)],
               2: [(-1, -1, 0), (0, -1, 0), (0, 0, 0), (-1, 0, 0)]}  # fmt: skip
    for a in range(3):
        e = [0, 0, 0]
        e[a] = 1
        lo_s = tuple(slice(0, n[d] - e[d]) for d in range(3))
        hi_s = tuple(slice(e[d], n[d]) for d in range(3))
        sign_change = inside[lo_s] != inside[hi_s]
        idx = np.argwhere(sign_change)
        q = np.stack([index[tuple((idx + np.array(o)).T)] for o in offsets[a]], 1)
        outward_positive = inside[lo_s][sign_change]  # inside at the low end -> normal +e_a
        q[~outward_positive] = q[~outward_positive][:, ::-1]
        quads.append(q)
    Q = np.concatenate(quads)
    if (Q < 0).any():
        raise RuntimeError("openhand: surface-net quad touches the grid border")
    # split each quad along its shorter diagonal
    d02 = np.linalg.norm(verts[Q[:, 0]] - verts[Q[:, 2]], axis=1)
    d13 = np.linalg.norm(verts[Q[:, 1]] - verts[Q[:, 3]], axis=1)
    use02 = d02 <= d13
    tri_a = np.where(use02[:, None], Q[:, [0, 1, 2]], Q[:, [0, 1, 3]])
    tri_b = np.where(use02[:, None], Q[:, [0, 2, 3]], Q[:, [1, 2, 3]])
    return verts, np.concatenate([tri_a, tri_b])


def is_closed_genus0(faces: np.ndarray, num_vertices: int) -> bool:
    """Every undirected edge in exactly two faces, used once per direction, and V − E + F = 2."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    und, counts = np.unique(np.sort(directed, 1), axis=0, return_counts=True)
    consistent = len(np.unique(directed, axis=0)) == len(directed)
    euler = num_vertices - len(und) + len(faces)
    return bool((counts == 2).all() and consistent and euler == 2)


def _smooth(verts: np.ndarray, faces: np.ndarray, rounds: int) -> np.ndarray:
    """Laplacian smoothing (umbrella operator, factor 0.5) with re-projection each round."""
    V = len(verts)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    deg = np.bincount(edges[:, 0], minlength=V).astype(np.float64)
    for _ in range(rounds):
        nb = np.zeros_like(verts)
        np.add.at(nb, edges[:, 0], verts[edges[:, 1]])
        verts = _project(0.5 * verts + 0.5 * nb / deg[:, None])
    return verts


# ----------------------------------------------------------------------- skinning
def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def skinning_weights(verts: np.ndarray) -> np.ndarray:
    """(V, 16) weights: per finger chain wrist->root->2nd->3rd->tip, smoothstep transitions
    around the joints, soft membership over chains by distance."""
    J, tips = rest_joints()
    V = len(verts)
    per_chain, dist = [], []
    for k, f in enumerate(FINGER_NAMES):
        js = MANO_FINGERS[f]
        pts = np.stack([J[MANO_WRIST]] + [J[j] for j in js] + [tips[k]])
        seg_len = np.linalg.norm(pts[1:] - pts[:-1], axis=1)
        cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        best_d = np.full(V, np.inf)
        best_s = np.zeros(V)
        for i in range(len(seg_len)):
            ab = pts[i + 1] - pts[i]
            t = np.clip(((verts - pts[i]) @ ab) / (ab @ ab), 0.0, 1.0)
            d = np.linalg.norm(verts - (pts[i] + t[:, None] * ab), axis=1)
            better = d < best_d
            best_d[better] = d[better]
            best_s[better] = cum[i] + t[better] * seg_len[i]
        widths = WEIGHT_HALF_WIDTH["thumb" if f == "thumb" else "finger"]
        g = [_smoothstep((best_s - cum[1 + lv] + widths[lv]) / (2 * widths[lv])) for lv in range(3)]
        w = np.zeros((V, NUM_MANO_JOINTS))
        w[:, MANO_WRIST] = 1 - g[0]
        w[:, js[0]] = g[0] - g[1]
        w[:, js[1]] = g[1] - g[2]
        w[:, js[2]] = g[2]
        per_chain.append(w)
        dist.append(best_d)
    D = np.stack(dist, 1)
    member = np.exp(-(D - D.min(1, keepdims=True)) / CHAIN_SOFTNESS)
    member /= member.sum(1, keepdims=True)
    W = np.einsum("vc,cvj->vj", member, np.stack(per_chain))
    return W / W.sum(1, keepdims=True)


# ------------------------------------------------------------------------ shape basis
def _scale_factors(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative scales for one β (10,): palm (x, y, z), per-joint bone length (16,) and
    girth (16,) multipliers (joint j scales the bone from j to its child)."""
    b = dict(zip(BETA_NAMES, beta))
    size = 1 + 0.06 * b["size"]
    palm = size * np.array([1 - 0.02 * b["finger_length"] + 0.04 * b["palm_length"],
                            1 + 0.07 * b["palm_thickness"], 1 + 0.05 * b["palm_width"]])  # fmt: skip
    length = np.full(NUM_MANO_JOINTS, size)
    girth = np.full(NUM_MANO_JOINTS, size * (1 + 0.07 * b["finger_girth"]))
    for f in FINGER_NAMES:
        js = MANO_FINGERS[f]
        if f == "thumb":
            length[list(js)] *= 1 + 0.05 * b["thumb_length"]
        else:
            length[list(js)] *= 1 + 0.04 * b["finger_length"]
        length[js[0]] *= 1 - 0.02 * b["distal_proportion"]
        length[list(js[1:])] *= 1 + 0.04 * b["distal_proportion"]
    length[list(MANO_FINGERS["index"])] *= 1 + 0.03 * b["index_ring_ratio"]
    length[list(MANO_FINGERS["ring"])] *= 1 - 0.03 * b["index_ring_ratio"]
    length[list(MANO_FINGERS["pinky"])] *= 1 + 0.05 * b["pinky_length"]
    return palm, length, girth


def deform(verts: np.ndarray, weights: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact (non-linear) shape deformation for one β: ``(verts (V,3), joints (16,3))``.

    The palm scales about the wrist; each finger bone scales along its axis (length) and
    across it (girth) and follows its shaped parent joint; vertices blend the per-bone
    affine maps with the skinning weights."""
    J, tips = rest_joints()
    palm, length, girth = _scale_factors(beta)
    children = {j: [c for c in range(NUM_MANO_JOINTS) if MANO_PARENTS[c] == j] for j in range(NUM_MANO_JOINTS)}
    tip_of = {MANO_FINGERS[f][2]: tips[k] for k, f in enumerate(FINGER_NAMES)}
    Jn = J.copy()
    out = np.zeros_like(verts)
    out += weights[:, [MANO_WRIST]] * (verts * palm)
    for j in range(1, NUM_MANO_JOINTS):
        p = MANO_PARENTS[j]
        Jn[j] = J[j] * palm if p == MANO_WRIST else Jn[p] + length[p] * (J[j] - J[p])
    for j in range(1, NUM_MANO_JOINTS):
        end = J[children[j][0]] if children[j] else tip_of[j]
        a = _unit(end - J[j])
        rel = verts - J[j]
        along = (rel @ a)[:, None] * a
        out += weights[:, [j]] * (Jn[j] + length[j] * along + girth[j] * (rel - along))
    return out, Jn


@dataclass(frozen=True)
class OpenHandTemplate:
    """Everything :class:`~handflow.hand.openhand.OpenHand` needs (numpy float64).

    Attributes:
        vertices: (V, 3) rest vertices, mm.
        faces: (F, 3) int64, outward winding.
        weights: (V, 16) skinning weights.
        joints: (16, 3) rest joints.
        shapedirs: (V, 3, 10) vertex shape directions (mm per σ).
        joint_shapedirs: (16, 3, 10) joint shape directions.
        tip_vertices: (5,) fingertip vertex ids, FINGER_NAMES order.
    """

    vertices: np.ndarray
    faces: np.ndarray
    weights: np.ndarray
    joints: np.ndarray
    shapedirs: np.ndarray
    joint_shapedirs: np.ndarray
    tip_vertices: np.ndarray


@lru_cache(maxsize=1)
def build_template() -> OpenHandTemplate:
    """Build (once per process, ~1 s) the openhand template."""
    for spacing in GRID_SPACINGS:
        verts, faces = surface_nets(spacing)
        if is_closed_genus0(faces, len(verts)):
            break
    else:
        raise RuntimeError("openhand: no grid spacing gave a closed genus-0 surface")
    verts = _smooth(_project(verts), faces, SMOOTH_ROUNDS)
    W = skinning_weights(verts)
    J, tips = rest_joints()
    S = np.zeros(verts.shape + (NUM_BETAS,))
    SJ = np.zeros(J.shape + (NUM_BETAS,))
    for k in range(NUM_BETAS):
        e = np.zeros(NUM_BETAS)
        e[k] = 1.0
        vp, jp = deform(verts, W, e)
        vm, jm = deform(verts, W, -e)
        S[..., k] = (vp - vm) / 2
        SJ[..., k] = (jp - jm) / 2
    # fingertip vertex: furthest along the distal bone among the distal part's vertices
    labels = W.argmax(1)
    tip_ids = []
    for k, f in enumerate(FINGER_NAMES):
        j3 = MANO_FINGERS[f][2]
        a = _unit(tips[k] - J[j3])
        score = np.where(labels == j3, (verts - J[j3]) @ a, -np.inf)
        tip_ids.append(int(score.argmax()))
    return OpenHandTemplate(verts, faces.astype(np.int64), W, J, S, SJ, np.array(tip_ids, dtype=np.int64))


# --------------------------------------------------------------------------- anatomical frames
def _unit_np(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


#: palmar direction of the thumb per level (CMC, MCP, IP): the CMC flexes towards the palm
#: (−y), the MCP and IP curl across it towards the fingers (−z), as the thumb nail faces
#: sideways
THUMB_PALMAR = (_unit_np((0.0, -1.0, -0.4)), _unit_np((0.0, -0.5, -1.0)), _unit_np((0.0, -0.5, -1.0)))


def anatomical_axes() -> Tensor:
    """(15, 3, 3) float64 anatomical frames of the 15 finger joints (MANO order 1..15) in the
    right hand's rest frame. Columns: ``[twist, spread, flex]``.

    * twist: the bone direction (joint -> child joint or tip);
    * flex: ``normalize(twist × palm_normal)`` (≈ +z for the four fingers): a positive
      rotation about it bends the finger towards the palm (−y);
    * spread: ``flex × twist`` mirrored so that a positive rotation moves the finger
      towards the thumb side (≈ +y for the fingers).

    For the thumb the palm normal is replaced by the thumb's own palmar direction
    (:data:`THUMB_PALMAR`), so positive flexion curls the thumb across the palm.
    """
    J, tips = rest_joints()
    frames = np.zeros((NUM_MANO_JOINTS - 1, 3, 3))
    for k, f in enumerate(FINGER_NAMES):
        js = MANO_FINGERS[f]
        for level, j in enumerate(js):
            normal = PALM_NORMAL if f != "thumb" else THUMB_PALMAR[level]
            end = J[js[level + 1]] if level < 2 else tips[k]
            twist = _unit(end - J[j])
            flex = _unit(np.cross(twist, normal))
            spread = np.cross(twist, flex)  # positive rotation towards the thumb side
            frames[j - 1] = np.stack([twist, spread, flex], 1)
    return torch.from_numpy(frames)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)
