"""Benchmark: Gaussian-proxy collision test for many two-hand pose pairs on CPU.

    .venv/bin/python benchmarks/bench_collision.py                  # 10,000 pairs, 1 thread
    .venv/bin/python benchmarks/bench_collision.py --pairs 2000 --threads 2

Poses: ``openhand`` with articulations from its pose prior and random global rotations,
placed at random relative offsets so that about half of the pairs collide (falls back to a
jittered synthetic skeleton if ``handflow.hand.openhand`` is unavailable). Times
``collide`` (no grad), ``penetration`` forward and forward+backward, and compares ``collide``
with a naive unchunked broadcast of all (B, G, G, 3) centre differences.
"""

from __future__ import annotations

import argparse
import time

import torch

from handflow.constants import NUM_HAND_JOINTS
from handflow.hand.collision import collide, hand_proxies, num_proxies, penetration


def random_rotations(n: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q[torch.linalg.det(q) < 0, :, 0] *= -1
    return q


def make_pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    g = torch.Generator().manual_seed(seed)
    try:
        from handflow.hand.openhand import OpenHand

        model = OpenHand()
        joints = []
        for side in ("right", "left"):
            rot = torch.empty(n, 16, 3, 3)
            rot[:, 0] = random_rotations(n, g)
            rot[:, 1:] = model.pose_prior.sample(n, side, generator=g)
            with torch.no_grad():
                joints.append(model(rot, torch.randn(n, 10, generator=g) * 0.5, side=side).joints)
        source = "openhand + prior"
    except ImportError:
        base = torch.randn(NUM_HAND_JOINTS, 3, generator=g) * 40
        joints = [base + torch.randn(n, NUM_HAND_JOINTS, 3, generator=g) * 10 for _ in range(2)]
        source = "synthetic skeleton"
    offset = torch.randn(n, 1, 3, generator=g)
    offset = offset / offset.norm(dim=-1, keepdim=True) * torch.rand(n, 1, 1, generator=g) * 250
    return joints[0], joints[1] + offset, source


def naive_collide(right: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    cr, sr = hand_proxies(right)
    cl, sl = hand_proxies(left)
    d = (cr[:, :, None] - cl[:, None]).norm(dim=-1)  # (B, G, G) via (B, G, G, 3)
    return (d < sr[:, :, None] + sl[:, None]).flatten(1).any(1)


def best_of(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description="collision benchmark")
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    right, left, source = make_pairs(args.pairs)
    B = args.pairs
    print(f"collision: {B} pose pairs ({source}), G={num_proxies()} Gaussians per hand "
          f"({num_proxies() ** 2} pairs each), threads={args.threads}, float32")
    hits, t = best_of(lambda: collide(right, left), args.repeats)
    print(f"  collide            {t * 1e3:8.1f} ms  {B / t:10.0f} pairs/s  "
          f"({hits.float().mean():.0%} colliding)")
    with torch.no_grad():
        _, t = best_of(lambda: penetration(right, left), args.repeats)
    print(f"  penetration fwd    {t * 1e3:8.1f} ms  {B / t:10.0f} pairs/s")

    def fwd_bwd() -> None:
        r = right.clone().requires_grad_(True)
        penetration(r, left).sum().backward()

    _, t = best_of(fwd_bwd, args.repeats)
    print(f"  penetration fwd+bwd{t * 1e3:8.1f} ms  {B / t:10.0f} pairs/s")
    with torch.no_grad():
        ref, t_naive = best_of(lambda: naive_collide(right, left), args.repeats)
    _, t_fast = best_of(lambda: collide(right, left), args.repeats)
    assert torch.equal(ref, hits), "naive and chunked collide disagree"
    print(f"  naive broadcast collide {t_naive * 1e3:.1f} ms vs collide {t_fast * 1e3:.1f} ms: "
          f"ratio x{t_naive / t_fast:.2f} (same answers)")


if __name__ == "__main__":
    main()
