"""Toy check of the cVAE baseline's posterior collapse (docs/baselines.md): does the cVAE head
recover a two-mode conditional distribution, with or without free bits / a learned decoder noise?

    .venv/bin/python benchmarks/toy_cvae_collapse.py --ambiguity strong --steps 1500
    .venv/bin/python benchmarks/toy_cvae_collapse.py --ambiguity weak --steps 6000 --free-bits 0.1
    .venv/bin/python benchmarks/toy_cvae_collapse.py --ambiguity strong --fixed-variance

Only the head is trained (the ResNet is skipped): ``IMAGES`` random features ``v`` (the
ResNet-18 width), targets ``y = A v + s a + noise`` in the standardized 218-d space with a
random sign ``s = ±1`` per draw, i.e. two modes per image. ``strong``: ``a = 1`` on 20 dims;
``weak``: ``a = 0.5`` on 3 dims, which ``A v`` leaves free so the sign can be read off ``y``
directly. The loss is the model's own ``head_losses`` (negative ELBO per dim). Reported: mean
KL per annotation, decoder log-variance on the ambiguous and the other dims, and for prior
samples the offset along ``a`` in units of ``a`` (``±1`` per sample when both modes are
recovered, about 0 for every sample when the posterior collapsed): its std and the share of
samples with ``|offset| > 0.5``.
"""

from __future__ import annotations

import argparse
import time

import torch

from handflow.config import load_config
from handflow.constants import PARAM_DIM
from handflow.models import build_model

IMAGES = 256
BATCH = 64
LR = 1e-3
NOISE = 0.05
#: ambiguity name -> (number of dims, offset)
AMBIGUITY = {"strong": (20, 1.0), "weak": (3, 0.5)}
EVAL_IMAGES, EVAL_SAMPLES = 8, 200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ambiguity", choices=sorted(AMBIGUITY), default="strong")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--free-bits", type=float, default=0.1, help="model.free_bits (0: plain ELBO)")
    ap.add_argument("--fixed-variance", action="store_true", help="freeze the decoder log-variance at 0 (unit variance)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    m = build_model(load_config("cpu", ["model.kind=cvae", f"model.free_bits={a.free_bits}"]))
    C = m.backbone.dim
    params = list(m.encoder.parameters()) + list(m.decoder.parameters()) + ([] if a.fixed_variance else [m.dec_logvar])
    opt = torch.optim.Adam(params, lr=LR)
    k, off = AMBIGUITY[a.ambiguity]
    A = torch.randn(C, PARAM_DIM) / C ** 0.5 * 0.5
    A[:, :k] = 0
    amb = torch.zeros(PARAM_DIM)
    amb[:k] = off
    P = torch.randn(IMAGES, C)
    mask = torch.ones(BATCH, 1, dtype=torch.bool)
    t0 = time.perf_counter()
    for step in range(a.steps):
        v = P[torch.randint(0, IMAGES, (BATCH,))]
        s = torch.randint(0, 2, (BATCH, 1)).float() * 2 - 1
        y = (v @ A + s * amb + NOISE * torch.randn(BATCH, PARAM_DIM))[:, None]
        loss = m.head_losses(v, y, mask, None)["nll"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, a.steps // 5) == 0 or step == a.steps - 1:
            with torch.no_grad():
                kl = m.elbo_terms(v, y, None)[1].sum(-1).mean()
                lv = m.decoder_logvar()
                smp = m.sample_std(P[:EVAL_IMAGES], EVAL_SAMPLES)
                proj = ((smp - (P[:EVAL_IMAGES] @ A)[:, None]) * amb).sum(-1) / amb.square().sum()
            print(f"step {step:5d}  loss {loss.item():7.3f}  KL {kl:5.2f} nats  dec logvar ambiguous {lv[:k].mean():5.2f} "
                  f"others {lv[k:].mean():5.2f}  offset std {proj.std():4.2f}  "
                  f"|offset|>0.5 {(proj.abs() > 0.5).float().mean():4.2f}",
                  flush=True)
    print(f"{a.steps} steps in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
