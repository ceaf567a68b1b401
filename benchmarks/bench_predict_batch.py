"""Images per second of prediction: the old per-image loop against the batched predictor, side by side.

    .venv/bin/python benchmarks/bench_predict_batch.py [--images 32] [--batch 1 32] [--samples 0 100] [--reps 5] [--threads 2]

The ``cpu`` preset model (ResNet-18 at 128 px, flow 256 wide; untrained weights: the cost does not
depend on them) predicts ``--images`` in-memory images of 160 x 120 px, each with its own box and
camera, end to end (crop, backbone, z = 0 estimate and samples, joints):

* ``loop``: a copy of the per-image loop that ``handflow.predict`` ran before issue #18 (one
  backbone pass, one head call and one decode per image);
* ``batch B``: :class:`handflow.predictor.Predictor` on batches of B images (B = 1 is the same
  per-image work through the new code path).

The variants are interleaved within each repeat, so background load hits them alike; printed:
images/s from the median time of the repeats, and the median over repeats of the loop's time over
the variant's time in the same repeat.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from handflow.config import load_config
from handflow.data.crop import warp_to_crop
from handflow.inference import Camera, crop_camera, iter_predictions, plan_images
from handflow.models import decode_joints
from handflow.predictor import Predictor


@torch.no_grad()
def old_loop(predictor: Predictor, images: list[torch.Tensor], cameras: list[Camera], boxes: list, samples: int) -> None:
    """The per-image loop of ``handflow.inference.predict_image`` before issue #18 (copied here only)."""
    model, hand, size = predictor.model, predictor.hand_model, predictor.image_size
    g = torch.Generator().manual_seed(0)
    for image, camera, box in zip(images, cameras, boxes):
        H, W = image.shape[1:]
        K, Kc, _, _ = crop_camera(W, H, camera, box, size)
        crop = warp_to_crop(image, K, Kc, size)
        res = model.predict(crop[None], samples, g)
        y = torch.cat([res["z0"][:, None], res["samples"]], 1)
        J = decode_joints(y, Kc[None].float(), size, hand)
        assert bool(torch.isfinite(J).all())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--samples", type=int, nargs="+", default=[0, 100])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config("cpu", [])
    predictor = Predictor.from_config(cfg)
    y = torch.randn(256, 218, generator=torch.Generator().manual_seed(0))
    predictor.model.normalizer.fit(y)
    predictor.model.initialize(torch.zeros(len(y), predictor.model.backbone.dim), predictor.model.normalizer.normalize(y))
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 120, 160, generator=gen) for _ in range(a.images)]
    boxes = [(10.0 + k % 7, 5.0, 100.0, 90.0) for k in range(a.images)]
    cameras = [Camera(focal=(150.0 + k, 150.0 + k)) for k in range(a.images)]
    jobs, _ = plan_images(images, boxes=boxes, cameras=cameras)

    def batched(n: int, b: int) -> None:
        for _, res in iter_predictions(predictor, jobs, n, batch_size=b):
            assert not isinstance(res, Exception), res

    variants = {}
    for n in a.samples:
        variants[(n, "loop")] = functools.partial(old_loop, predictor, images, cameras, boxes, n)
        for b in a.batch:
            variants[(n, f"batch {b}")] = functools.partial(batched, n, b)
    times: dict = {k: [] for k in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(a.reps):
        for k, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    print(f"cpu preset ({cfg.model.backbone} {cfg.data.image_size} px, flow {cfg.model.flow_hidden} wide), {a.images} images "
          f"160x120, {a.threads} thread(s), torch {torch.__version__}, median of {a.reps}")
    print("x loop: median of the repeats' loop time / variant time (each repeat runs every variant, interleaved)")
    print(f"{'samples':>8} {'variant':>10} {'images/s':>9} {'x loop':>7}   runs (s)")
    for n in a.samples:
        base = times[(n, "loop")]
        for (m, name), ts in times.items():
            if m == n:
                ratio = statistics.median(b / t for b, t in zip(base, ts))
                print(f"{n:>8} {name:>10} {a.images / statistics.median(ts):>9.1f} {ratio:>7.2f}   "
                      f"{' '.join(f'{v:.2f}' for v in ts)}")


if __name__ == "__main__":
    main()
