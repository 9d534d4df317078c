"""Backbone and VideoReIDModel: shapes, options, weights errors, gradients. ResNet-18 on small frames, no weights."""
import dataclasses

import pytest
import torch
import torchvision

from core.config import ModelConfig
from core.models import VideoReIDModel, WeightsUnavailableError, build_backbone, build_model
from core.models.backbone import cached_weights_file


def tiny(aggregation="sta", **kw):
    torch.manual_seed(0)
    return VideoReIDModel(7, backbone="resnet18", pretrained=False, aggregation=aggregation, feat_dim=16, **kw)


def test_resnet50_last_stride_one_gives_16x8():
    net, channels = build_backbone("resnet50", pretrained=False)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 256, 128)).shape == (1, 2048, 16, 8) and channels == 2048


def test_resnet18_last_stride_one():
    net, channels = build_backbone("resnet18", pretrained=False)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 64, 32)).shape == (1, 512, 4, 2) and channels == 512


def test_missing_cache_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as err:
        build_backbone("resnet50", pretrained=True)
    msg = str(err.value)
    assert "resnet50-0676ba61.pth" in msg and str(tmp_path / "checkpoints") in msg
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in msg and "weights_path" in msg


def test_cached_file_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    state = torchvision.models.resnet18().state_dict()
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, cached_weights_file("resnet18"))
    net, _ = build_backbone("resnet18", pretrained=True)
    assert torch.equal(net[0].weight, state["conv1.weight"])


def test_bad_weights_path_names_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsUnavailableError, match="nope.pth"):
        build_backbone("resnet18", pretrained=True, weights_path=str(missing))
    wrong = tmp_path / "wrong.pth"
    torch.save({"foo.weight": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsUnavailableError, match="wrong.pth"):
        build_backbone("resnet18", pretrained=True, weights_path=str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="garbage.pth"):
        build_backbone("resnet18", pretrained=True, weights_path=str(garbage))
    shape = tmp_path / "shape.pth"
    torch.save(torchvision.models.resnet50().state_dict(), shape)
    with pytest.raises(WeightsUnavailableError, match="shape.pth"):
        build_backbone("resnet18", pretrained=True, weights_path=str(shape))


def test_unknown_names():
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50"):
        build_backbone("vgg16", pretrained=False)
    with pytest.raises(ValueError, match="frame, avg, sta"):
        tiny("max")


def test_any_n_and_k():
    model = tiny(fusion=True).eval()
    with torch.no_grad():
        for n in (1, 2, 4, 8):
            maps = model.backbone(torch.randn(n, 3, 128, 32)).unflatten(0, (1, n))  # (N, 512, 8, 2) -> (1, N, ...)
            for k in (2, 4, 8):
                model.num_regions = k
                out = model.aggregate(maps)
                assert out["feat"].shape == (1, 16) and out["logits"].shape == (1, 7)
                assert out["scores"].shape == (1, n, k) and out["attention"].shape == (1, n, 8, 2)
                assert torch.allclose(out["scores"].sum(1), torch.ones(1, k))
        assert model(torch.randn(1, 8, 3, 128, 32))["scores"].shape == (1, 8, 8)
    model.num_regions = 9
    with pytest.raises(ValueError, match="K=9"):
        model(torch.randn(1, 2, 3, 128, 32))


def test_frame_aggregation_train_and_eval_shapes():
    model = tiny("frame")
    clips = torch.randn(3, 4, 3, 64, 32)
    out = model.train()(clips)
    assert out["feat"].shape == (12, 16) and out["logits"].shape == (12, 7) and out["frames_per_clip"] == 4
    assert out["scores"] is None and out["attention"].shape == (3, 4, 4, 2)
    with torch.no_grad():
        ev = model.eval()(clips)
        frames = model.fc(model.backbone(clips.flatten(0, 1)).mean((-2, -1)))  # per-frame FC outputs
    assert ev["feat"].shape == (3, 16) and ev["frames_per_clip"] == 1
    assert torch.allclose(ev["feat"], frames.unflatten(0, (3, 4)).mean(1), atol=1e-5)


def test_avg_and_sta_shapes():
    for agg, fusion in (("avg", False), ("sta", False), ("sta", True)):
        model = tiny(agg, fusion=fusion)
        out = model(torch.randn(2, 3, 3, 64, 32))
        assert out["feat"].shape == (2, 16) and out["frames_per_clip"] == 1
        assert model.fc.in_features == (1024 if fusion else 512)
        assert (out["scores"] is None) == (agg == "avg")


def test_identical_frames_sta_equals_avg():
    sta, avg = tiny("sta", fusion=False).eval(), tiny("avg").eval()
    avg.load_state_dict(sta.state_dict())
    clips = torch.randn(2, 1, 3, 64, 32).expand(-1, 4, -1, -1, -1)
    with torch.no_grad():
        assert torch.allclose(sta(clips)["feat"], avg(clips)["feat"], atol=1e-5)


def test_gradient_reaches_backbone_through_scores():
    model = tiny("sta")
    out = model(torch.randn(2, 3, 3, 64, 32))
    out["scores"].square().sum().backward()  # depends on the backbone only through Eq. 1-4
    grad = model.backbone[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0 and torch.isfinite(grad).all()


def test_channels_last_and_bf16_autocast():
    model = tiny("sta").eval()
    clips = torch.randn(2, 3, 3, 64, 32)
    with torch.no_grad():
        ref = model(clips)
        cl = model.to(memory_format=torch.channels_last)
        frames = clips.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (2, 3))
        out = cl(frames)
        assert torch.allclose(out["feat"], ref["feat"], atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = model(clips)
    assert amp["scores"].dtype == torch.float32 and amp["attention"].dtype == torch.float32
    assert torch.isfinite(amp["feat"].float()).all()
    assert torch.allclose(amp["scores"], ref["scores"], atol=2e-2)


def test_build_model_from_config():
    cfg = ModelConfig(backbone="resnet18", pretrained=False, aggregation="sta", fusion=True, num_regions=2,
                      feat_dim=8, attention="norm_l2", f2_weights="raw", remainder="spread")
    model = build_model(cfg, 5)
    assert (model.attention, model.f2_weights, model.remainder, model.num_regions) == ("norm_l2", "raw", "spread", 2)
    assert model.fc.in_features == 1024 and model.fc.out_features == 8 and model.classifier.out_features == 5
    assert model(torch.randn(1, 2, 3, 64, 32))["scores"].shape == (1, 2, 2)


def test_f2_weight_option_reaches_the_head():
    norm, raw = tiny("sta", fusion=False).eval(), tiny("sta", fusion=False, f2_weights="raw").eval()
    raw.load_state_dict(norm.state_dict())
    clips = torch.randn(1, 3, 3, 64, 32)
    with torch.no_grad():
        a, b = norm(clips), raw(clips)
    assert torch.equal(a["scores"], b["scores"]) and not torch.allclose(a["feat"], b["feat"])


def test_eq10_classifier_has_no_bias_by_default():
    # Eq. 10: softmax over W_k^T x; model.classifier_bias = true adds a bias
    x = torch.randn(3, 16)
    plain = tiny("avg")
    assert plain.classifier.bias is None and "classifier.bias" not in plain.state_dict()
    assert torch.allclose(plain.classifier(x), x @ plain.classifier.weight.T)
    assert tiny("avg", classifier_bias=True).classifier.bias is not None
    cfg = ModelConfig(backbone="resnet18", pretrained=False, aggregation="avg", feat_dim=8)
    assert build_model(cfg, 5).classifier.bias is None
    assert build_model(dataclasses.replace(cfg, classifier_bias=True), 5).classifier.bias is not None


def test_renamed_attention_is_refused_with_its_new_name():
    with pytest.raises(ValueError, match="renamed 'norm_l2'"):
        tiny("sta", attention="l2")
