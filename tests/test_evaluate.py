"""handflow evaluate: per-image metrics against a loop recomputation, resume, mismatch, CLI."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_train

from handflow.constants import LEFT_ROOT, NUM_HAND_JOINTS, RIGHT_ROOT
from handflow.evaluation import RunMismatch, evaluate
from handflow.evaluation.per_image import image_metrics
from handflow.evaluation.scoring import SEED_STRIDE
from handflow.metrics import mmd


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


def _mmd_loop(xs, ys, a: str) -> float:
    """Biased MMD averaged over the default bandwidths, pair by pair."""
    from handflow.metrics import DEFAULT_BANDWIDTHS

    fx = [_align_loop(x, a).ravel() for x in xs]
    fy = [_align_loop(y, a).ravel() for y in ys]

    def k(u, v, s):
        return math.exp(-float(((u - v) ** 2).sum()) / (2 * s * s))

    vals = []
    for s in DEFAULT_BANDWIDTHS:
        kxx = sum(k(u, v, s) for u in fx for v in fx) / len(fx) ** 2
        kyy = sum(k(u, v, s) for u in fy for v in fy) / len(fy) ** 2
        kxy = sum(k(u, v, s) for u in fx for v in fy) / (len(fx) * len(fy))
        vals.append(math.sqrt(max(kxx + kyy - 2 * kxy, 0.0)))
    return sum(vals) / len(vals)


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
    # recompute one image (chunk i of one image, its own generator) by hand
    module, _ = load_checkpoint(ckpt)
    i = int(np.flatnonzero(per["has_multihands"])[-1])  # an image with annotations
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
    rec = load(mh, "test")[int(per["image_id"][i])]
    anns = [gt] + [np.asarray(j, np.float64) for j in rec.joints]  # the ground truth is one plausible annotation
    assert per["num_annotations"][i] == len(rec.joints) >= 1
    for a in ("rr", "rrr", "global"):
        errs = [_mpjpe_loop(z0, q, a) for q in anns]
        assert per[f"min_{a}"][i] == pytest.approx(min(errs), rel=1e-5)
        assert per[f"max_{a}"][i] == pytest.approx(max(errs), rel=1e-5)
        assert per[f"mmd_{a}"][i] == pytest.approx(_mmd_loop(smp, anns, a), rel=1e-4, abs=1e-6)
    spread = np.mean([np.sqrt(((smp[:, k] - smp[:, k].mean(0)) ** 2).sum(-1).mean()) for k in range(42)])
    assert per["spread_mm"][i] == pytest.approx(spread, rel=1e-3)
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["metrics"]["mpjpe_z0_rr"]["count"] == len(ds)
    assert per["image_id"].dtype == np.int64 and per["seq"].dtype.kind == "U" and per["has_multihands"].dtype == bool
    assert per["num_annotations"].dtype == np.int64 and per["frame"].dtype == np.int64
    csv_rows = (tmp_path / "e" / "summary.csv").read_text().splitlines()
    assert csv_rows[0] == "metric,mean,std,sem,count" and len(csv_rows) == 1 + len(summary["metrics"])
    assert "| RRR |" in (tmp_path / "e" / "summary.md").read_text()


def test_image_metrics_masks_invalid_joints() -> None:
    """Joints without ground truth count nowhere (whatever they hold); RRR needs the right root."""
    g = torch.Generator().manual_seed(0)
    B, S, N = 3, 6, 5
    gt = torch.randn(B, 42, 3, generator=g, dtype=torch.float64) * 50 + 500
    z0 = gt + torch.randn(B, 42, 3, generator=g, dtype=torch.float64) * 10
    smp = gt[:, None] + torch.randn(B, S, 42, 3, generator=g, dtype=torch.float64) * 20
    ann = gt[:, None] + torch.randn(B, N, 42, 3, generator=g, dtype=torch.float64) * 15
    ok = torch.ones(B, N, dtype=torch.bool)
    vis = torch.rand(B, 42, generator=g) > 0.5
    full = image_metrics(z0, smp, gt, torch.ones(B, 42, dtype=torch.bool), vis, ann, ok)
    for a in ("rr", "rrr", "global"):  # all valid: the plain metric
        torch.testing.assert_close(full[f"mmd_{a}"], mmd(smp, ann, a))
    valid = torch.ones(B, 42, dtype=torch.bool)
    valid[:, 21:] = False  # no left hand in these images
    gt2, ann2 = gt.clone(), ann.clone()
    gt2[:, 21:], ann2[:, :, 21:] = 1e5, -3e4  # garbage where there is no ground truth
    a1 = image_metrics(z0, smp, gt, valid, vis, ann, ok)
    a2 = image_metrics(z0, smp, gt2, valid, vis, ann2, ok)
    for k in a1:
        torch.testing.assert_close(a1[k], a2[k], equal_nan=True, msg=k)
    right = lambda x: torch.cat([x[..., :21, :], torch.zeros_like(x[..., 21:, :])], -2)  # noqa: E731
    torch.testing.assert_close(a1["mmd_rr"], mmd(right(smp - smp[..., 20:21, :]), right(ann - ann[..., 20:21, :]), "global"))
    valid[1, 20] = False  # right root missing: no RRR for image 1, RR and Global stay
    a3 = image_metrics(z0, smp, gt, valid, vis, ann, ok)
    assert torch.isnan(a3["mpjpe_z0_rrr"][1]) and torch.isnan(a3["mmd_rrr"][1]) and torch.isnan(a3["min_rrr"][1])
    assert torch.isfinite(a3["mpjpe_z0_rrr"][[0, 2]]).all() and torch.isfinite(a3["mpjpe_z0_global"]).all()


def _mh_variant(mh, dst, edit):
    """A copy of the MultiHands folder ``mh`` with its test-split arrays edited in place."""
    shutil.copytree(mh, dst)
    for part in (dst / "test").glob("part-*"):
        arrays = {p.stem: np.load(p) for p in part.glob("*.npy")}
        edit(arrays)
        for k, v in arrays.items():
            np.save(part / f"{k}.npy", v)
    return dst


def test_multihands_of_other_data_is_refused(trained, tiny_data, tmp_path) -> None:
    ckpt, mh = trained

    def half(a):
        a["image_ids"][::2] += 10**6

    def none(a):
        a["image_ids"][:] += 10**6

    def moved(a):
        a["gt_joints"][:] += 100.0

    with pytest.warns(UserWarning, match="only .* of the .* images"):
        s = evaluate(ckpt, tiny_data, tmp_path / "h", multihands=_mh_variant(mh, tmp_path / "mh_half", half), samples=2,
                     progress=False)
    assert 0 < s["num_images_multihands"] < s["num_images"]
    assert s["metrics"]["mmd_rr"]["count"] == s["num_images_multihands"] == s["metrics"]["min_global"]["count"]
    with pytest.raises(ValueError, match="share no image id"):
        evaluate(ckpt, tiny_data, tmp_path / "n", multihands=_mh_variant(mh, tmp_path / "mh_none", none), progress=False)
    with pytest.raises(ValueError, match="other data"):
        evaluate(ckpt, tiny_data, tmp_path / "m", multihands=_mh_variant(mh, tmp_path / "mh_moved", moved), samples=2,
                 progress=False)


def test_resume_is_identical_and_other_settings_are_refused(trained, tiny_data, tmp_path, monkeypatch) -> None:
    ckpt, mh = trained
    kw = dict(multihands=mh, samples=3, chunk_images=1, progress=False)
    evaluate(ckpt, tiny_data, tmp_path / "e", **kw)
    before = dict(np.load(tmp_path / "e" / "per_image.npz"))
    (tmp_path / "e" / "chunks" / "chunk-00001.npz").unlink()  # as if killed while writing chunk 1
    evaluate(ckpt, tiny_data, tmp_path / "e", **kw)
    after = dict(np.load(tmp_path / "e" / "per_image.npz"))
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    # killed in the middle of chunk 1 (2nd of its 2 batches): the rerun continues and gives the uninterrupted result
    import importlib

    ev = importlib.import_module("handflow.evaluation.scoring")

    real, calls = ev._batch_columns, []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    kw2 = dict(split="train", limit=8, samples=3, chunk_images=4, batch_size=2, progress=False)  # 2 chunks of 2 batches
    monkeypatch.setattr(ev, "_batch_columns", dying)
    with pytest.raises(KeyboardInterrupt):
        evaluate(ckpt, tiny_data, tmp_path / "k", **kw2)
    monkeypatch.setattr(ev, "_batch_columns", real)
    assert sorted(p.name for p in (tmp_path / "k" / "chunks").iterdir()) == ["chunk-00000.npz"]
    evaluate(ckpt, tiny_data, tmp_path / "k", **kw2)
    evaluate(ckpt, tiny_data, tmp_path / "u", **kw2)
    killed, whole = dict(np.load(tmp_path / "k" / "per_image.npz")), dict(np.load(tmp_path / "u" / "per_image.npz"))
    for k in whole:
        np.testing.assert_array_equal(killed[k], whole[k])
    with pytest.raises(RunMismatch, match="samples"):
        evaluate(ckpt, tiny_data, tmp_path / "e", **{**kw, "samples": 4})
    evaluate(ckpt, tiny_data, tmp_path / "e", **{**kw, "samples": 4, "overwrite": True})
    # without MultiHands: the annotation columns are NaN, the rest is there
    s = evaluate(ckpt, tiny_data, tmp_path / "n", samples=2, progress=False)
    assert s["metrics"]["mmd_rr"]["count"] == 0 and s["metrics"]["mpjpe_z0_rr"]["count"] == s["num_images"]


def test_run_json_is_compared_by_the_shared_helper(tmp_path) -> None:
    """evaluate's resume check: the same run.json resumes, another value of a RUN_KEYS key is
    refused naming it, batch_size/device only warn once chunks exist (issue #19)."""
    from handflow.evaluation.scoring import RUN_KEYS, _prepare_out

    run = {**{k: 1 for k in RUN_KEYS}, "checkpoint_identity": {"size": 5, "sha256": "ab"}, "batch_size": 2, "device": "cpu"}
    out = tmp_path / "e"
    assert _prepare_out(out, run, overwrite=False) == out / "chunks"
    assert _prepare_out(out, run, overwrite=False) == out / "chunks"  # the same settings: resumed
    other = {**run, "samples": 4, "checkpoint_identity": {"size": 6, "sha256": "cd"}}
    with pytest.raises(RunMismatch) as e:
        _prepare_out(out, other, overwrite=False)
    assert str(e.value) == (f"{out} (an evaluation) was written with checkpoint_identity={{\"sha256\":\"ab\",\"size\":5}}, "
                            "samples=1 (now {\"sha256\":\"cd\",\"size\":6}, 4): use a fresh --out, or --overwrite to discard it")
    _prepare_out(out, {**run, "device": "cuda"}, overwrite=False)  # no chunks yet: silently
    (out / "chunks" / "chunk-00000.npz").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"was written with batch_size=2, device=cuda \(now 4, cpu\): the remaining chunks"):
        _prepare_out(out, {**run, "batch_size": 4}, overwrite=False)  # run.json holds the last run's device


def test_bad_inputs_name_the_problem(trained, tiny_data, tmp_path) -> None:
    ckpt, mh = trained
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        evaluate(tmp_path / "nope.ckpt", tiny_data, tmp_path / "x")
    with pytest.raises(ValueError, match="samples"):
        evaluate(ckpt, tiny_data, tmp_path / "x", samples=0)
    with pytest.raises(FileNotFoundError, match="split 'val'"):
        evaluate(ckpt, tiny_data, tmp_path / "x", split="val", multihands=mh, progress=False)
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        evaluate(ckpt, tmp_path / "nodata", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="MultiHands folder not found"):
        evaluate(ckpt, tiny_data, tmp_path / "x", multihands=tmp_path / "nomh")


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


@pytest.mark.parametrize("kind", ["deterministic", "gaussian", "mcdropout", "cvae"])
def test_every_baseline_kind(kind, trained, tiny_data, tmp_path) -> None:
    ckpt = tiny_train(tiny_data, tmp_path / "run", 1, **{"model.kind": kind})
    s = evaluate(ckpt, tiny_data, tmp_path / "e", multihands=trained[1], samples=3, progress=False)
    assert s["model_kind"] == kind
    with np.load(tmp_path / "e" / "per_image.npz") as z:
        per = {k: z[k] for k in z.files}
    for k in ("spread_mm", "mpjpe_z0_global", "mpjpe_best_rrr", "min_rr", "max_global", "mmd_rrr"):
        assert np.isfinite(per[k][per["has_multihands"]]).all(), k
    if kind == "deterministic":  # the one prediction repeated: no spread, best of N = z = 0
        np.testing.assert_allclose(per["spread_mm"], 0, atol=1e-3)
        np.testing.assert_allclose(per["mpjpe_best_global"], per["mpjpe_z0_global"], rtol=1e-5)


def test_joints_only_decode_equals_the_full_forward() -> None:
    """decode_joints skins only the fingertips of openhand unless meshes are asked for."""
    from handflow.hand.registry import load_hand_model
    from handflow.models import decode_joints

    g = torch.Generator().manual_seed(1)
    y = torch.randn(3, 4, 218, generator=g) * 0.3
    y[..., 108] = y[..., 217] = -5.5  # log scale: roots about 600 mm deep
    K = torch.tensor([[80.0, 0, 32], [0, 80.0, 32], [0, 0, 1]]).expand(3, 3, 3)
    hm = load_hand_model("openhand")
    ref, _ = decode_joints(y, K, 64, hm, vertices=True)  # the model's own forward pass
    torch.testing.assert_close(decode_joints(y, K, 64, hm), ref, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(decode_joints(y[:, 0], K, 64, hm), ref[:, 0], atol=1e-3, rtol=1e-5)


def test_mean_pose_reference_matches_a_loop(trained, tiny_data) -> None:
    """The no-image reference: the training mean decoded per image, scored like any model."""
    from handflow.data import InterHandDataset
    from handflow.evaluation.chance import mean_pose_metrics
    from handflow.models import decode_joints
    from handflow.multihands import load
    from handflow.training import load_checkpoint

    ckpt, mh = trained
    ref = mean_pose_metrics(ckpt, tiny_data, "test", mh, batch_size=2)
    module, _ = load_checkpoint(ckpt)
    ds = InterHandDataset(tiny_data, "test", 64, augment=False)
    recs = load(mh, "test")
    mean = module.model.normalizer.mean
    assert not torch.allclose(mean, torch.zeros_like(mean))  # fitted: the reference is not the zero vector
    errs, mins, maxs = {a: [] for a in ("rr", "global")}, [], []
    for i in range(len(ds)):
        it = ds[i]
        J = decode_joints(mean[None], it["K"][None].float(), 64, module.hand_model)[0].double().numpy()
        gt = it["joints_cam"].double().numpy()
        for a in errs:
            errs[a].append(_mpjpe_loop(J, gt, a))
        r = recs.get(int(it["meta"]["image_id"]))
        if r is not None:
            e = [_mpjpe_loop(J, q, "global") for q in [gt] + [np.asarray(j, np.float64) for j in r.joints]]
            mins.append(min(e)), maxs.append(max(e))
    for a in errs:
        assert ref[f"mpjpe_z0_{a}"]["mean"] == pytest.approx(np.mean(errs[a]), rel=1e-5)
        assert ref[f"mpjpe_best_{a}"]["mean"] == pytest.approx(np.mean(errs[a]), rel=1e-5)  # its one sample is itself
    assert ref["min_global"]["count"] == len(mins) >= 1
    assert ref["min_global"]["mean"] == pytest.approx(np.mean(mins), rel=1e-5)
    assert ref["max_global"]["mean"] == pytest.approx(np.mean(maxs), rel=1e-5)
    assert ref["spread_mm"]["mean"] == 0.0 and ref["mmd_global"]["mean"] > 0
