"""Speed-ups of the porting recipes (docs/porting.md): each recipe's call
against an eager PyTorch transcription of the code it replaces (vectorised
where theirs is a Python loop over pixels, so the figure is a lower bound).

Self-contained (its own device parameter). Run with
    pytest benchmarks/test_bench_porting.py --benchmark-only
"""

import pytest
import torch
import torch.nn.functional as F

import lse_fast
from lse_fast import ops, selection
from lse_fast.stats import ScoreSummary, confidence_share


def _devices():
    out = ["cpu"]
    if torch.cuda.is_available() and lse_fast.built_with_cuda():
        out.append("cuda")
    return out


@pytest.fixture(params=_devices())
def device(request):
    return request.param


def _time(benchmark, device, fn, rounds=5):
    def run():
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)


# -- LSE authors: the sorting pass over one image (FCN-8s logits at 512 x 1024)
def lse_theirs(logits):
    p = torch.softmax(logits, 1)
    conf, label = p.max(1)
    means = []
    for c in range(p.shape[1]):  # their per-class loop: mean max-prob of the pixels predicted c
        m = label[0] == c
        if m.any():
            means.append(conf[0][m].mean())
    return means


def lse_ours(logits):
    s = ops.score(logits)
    return s.class_confidence / s.class_pixels.clamp(min=1), selection.minmax_class_entropy_sums(s, logits.shape[1])


@pytest.mark.parametrize("provider", ["theirs", "ours"])
def test_lse_sorting_pass(benchmark, device, provider):
    logits = torch.randn(1, 19, 512, 1024, device=device) * 3
    fn = lse_theirs if provider == "theirs" else lse_ours
    benchmark.extra_info.update(recipe="lse-sorting-pass", device=device, provider=provider)
    _time(benchmark, device, lambda: fn(logits))


# -- LSE authors: FCN-8s target loss (CE + 0.1 focal, gamma 3), forward + backward
def lse_loss_theirs(logits, target):
    valid = target != 255
    flat = logits.permute(0, 2, 3, 1)[valid]
    ce = F.cross_entropy(flat, target[valid], reduction="none")
    pt = torch.exp(-ce)
    return 0.1 * (ce * (1 - pt) ** 3).mean() + ce.mean()


@pytest.mark.parametrize("provider", ["theirs", "ours"])
def test_lse_loss(benchmark, device, provider):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(1, 19, 512, 1024, generator=g) * 3).to(device).requires_grad_()
    target = torch.randint(0, 19, (1, 512, 1024), generator=g).to(device)
    target[:, :64] = 255
    if provider == "theirs":
        def fn():
            lse_loss_theirs(logits, target).backward()
    else:
        def fn():
            ops.focal_ce_loss(logits, target, gamma=3.0, beta=0.1).backward()
    benchmark.extra_info.update(recipe="lse-loss", device=device, provider=provider)
    _time(benchmark, device, fn)


# -- DAFormer/MIC: pseudo-label and its confidence weight from the EMA teacher
def daformer_theirs(low, size):
    p = torch.softmax(F.interpolate(low, size, mode="bilinear", align_corners=False), 1)
    prob, label = p.max(1)
    share = (prob >= 0.968).sum().item() / prob.numel()
    return label, share * torch.ones(prob.shape, device=low.device)


def daformer_ours(low, size):
    s = ops.score(low, size)
    return s.label, torch.full_like(s.confidence, confidence_share(s.confidence, 0.968).item())


@pytest.mark.parametrize("provider", ["theirs", "ours"])
def test_daformer_pseudo_label(benchmark, device, provider):
    low = torch.randn(2, 19, 128, 128, device=device) * 5  # 1/4 of DAFormer's 512 x 512 crops
    fn = daformer_theirs if provider == "theirs" else daformer_ours
    benchmark.extra_info.update(recipe="daformer-pseudo-label", device=device, provider=provider)
    _time(benchmark, device, lambda: fn(low, (512, 512)))


# -- CRST and ESL: the per-image pass that feeds their thresholds, at the
# network's output resolution (their align_corners=True upsampling needs
# issue 18 item 2): theirs keeps the pixels, ours adds them to a summary.
def crst_theirs(logits, store):
    p = torch.softmax(logits, 1)
    conf, label = p.max(1)
    for c in range(p.shape[1]):  # crst_seg.py val(): per-class lists of max-probs (ds_rate 1)
        m = label[0] == c
        if m.any():
            store[c].append(conf[0][m])


def esl_theirs(logits, store):
    p = torch.softmax(logits, 1)
    ent = -(p * torch.log(p)).sum(1) / torch.log(torch.tensor(float(p.shape[1])))
    store.append((p.argmax(1), ent))  # esl_UDA.py keeps label and entropy maps of the whole chunk


@pytest.mark.parametrize("recipe", ["crst", "esl"])
@pytest.mark.parametrize("provider", ["theirs", "ours"])
def test_threshold_pass(benchmark, device, recipe, provider):
    logits = torch.randn(1, 19, 512, 1024, device=device) * 3
    if provider == "theirs":
        def fn():
            crst_theirs(logits, [[] for _ in range(19)]) if recipe == "crst" else esl_theirs(logits, [])
    else:
        summary = ScoreSummary(19, 2048)

        def fn():
            summary.update(ops.score(logits))
    benchmark.extra_info.update(recipe=f"{recipe}-pass", device=device, provider=provider)
    _time(benchmark, device, fn)


# -- CRST and ESL at the label resolution (issue 18 items 2 and 3): CRST
# upsamples the logits with align_corners=True, ESL the softmax outputs.
def crst_up_theirs(low, size, store):
    crst_theirs(F.interpolate(low, size, mode="bilinear", align_corners=True), store)


def esl_up_theirs(probs, size, store):
    p = F.interpolate(probs, size, mode="bilinear", align_corners=True)  # their interp of the softmax
    ent = -(p * torch.log(p)).sum(1) / torch.log(torch.tensor(float(p.shape[1])))
    store.append((p.argmax(1), ent))


@pytest.mark.parametrize("recipe", ["crst", "esl"])
@pytest.mark.parametrize("provider", ["theirs", "ours"])
def test_threshold_pass_upsampled(benchmark, device, recipe, provider):
    low = torch.randn(1, 19, 64, 128, device=device) * 3
    probs = torch.softmax(low, 1)
    size = (512, 1024)
    summary = ScoreSummary(19, 2048)
    if provider == "theirs":
        def fn():
            crst_up_theirs(low, size, [[] for _ in range(19)]) if recipe == "crst" else esl_up_theirs(probs, size, [])
    elif recipe == "crst":
        def fn():
            summary.update(ops.score(low, size, align_corners=True))
    else:
        def fn():
            summary.update(ops.score_probs(probs, size, align_corners=True))
    benchmark.extra_info.update(recipe=f"{recipe}-upsampled-pass", device=device, provider=provider)
    _time(benchmark, device, fn)


# -- LSE authors: patches' pseudo-labels with align_corners=True (LSE.py
# Generate/save_data): min-max entropy filter map, then per box the crop of
# the probabilities and of the map resized with align_corners=True.
def lse_patches_theirs(probs, boxes, size, thresholds):
    c = probs.shape[1]
    label = probs.argmax(1)
    ent = selection.minmax_class_entropy(-(probs * torch.log(probs + 1e-12)).sum(1), label, c)[0]
    keep = (ent < thresholds[label]).float()
    out = []
    for b, x1, y1, x2, y2 in boxes.long().tolist():
        p = F.interpolate(probs[b:b + 1, :, y1:y2, x1:x2], size, mode="bilinear", align_corners=True)
        m = F.interpolate(keep[b:b + 1, None, y1:y2, x1:x2], size, mode="bilinear", align_corners=True)
        lab = p.argmax(1)[0]
        lab[m[0, 0] == 0] = 255
        out.append(lab)
    return torch.stack(out)


@pytest.mark.parametrize("provider", ["theirs", "ours"])
def test_lse_patch_pseudo_labels(benchmark, device, provider):
    from lse_fast.patches import random_boxes

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, 19, 512, 1024, generator=g) * 3, 1).to(device)
    boxes = random_boxes(2, (512, 1024), k=4, generator=g)
    thresholds = torch.rand(19, generator=g).to(device)
    size = (512, 1024)
    if provider == "theirs":
        def fn():
            lse_patches_theirs(probs, boxes, size, thresholds)
    else:
        def fn():
            selection.pseudo_labels(probs, boxes, size, thresholds, entropy_norm="minmax",
                                    filter_interp="bilinear", align_corners=True)
    benchmark.extra_info.update(recipe="lse-patch-pseudo-labels", device=device, provider=provider)
    _time(benchmark, device, fn, rounds=3)


# -- Loss options (issue 18 item 4), forward + backward at 1 x 19 x 512 x 1024:
# DAFormer/MIC's mmseg CE times seg_weight averaged over all pixels, CBST's
# class-weighted CE (F.cross_entropy(weight=)), kornia's focal term alone.
def mmseg_weighted_ce_theirs(logits, target, seg_weight, class_weight):
    ce = F.cross_entropy(logits, target, reduction="none", ignore_index=255)
    return (ce * seg_weight).mean()


def class_weighted_ce_theirs(logits, target, seg_weight, class_weight):
    return F.cross_entropy(logits, target, weight=class_weight, ignore_index=255)


def kornia_focal_theirs(logits, target, seg_weight, class_weight, gamma=2.0):
    logp = torch.log_softmax(logits, 1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    return (-onehot * (1 - logp.exp()) ** gamma * logp).mean()  # kornia focal_loss(alpha=None), "mean"


LOSS_RECIPES = {
    "daformer-weighted-ce": (mmseg_weighted_ce_theirs,
                             lambda x, t, pw, cw: ops.focal_ce_loss(x, t, beta=0.0, pixel_weight=pw, reduction="mean_all")),
    "class-weighted-ce": (class_weighted_ce_theirs,
                          lambda x, t, pw, cw: ops.focal_ce_loss(x, t, beta=0.0, weight=cw)),
    "kornia-focal": (kornia_focal_theirs,
                     lambda x, t, pw, cw: ops.focal_ce_loss(x, t, gamma=2.0, beta=1.0, ce_weight=0.0, reduction="sum")
                     / x.numel()),
}


@pytest.mark.parametrize("recipe", list(LOSS_RECIPES))
@pytest.mark.parametrize("provider", ["theirs", "ours"])
def test_loss_options(benchmark, device, recipe, provider):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(1, 19, 512, 1024, generator=g) * 3).to(device).requires_grad_()
    target = torch.randint(0, 19, (1, 512, 1024), generator=g)
    if recipe != "kornia-focal":  # kornia has no ignore index by default
        target[:, :64] = 255
    target = target.to(device)
    seg_weight = torch.rand(1, 512, 1024, generator=g).to(device)
    class_weight = (torch.rand(19, generator=g) + 0.5).to(device)
    theirs, ours = LOSS_RECIPES[recipe]
    fn = theirs if provider == "theirs" else ours
    want = theirs(logits.double(), target, seg_weight.double(), class_weight.double())
    assert ours(logits, target, seg_weight, class_weight).item() == pytest.approx(want.item(), rel=1e-4)
    benchmark.extra_info.update(recipe=recipe, device=device, provider=provider)
    _time(benchmark, device, lambda: torch.autograd.grad(fn(logits, target, seg_weight, class_weight), logits))
