"""lse_fast.ops.crop_resize / crop_pseudo_labels against F.interpolate, their
references, float64 gradcheck and opcheck; lse_fast.patches."""

import pytest
import torch
import torch.nn.functional as F

from lse_fast import ops, reference
from lse_fast.patches import box_size, random_boxes
from tests.conftest import requires_cuda
from tests.helpers import DTYPES, LAYOUTS, assert_close, make_layout

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]
# (N, C, H, W) -> (oh, ow): odd sizes, up- and downscaling, 1-pixel edges
CASES = [((2, 3, 37, 59), (61, 97)), ((1, 19, 64, 128), (128, 256)), ((3, 2, 97, 59), (33, 17)), ((2, 1, 13, 11), (1, 1))]


def integer_boxes(n, h, w, k, gen):
    rows = []
    for _ in range(k):
        b = int(torch.randint(0, n, (1,), generator=gen))
        y1 = int(torch.randint(0, h, (1,), generator=gen))
        y2 = int(torch.randint(y1 + 1, h + 1, (1,), generator=gen))
        x1 = int(torch.randint(0, w, (1,), generator=gen))
        x2 = int(torch.randint(x1 + 1, w + 1, (1,), generator=gen))
        rows.append([b, x1, y1, x2, y2])
    rows.append([n - 1, 0, 0, w, h])  # the whole image
    return torch.tensor(rows, dtype=torch.float32)


def fractional_boxes(n, h, w, k, gen):
    b = torch.randint(0, n, (k,), generator=gen).float()
    x1 = torch.rand(k, generator=gen) * (w - 1)
    x2 = x1 + 0.3 + torch.rand(k, generator=gen) * (w - x1 - 0.3)
    y1 = torch.rand(k, generator=gen) * (h - 1)
    y2 = y1 + 0.3 + torch.rand(k, generator=gen) * (h - y1 - 0.3)
    return torch.stack([b, x1, y1, x2, y2], 1)


def interpolate_loop(x, boxes, size, mode, align_corners=False):
    out = []
    for b, x1, y1, x2, y2 in boxes.long().tolist():
        kw = {"align_corners": align_corners} if mode == "bilinear" else {}
        out.append(F.interpolate(x[b : b + 1, :, y1:y2, x1:x2], size, mode=mode, **kw))
    return torch.cat(out)


def tie_mask(boxes, size):
    """[K, oh, ow] True where "nearest-exact" sits exactly on a pixel border
    ((dst + 0.5) * in / out an integer) for an integer box. There PyTorch's
    own CPU kernels disagree with each other (the index they pick depends on
    the output height), so a comparison with F.interpolate excludes them."""
    oh, ow = size
    masks = []
    for _, x1, y1, x2, y2 in boxes.long().tolist():
        ty = ((2 * torch.arange(oh) + 1) * (y2 - y1)) % (2 * oh) == 0
        tx = ((2 * torch.arange(ow) + 1) * (x2 - x1)) % (2 * ow) == 0
        masks.append(ty[:, None] | tx[None, :])
    return torch.stack(masks)


def assert_nearest_equal(got, want, boxes, size):
    assert got.shape == want.shape and got.dtype == want.dtype
    differ = got != want
    if differ.dim() == 4:
        differ = differ.any(1)
    off_tie = differ & ~tie_mask(boxes, size)
    assert not bool(off_tie.any()), f"{int(off_tie.sum())} elements differ away from exact ties"


# ---------------------------------------------------------------- bilinear


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,size", CASES)
def test_bilinear_integer_boxes_match_interpolate_float32(shape, size, layout, align_corners, device):
    gen = torch.Generator().manual_seed(1)
    x = make_layout(torch.rand(shape).to(device), layout)
    boxes = integer_boxes(shape[0], shape[2], shape[3], 5, gen)
    got = ops.crop_resize(x, boxes, size, align_corners=align_corners)
    want = interpolate_loop(x.contiguous(), boxes, size, "bilinear", align_corners)
    assert got.is_contiguous() and got.dtype == x.dtype
    # float32 tap positions carry ~1 ulp of the source coordinate (as
    # PyTorch's do), so values agree to a few ulps of (coordinate x slope).
    assert_close(got, want, atol=2e-5, name="crop_resize")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_low_precision_within_twice_pytorch_error(dtype, align_corners):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 41, 67).to(dtype)
    boxes = integer_boxes(2, 41, 67, 6, gen)
    size = (53, 89)
    truth = interpolate_loop(x.double(), boxes, size, "bilinear", align_corners)
    ours = (ops.crop_resize(x, boxes, size, align_corners=align_corners).double() - truth).abs().max().item()
    theirs = (interpolate_loop(x, boxes, size, "bilinear", align_corners).double() - truth).abs().max().item()
    assert ours <= 2 * theirs + 1e-12, f"{dtype}: max error {ours:g} vs PyTorch's {theirs:g}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_fractional_boxes_match_reference(dtype, align_corners, device):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 29, 47).to(dtype)
    boxes = fractional_boxes(3, 29, 47, 9, gen)
    got = ops.crop_resize(x.to(device), boxes.to(device), (31, 23), align_corners=align_corners)
    want = reference.crop_resize(x.double(), boxes, (31, 23), align_corners=align_corners)
    ulp = {torch.float32: 2e-6, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    assert_close(got, want, atol=ulp * 4, rtol=ulp, name=f"crop_resize {dtype}")


def test_reference_equals_interpolate_on_integer_boxes():
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 37, 59)
    boxes = integer_boxes(2, 37, 59, 6, gen)
    for ac in (False, True):
        assert_close(reference.crop_resize(x, boxes, (61, 97), align_corners=ac),
                     interpolate_loop(x, boxes, (61, 97), "bilinear", ac), atol=2e-5)
    lab = torch.randint(0, 255, (2, 37, 59), dtype=torch.uint8)
    want = interpolate_loop(lab[:, None], boxes, (61, 97), "nearest-exact")[:, 0]
    assert_nearest_equal(reference.crop_resize(lab, boxes, (61, 97), mode="nearest"), want, boxes, (61, 97))


# ----------------------------------------------------------------- nearest


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.int64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,size", [((2, 37, 59), (61, 97)), ((3, 97, 59), (33, 17)), ((1, 8, 8), (1025, 3))])
def test_nearest_labels_exact(shape, size, dtype, device):
    gen = torch.Generator().manual_seed(5)
    n, h, w = shape
    x = torch.randint(0, 255, shape).to(dtype)
    x_dev = x.to(device).transpose(1, 2).contiguous().transpose(1, 2)  # strided
    boxes = integer_boxes(n, h, w, 5, gen)
    got = ops.crop_resize(x_dev, boxes, size, mode="nearest")
    # F.interpolate takes neither bool nor int64: its oracle runs on exact float32 copies
    oracle = x.float() if dtype in (torch.bool, torch.int64) else x
    want = interpolate_loop(oracle[:, None], boxes, size, "nearest-exact")[:, 0]
    assert got.dtype == dtype and got.shape == (boxes.shape[0], *size)
    assert_nearest_equal(got.cpu(), want.to(dtype), boxes, size)
    frac = fractional_boxes(n, h, w, 7, gen)
    assert torch.equal(ops.crop_resize(x_dev, frac, size, mode="nearest").cpu(), reference.crop_resize(x, frac, size, mode="nearest"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nearest_uint8_images(layout):
    gen = torch.Generator().manual_seed(6)
    x = make_layout(torch.randint(0, 256, (2, 3, 45, 77), dtype=torch.uint8), layout)
    boxes = integer_boxes(2, 45, 77, 4, gen)
    got = ops.crop_resize(x, boxes, (90, 154), mode="nearest")
    assert_nearest_equal(got, interpolate_loop(x.contiguous(), boxes, (90, 154), "nearest-exact"), boxes, (90, 154))


# ---------------------------------------------------------------- backward


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_gradcheck_float64(mode, align_corners):
    if mode == "nearest" and align_corners:
        pytest.skip("align_corners applies to bilinear only")
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 2, 9, 11, dtype=torch.float64, requires_grad=True)
    boxes = torch.cat([fractional_boxes(2, 9, 11, 3, gen), integer_boxes(2, 9, 11, 2, gen)])
    fn = lambda t: ops.crop_resize(t, boxes, (7, 13), mode=mode, align_corners=align_corners)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    small = torch.randn(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[1, 0.5, 1.25, 5.5, 4.0], [0, 0, 0, 6, 5]], dtype=torch.float32)
    assert torch.autograd.gradgradcheck(fn, (small,), fast_mode=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_backward_matches_reference(dtype, mode, device):
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(3, 5, 33, 65).to(dtype)
    boxes = torch.cat([fractional_boxes(3, 33, 65, 6, gen), integer_boxes(3, 33, 65, 4, gen)])  # overlapping
    xg = x.to(device).requires_grad_()
    out = ops.crop_resize(xg, boxes.to(device), (47, 29), mode=mode)
    g = torch.randn(out.shape, generator=gen).to(dtype)
    out.backward(g.to(device))
    x64 = x.detach().double().requires_grad_()
    reference.crop_resize(x64, boxes, (47, 29), mode=mode).backward(g.double())
    assert xg.grad.dtype == dtype
    rel = {torch.float32: 1e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    assert_close(xg.grad, x64.grad, atol=rel * x64.grad.abs().max().item(), rtol=rel, name="grad")


def test_backward_of_label_crop_is_rejected_cleanly():
    x = torch.randint(0, 5, (1, 9, 9))
    assert not ops.crop_resize(x, torch.tensor([[0, 0, 0, 9, 9.0]]), (4, 4), mode="nearest").requires_grad


# --------------------------------------------------------- library plumbing


@pytest.mark.parametrize("dtype,mode", [(torch.float32, 0), (torch.bfloat16, 0), (torch.float32, 1), (torch.uint8, 1)])
def test_opcheck_crop_resize(dtype, mode):
    x = torch.rand(2, 3, 11, 13).to(dtype)
    boxes = torch.tensor([[1, 0.5, 1.0, 12.0, 9.5], [0, 0, 0, 13, 11]], dtype=torch.float32)
    torch.library.opcheck(torch.ops.lse_fast.crop_resize.default, (x, boxes, [7, 5], mode, False))
    if dtype.is_floating_point:
        torch.library.opcheck(torch.ops.lse_fast.crop_resize.default, (x.requires_grad_(), boxes, [7, 5], mode, False))
        g = torch.rand(2, 3, 7, 5).to(dtype)
        torch.library.opcheck(torch.ops.lse_fast.crop_resize_backward.default, (g, boxes, [2, 3, 11, 13], mode, False))


def test_opcheck_crop_pseudo_labels():
    p = torch.softmax(torch.randn(2, 4, 5, 7), 1)
    boxes = torch.tensor([[1, 2.0, 3.0, 20.0, 14.0], [0, 0, 0, 28, 20]], dtype=torch.float32)
    thr = torch.full((4,), 0.7)
    torch.library.opcheck(torch.ops.lse_fast.crop_pseudo_labels.default, (p, boxes, [9, 11], thr, [20, 28], 255))
    torch.library.opcheck(torch.ops.lse_fast.crop_pseudo_labels.default, (p, boxes, [9, 11], thr, [20, 28], 255, True))


def test_pseudo_labels_align_corners_integer_boxes_equal_interpolate():
    # Integer boxes, thresholds that keep everything: the label is the argmax
    # of F.interpolate(P[box], size, align_corners=True) with P the
    # align_corners=True upsampling, as the LSE authors' code computes it.
    gen = torch.Generator().manual_seed(11)
    p = soft_probs(2, 5, 8, 12, gen)
    boxes = torch.tensor([[0, 4, 2, 36, 26], [1, 0, 10, 48, 32]], dtype=torch.float32)
    got = ops.crop_pseudo_labels(p, boxes, (24, 32), torch.full((5,), 2.0), image_size=(32, 48), align_corners=True)
    up = F.interpolate(p.double(), (32, 48), mode="bilinear", align_corners=True)
    for j, (b, x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        crop = F.interpolate(up[b:b + 1, :, y1:y2, x1:x2], (24, 32), mode="bilinear", align_corners=True)
        assert (got[j] == crop.argmax(1)[0]).double().mean() >= 0.999
    assert not torch.equal(got, ops.crop_pseudo_labels(p, boxes, (24, 32), torch.full((5,), 2.0), image_size=(32, 48)))


def test_pseudo_labels_zero_probabilities_are_valid():
    # Saturated softmax outputs (exact zeros) give finite entropies: no
    # pixel is dropped by a NaN entropy.
    p = torch.zeros(1, 3, 4, 4)
    p[0, 1] = 1.0
    boxes = torch.tensor([[0, 0, 0, 8, 8]], dtype=torch.float32)
    for align in (False, True):
        out = ops.crop_pseudo_labels(p, boxes, (8, 8), torch.full((3,), 0.0), image_size=(8, 8), align_corners=align)
        assert torch.all(out == 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_pseudo_labels_non_finite_probabilities_are_ignored(bad, align_corners, device):
    # The rule: a pixel whose resampled probabilities are not all finite
    # (at the crop pixel, or at the filter's full-resolution pixel) is
    # ignore_index; a uint8 label cannot carry NaN. A bad value read with a
    # tap weight of exactly 0 adds nothing (the zero-weight-tap rule), so
    # the damage stays local, and the reference computes the same.
    gen = torch.Generator().manual_seed(12)
    p = soft_probs(2, 4, 6, 8, gen)
    p[0, 2, 2, 3] = bad
    p[1, 0, 0, 0] = bad  # a corner: clamped taps read it with weight 0
    boxes = torch.tensor([[0, 0, 0, 32, 24], [0, 5.5, 3.25, 29.0, 20.5], [1, 0, 0, 32, 24]], dtype=torch.float32)
    image_size = (21, 29) if align_corners else (24, 32)
    boxes[:, 3] = boxes[:, 3].clamp(max=image_size[1])
    boxes[:, 4] = boxes[:, 4].clamp(max=image_size[0])
    thr = torch.full((4,), 2.0)  # keeps every finite pixel
    got = ops.crop_pseudo_labels(p.to(device), boxes, (17, 23), thr, image_size=image_size, align_corners=align_corners).cpu()
    want = reference.crop_pseudo_labels(p, boxes, (17, 23), thr, image_size=image_size, align_corners=align_corners)
    ignored = got == 255
    assert torch.equal(ignored, want == 255)
    assert ignored.any() and ignored.float().mean() < 0.5, "the bad value stays local"
    assert (got == want).double().mean() >= 0.999
    # Where nothing is ignored the labels are those of the clean map.
    clean = p.nan_to_num(nan=0.0, posinf=0.0)
    base = ops.crop_pseudo_labels(clean, boxes, (17, 23), thr, image_size=image_size, align_corners=align_corners)
    assert torch.equal(got[~ignored], base[~ignored])
    # A single class (entropy 0) follows the same rule.
    one = ops.crop_pseudo_labels(p[:, 2:3].to(device), boxes, (17, 23), thr[:1], image_size=image_size,
                                 align_corners=align_corners).cpu()
    ref_one = reference.crop_pseudo_labels(p[:, 2:3], boxes, (17, 23), thr[:1], image_size=image_size, align_corners=align_corners)
    assert torch.equal(one == 255, ref_one == 255) and (one == 255).any() and (one == 0).any()


def test_torch_compile_fullgraph():
    def step(img, probs, boxes, thr):
        patches = ops.crop_resize(img, boxes, (32, 64))
        labels = ops.crop_pseudo_labels(probs, boxes, (32, 64), thr, image_size=(40, 80))
        return patches.mean(dim=1), labels

    img = torch.rand(2, 3, 40, 80)
    probs = torch.softmax(torch.randn(2, 5, 5, 10), 1)
    boxes = random_boxes(2, (40, 80), generator=torch.Generator().manual_seed(0))
    thr = torch.full((5,), 0.8)
    want = step(img, probs, boxes, thr)
    got = torch.compile(step, fullgraph=True)(img, probs, boxes, thr)
    assert_close(got[0], want[0], atol=1e-6)
    assert torch.equal(got[1], want[1])


def test_empty_boxes():
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    out = ops.crop_resize(x, torch.zeros(0, 5), (4, 4))
    assert out.shape == (0, 3, 4, 4)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert ops.crop_pseudo_labels(torch.rand(1, 3, 4, 4), torch.zeros(0, 5), (4, 4), torch.ones(3)).shape == (0, 4, 4)


# ------------------------------------------------------- crop_pseudo_labels


def soft_probs(n, c, h, w, gen, sharp=3.0):
    return torch.softmax(torch.randn(n, c, h, w, generator=gen) * sharp, 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape,image_size,size",
    [
        ((2, 19, 64, 128), (512, 1024), (128, 256)),  # stride-8 probabilities (smaller output for test time)
        ((1, 7, 17, 33), (129, 257), (97, 59)),  # odd sizes
        ((2, 5, 37, 59), None, (61, 97)),  # full-resolution probabilities
        ((1, 3, 40, 80), (41, 79), (13, 7)),  # downscaled output, odd image size
    ],
)
@pytest.mark.parametrize("align_corners", [False, True])
def test_pseudo_labels_match_reference(shape, image_size, size, device, align_corners):
    gen = torch.Generator().manual_seed(9)
    p = soft_probs(*shape, gen)
    H, W = image_size or shape[2:]
    boxes = torch.cat([random_boxes(shape[0], (H, W), k=3, generator=gen), fractional_boxes(shape[0], H, W, 3, gen)])
    # thresholds around the median entropy of each class keep about half the pixels
    up = F.interpolate(p, (H, W), mode="bilinear", align_corners=align_corners)
    ent = torch.special.entr(up).sum(1) / torch.log(torch.tensor(float(shape[1])))
    thr = torch.quantile(ent.flatten(), torch.rand(shape[1], generator=gen) * 0.5 + 0.25).float()
    got = ops.crop_pseudo_labels(p.to(device), boxes, size, thr, image_size=image_size, align_corners=align_corners)
    want = reference.crop_pseudo_labels(p, boxes, size, thr, image_size=image_size, align_corners=align_corners)
    assert got.dtype == torch.uint8 and got.shape == want.shape
    agree = (got.cpu() == want).double().mean().item()
    kept = (want != 255).double().mean().item()
    assert 0.05 < kept < 0.95, "thresholds should keep some pixels and drop others"
    assert agree >= 0.999, f"only {agree:.5f} of pixels equal the reference"


@pytest.mark.parametrize("dtype", DTYPES)
def test_pseudo_labels_dtypes_and_thresholds(dtype):
    gen = torch.Generator().manual_seed(10)
    p = soft_probs(2, 6, 16, 24, gen).to(dtype)
    boxes = random_boxes(2, (64, 96), k=2, generator=gen)
    # thresholds >= 1 keep every pixel: the label is the argmax of the crop
    got = ops.crop_pseudo_labels(p, boxes, (40, 60), torch.full((6,), 1.5), image_size=(64, 96), ignore_index=200)
    up = F.interpolate(p.float(), (64, 96), mode="bilinear", align_corners=False)
    want = reference.crop_resize(up, boxes, (40, 60)).argmax(1).to(torch.uint8)
    assert (got == want).double().mean() >= 0.999
    # thresholds below 0 drop every pixel
    none = ops.crop_pseudo_labels(p, boxes, (40, 60), torch.full((6,), -0.5), image_size=(64, 96), ignore_index=200)
    assert torch.all(none == 200)


# --------------------------------------------------------------- bad input


# The bad-input cases of the crop ops are in tests/test_census_ops.py.


def test_reference_rejects_the_same_boxes():
    with pytest.raises(RuntimeError, match="0 <= x1 < x2 <= 12"):
        reference.crop_resize(torch.rand(1, 1, 10, 12), torch.tensor([[0.0, 1, 1, 13, 5]]), (4, 4))


# ----------------------------------------------------------------- patches


def test_random_boxes():
    boxes = random_boxes(3, (512, 1024), k=4, generator=torch.Generator().manual_seed(0))
    assert boxes.shape == (12, 5) and boxes.dtype == torch.float32
    assert torch.equal(boxes[:, 0], torch.arange(3).repeat_interleave(4).float())
    assert torch.all(boxes[:, 3] - boxes[:, 1] == 512) and torch.all(boxes[:, 4] - boxes[:, 2] == 256)
    assert torch.all(boxes[:, 1] >= 0) and torch.all(boxes[:, 3] <= 1024) and torch.all(boxes[:, 2] >= 0) and torch.all(boxes[:, 4] <= 512)
    again = random_boxes(3, (512, 1024), k=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(boxes, again)
    assert not torch.equal(boxes, random_boxes(3, (512, 1024), k=4, generator=torch.Generator().manual_seed(1)))
    assert box_size((5, 7), 0.5) == (2, 4) and box_size((1, 1), 0.1) == (1, 1)
    full = random_boxes(1, (5, 7), k=2, scale=1.0)
    assert torch.equal(full[:, 1:], torch.tensor([[0, 0, 7, 5.0]] * 2))
    for bad, message in [
        (dict(num_images=-1, image_size=(4, 4)), "`num_images`"),
        (dict(num_images=1, image_size=(4,)), "`image_size`"),
        (dict(num_images=1, image_size=(4, 4), k=0), "`k`"),
        (dict(num_images=1, image_size=(4, 4), scale=1.5), "`scale`"),
    ]:
        with pytest.raises(ValueError, match=message):
            random_boxes(**bad)


# -------------------------------------------------------------------- CUDA


@requires_cuda
def test_cuda_matches_cpu_paper_shape():
    gen = torch.Generator().manual_seed(11)
    img = torch.rand(2, 3, 512, 1024)
    boxes = random_boxes(2, (512, 1024), generator=gen)
    assert_close(ops.crop_resize(img.cuda(), boxes.cuda(), (512, 1024)), ops.crop_resize(img, boxes, (512, 1024)), atol=1e-5)
    p = soft_probs(2, 19, 64, 128, gen)
    thr = torch.full((19,), 0.5)
    a = ops.crop_pseudo_labels(p.cuda(), boxes.cuda(), (512, 1024), thr.cuda(), image_size=(512, 1024)).cpu()
    b = ops.crop_pseudo_labels(p, boxes, (512, 1024), thr, image_size=(512, 1024))
    assert (a == b).double().mean() >= 0.9999
