"""MultiHands engine throughput: accepted annotations per second per CPU core at 128 px.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_multihands.py [--images 32] [--size 128]
        [--data DIR --split test] [--device cpu|cuda]

Targets: a dataset split (``--data``, needs ``handflow.data.InterHandDataset``) or, by default,
interacting two-hand scenes built from OpenHand prior samples (hands side by side and partly
overlapping, so that occlusions occur). Visibility: ``handflow.render.visibility`` when it is
installed; otherwise a dense surface-splat z-buffer defined here (said so in the output).

Prints the pass rate per criterion and the time split between perturbation, posing
(joints only, then full meshes of the survivors), cheap checks (reprojection, prior, shape,
collision) and visibility.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections import defaultdict

import torch

from handflow.constants import NUM_HAND_JOINTS, NUM_JOINTS, SIDES
from handflow.geometry.camera import project
from handflow.geometry.rotations import axis_angle_to_matrix
from handflow.hand.collision import collide
from handflow.hand.registry import load_hand_model
from handflow.multihands import engine
from handflow.multihands.checks import prior_threshold
from handflow.multihands.diagnostics import format_summary, summarize
from handflow.multihands.generate import GenerateConfig, targets_from_items
from handflow.multihands.io import MultiHandsRecord
from handflow.params import pack, pack_hand, unpack

#: barycentric sample points per triangle of the stand-in splat renderer
SPLAT_BARY = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3],
                           [0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])
#: a joint is visible when its own hand's surface at its pixel is at most this far in front (mm)
SPLAT_TOLERANCE_MM = 12.0


def splat_visibility(verts, faces, joints, K, hw, chunk: int = 64):
    """Stand-in :data:`~handflow.multihands.engine.VisibilityFn`: dense surface-point z-buffer."""
    out = []
    for s in range(0, verts.shape[0], chunk):
        out.append(_splat(verts[s : s + chunk], faces, joints[s : s + chunk], K[s : s + chunk], hw))
    return torch.cat(out) if out else torch.zeros(0, 2, NUM_HAND_JOINTS, dtype=torch.bool)


def _splat(verts, faces, joints, K, hw):
    P = verts.shape[0]
    H, W = hw
    pts, own = [], []
    for h in range(2):
        tri = verts[:, h][:, faces[h]]  # (P, F, 3, 3)
        p = torch.einsum("kc,pfcd->pfkd", SPLAT_BARY.to(tri), tri).reshape(P, -1, 3)
        pts.append(p)
        own.append(torch.full(p.shape[:2], h, dtype=torch.long))
    v, hand = torch.cat(pts, 1), torch.cat(own, 1)
    uv = project(v, K)
    x, y = uv[..., 0].floor().long(), uv[..., 1].floor().long()
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    pix = torch.where(inside, y * W + x, H * W)
    zb = torch.full((P, H * W + 1), math.inf, dtype=v.dtype)
    zb.scatter_reduce_(1, pix, v[..., 2], reduce="amin")
    is_min = (v[..., 2] == zb.gather(1, pix)) & inside
    owner = torch.full((P, H * W + 1), -1, dtype=torch.long)
    owner.scatter_reduce_(1, pix, torch.where(is_min, hand, -1), reduce="amax")
    j = joints.reshape(P, NUM_JOINTS, 3)
    ju = project(j, K)
    jx, jy = ju[..., 0].floor().long(), ju[..., 1].floor().long()
    jin = (jx >= 0) & (jx < W) & (jy >= 0) & (jy < H)
    jp = torch.where(jin, jy * W + jx, H * W)
    jh = torch.arange(2).repeat_interleave(NUM_HAND_JOINTS)
    vis = jin & (owner.gather(1, jp) == jh) & (zb.gather(1, jp) >= j[..., 2] - SPLAT_TOLERANCE_MM)
    return vis.reshape(P, 2, NUM_HAND_JOINTS)


def no_visibility(verts, faces, joints, K, hw):
    """Stub: nothing visible (criterion 2 always passes). Measures the engine without rendering."""
    return torch.zeros(joints.shape[:3], dtype=torch.bool, device=joints.device)


def visibility_backend(kind: str = "auto"):
    if kind == "none":
        return no_visibility, "NONE (stub: criterion 2 always passes; engine cost without rendering)"
    if kind == "splat":
        return splat_visibility, "STAND-IN dense surface splat"
    try:
        from handflow.multihands.generate import default_visibility

        return default_visibility(), "handflow.render.visibility.joint_visibility_batch"
    except ImportError:
        return splat_visibility, "STAND-IN dense surface splat (handflow.render.visibility not installed)"


def prior_scenes(model, n: int, size: int, seed: int, vis_fn) -> list[dict]:
    """Interacting scenes from prior samples: palms towards the camera or each other, hands
    overlapping in the image, no collision; as dataset items without image."""
    g = torch.Generator().manual_seed(seed)
    f = 1.6 * size
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=torch.float64)
    items: list[dict] = []
    while len(items) < n:
        rot, betas, root = [], [], []
        for h, side in enumerate(SIDES):
            fingers = model.pose_prior.sample(1, side=side, generator=g).double()[0]
            aa = torch.randn(3, generator=g, dtype=torch.float64) * 0.6 + torch.tensor([math.pi / 2, 0.0, 0.0])
            rot.append(torch.cat([axis_angle_to_matrix(aa)[None], fingers]))
            betas.append(torch.randn(10, generator=g, dtype=torch.float64))
            x = (-1) ** h * (20.0 + 40 * float(torch.rand(1, generator=g)))
            z = 480.0 + 60 * float(torch.rand(1, generator=g)) + 40.0 * h
            root.append(torch.tensor([x, 60.0, z], dtype=torch.float64))
        y = pack(*[pack_hand(rot[h], betas[h], root[h], K, size) for h in range(2)]).float()
        hp = unpack(y, K.float(), size)
        outs = [model(hp[s].rotmats[None], hp[s].betas[None], side=s).translate(hp[s].root[None]) for s in SIDES]
        if bool(collide(*outs).any()):
            continue
        joints = torch.cat([o.joints[0] for o in outs])
        uv = project(joints, K.float())
        if bool(((uv < 0) | (uv > size)).any()):
            continue
        verts = torch.stack([o.vertices for o in outs], 1)
        vis = vis_fn(verts, [model.faces_for(s) for s in SIDES], joints.reshape(1, 2, -1, 3), K.float()[None],
                     (size, size)).reshape(-1)
        items.append({"y": y, "K": K.float(), "joints_2d": uv, "joint_valid": torch.ones(NUM_JOINTS, dtype=torch.bool),
                      "visible": vis, "has_params": True, "meta": {"image_id": len(items)}})
    return items


class Timers:
    """Wrap engine functions and accumulate their wall time."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)

    def wrap(self, module, name: str, label: str) -> None:
        setattr(module, name, self.wrap_fn(getattr(module, name), label))

    def wrap_fn(self, fn, label: str):
        """``fn`` timed; ``functools.wraps`` keeps its signature, so the engine still sees
        optional keywords such as ``query`` (without it, visibility ran on whole crops)."""

        @functools.wraps(fn)
        def timed(*a, **k):
            t0 = time.perf_counter()
            r = fn(*a, **k)
            self.t[label] += time.perf_counter() - t0
            return r

        return timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch-images", type=int, default=32)
    ap.add_argument("--data", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--visibility", choices=("auto", "splat", "none"), default="auto",
                    help="auto: handflow.render if installed, else the splat stand-in")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--proposals", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_hand_model("openhand")
    vis_fn, vis_name = visibility_backend(args.visibility)
    scene_vis = visibility_backend("auto" if args.visibility == "none" else args.visibility)[0]
    if args.data:
        from handflow.multihands.generate import dataset_targets

        targets = dataset_targets(args.data, args.split, args.size)
        targets = targets.index(slice(0, args.images))
        src = f"{args.data} ({args.split})"
    else:
        targets = targets_from_items(prior_scenes(model, args.images, args.size, args.seed, scene_vis), args.size)
        src = "prior-sample interacting scenes"
    cfg = GenerateConfig(image_size=args.size, batch_images=args.batch_images)
    cfg.rounds = args.rounds or cfg.rounds
    cfg.proposals_per_image = args.proposals or cfg.proposals_per_image
    dev = torch.device(args.device)
    model = model.to(dev)
    thr = {s: prior_threshold(model.cpu(), s, cfg.prior_quantile) for s in SIDES}
    model = model.to(dev)
    ecfg = engine.EngineConfig(num=cfg.num, rounds=cfg.rounds, proposals_per_image=cfg.proposals_per_image,
                               pixel_threshold=cfg.threshold_px, prior_thresholds=thr, perturb=cfg.perturb)
    tm = Timers()
    for name, label in (("perturb", "perturb"), ("params_from_state", "canonicalize"),
                        ("state_from_params", "canonicalize"), ("joints_two_hands", "pose joints only"),
                        ("pose_two_hands", "pose full meshes (survivors)"), ("check_reprojection", "cheap checks"),
                        ("check_prior", "cheap checks"), ("check_shape", "cheap checks"),
                        ("check_no_collision", "cheap checks")):
        tm.wrap(engine, name, label)
    vis_timed = tm.wrap_fn(vis_fn, "visibility (survivors)")
    stats = engine.CriterionStats()
    t0 = time.perf_counter()
    counts, records = [], {}
    for s in range(0, len(targets), args.batch_images):
        g = torch.Generator().manual_seed(args.seed * 1000 + s)
        sub = targets.index(slice(s, s + args.batch_images))
        res, st = engine.run_batch(model, sub.to(dev), ecfg, vis_timed, g)
        stats.add(st)
        counts += [len(r.params) for r in res]
        for k, r in enumerate(res):
            records[s + k] = MultiHandsRecord(r.params.numpy(), r.joints.numpy(), sub.params[k].numpy(), None,
                                              sub.gt_visible[k].numpy(), sub.K[k].numpy(), args.size)
    total = time.perf_counter() - t0
    print(f"targets: {len(targets)} images, {src}, {args.size} px, T = {cfg.threshold_px:.2f} px, device {dev}")
    print(f"visibility: {vis_name}")
    print(f"settings: N {cfg.num}, rounds {cfg.rounds}, proposals/image/round {cfg.proposals_per_image}, "
          f"batch {args.batch_images} images, 1 thread")
    print(f"proposals {stats.proposals}, accepted {stats.accepted}, kept per image mean "
          f"{sum(counts) / len(counts):.1f} (fewer than N: {sum(c < cfg.num for c in counts) / len(counts):.0%})")
    print(f"wall {total:.2f} s -> {stats.accepted / total:.0f} accepted/s per core, "
          f"{stats.proposals / total:.0f} proposals/s per core")
    print("pass rates: " + ", ".join(f"{k} {v:.1%}" for k, v in stats.rates().items()))
    other = total - sum(tm.t.values())
    print("time split: " + ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in
                                     sorted({**tm.t, "other (engine bookkeeping)": other}.items(), key=lambda kv: -kv[1])))
    print(format_summary(summarize(records, cfg.num)))


if __name__ == "__main__":
    main()
