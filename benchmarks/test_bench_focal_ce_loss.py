"""Fused focal + CE loss, forward + backward, vs the eager reference and
torch.compile of the reference, at the paper's shape. Reports time, GB/s
(logits read + gradient written) and peak extra memory. Run with
    pytest benchmarks/ --benchmark-only
"""

import pytest
import torch

from benchmarks.conftest import finish, provider_fn, record, sync
from benchmarks.memory import peak_extra_mib
from lse_fast import ops, reference

SHAPES = {"paper": (2, 19, 512, 1024), "small": (1, 19, 64, 128)}


def select(provider):
    return provider_fn(provider, ops.focal_ce_loss, reference.focal_ce_loss)


def make_inputs(dims, dtype, device):
    n, c, h, w = dims
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(dims, generator=gen) * 3).to(dtype).to(device).requires_grad_()
    target = torch.randint(0, c, (n, h, w), generator=gen)
    target[torch.rand(n, h, w, generator=gen) < 0.2] = 255
    return logits, target.to(torch.uint8).to(device)


@pytest.mark.parametrize("provider", ["fused", "eager", "compile"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", list(SHAPES), ids=str)
def test_focal_ce_loss_fwd_bwd(benchmark, device, shape, dtype, provider):
    dims = SHAPES[shape]
    if dtype == torch.bfloat16 and shape == "small":
        pytest.skip("bf16 measured at paper shape only")
    logits, target = make_inputs(dims, dtype, device)
    fn = select(provider)

    def step():
        (grad,) = torch.autograd.grad(fn(logits, target), logits)
        return grad

    # Every provider must agree with the fused op before it is timed.
    want = torch.autograd.grad(ops.focal_ce_loss(logits, target), logits)[0]
    torch.testing.assert_close(step().float(), want.float(), atol=1e-6, rtol=2e-2)
    nbytes = 2 * logits.numel() * logits.element_size()  # logits read + gradient written
    record(benchmark, device=device, dtype=dtype, shape=dims, provider=provider, nbytes=nbytes)

    def run():
        step()
        sync(device)

    benchmark.pedantic(run, rounds=10 if shape == "paper" else 50, iterations=1, warmup_rounds=2)
    finish(benchmark, device, nbytes)
    if device == "cpu" and shape == "paper":
        setup = (
            "from benchmarks.test_bench_focal_ce_loss import make_inputs, select\n"
            f"logits, target = make_inputs({dims}, torch.{str(dtype).split('.')[-1]}, 'cpu')\n"
            f"fn = select({provider!r})"
        )
        peak = peak_extra_mib(setup, "g = torch.autograd.grad(fn(logits, target), logits)[0]; del g")
        benchmark.extra_info["peak_extra_MiB"] = round(peak, 1)
        benchmark.extra_info["gradient_MiB"] = round(logits.numel() * logits.element_size() / 2**20, 1)


# The options of issue 18 item 4 (fused, float32, paper shape), beside the
# default above: a class weight (CBST, F.cross_entropy(weight=)), a pixel
# weight with mmseg's mean over all pixels (DAFormer/DACS), both, and the
# focal term alone (kornia). Same fused pass: the weights are read with the
# targets.
VARIANTS = {
    "weight": lambda c, n, h, w, g: dict(weight=torch.rand(c, generator=g) + 0.5),
    "pixel_weight-mean_all": lambda c, n, h, w, g: dict(pixel_weight=torch.rand(n, h, w, generator=g),
                                                        reduction="mean_all", beta=0.0),
    "both": lambda c, n, h, w, g: dict(weight=torch.rand(c, generator=g) + 0.5,
                                       pixel_weight=torch.rand(n, h, w, generator=g)),
    "focal-only": lambda c, n, h, w, g: dict(ce_weight=0.0, beta=1.0, gamma=2.0),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_focal_ce_loss_options_fwd_bwd(benchmark, device, variant):
    dims = SHAPES["paper"]
    n, c, h, w = dims
    logits, target = make_inputs(dims, torch.float32, device)
    kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v
          for k, v in VARIANTS[variant](c, n, h, w, torch.Generator().manual_seed(1)).items()}

    def step():
        return torch.autograd.grad(ops.focal_ce_loss(logits, target, **kw), logits)[0]

    want = torch.autograd.grad(reference.focal_ce_loss(logits, target, **kw), logits)[0]
    torch.testing.assert_close(step(), want, atol=1e-6, rtol=2e-2)
    nbytes = 2 * logits.numel() * logits.element_size()
    record(benchmark, device=device, dtype=torch.float32, shape=dims, provider=f"fused-{variant}", nbytes=nbytes)

    def run():
        step()
        sync(device)

    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=2)
    finish(benchmark, device, nbytes)
