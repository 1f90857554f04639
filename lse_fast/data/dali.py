"""NVIDIA DALI pipelines behind `lse_fast.data.loader`.

Python prepares each batch in a thread pool, one batch ahead: the encoded
image bytes (read from disk), the label decoded by PIL to trainIds through
the dataset's lookup table (palette PNGs by index, 16-bit SYNTHIA labels
exactly) and, for training, each sample's scale, crop anchor and flip (drawn
from (seed, epoch, index)). For training the label crop is gathered in NumPy
(only the output pixels are read: scale, crop, pad and flip in one indexing,
exact in float64, where DALI's float32 nearest resize can pick the other
source pixel at exact ties). Eval-time label resizes are NumPy gathers too. DALI decodes the images and
applies the resize, crop, flip and normalisation with the same parameters. On `device="cuda"` decoding uses the
mixed decoder and the image ops run on the GPU.

DALI is imported when the first pipeline is built, never at `import
lse_fast`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from lse_fast.data._base import LoaderBase, UnreadableFile, crop_nearest, normalization_constants, resize_nearest

DALI_INSTALL = "pip install 'nvidia-dali-cuda130>=2.4,<3'"


def import_dali():
    try:
        import nvidia.dali as dali  # noqa: F401
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.pytorch import feed_ndarray
    except ImportError as e:
        raise RuntimeError(
            f"lse_fast.data.loader needs NVIDIA DALI, which is not importable ({e}). Install it with: "
            f"{DALI_INSTALL} (or use lse_fast.data.pil.loader, the slow PIL loader)") from None
    return fn, pipeline_def, types, feed_ndarray


def dali_available() -> bool:
    """Whether NVIDIA DALI imports here (callers fall back to the PIL loader)."""
    try:
        import_dali()
    except RuntimeError:
        return False
    return True


class DaliLoader(LoaderBase):
    who = "lse_fast.data.loader"

    def __init__(self, dataset, **kwargs):
        super().__init__(dataset, **kwargs)
        self._dali = import_dali()
        self.cuda = self.device.startswith("cuda")
        if self.cuda:
            if not torch.cuda.is_available():
                raise RuntimeError(f"{self.who}: device={self.device!r} but torch sees no CUDA device")
            dev = torch.device(self.device)
            self.device_id = dev.index if dev.index is not None else torch.cuda.current_device()
        else:
            self.device_id = None
        self.mode = "train" if self.train else ("resize" if self.size is not None else "native")
        self._pipe = None
        self._prefetcher = None

    # -- pipeline -----------------------------------------------------------
    def _build(self):
        fn, pipeline_def, types, _ = self._dali
        order, mean, std = normalization_constants(self.normalization)
        cuda, mode, size, has_labels = self.cuda, self.mode, self.size, self.dataset.has_labels

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                      prefetch_queue_depth=1, seed=self.seed)
        def pipe():
            enc = fn.external_source(name="enc", dtype=types.UINT8)
            img = fn.decoders.image(enc, device="mixed" if cuda else "cpu",
                                    output_type=types.BGR if order == "BGR" else types.RGB)
            lab = None
            if has_labels:
                lab = fn.external_source(name="lab", dtype=types.UINT8, layout="HWC")
                if cuda:
                    lab = lab.gpu()
            mirror = 0
            if mode == "train":
                # resize only the crop window: the ROI in input pixels that maps
                # onto the kept part of the scaled image, then pad to `size`
                out_hw = fn.external_source(name="out_hw", dtype=types.FLOAT)
                roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT)
                roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT)
                mirror = fn.external_source(name="flip", dtype=types.INT32)
                img = fn.resize(img, size=out_hw, roi_start=roi_start, roi_end=roi_end, roi_relative=False,
                                dtype=types.FLOAT, antialias=False)
                img = fn.slice(img, fn.constant(idata=[0, 0]), fn.constant(idata=list(size)), axes=[0, 1],
                               out_of_bounds_policy="pad", fill_values=0.0)
            elif mode == "resize":
                img = fn.resize(img, size=list(size), dtype=types.FLOAT, antialias=False)
            img = fn.crop_mirror_normalize(img, mirror=mirror, mean=mean, std=std, output_layout="CHW",
                                           dtype=types.FLOAT)
            return (img, lab) if lab is not None else (img,)

        p = pipe()
        p.build()
        return p

    # -- batches ------------------------------------------------------------
    def _prepare(self, epoch, indices):
        indices, loaded = self._kept(indices, self._load(indices, need_bytes=True))
        if not indices:
            return indices, None  # every image of the batch skipped as unreadable
        sizes = [hw for _, hw, _ in loaded]
        self._check_native(indices, sizes)
        feed = {"enc": [d for d, _, _ in loaded]}
        labels = [lab for _, _, lab in loaded]
        if self.mode == "train":
            params = [self.aug(epoch, i, hw) for i, hw in zip(indices, sizes)]
            out_hw, start, end = [], [], []
            for p, (h, w) in zip(params, sizes):
                (sh, sw), (y, x) = p.scaled, p.anchor
                oh, ow = min(self.size[0], sh - y), min(self.size[1], sw - x)
                out_hw.append(np.asarray([oh, ow], np.float32))
                start.append(np.asarray([y * h / sh, x * w / sw], np.float32))
                end.append(np.asarray([(y + oh) * h / sh, (x + ow) * w / sw], np.float32))
            feed["out_hw"], feed["roi_start"], feed["roi_end"] = out_hw, start, end
            feed["flip"] = [np.asarray(int(p.flip), np.int32) for p in params]
            if self.dataset.has_labels:
                labels = [crop_nearest(lab, p.scaled, p.anchor, self.size, p.flip) for lab, p in zip(labels, params)]
        elif self.mode == "resize" and self.dataset.has_labels:
            labels = [resize_nearest(lab, self.size) for lab in labels]
        if self.dataset.has_labels:
            feed["lab"] = [lab[:, :, None] for lab in labels]
        return indices, feed

    def _undecodable(self, indices):
        """[(position, UnreadableFile)] of the images PIL cannot decode."""
        from PIL import Image
        bad = []
        for k, i in enumerate(indices):
            path = self.dataset.image_path(int(i))
            try:
                with Image.open(path) as im:
                    im.load()
            except Exception as e:
                bad.append((k, UnreadableFile(path, f"lse_fast.data: cannot decode image file {path!r}: {e}")))
        return bad

    def _diagnose(self, indices, err):
        """DALI reports a failed decode without the file: find it with PIL."""
        bad = self._undecodable(indices)
        if bad:
            return bad[0][1]
        return RuntimeError(f"{self.who}: the DALI pipeline failed on images "
                            f"{[self.dataset.image_path(int(i)) for i in indices]}: {err}")

    def _run(self, indices, feed):
        _, _, _, feed_ndarray = self._dali
        if self._pipe is None:
            self._pipe = self._build()
        try:
            for name, data in feed.items():
                self._pipe.feed_input(name, data)
            outs = self._pipe.run()
        except Exception as e:  # the pipeline object is invalid after an error
            self._pipe = None
            bad = self._undecodable(indices) if self.on_bad_file is not None else []
            if not bad:
                raise self._diagnose(indices, e) from None
            for _, b in bad:
                self.on_bad_file(b.path, str(b))
            drop = {k for k, _ in bad}
            keep = [k for k in range(len(indices)) if k not in drop]
            if not keep:
                return None
            return self._run([indices[k] for k in keep], {name: [data[k] for k in keep] for name, data in feed.items()})
        dev = torch.device(self.device)
        stream = torch.cuda.current_stream(dev) if self.cuda else None
        img_tl = outs[0]
        b = len(img_tl)
        shape = tuple(img_tl[0].shape())
        image = torch.empty((b,) + shape, dtype=torch.float32, device=dev)
        feed_ndarray(img_tl.as_tensor(), image, cuda_stream=stream)
        out = {"image": image}
        if len(outs) > 1:
            lshape = tuple(outs[1][0].shape())
            lab = torch.empty((b,) + lshape, dtype=torch.uint8, device=dev)
            feed_ndarray(outs[1].as_tensor(), lab, cuda_stream=stream)
            out["label"] = lab[..., 0].long()
        out["index"] = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=dev)
        return out

    def _iterate(self, epoch):
        batches = self.batches(epoch)
        if not batches:
            return
        if self._prefetcher is None:
            self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lse_fast_prefetch")
        nxt = self._prefetcher.submit(self._prepare, epoch, batches[0])
        for k in range(len(batches)):
            indices, feed = nxt.result()
            if k + 1 < len(batches):
                nxt = self._prefetcher.submit(self._prepare, epoch, batches[k + 1])
            out = self._run(indices, feed) if indices else None
            if out is not None:  # None: every image of the batch skipped as unreadable
                yield out

    def __del__(self):
        super().__del__()
        pre = getattr(self, "_prefetcher", None)
        if pre is not None:
            pre.shutdown(wait=False)
