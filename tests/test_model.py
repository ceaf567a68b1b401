"""Backbone (local weights only, ImageNet normalization inside) and HandFlowNet (shapes, cached
context, batch independence, decoding through the hand model)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import random_rotmats

from handflow.config import load_config
from handflow.constants import NUM_ROT, PARAM_DIM
from handflow.geometry import intrinsics
from handflow.hand.registry import load_hand_model
from handflow.models import build_model, decode_joints
from handflow.models.backbone import FEATURE_DIMS, Backbone
from handflow.params import pack, pack_hand

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch) -> None:
    """Any attempt to fetch weights from the network fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("handflow tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)


@pytest.mark.parametrize("name", sorted(FEATURE_DIMS))
def test_backbone_feature_dims(name: str) -> None:
    bb = Backbone(name).eval()
    with torch.no_grad():
        f = bb(torch.rand(2, 3, 32, 32))
    assert f.shape == (2, FEATURE_DIMS[name]) == (2, bb.dim)
    assert {"resnet18": 512, "resnet34": 512, "resnet50": 2048}[name] == bb.dim


def test_backbone_normalizes_like_imagenet_resnet() -> None:
    """The module equals an independent torchvision ResNet fed ImageNet-normalized input."""
    bb = Backbone("resnet18").eval()
    ref = torchvision.models.resnet18(weights=None)
    ref.fc = torch.nn.Identity()
    ref.load_state_dict(bb.net.state_dict())
    ref.eval()
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(bb(x), ref((x - IMAGENET_MEAN) / IMAGENET_STD), atol=1e-5)
        assert not torch.allclose(bb(x), ref(x), atol=1e-3)  # the normalization matters
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        bb(torch.rand(3, 32, 32))


def test_backbone_local_weights_only(tmp_path) -> None:
    src = torchvision.models.resnet18(weights=None)  # stands in for an ImageNet file (with fc)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(src.state_dict(), path)
    bb = Backbone("resnet18", pretrained_path=str(path))
    for k, v in bb.net.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k
    with pytest.raises(FileNotFoundError, match="never downloads"):
        Backbone("resnet18", pretrained_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="does not fit resnet50"):
        Backbone("resnet50", pretrained_path=str(path))
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        Backbone("resnet18", pretrained_path=str(bad))
    with pytest.raises(ValueError, match="unknown backbone"):
        Backbone("vgg16")


def _tiny_model(hidden: int = 32):
    cfg = load_config("cpu", [f"model.flow_hidden={hidden}", "data.image_size=64"])
    torch.manual_seed(0)
    m = build_model(cfg)
    y = torch.randn(32, PARAM_DIM) * 0.5
    m.normalizer.fit(y)
    m.initialize(torch.zeros(32, m.backbone.dim), m.normalizer.normalize(y))
    with torch.no_grad():  # move off the identity init so the context matters
        for p in m.flow.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m.eval()


def test_handflownet_shapes_and_cached_context() -> None:
    m = _tiny_model()
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        v = m.features(images)
        assert v.shape == (3, 512)
        z0 = m.z0_std(v)
        assert z0.shape == (3, PARAM_DIM)
        # the z = 0 estimate is f_v(0) computed by the flow itself
        y0, _ = m.flow.forward(torch.zeros(3, PARAM_DIM), v)
        assert torch.allclose(z0, y0)
        s = m.sample_std(v, 7, torch.Generator().manual_seed(5))
        assert s.shape == (3, 7, PARAM_DIM)
        # samples are f_v(z) with z drawn from the generator, one context per image
        z = torch.randn(3, 7, PARAM_DIM, generator=torch.Generator().manual_seed(5))
        ref = torch.stack([m.flow.forward(z[b], v[b : b + 1].expand(7, -1))[0] for b in range(3)])
        assert torch.allclose(s, ref, atol=1e-5)
        phys = m.sample(v, 4)
        assert phys.shape == (3, 4, PARAM_DIM) and torch.isfinite(phys).all()


def test_backbone_runs_once_per_image_batch() -> None:
    m = _tiny_model()
    calls = []
    m.backbone.register_forward_hook(lambda *a: calls.append(1))
    out = m.predict(torch.rand(2, 3, 64, 64), n=50)
    assert len(calls) == 1
    assert out["z0"].shape == (2, PARAM_DIM) and out["samples"].shape == (2, 50, PARAM_DIM)


def test_predictions_are_batch_independent_in_eval() -> None:
    m = _tiny_model()
    images = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        all4 = m.z0(m.features(images))
        one = m.z0(m.features(images[2:3]))
    assert torch.allclose(all4[2:3], one, atol=1e-5)


def test_decode_joints_matches_hand_model() -> None:
    """decode(pack(params)) == hand model joints + root, camera frame, mm."""
    hm = load_hand_model("openhand")
    B, S = 2, 64
    g = torch.Generator().manual_seed(0)
    K = intrinsics(torch.full((B,), 150.0), torch.full((B,), 150.0), torch.full((B,), 32.0), torch.full((B,), 32.0))
    R = {s: random_rotmats(B * NUM_ROT, g, torch.float32).reshape(B, NUM_ROT, 3, 3) for s in ("right", "left")}
    betas = {s: torch.randn(B, 10, generator=g) * 0.5 for s in ("right", "left")}
    root = {"right": torch.tensor([[40.0, 10.0, 450.0], [-20.0, 5.0, 600.0]]),
            "left": torch.tensor([[-60.0, 0.0, 480.0], [30.0, -15.0, 550.0]])}
    y = pack(*(pack_hand(R[s], betas[s], root[s], K, S) for s in ("right", "left")))
    J, verts = decode_joints(y, K, S, hm, vertices=True)
    assert J.shape == (B, 42, 3)
    for i, side in enumerate(("right", "left")):
        out = hm(R[side], betas[side], side)
        assert torch.allclose(J[:, i * 21 : (i + 1) * 21], out.joints + root[side][:, None], atol=1e-2)
        assert torch.allclose(verts[side], out.vertices + root[side][:, None], atol=1e-2)
    # a sample axis: every sample decodes like the flat batch
    ys = torch.stack([y, y.flip(0)], 1)  # (B, 2, 218)
    Js = decode_joints(ys, K, S, hm)
    assert Js.shape == (B, 2, 42, 3)
    assert torch.allclose(Js[:, 0], J, atol=1e-3)
    assert torch.allclose(Js[0, 1], decode_joints(y[1:2], K[0:1], S, hm)[0], atol=1e-3)
