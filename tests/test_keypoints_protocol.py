"""The keypoint-evidence protocol (``model.backbone=keypoints``): evidence against a loop,
noise determinism, training + exact resume and evaluation without ever opening an image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_cfg

from handflow.config import ConfigError, load_config
from handflow.constants import NUM_JOINTS
from handflow.data.datamodule import InterHandDataModule
from handflow.data.interhand import InterHandDataset
from handflow.models.keypoint_encoder import (
    EVIDENCE_DIM,
    NOISE_REFERENCE_SIZE,
    KeypointEncoder,
    build_evidence,
    image_noise,
    training_noise,
)
from handflow.safeio import load_torch_file
from handflow.training import load_checkpoint, train

KP = {"model.backbone": "keypoints", "model.keypoint_width": 32}


@pytest.fixture
def no_images(monkeypatch):
    """Any attempt to decode an image fails the test."""
    def refuse(self, i):
        raise AssertionError(f"image {i} was opened in the keypoint protocol")

    monkeypatch.setattr(InterHandDataset, "_load_image", refuse)


def _evidence_loop(j2d, vis, valid, K, size, noise_px, noise):
    out = []
    for b in range(j2d.shape[0]):
        row = []
        for k in range(NUM_JOINTS):
            for c in range(2):
                v = 2 * float(j2d[b, k, c]) / size - 1 + 2 * noise_px / NOISE_REFERENCE_SIZE * float(noise[b, k, c])
                row.append(v if vis[b, k] else 0.0)
        row += [float(v) for v in vis[b]] + [float(v) for v in valid[b]]
        row += [math.log(2 * float(K[b, 0, 0]) / size), math.log(2 * float(K[b, 1, 1]) / size),
                2 * float(K[b, 0, 2]) / size - 1, 2 * float(K[b, 1, 2]) / size - 1]
        out.append(row)
    return torch.tensor(out)


def test_evidence_matches_a_loop_and_hides_occluded_joints(gen) -> None:
    B, size = 3, 96
    j2d = torch.rand(B, NUM_JOINTS, 2, generator=gen) * size
    valid = torch.rand(B, NUM_JOINTS, generator=gen) > 0.1
    vis = valid & (torch.rand(B, NUM_JOINTS, generator=gen) > 0.4)
    K = torch.tensor([[300.0, 0, 40], [0, 310.0, 50], [0, 0, 1]]).expand(B, 3, 3) * torch.rand(B, 1, 1, generator=gen).add(0.5)
    K[:, 2, 2] = 1
    noise = torch.randn(B, NUM_JOINTS, 2, generator=gen)
    ev = build_evidence(j2d, vis, valid, K, size, 2.0, noise)
    assert ev.shape == (B, EVIDENCE_DIM)
    torch.testing.assert_close(ev, _evidence_loop(j2d, vis, valid, K, size, 2.0, noise), rtol=1e-5, atol=1e-5)
    uv = ev[:, : 2 * NUM_JOINTS].reshape(B, NUM_JOINTS, 2)
    assert (uv[~vis] == 0).all() and (uv[vis] != 0).any()
    # no noise: exact normalised coordinates; noise in pixels scales with the crop (σ at 128 px)
    torch.testing.assert_close(build_evidence(j2d, vis, valid, K, size)[:, : 2 * NUM_JOINTS],
                               _evidence_loop(j2d, vis, valid, K, size, 0.0, noise)[:, : 2 * NUM_JOINTS])
    d = (ev - build_evidence(j2d, vis, valid, K, size))[:, : 2 * NUM_JOINTS].reshape(B, NUM_JOINTS, 2)
    torch.testing.assert_close(d[vis] * size / 2, (noise * 2.0 * size / NOISE_REFERENCE_SIZE)[vis], rtol=1e-4, atol=1e-4)


def test_noise_is_fixed_per_image_at_evaluation_and_per_step_in_training() -> None:
    a = image_noise([5, 9, 11], seed=0)
    b = image_noise(torch.tensor([11, 5]), seed=0)
    torch.testing.assert_close(a[[2, 0]], b)  # independent of the batch an image is in
    assert not torch.equal(image_noise([5], seed=1), a[:1])
    assert torch.equal(training_noise(4, 0, 7), training_noise(4, 0, 7))
    assert not torch.equal(training_noise(4, 0, 7), training_noise(4, 0, 8))
    assert not torch.equal(training_noise(4, 0, 7), training_noise(4, 1, 7))


def test_encoder_shapes_and_config_checks() -> None:
    enc = KeypointEncoder(16, depth=2)
    assert enc.dim == 16 and enc(torch.zeros(2, EVIDENCE_DIM)).shape == (2, 16)
    with pytest.raises(ValueError, match="keypoint evidence"):
        enc(torch.zeros(2, 3, 8, 8))
    cfg = load_config("cpu", ["model.backbone=keypoints"])
    assert cfg.data.keypoint_noise_px == 2.0
    with pytest.raises(ConfigError, match="keypoints"):
        load_config("cpu", ["model.backbone=keypoints", "data.features=/x", "model.freeze_backbone=true"])
    with pytest.raises(ConfigError, match="keypoint_noise_px"):
        load_config("cpu", ["data.keypoint_noise_px=-1"])


def _dm(cfg):
    return InterHandDataModule.from_config(cfg, num_workers=0, multihands=None)


class _Crash(Exception):
    pass


def test_tiny_flow_trains_resumes_exactly_and_evaluates_without_images(tiny_data, tmp_path, no_images) -> None:
    import lightning.pytorch as pl

    from handflow.evaluation import evaluate

    kw = {**KP, "data.augment": "true"}  # the crop augmentation moves the evidence: no image needed for it
    n = 4
    straight = train(tiny_cfg(tiny_data, tmp_path / "a", n, **kw), datamodule=_dm(tiny_cfg(tiny_data, tmp_path / "a", n, **kw)),
                     enable_progress_bar=False)

    class Crash(pl.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == n // 2:
                raise _Crash()

    cfg_b = tiny_cfg(tiny_data, tmp_path / "b", n, **kw, **{"train.ckpt_every": 1})
    with pytest.raises(_Crash):
        train(cfg_b, datamodule=_dm(cfg_b), enable_progress_bar=False, extra_callbacks=[Crash()])
    resumed = train(cfg_b, datamodule=_dm(cfg_b), enable_progress_bar=False)
    sa, sb = load_torch_file(straight)["state_dict"], load_torch_file(resumed)["state_dict"]
    assert any(k.startswith("model.backbone.net") for k in sa)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    module, cfg = load_checkpoint(straight)
    assert module.model.uses_keypoints and cfg.model.backbone == "keypoints"
    s1 = evaluate(straight, tiny_data, tmp_path / "e1", samples=3, batch_size=3, progress=False)
    s2 = evaluate(straight, tiny_data, tmp_path / "e2", samples=3, batch_size=2, chunk_images=2, progress=False)
    p1, p2 = (np.load(tmp_path / e / "per_image.npz") for e in ("e1", "e2"))
    # the z = 0 estimate depends only on the (per-image fixed) evidence, not on the batching
    np.testing.assert_allclose(p1["mpjpe_z0_rr"], p2["mpjpe_z0_rr"], rtol=1e-5)
    assert s1["num_images"] == s2["num_images"] > 0 and np.isfinite(p1["spread_mm"]).all()


def test_eval_noise_is_used_in_eval_mode_and_step_noise_in_training(tiny_data, tmp_path) -> None:
    from handflow.training import HandFlowModule

    cfg = tiny_cfg(tiny_data, tmp_path, 1, **KP)
    module = HandFlowModule(cfg)
    batch = torch.utils.data.default_collate([_dm(cfg).dataset("val")[i] for i in range(2)])
    module.eval()
    e1, e2 = module.batch_features(batch), module.batch_features(batch)
    assert torch.equal(e1, e2) and not torch.equal(e1, module.batch_features(batch, noise_seed=1))
    module.train()
    assert not torch.equal(e1, module.batch_features(batch))


# ------------------------------------------------------------------------------ report --protocol keypoints
def test_report_keypoint_jobs_and_page_parts(tmp_path) -> None:
    import json
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_report import _write_eval  # the image protocol's fake evaluations

    from handflow.pipeline.plan import ReportPlan, load_plan, plan_command
    from handflow.pipeline.render import KP_BEGIN, KP_END, merge_page
    from handflow.pipeline.run import run_report
    from handflow.pipeline.stages import train_stage

    plan = ReportPlan(work=str(tmp_path / "w"), protocol="keypoints", keypoint_noise_px=3.0, seeds=(0, 1), steps=7)
    argv = train_stage(plan, "flow_no_2d", 1).argv
    assert "model.backbone=keypoints" in argv and "data.keypoint_noise_px=3.0" in argv and "data.num_workers=0" in argv
    assert not any(a.startswith("data.features") or a.startswith("model.backbone_checkpoint") for a in argv)
    assert "--protocol keypoints" in plan_command(plan) and "--keypoint-noise-px 3.0" in plan_command(plan)
    # page merging: the keypoint part replaces only its block, an image part keeps it
    page = merge_page("# R\nimage part\n", "## K\nkp 1", True)
    assert page.startswith("# R\nimage part") and KP_BEGIN in page and "kp 1" in page
    page = merge_page(page, "## K\nkp 2", True)
    assert "kp 1" not in page and page.count(KP_BEGIN) == 1 and "image part" in page
    page = merge_page(page, "# R\nimage part 2", False)
    assert "image part 2" in page and "kp 2" in page and page.index("image part 2") < page.index(KP_BEGIN) < page.index(KP_END)
    # write stage on fake evaluations: its part, its figures, the targets checked
    rng = np.random.default_rng(0)
    means = {"flow": 0.4, "cvae": 0.5, "gaussian": 0.6, "mcdropout": 0.7, "deterministic": 0.9, "flow_no_multihands": 0.45,
             "flow_no_detmag": 0.5, "flow_no_theta": 0.42, "flow_no_2d": 0.38}
    for n, m in means.items():
        for s in plan.seeds:
            _write_eval(plan.eval_dir(n, s), m, 30.0 if n != "flow_no_detmag" else 15.0, rng)
    plan.root.mkdir(parents=True, exist_ok=True)
    (plan.root / "plan.json").write_text(json.dumps({**plan.__dict__}))
    (plan.root / "timings.json").write_text(json.dumps({"train": 600.0, "evaluate": 300.0}))
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    out.write_text("# Results\nthe image part\n")
    text = run_report(ReportPlan(work=plan.work), ("write",), out, progress=False).read_text()
    assert text.startswith("# Results\nthe image part") and "## Keypoint-evidence protocol" in text and "### Table 2" in text
    assert "total 15.0 min" in text and "σ = 3 px" in text
    assert "L_DetMag raises the sample spread ≥ 1.5×" in text and "Spearman ρ(spread, MPJPE) ≥ 0.3" in text
    assert (out.parent / "figures" / "results_kp_mmd.png").is_file() and not (out.parent / "figures" / "results_mmd.png").exists()
    assert load_plan(plan.work).protocol == "keypoints"
