"""Speed-ups of the porting recipes (docs/porting.md): each recipe's call
against an eager PyTorch transcription of the code it replaces (vectorised
where theirs is a Python loop over pixels, so the figure is a lower bound).

Self-contained (its own device parameter). Run with
    pytest benchmarks/test_bench_porting.py --benchmark-only
Recipes needing issue 18 items 2-4 (align_corners, score_probs, the loss
options) are not here yet.
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
