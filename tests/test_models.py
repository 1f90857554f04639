"""lse_fast.models: shapes and strides at odd sizes, the summed ASPP, frozen
BatchNorm, the registry, checkpoint loading in the community layouts, and the
small model learning a few synthetic scenes."""

import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lse_fast import models
from lse_fast.evaluate import evaluate
from lse_fast.models.deeplab import DeepLabV2

ODD_SIZES = [(1, 1), (7, 9), (33, 31), (65, 97), (97, 131), (255, 513), (321, 321)]
RESNET101 = (3, 4, 23, 3)


@pytest.fixture(scope="module")
def deeplab():
    torch.manual_seed(0)
    return models.build("deeplab_v2_resnet101").eval()


def deeplab_out_size(n):
    """Logit size of the caffe-style DeepLab-v2 for an input side n, step by step."""
    n = (n + 2 * 3 - 7) // 2 + 1  # conv1 7x7/2 pad 3
    out = -(-(n + 2 - 3) // 2) + 1  # maxpool 3x3/2 pad 1, ceil_mode
    if (out - 1) * 2 >= n + 1:  # a window may not start in the right padding
        out -= 1
    return (out - 1) // 2 + 1  # layer2: 1x1 conv stride 2


# --------------------------------------------------------------- shapes


@pytest.mark.parametrize("size", ODD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_shapes_at_odd_sizes(size):
    h, w = size
    with torch.device("meta"):  # shapes only: no compute
        nets = {name: models.build(name, num_classes=13) for name in models.available()}
    x = torch.empty(2, 3, h, w, device="meta")
    want = {
        "deeplab_v2_resnet101": (deeplab_out_size(h), deeplab_out_size(w)),
        "fcn8s_vgg16": (h, w),
        "small_deeplab": (math.ceil(h / 8), math.ceil(w / 8)),
    }
    for name, net in nets.items():
        out = net(x)
        assert tuple(out.shape) == (2, 13) + want[name], name
        s = net.output_stride
        assert math.ceil(h / s) <= out.shape[2] <= math.ceil(h / s) + 1, name
        assert math.ceil(w / s) <= out.shape[3] <= math.ceil(w / s) + 1, name


def test_output_strides_and_normalization():
    with torch.device("meta"):
        assert models.build("deeplab_v2_resnet101").output_stride == 8
        assert models.build("deeplab_v2_resnet101").input_normalization == "caffe"
        assert models.build("fcn8s_vgg16").output_stride == 1
        assert models.build("fcn8s_vgg16").input_normalization == "caffe"
        assert models.build("fcn8s_vgg16", input_normalization="imagenet").input_normalization == "imagenet"
    assert models.build("small_deeplab").output_stride == 8
    assert models.build("small_deeplab").input_normalization == "imagenet"


def test_real_forward_and_backward_at_odd_size(deeplab):
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        assert deeplab(x).shape == (1, 19, 9, 13)
    fcn = models.build("fcn8s_vgg16", num_classes=5).eval()
    with torch.no_grad():
        out = fcn(x[:, :, :17, :23])
    assert out.shape == (1, 5, 17, 23) and torch.isfinite(out).all()
    small = models.build("small_deeplab", num_classes=4)
    out = small(torch.randn(2, 3, 37, 53))
    assert out.shape == (2, 4, 5, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in small.parameters())


# --------------------------------------------------------------- ASPP


def test_aspp_sums_all_four_branches(deeplab):
    head = deeplab.layer5
    assert [c.dilation for c in head.conv2d_list] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert [c.padding for c in head.conv2d_list] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert all(c.in_channels == 2048 and c.bias is not None for c in head.conv2d_list)
    feats = torch.randn(1, 2048, 9, 11)
    with torch.no_grad():
        got = head(feats)
        branches = [F.conv2d(feats, c.weight, c.bias, padding=d, dilation=d) for c, d in zip(head.conv2d_list, (6, 12, 18, 24))]
        want = sum(branches)
        # The copied bug returns after two branches; its output must differ from ours.
        early_return = branches[0] + branches[1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, early_return, rtol=1e-3, atol=1e-3)


def test_aspp_bias_only_adds_up_every_branch():
    net = models.build("small_deeplab", num_classes=3).eval()
    with torch.no_grad():
        for conv, b in zip(net.classifier.conv2d_list, (1.0, 2.0, 4.0, 8.0)):
            conv.weight.zero_()
            conv.bias.fill_(b)
        out = net(torch.randn(1, 3, 24, 40))
    assert torch.equal(out, torch.full_like(out, 15.0))  # 1+2 (early return) would give 3


# --------------------------------------------------------------- frozen BN


def test_deeplab_batchnorm_stays_frozen_after_train():
    net = DeepLabV2(4, layers=(1, 1, 1, 1))
    net.train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    assert net.training and net.layer5.training
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    out = net(torch.randn(2, 3, 33, 33) * 3 + 1)
    out.mean().backward()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "running statistics changed in train mode"
    assert net.conv1.weight.grad is not None and net.layer5.conv2d_list[3].weight.grad is not None
    trainable = net.backbone_parameters() + net.head_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in net.parameters() if p.requires_grad}
    unfrozen = DeepLabV2(4, layers=(1, 1, 1, 1), freeze_bn=False).train()
    assert all(m.training for m in unfrozen.modules() if isinstance(m, nn.BatchNorm2d))


# --------------------------------------------------------------- registry


def _user_factory(num_classes=19, width=8):
    net = nn.Conv2d(3, num_classes, 3, padding=1)
    net.output_stride = 1
    net.input_normalization = "imagenet"
    net.width = width
    return net


def _factory_without_attributes(num_classes=19):
    return nn.Conv2d(3, num_classes, 1)


@pytest.fixture
def user_module(monkeypatch):
    mod = types.ModuleType("lse_user_models")
    mod.good = _user_factory
    mod.bare = _factory_without_attributes
    monkeypatch.setitem(sys.modules, "lse_user_models", mod)
    return mod


def test_registry(user_module):
    assert {"deeplab_v2_resnet101", "fcn8s_vgg16", "small_deeplab"} <= set(models.available())
    net = models.build("lse_user_models:good", num_classes=7, width=3)
    assert net.out_channels == 7 and net.width == 3

    @models.register("tiny_test_net")
    def tiny(num_classes=19):
        return _user_factory(num_classes)

    try:
        assert "tiny_test_net" in models.available()
        assert models.build("tiny_test_net", num_classes=2).out_channels == 2
        with pytest.raises(ValueError, match="already registered"):
            models.register("tiny_test_net")(_user_factory)
    finally:
        models.registry._REGISTRY.pop("tiny_test_net")


def test_registry_errors(user_module):
    with pytest.raises(ValueError, match="unknown model 'resnet9000'.*small_deeplab"):
        models.build("resnet9000")
    with pytest.raises(ValueError, match="cannot import module 'no_such_pkg.models'"):
        models.build("no_such_pkg.models:net")
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        models.build("lse_user_models:missing")
    with pytest.raises(ValueError, match="output_stride"):
        models.build("lse_user_models:bare")
    with pytest.raises(ValueError, match="num_classes"):
        models.build("small_deeplab", num_classes=0)


# --------------------------------------------------------------- checkpoints


def community_deeplab_state(num_classes, *, prefix="", multi_level=False, batches_tracked=False):
    """A state dict in the AdaptSegNet/ADVENT key layout, enumerated from the
    published architecture (not from our model): random values."""
    g = torch.Generator().manual_seed(1)
    state = {}

    def conv(name, cout, cin, k, bias=False):
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * 0.01
        if bias:
            state[f"{name}.bias"] = torch.randn(cout, generator=g)

    def bn(name, ch):
        state[f"{name}.weight"] = torch.rand(ch, generator=g) + 0.5
        state[f"{name}.bias"] = torch.randn(ch, generator=g) * 0.1
        state[f"{name}.running_mean"] = torch.randn(ch, generator=g) * 0.1
        state[f"{name}.running_var"] = torch.rand(ch, generator=g) + 0.5
        if batches_tracked:
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), RESNET101), start=1):
        for j in range(blocks):
            p = f"layer{i}.{j}"
            conv(f"{p}.conv1", planes, inplanes, 1)
            bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3)
            bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", planes * 4, planes, 1)
            bn(f"{p}.bn3", planes * 4)
            if j == 0:  # every stage's first block projects (64 -> 256, stride, or dilation)
                conv(f"{p}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    heads = [("layer5", 1024), ("layer6", 2048)] if multi_level else [("layer5", 2048)]
    for head, cin in heads:
        for k in range(4):
            conv(f"{head}.conv2d_list.{k}", num_classes, cin, 3, bias=True)
    return {prefix + k: v for k, v in state.items()}


@pytest.fixture(scope="module")
def community_state():
    return community_deeplab_state(19)


def test_community_layout_loads_strictly(deeplab, community_state, capsys):
    missing, unexpected = models.load_checkpoint(deeplab, community_state, strict=True)
    assert missing == [] and unexpected == []
    sd = deeplab.state_dict()
    for k, v in community_state.items():
        assert torch.equal(sd[k], v), k
    assert "loaded" in capsys.readouterr().err


@pytest.mark.parametrize("prefix", ["module.", "Scale.", "module.Scale."])
def test_community_layout_with_prefix(deeplab, prefix):
    state = community_deeplab_state(19, prefix=prefix, batches_tracked=True)
    missing, unexpected = models.load_checkpoint(deeplab, {"state_dict": state}, strict=True, verbose=False)
    assert missing == [] and unexpected == []
    assert torch.equal(deeplab.layer3[22].conv2.weight, state[prefix + "layer3.22.conv2.weight"])


def test_multi_level_checkpoint_uses_final_head(deeplab, capsys):
    state = community_deeplab_state(19, multi_level=True)
    missing, unexpected = models.load_checkpoint(deeplab, state)
    assert missing == []
    assert sorted(unexpected) == sorted(f"aux_layer5.conv2d_list.{k}.{p}" for k in range(4) for p in ("weight", "bias"))
    assert torch.equal(deeplab.layer5.conv2d_list[2].weight, state["layer6.conv2d_list.2.weight"])
    assert "auxiliary" in capsys.readouterr().err


def test_imagenet_backbone_only(deeplab, capsys):
    state = {k: v for k, v in community_deeplab_state(19, batches_tracked=True).items() if not k.startswith("layer5")}
    state["fc.weight"] = torch.randn(1000, 2048)
    state["fc.bias"] = torch.randn(1000)
    missing, unexpected = models.load_checkpoint(deeplab, state)
    assert sorted(missing) == sorted(f"layer5.conv2d_list.{k}.{p}" for k in range(4) for p in ("weight", "bias"))
    assert sorted(unexpected) == ["fc.bias", "fc.weight"]
    err = capsys.readouterr().err
    assert "missing, left as initialised (8)" in err and "unexpected, ignored (2)" in err
    with pytest.raises(RuntimeError, match="strict=True.*missing 8"):
        models.load_checkpoint(deeplab, state, strict=True)


def test_class_count_mismatch_is_reported_and_skipped(deeplab, capsys):
    state = community_deeplab_state(16)
    before = deeplab.layer5.conv2d_list[0].weight.clone()
    missing, unexpected = models.load_checkpoint(deeplab, state)
    assert len(missing) == 8 and unexpected == []
    assert torch.equal(deeplab.layer5.conv2d_list[0].weight, before)
    assert "checkpoint [16, 2048, 3, 3], model [19, 2048, 3, 3]" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="shape mismatches 8"):
        models.load_checkpoint(deeplab, state, strict=True)


def test_state_dict_round_trip_through_file(tmp_path):
    torch.manual_seed(1)
    a = DeepLabV2(5, layers=(1, 2, 2, 1)).eval()
    b = DeepLabV2(5, layers=(1, 2, 2, 1)).eval()
    path = tmp_path / "deeplab.pth"
    torch.save(a.state_dict(), path)
    assert models.load_checkpoint(b, path, strict=True, verbose=False) == ([], [])
    x = torch.randn(1, 3, 41, 45)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    torch.save({"model": a.state_dict(), "epoch": 3}, path)
    assert models.load_checkpoint(b, str(path), strict=True, verbose=False) == ([], [])


def test_checkpoint_errors(tmp_path):
    net = models.build("small_deeplab")
    with pytest.raises(FileNotFoundError, match="checkpoint file not found: .*nope.pth"):
        models.load_checkpoint(net, tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read .*bad.pth"):
        models.load_checkpoint(net, bad)
    with pytest.raises(RuntimeError, match="shares no tensor"):
        models.load_checkpoint(net, {"foo.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="not a state dict"):
        models.load_checkpoint(net, {"epoch": 3})


def test_fcn_loads_torchvision_vgg16_layout():
    fcn = models.build("fcn8s_vgg16", num_classes=19, input_normalization="imagenet")
    g = torch.Generator().manual_seed(2)
    state, cin, idx = {}, 3, 0
    for ch, n in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(n):  # torchvision: conv, relu (, pool after each stage)
            state[f"features.{idx}.weight"] = torch.randn(ch, cin, 3, 3, generator=g)
            state[f"features.{idx}.bias"] = torch.randn(ch, generator=g)
            cin, idx = ch, idx + 2
        idx += 1
    state["classifier.0.weight"] = torch.randn(4096, 25088, generator=g)
    state["classifier.0.bias"] = torch.randn(4096, generator=g)
    state["classifier.3.weight"] = torch.randn(4096, 4096, generator=g)
    state["classifier.3.bias"] = torch.randn(4096, generator=g)
    state["classifier.6.weight"] = torch.randn(1000, 4096, generator=g)
    state["classifier.6.bias"] = torch.randn(1000, generator=g)
    missing, unexpected = models.load_checkpoint(fcn, state, verbose=False)
    assert sorted(unexpected) == ["classifier.6.bias", "classifier.6.weight"]
    assert all(k.startswith(("score_", "upscore")) for k in missing) and len(missing) == 9
    assert torch.equal(fcn.conv3_2.weight, state["features.12.weight"])
    assert torch.equal(fcn.conv5_3.bias, state["features.28.bias"])
    assert torch.equal(fcn.fc6.weight, state["classifier.0.weight"].view(4096, 512, 7, 7))
    assert torch.equal(fcn.fc7.weight[:, :, 0, 0], state["classifier.3.weight"])


# --------------------------------------------------------------- small model learns


def synthetic_scenes(n, h=48, w=96, seed=0):
    """Street-like scenes: sky / buildings / vegetation / road bands with cars,
    per-class colours plus noise; trainIds as in Cityscapes."""
    g = torch.Generator().manual_seed(seed)
    colours = {10: (70, 130, 180), 2: (90, 90, 90), 8: (60, 150, 40), 0: (128, 64, 128), 13: (0, 0, 200), 1: (230, 200, 230)}
    images, labels = [], []
    for _ in range(n):
        label = torch.full((h, w), 10, dtype=torch.long)
        horizon = int(torch.randint(h // 3, h // 2, (1,), generator=g))
        label[horizon:] = 0
        x = 0
        while x < w:  # buildings and trees along the horizon
            bw = int(torch.randint(8, 24, (1,), generator=g))
            top = int(torch.randint(2, horizon - 2, (1,), generator=g))
            label[top:horizon, x : x + bw] = 2 if torch.rand(1, generator=g) < 0.6 else 8
            x += bw
        side = int(torch.randint(horizon + 2, horizon + 6, (1,), generator=g))
        label[horizon:side] = 1
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cx = int(torch.randint(0, w - 16, (1,), generator=g))
            cy = int(torch.randint(side, h - 6, (1,), generator=g))
            label[cy : cy + 6, cx : cx + 16] = 13
        img = torch.zeros(3, h, w)
        for c, rgb in colours.items():
            img[:, label == c] = torch.tensor(rgb, dtype=torch.float32)[:, None]
        img = img + 20 * torch.randn(3, h, w, generator=g)
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        images.append((img / 255 - mean) / std)
        label[:, :2] = 255  # an ignored strip
        labels.append(label)
    return torch.stack(images), torch.stack(labels)


def test_small_model_overfits_synthetic_scenes():
    torch.manual_seed(0)
    images, labels = synthetic_scenes(8)
    net = models.build("small_deeplab")
    loader = [{"image": images[i : i + 4], "label": labels[i : i + 4]} for i in (0, 4)]
    before = evaluate(net, loader)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    net.train()
    for step in range(60):
        batch = loader[step % 2]
        logits = F.interpolate(net(batch["image"]), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, batch["label"], ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = evaluate(net, loader)
    assert net.training  # evaluate restored the training mode
    assert sum(losses[-5:]) / 5 < 0.25 * sum(losses[:5]) / 5, losses
    present = [after["iou"][c] for c in (0, 1, 2, 8, 10, 13)]
    assert after["miou"] > 0.7 and min(present) > 0.4, after["per_class"]
    assert after["miou"] > before["miou"] + 0.3


# --------------------------------------------------------------- published layouts (checkpoint compatibility)


class PublishedClassifierModule(nn.Module):
    """The DeepLab-v2 head as the AdaptSegNet/ADVENT code writes it: the
    `return` sits inside the loop, so only the first two branches are summed."""

    def __init__(self, conv2d_list):
        super().__init__()
        self.conv2d_list = conv2d_list

    def forward(self, x):
        out = self.conv2d_list[0](x)
        for i in range(len(self.conv2d_list) - 1):
            out += self.conv2d_list[i + 1](x)
            return out


def _tiny_deeplab(**kw):
    torch.manual_seed(3)
    return DeepLabV2(5, layers=(1, 1, 1, 1), **kw).eval()


def _community_copy(model, drop):
    """The model's tensors as a community file has them: no lse_fast record, a trained (random) head."""
    g = torch.Generator().manual_seed(4)
    state = {k: v.clone() for k, v in model.state_dict().items() if k != drop}
    for k in state:
        if k.startswith(("layer5.conv2d_list", "score_")):
            state[k] = torch.randn(state[k].shape, generator=g) * 0.05
    return state


def test_deeplab_community_checkpoint_gets_the_early_return_aspp():
    model = _tiny_deeplab()
    state = _community_copy(model, "layer5.branches")
    with pytest.warns(RuntimeWarning, match="AdaptSegNet/ADVENT family.*sums the first 2 \\(auto"):
        assert models.load_checkpoint(model, state, strict=True, verbose=False) == ([], [])
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        feats = model.layer4(model.layer3(model.layer2(model.layer1(model.maxpool(F.relu(model.bn1(model.conv1(x))))))))
        want = PublishedClassifierModule(model.layer5.conv2d_list)(feats)
        assert torch.equal(model(x), want)
        # the layout is recorded: a save and a plain load_state_dict keep it, without a warning
        again = _tiny_deeplab()
        again.load_state_dict(model.state_dict())
        assert again.layer5.summed == 2 and torch.equal(again(x), want)
    # asked for all four: the warning says the forward differs from the training one
    four = _tiny_deeplab(aspp_branches=4)
    with pytest.warns(RuntimeWarning, match="differs from the one the checkpoint was trained with"):
        models.load_checkpoint(four, state, verbose=False)
    with torch.no_grad():
        assert not torch.allclose(four(x), want, atol=1e-4)
        assert torch.allclose(four(x), want + four.layer5.conv2d_list[2](feats) + four.layer5.conv2d_list[3](feats),
                              atol=1e-5)
    # lse_fast's own checkpoints record 4 and load without a warning
    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("error")
        fresh = _tiny_deeplab()
        models.load_checkpoint(fresh, four.state_dict(), strict=True, verbose=False)
        assert fresh.layer5.summed == 4
    with pytest.raises(ValueError, match="`aspp_branches` must be None"):
        DeepLabV2(5, layers=(1, 1, 1, 1), aspp_branches=3)


def published_fcn8s_atonce(sd, x):
    """Forward of caffe's FCN-8s "at-once" as its PyTorch ports write it:
    padded conv1_1, five ceil-mode poolings, fc6/fc7, skips scaled by 0.01
    (pool4) and 0.0001 (pool3), crops at 5, 9 and 31."""

    def conv(h, name, padding=0):
        return F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=padding)

    h = x
    pools = []
    for stage, n in enumerate((2, 2, 3, 3, 3), start=1):
        for i in range(1, n + 1):
            h = F.relu(conv(h, f"conv{stage}_{i}", padding=100 if (stage, i) == (1, 1) else 1))
        h = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
        pools.append(h)
    pool3, pool4 = pools[2], pools[3]
    h = F.relu(conv(h, "fc6"))
    h = F.relu(conv(h, "fc7"))
    h = conv(h, "score_fr")
    upscore2 = F.conv_transpose2d(h, sd["upscore2.weight"], stride=2)
    score_pool4 = conv(pool4 * 0.01, "score_pool4")
    score_pool4c = score_pool4[:, :, 5:5 + upscore2.shape[2], 5:5 + upscore2.shape[3]]
    upscore_pool4 = F.conv_transpose2d(upscore2 + score_pool4c, sd["upscore_pool4.weight"], stride=2)
    score_pool3 = conv(pool3 * 0.0001, "score_pool3")
    score_pool3c = score_pool3[:, :, 9:9 + upscore_pool4.shape[2], 9:9 + upscore_pool4.shape[3]]
    upscore8 = F.conv_transpose2d(upscore_pool4 + score_pool3c, sd["upscore8.weight"], stride=8)
    return upscore8[:, :, 31:31 + x.shape[2], 31:31 + x.shape[3]]


def test_fcn8s_community_checkpoint_gets_the_atonce_skip_scaling():
    torch.manual_seed(5)
    fcn = models.build("fcn8s_vgg16", num_classes=3).eval()
    state = _community_copy(fcn, "skip_scales")
    with torch.no_grad():  # pool3 * 1e-4 needs large skip weights to matter, as in the trained files
        state["score_pool3.weight"] *= 1e4
        state["score_pool4.weight"] *= 1e2
    with pytest.warns(RuntimeWarning, match="'at-once' family.*'atonce' \\(0.01, 0.0001\\) \\(auto"):
        models.load_checkpoint(fcn, state, strict=True, verbose=False)
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        want = published_fcn8s_atonce(state, x)
        torch.testing.assert_close(fcn(x), want, rtol=1e-4, atol=1e-4)
        fcn.set_skip_scales(1.0, 1.0)  # the unscaled forward computes something else
        assert not torch.allclose(fcn(x), want, rtol=1e-2, atol=1e-2)
    del fcn, state
    with pytest.raises(ValueError, match="`skip_scale` must be None"):
        models.FCN8s(3, skip_scale="half")
