"""Class-balanced thresholds (CBST/CRST) and ESL's median entropy over a
scored target set: the bounded summary (lse_fast.stats.ScoreSummary, one
bincount per batch) against keeping every pixel's confidence and entropy
and sorting them per class (what CRST and ESL do).

Self-contained (its own device parameter). Run with
    pytest benchmarks/test_bench_selection.py --benchmark-only
"""

import pytest
import torch

import lse_fast
from lse_fast.stats import ScoreSummary

C = 19
BATCHES = 4  # 4 images of 512 x 1024, scored one at a time
SHAPE = (1, C, 512, 1024)
PORTION = 0.2


def _devices():
    out = ["cpu"]
    if torch.cuda.is_available() and lse_fast.built_with_cuda():
        out.append("cuda")
    return out


@pytest.fixture(params=_devices(), scope="module")
def scored(request):
    device = request.param
    g = torch.Generator().manual_seed(0)
    batches = [lse_fast.ops.score((torch.randn(SHAPE, generator=g) * 3).to(device)) for _ in range(BATCHES)]
    return device, batches


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def summary_way(batches):
    s = ScoreSummary(C, 2048)
    for b in batches:
        s.update(b)
    return s.class_balanced_thresholds(PORTION), s.median_entropy()


def sort_way(batches):
    conf = [[] for _ in range(C)]
    ent = [[] for _ in range(C)]
    for b in batches:  # keep every pixel, per class (CRST's conf_dict, ESL's arrays)
        lab = b.label.reshape(-1)
        order = torch.argsort(lab, stable=True)
        counts = torch.bincount(lab, minlength=C).tolist()
        for k, (cc, ee) in enumerate(zip(b.confidence.reshape(-1)[order].split(counts),
                                         b.entropy.reshape(-1)[order].split(counts))):
            conf[k].append(cc)
            ent[k].append(ee)
    cbst = torch.ones(C, dtype=torch.float64)
    esl = torch.full((C,), 0.1, dtype=torch.float64)
    for k in range(C):
        cs = torch.sort(torch.cat(conf[k]), descending=True).values
        n = cs.numel()
        if int(n * PORTION) > 0:
            cbst[k] = float(cs[int(n * PORTION) - 1])
        es = torch.sort(torch.cat(ent[k])).values
        if n:
            esl[k] = max(float(es[round(n / 2)]), 0.1)
    return cbst, esl


@pytest.mark.parametrize("provider", ["summary", "sort"])
def test_class_balanced_thresholds(benchmark, scored, provider):
    device, batches = scored
    fn = summary_way if provider == "summary" else sort_way
    # both ways agree within one bin width before anything is timed
    a, b = summary_way(batches), sort_way(batches)
    for x, y in zip(a, b):
        assert bool(((y - x).abs() <= 1 / 2048 + 1e-9).all())
    benchmark.extra_info.update(device=device, provider=provider, pixels=BATCHES * SHAPE[2] * SHAPE[3],
                                torch=torch.__version__)

    def run():
        fn(batches)
        _sync(device)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
