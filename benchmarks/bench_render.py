"""Renderer throughput: moderngl/EGL vs the PyTorch z-buffer, two openhand hands, new
geometry every frame, readback included; and batched visibility throughput.

    OMP_NUM_THREADS=1 LP_NUM_THREADS=1 python benchmarks/bench_render.py
"""

from __future__ import annotations

import time

import torch

from handflow.geometry import axis_angle_to_matrix, intrinsics
from handflow.hand import load_hand_model
from handflow.render import Mesh, Renderer
from handflow.render.gl import egl_available
from handflow.render.visibility import joint_visibility_batch


def scenes(n: int, model):
    g = torch.Generator().manual_seed(0)
    R = torch.eye(3).expand(n, 16, 3, 3).clone()
    R[:, 0] = axis_angle_to_matrix(torch.randn(n, 3, generator=g))
    R[:, 1:] = model.pose_prior.sample(n, "right", g)
    with torch.no_grad():
        r = model(R, torch.zeros(n, 10), "right")
        l = model(R, torch.zeros(n, 10), "left")
    off = torch.tensor([0.0, 0.0, 450.0])
    return (r.vertices + off - torch.tensor([40.0, 0, 0]), l.vertices + off + torch.tensor([40.0, 0, 0]),
            r.joints + off - torch.tensor([40.0, 0, 0]), l.joints + off + torch.tensor([40.0, 0, 0]))


def main() -> None:
    torch.set_num_threads(1)
    model = load_hand_model("openhand")
    n = 60
    vr, vl, jr, jl = scenes(n, model)
    fr, fl = model.faces_for("right"), model.faces_for("left")
    backends = ["torch"] + (["gl"] if egl_available() else [])
    print(f"two hands, {len(vr[0])} vertices / {len(fr)} faces each, new geometry per frame, readback included")
    print(f"{'size':>5} " + " ".join(f"{b + ' fps':>10}" for b in backends) + ("   gl/torch" if len(backends) == 2 else ""))
    for S in (128, 224):
        K = intrinsics(float(S), float(S), S / 2, S / 2)
        fps = {}
        for b in backends:
            r = Renderer(S, S, b)
            r.render([Mesh(vertices=vr[0], faces=fr), Mesh(vertices=vl[0], faces=fl, hand_id=1)], K)
            t = time.perf_counter()
            for i in range(n):
                r.render([Mesh(vertices=vr[i], faces=fr), Mesh(vertices=vl[i], faces=fl, hand_id=1)], K)
            fps[b] = n / (time.perf_counter() - t)
        ratio = f"   {fps['gl'] / fps['torch']:>8.1f}x" if "gl" in fps else ""
        print(f"{S:>5} " + " ".join(f"{fps[b]:>10.1f}" for b in backends) + ratio)
    S = 128
    K = intrinsics(float(S), float(S), S / 2, S / 2).expand(n, 3, 3)
    joint_visibility_batch([vr[:4], vl[:4]], [fr, fl], [jr[:4], jl[:4]], K[:4], (S, S))
    t = time.perf_counter()
    for s in range(0, n, 20):
        b = slice(s, s + 20)
        joint_visibility_batch([vr[b], vl[b]], [fr, fl], [jr[b], jl[b]], K[b], (S, S))
    print(f"batched visibility (torch, 128 px, batches of 20 scenes): {n / (time.perf_counter() - t):.1f} scenes/s")


if __name__ == "__main__":
    main()
