"""handflow evaluate: per-image metrics against a loop recomputation, resume, mismatch, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import tiny_train
from handflow.constants import LEFT_ROOT, NUM_HAND_JOINTS, RIGHT_ROOT
from handflow.evaluation import RunMismatch, evaluate
from handflow.evaluation.evaluate import SEED_STRIDE


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    from handflow.multihands.generate import GenerateConfig, dataset_targets, generate

    root = tmp_path_factory.mktemp("ev")
    mh = root / "mh"
    cfg = GenerateConfig(num=4, rounds=1, proposals_per_image=8, image_size=64, batch_images=8)
    generate(mh, "test", cfg, dataset_targets(tiny_data, "test", 64), progress=False)
    return tiny_train(tiny_data, root / "run", 2), mh


def _align_loop(j: np.ndarray, a: str) -> np.ndarray:
    """Alignment written joint by joint (independent of handflow.metrics.align)."""
    out = j.copy()
    for k in range(42):
        if a == "rr":
            out[k] = j[k] - j[RIGHT_ROOT if k < NUM_HAND_JOINTS else LEFT_ROOT]
        elif a == "rrr":
            out[k] = j[k] - j[RIGHT_ROOT]
    return out


def _mpjpe_loop(p: np.ndarray, g: np.ndarray, a: str) -> float:
    pa, ga = _align_loop(p, a), _align_loop(g, a)
    return sum(math.dist(pa[k], ga[k]) for k in range(42)) / 42


def test_per_image_metrics_match_a_loop(trained, tiny_data, tmp_path) -> None:
    from handflow.data import InterHandDataset
    from handflow.models import decode_joints
    from handflow.multihands import load
    from handflow.training import load_checkpoint

    ckpt, mh = trained
    S = 5
    summary = evaluate(ckpt, tiny_data, tmp_path / "e", multihands=mh, samples=S, batch_size=3, chunk_images=1, progress=False)
    with np.load(tmp_path / "e" / "per_image.npz") as z:
        per = {k: z[k] for k in z.files}
    ds = InterHandDataset(tiny_data, "test", 64, augment=False)
    assert summary["num_images"] == len(ds) == len(per["image_id"]) and per["has_multihands"].any()
    # recompute the last image (chunk i of one image, its own generator) by hand
    module, _ = load_checkpoint(ckpt)
    i = len(ds) - 1
    g = torch.Generator().manual_seed(0 * SEED_STRIDE + i)
    batch = [ds[i]]
    imgs = torch.stack([b["image"] for b in batch])
    with torch.no_grad():
        pred = module.model.predict(imgs, S, g)
        K = torch.stack([b["K"] for b in batch])
        z0 = decode_joints(pred["z0"], K, 64, module.hand_model)[0].double().numpy()
        smp = decode_joints(pred["samples"], K, 64, module.hand_model)[0].double().numpy()
    gt = ds[i]["joints_cam"].double().numpy()
    assert int(per["image_id"][i]) == ds[i]["meta"]["image_id"]
    for a in ("rr", "rrr", "global"):
        assert per[f"mpjpe_z0_{a}"][i] == pytest.approx(_mpjpe_loop(z0, gt, a), rel=1e-5)
        assert per[f"mpjpe_best_{a}"][i] == pytest.approx(min(_mpjpe_loop(s, gt, a) for s in smp), rel=1e-5)
    rec = load(mh, "test").get(int(per["image_id"][i]))
    if rec is not None:
        anns = [gt] + [np.asarray(j, np.float64) for j in rec.joints]
        errs = [_mpjpe_loop(z0, q, "global") for q in anns]
        assert per["min_global"][i] == pytest.approx(min(errs), rel=1e-5)
        assert per["max_global"][i] == pytest.approx(max(errs), rel=1e-5)
        assert per["num_annotations"][i] == len(rec.joints)
        assert 0 <= per["mmd_global"][i] <= math.sqrt(2)
    spread = np.mean([np.sqrt(((smp[:, k] - smp[:, k].mean(0)) ** 2).sum(-1).mean()) for k in range(42)])
    assert per["spread_mm"][i] == pytest.approx(spread, rel=1e-3)
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["metrics"]["mpjpe_z0_rr"]["count"] == len(ds)


def test_resume_is_identical_and_other_settings_are_refused(trained, tiny_data, tmp_path) -> None:
    ckpt, mh = trained
    kw = dict(multihands=mh, samples=3, chunk_images=1, progress=False)
    evaluate(ckpt, tiny_data, tmp_path / "e", **kw)
    before = dict(np.load(tmp_path / "e" / "per_image.npz"))
    (tmp_path / "e" / "chunks" / "chunk-00001.npz").unlink()  # as if killed while writing chunk 1
    evaluate(ckpt, tiny_data, tmp_path / "e", **kw)
    after = dict(np.load(tmp_path / "e" / "per_image.npz"))
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    with pytest.raises(RunMismatch, match="samples"):
        evaluate(ckpt, tiny_data, tmp_path / "e", **{**kw, "samples": 4})
    evaluate(ckpt, tiny_data, tmp_path / "e", **{**kw, "samples": 4, "overwrite": True})
    # without MultiHands: the annotation columns are NaN, the rest is there
    s = evaluate(ckpt, tiny_data, tmp_path / "n", samples=2, progress=False)
    assert s["metrics"]["mmd_rr"]["count"] == 0 and s["metrics"]["mpjpe_z0_rr"]["count"] == s["num_images"]


def test_bad_inputs_name_the_problem(trained, tiny_data, tmp_path) -> None:
    ckpt, mh = trained
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        evaluate(tmp_path / "nope.ckpt", tiny_data, tmp_path / "x")
    with pytest.raises(ValueError, match="samples"):
        evaluate(ckpt, tiny_data, tmp_path / "x", samples=0)
    with pytest.raises(FileNotFoundError, match="split 'val'"):
        evaluate(ckpt, tiny_data, tmp_path / "x", split="val", multihands=mh, progress=False)


def test_cli(trained, tiny_data, tmp_path) -> None:
    from typer.testing import CliRunner

    from handflow.cli import app

    ckpt, mh = trained
    r = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(ckpt), "--data", str(tiny_data), "--multihands", str(mh),
                                 "--out", str(tmp_path / "c"), "--samples", "2", "--limit", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "| GLOBAL |" in r.output and (tmp_path / "c" / "summary.md").exists()
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["num_images"] == 1
    r = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "none.ckpt"), "--data", str(tiny_data),
                                 "--out", str(tmp_path / "d")])
    assert r.exit_code == 1 and "checkpoint not found" in r.output
