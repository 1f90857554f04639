"""Images/s of the DALI loader against the PIL oracle loader at 512x1024.

A synthetic tree of 16 images of 512x1024 (generated once per session);
each round loads one epoch: batch 4, (a) eval at native size, (b) training
augmentation (random scale 0.5-1.5, crop 512x1024, flip)."""

import pytest

from lse_fast import data
from lse_fast.data import pil, synthetic

from benchmarks.conftest import describe

pytestmark = pytest.mark.e2e  # only with --run-e2e (benchmarks/conftest.py)

N = 16


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_data")
    paths = synthetic.ensure(out, num_source=N, num_target_train=1, num_target_val=1, size=(512, 1024), seed=0)
    return data.GTA5(paths["source"])


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("provider", ["dali", "pil"])
def test_bench_loader(benchmark, dataset, provider, mode):
    make = data.loader if provider == "dali" else pil.loader
    kw = dict(batch_size=4, num_threads=2)
    if mode == "train":
        kw.update(size=(512, 1024), train=True, shuffle=True)
    ld = make(dataset, **kw)
    next(iter(ld))  # build the pipeline / warm up

    def epoch():
        n = 0
        for b in ld:
            n += b["image"].shape[0]
        return n

    n = benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(device=describe("cpu"), provider=provider, mode=mode, shape="4x3x512x1024",
                                images=n, images_per_s=round(n / benchmark.stats.stats.median, 1))
