"""What the DALI loader and the PIL oracle share: argument checks, the epoch
order (shuffle, shards, batches), per-sample augmentation parameters, label
decoding and normalisation constants. Keeping this in one place is what lets
the tests demand identical pixels and labels from both loaders."""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
NORMALIZATIONS = ("imagenet", "caffe")
DEFAULT_SCALE_RANGE = (0.5, 1.5)


class UnreadableFile(RuntimeError):
    """An image or label file that cannot be decoded (or does not fit its
    pair); ``path`` names it. Loaders given ``on_bad_file`` skip such
    samples and report them instead of raising."""

    def __init__(self, path, message):
        super().__init__(message)
        self.path = str(path)


def normalization_constants(normalization):
    """(channel order, mean, std) in 0..255 units, per output channel."""
    if normalization == "imagenet":
        return "RGB", [255.0 * m for m in IMAGENET_MEAN], [255.0 * s for s in IMAGENET_STD]
    if normalization == "caffe":
        return "BGR", list(CAFFE_MEAN_BGR), [1.0, 1.0, 1.0]
    raise ValueError(f"lse_fast.data: `normalization` must be one of {NORMALIZATIONS}, got {normalization!r}")


def _image_size(path):
    """(H, W) from the file header; a clear error for a file that is not an image."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:  # PIL raises several types; name the file
        raise UnreadableFile(path, f"lse_fast.data: cannot decode image file {str(path)!r}: {e}") from None
    return h, w


class _BadLabelMode(RuntimeError):
    """A label file that decodes but is not a map of class ids."""


def _open_label_array(path, channel, multichannel=False):
    """Raw label ids as an integer array [H, W]. Palette PNGs are read by index;
    16-bit multi-channel PNGs (SYNTHIA, `multichannel=True`) keep their full
    16-bit values, of which channel `channel` is taken. Other datasets need
    single-channel labels: a colour or 1-bit label is an error, not ids."""
    try:
        im = Image.open(path)
        mode, bands = im.mode, len(im.getbands())
        if mode == "1" or (not multichannel and bands > 1):
            im.close()
            what = "is 1-bit (mode '1')" if mode == "1" else f"has {bands} channels (mode {mode!r})"
            raise _BadLabelMode(
                f"lse_fast.data: label file {str(path)!r} {what}; expected a single-channel map of class ids "
                "(8- or 16-bit grey 'L'/'I;16', or palette 'P' read by index); colour-coded labels such as "
                "Cityscapes *_color.png are not ids")
        args = im.tile[0].args if im.tile else None
        if im.mode in ("RGB", "RGBA") and isinstance(args, str) and args.endswith(";16B"):
            # Pillow keeps only the high byte of 16-bit colour samples. Decode
            # twice: as is (high bytes) and declared little-endian, which makes
            # the unpacker take the low byte of every big-endian sample.
            hi = np.asarray(im)[..., channel].astype(np.int64)
            im.close()
            im = Image.open(path)
            t = im.tile[0]
            im.tile = [t._replace(args=args[:-1] + "L")]
            lo = np.asarray(im)[..., channel].astype(np.int64)
            arr = (hi << 8) | lo
        else:
            arr = np.asarray(im)
            if arr.ndim == 3:
                arr = arr[..., channel]
        im.close()
    except _BadLabelMode:
        raise
    except Exception as e:
        raise UnreadableFile(path, f"lse_fast.data: cannot decode label file {str(path)!r}: {e}") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        raise UnreadableFile(path, f"lse_fast.data: label file {str(path)!r} is not an integer label map "
                           f"(got array {arr.dtype} {arr.shape})")
    return arr


def read_label(dataset, i):
    """Label of image i as uint8 [H, W] trainIds (255 = ignore)."""
    arr = _open_label_array(dataset.label_path(i), dataset.label_channel,
                            getattr(dataset, "multichannel_labels", False))
    arr = arr.astype(np.int64, copy=False)
    lut = dataset.label_lut
    bad = (arr < 0) | (arr >= lut.shape[0])
    if bad.any():
        arr = np.where(bad, 0, arr)
        return np.where(bad, 255, lut[arr]).astype(np.uint8)
    return lut[arr]


def read_sample(dataset, i, need_bytes):
    """(encoded image bytes or None, (H, W), label uint8 [H, W] or None). A
    label of another size than its image is an error naming both files, or
    nearest-resized to the image with a warning naming the label when the
    dataset's ``label_size_mismatch`` is "resize"."""
    path = dataset.image_path(i)
    hw = _image_size(path)
    data = None
    if need_bytes:
        with open(path, "rb") as f:
            data = np.frombuffer(f.read(), dtype=np.uint8)
    label = None
    if dataset.has_labels:
        label = read_label(dataset, i)
        if label.shape != hw and getattr(dataset, "label_size_mismatch", "error") == "resize":
            warnings.warn(f"lse_fast.data: label {dataset.label_path(i)!r} is {label.shape[0]}x{label.shape[1]} "
                          f"but its image is {hw[0]}x{hw[1]}; resized (nearest) to the image",
                          RuntimeWarning, stacklevel=2)
            label = resize_nearest(label, hw)
        elif label.shape != hw:
            raise UnreadableFile(
                dataset.label_path(i),
                f"lse_fast.data: label {dataset.label_path(i)!r} is {label.shape[0]}x{label.shape[1]} "
                f"but its image {path!r} is {hw[0]}x{hw[1]}")
    return data, hw, label


def resize_nearest(label, out_hw):
    """Nearest resize with half-pixel centres: output pixel i reads input
    floor((i + 0.5) * in / out), in exact integer arithmetic. This is
    PyTorch's 'nearest-exact' except at exact ties, where float32 rounding
    can make PyTorch (and DALI's INTERP_NN) pick the pixel before."""
    h, w = label.shape[:2]
    oh, ow = out_hw
    return label[_src(np.arange(oh), h, oh)[:, None], _src(np.arange(ow), w, ow)[None, :]]


def _src(i, n_in, n_out):
    return np.minimum(((2 * i + 1) * n_in) // (2 * n_out), n_in - 1)


def crop_nearest(label, scaled, anchor, size, flip):
    """The label of one training sample, reading only the output pixels:
    resize nearest to `scaled` (as `resize_nearest`), crop `size` at
    `anchor` (255 outside the scaled label), flip horizontally if `flip`."""
    h, w = label.shape
    sh, sw = scaled
    ys = np.arange(anchor[0], anchor[0] + size[0])
    xs = np.arange(anchor[1], anchor[1] + size[1])
    if flip:
        xs = xs[::-1]
    src_y = _src(ys, h, sh)
    src_x = _src(xs, w, sw)
    out = label[src_y[:, None], src_x[None, :]]
    out[ys >= sh, :] = 255
    out[:, xs >= sw] = 255
    return out


class AugParams:
    """Random scale, crop anchor and flip of one sample: drawn from a
    generator keyed on (seed, epoch, dataset index), so a sample's
    augmentation does not depend on batch size, sharding or threads."""

    __slots__ = ("scaled", "anchor", "flip")

    def __init__(self, scaled, anchor, flip):
        self.scaled = scaled
        self.anchor = anchor
        self.flip = flip


def draw_aug(seed, epoch, index, hw, size, scale_range, flip):
    rng = np.random.default_rng([seed, epoch, int(index)])
    s = rng.uniform(scale_range[0], scale_range[1])
    sh, sw = max(1, int(round(hw[0] * s))), max(1, int(round(hw[1] * s)))
    y = int(rng.integers(0, max(sh - size[0], 0) + 1))
    x = int(rng.integers(0, max(sw - size[1], 0) + 1))
    f = bool(rng.random() < 0.5) if flip else False
    return AugParams((sh, sw), (y, x), f)


def _check_size(size, who):
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"{who}: `size` must be None or (H, W) with positive ints, got {size!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise ValueError(f"{who}: `size` must be None or (H, W) with positive ints, got {size!r}")
    return int(h), int(w)


class LoaderBase:
    """Epoch order, batching and augmentation parameters; subclasses turn a
    list of dataset indices into a batch dict."""

    who = "lse_fast.data.loader"

    def __init__(self, dataset, *, batch_size, size=None, train=False, shuffle=False, seed=0, device="cpu",
                 num_threads=2, shard_id=0, num_shards=1, normalization="imagenet",
                 scale_range=DEFAULT_SCALE_RANGE, flip=True, drop_last=None, on_bad_file=None):
        who = self.who
        if on_bad_file is not None and not callable(on_bad_file):
            raise TypeError(f"{who}: `on_bad_file` must be None or a callable(path, message), got {on_bad_file!r}")
        self.on_bad_file = on_bad_file
        if not hasattr(dataset, "image_path") or not hasattr(dataset, "__len__"):
            raise TypeError(f"{who}: `dataset` must be an lse_fast.data dataset, got {type(dataset).__name__}")
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"{who}: `batch_size` must be a positive int, got {batch_size!r}")
        size = _check_size(size, who)
        if train and size is None:
            raise ValueError(f"{who}: train=True needs `size` (the crop size (H, W))")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"{who}: `seed` must be a non-negative int, got {seed!r}")
        if not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
            raise ValueError(f"{who}: `num_threads` must be a positive int, got {num_threads!r}")
        if not isinstance(num_shards, (int, np.integer)) or num_shards < 1:
            raise ValueError(f"{who}: `num_shards` must be a positive int, got {num_shards!r}")
        if not isinstance(shard_id, (int, np.integer)) or not 0 <= shard_id < num_shards:
            raise ValueError(f"{who}: `shard_id` must be in [0, num_shards={num_shards}), got {shard_id!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"{who}: `normalization` must be one of {NORMALIZATIONS}, got {normalization!r}")
        try:
            lo, hi = (float(v) for v in scale_range)
        except (TypeError, ValueError):
            raise ValueError(f"{who}: `scale_range` must be (low, high), got {scale_range!r}") from None
        if not 0 < lo <= hi:
            raise ValueError(f"{who}: `scale_range` must satisfy 0 < low <= high, got {scale_range!r}")
        device = str(device)
        if device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"{who}: `device` must be 'cpu' or 'cuda[:N]', got {device!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.size = size
        self.train = bool(train)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.device = device
        self.num_threads = int(num_threads)
        self.shard_id = int(shard_id)
        self.num_shards = int(num_shards)
        self.normalization = normalization
        self.scale_range = (lo, hi)
        self.flip = bool(flip)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.epoch = 0
        n = len(self._shard(np.arange(len(dataset))))
        if self.drop_last and n < self.batch_size:
            raise ValueError(f"{who}: shard {self.shard_id}/{self.num_shards} of {dataset!r} has {n} images, "
                             f"fewer than `batch_size`={self.batch_size} with drop_last (train=True)")
        self._pool = None

    def _shard(self, order):
        return order[self.shard_id::self.num_shards]

    def order(self, epoch):
        """Dataset indices of this shard in epoch `epoch`, in loading order."""
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
        else:
            order = np.arange(n)
        return self._shard(order)

    def __len__(self):
        n = len(self._shard(np.arange(len(self.dataset))))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def batches(self, epoch):
        order = self.order(epoch)
        nb = len(self)
        return [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(nb)]

    def set_epoch(self, epoch):
        """The next iteration runs epoch `epoch` (each `iter()` advances it by one)."""
        self.epoch = int(epoch)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return self._iterate(epoch)

    def aug(self, epoch, index, hw):
        return draw_aug(self.seed, epoch, index, hw, self.size, self.scale_range, self.flip)

    def _load(self, indices, need_bytes):
        """read_sample of every index; None for a sample skipped as
        unreadable (only with ``on_bad_file``)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.num_threads, thread_name_prefix="lse_fast_data")
        return list(self._pool.map(lambda i: self._guard(read_sample, self.dataset, int(i), need_bytes), indices))

    def _guard(self, fn, *args):
        """fn(*args); with ``on_bad_file``, an UnreadableFile is reported
        and None returned instead of raised."""
        try:
            return fn(*args)
        except UnreadableFile as e:
            if self.on_bad_file is None:
                raise
            self.on_bad_file(e.path, str(e))
            return None

    @staticmethod
    def _kept(indices, loaded):
        """(indices, loaded) without the samples skipped as unreadable."""
        keep = [k for k, s in enumerate(loaded) if s is not None]
        return [indices[k] for k in keep], [loaded[k] for k in keep]

    def _check_native(self, indices, sizes):
        if self.size is None and not self.train and len(set(sizes)) > 1:
            desc = ", ".join(f"{self.dataset.image_path(int(i))!r} {h}x{w}" for i, (h, w) in zip(indices, sizes))
            raise RuntimeError(f"{self.who}: size=None keeps native sizes, but images of one batch differ: "
                               f"{desc}; pass size=(H, W) or batch_size=1")

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
