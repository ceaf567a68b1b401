"""Hand-model forward speed on CPU as a ratio to a plain batched LBS matmul of the same size.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_hand.py``

The baseline is the bare skinning product for the same (B, V, J): blend the per-joint 3x4
transforms with the weights (one matmul) and apply them to the vertices. A ratio of 2 means
the full model forward (shape blend, kinematic chain, LBS, joint gathering) costs twice the
bare matmul.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path

import torch

from handflow.constants import NUM_BETAS, NUM_MANO_JOINTS
from handflow.hand import HandModel, OpenHand

BATCH = 1024
REPEATS = 5


def _best_time(fn, repeats: int = REPEATS) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _baseline(V: int, J: int, B: int) -> float:
    """Plain batched LBS: (B,J,12) transforms blended by (V,J) weights, applied to (B,V,3)."""
    W = torch.rand(V, J)
    W = W / W.sum(1, keepdim=True)
    A = torch.randn(B, J, 12)
    v = torch.randn(B, V, 3)

    def run() -> torch.Tensor:
        T = (W @ A).view(B, V, 3, 4)
        return (T[..., :3] @ v[..., None])[..., 0] + T[..., 3]

    return _best_time(run)


def _model_time(model: HandModel, B: int) -> float:
    rot = torch.eye(3).expand(B, NUM_MANO_JOINTS, 3, 3).contiguous()
    betas = torch.randn(B, NUM_BETAS)
    with torch.no_grad():
        return _best_time(lambda: model(rot, betas))


def _models() -> list[tuple[str, HandModel]]:
    models: list[tuple[str, HandModel]] = [("openhand", OpenHand())]
    try:
        has_mano = importlib.util.find_spec("handflow.testing.mano") is not None
    except ModuleNotFoundError:
        has_mano = False
    if has_mano:
        from handflow.hand import load_hand_model
        from handflow.testing.mano import write_fake_mano

        tmp = Path(tempfile.mkdtemp())
        write_fake_mano(tmp)
        models.append(("mano (fake file)", load_hand_model("mano", path=tmp)))
    else:
        print("note: handflow.testing.mano not available, benchmarking openhand only")
    return models


def main() -> None:
    models = _models()
    print(f"B = {BATCH}, best of {REPEATS}, CPU")
    print(f"{'model':<18}{'threads':>8}{'V':>7}{'model ms':>11}{'LBS ms':>9}{'ratio':>8}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, model in models:
            V, J = model.num_vertices, NUM_MANO_JOINTS
            t_model = _model_time(model, BATCH)
            t_base = _baseline(V, J, BATCH)
            print(f"{name:<18}{threads:>8}{V:>7}{1e3 * t_model:>11.1f}{1e3 * t_base:>9.1f}{t_model / t_base:>8.2f}")


if __name__ == "__main__":
    main()
