"""Random boxes for the scale-invariant examples of LSE (paper Section 3.4):
k patches per selected image, each a fixed fraction of the image, drawn
uniformly inside it. The boxes feed `lse_fast.ops.crop_resize` and
`lse_fast.ops.crop_pseudo_labels`."""

import torch


def _check_image_size(image_size):
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)
    ):
        raise ValueError(f"lse_fast.patches.random_boxes: `image_size` must be (H, W) positive ints, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def box_size(image_size, scale=0.5):
    """(box height, box width) for a box `scale` times the image: rounded,
    at least one pixel."""
    h, w = _check_image_size(image_size)
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
        raise ValueError(f"lse_fast.patches.random_boxes: `scale` must be in (0, 1], got {scale!r}")
    return max(1, round(scale * h)), max(1, round(scale * w))


def random_boxes(num_images, image_size, *, k=4, scale=0.5, generator=None, device="cpu"):
    """Draws k boxes per image, each `scale` times the image size.

    Args:
        num_images: images in the batch the boxes index.
        image_size: (H, W) of those images, in the pixel coordinates of the boxes.
        k: boxes per image (the paper uses 4).
        scale: box side as a fraction of the image side (the paper: 0.5,
            256x512 boxes on 512x1024 images).
        generator: a seeded ``torch.Generator`` (CPU) for reproducible draws.
        device: where the returned boxes live.

    Returns:
        float32 ``[num_images * k, 5]``, rows ``(batch_index, x1, y1, x2, y2)``
        with integer coordinates, ``0 <= x1 < x2 <= W`` and ``0 <= y1 < y2 <= H``;
        image i's boxes are rows ``i*k .. i*k+k-1``.
    """
    if not isinstance(num_images, int) or num_images < 0:
        raise ValueError(f"lse_fast.patches.random_boxes: `num_images` must be an int >= 0, got {num_images!r}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"lse_fast.patches.random_boxes: `k` must be an int >= 1, got {k!r}")
    h, w = _check_image_size(image_size)
    bh, bw = box_size((h, w), scale)
    count = num_images * k
    # Uniform top-left corners over every position that keeps the box inside.
    y1 = torch.randint(0, h - bh + 1, (count,), generator=generator)
    x1 = torch.randint(0, w - bw + 1, (count,), generator=generator)
    index = torch.arange(num_images).repeat_interleave(k)
    boxes = torch.stack([index, x1, y1, x1 + bw, y1 + bh], dim=1).to(torch.float32)
    return boxes.to(device)
