"""Built-in synthetic domain-shift benchmark.

`generate(out_dir)` draws procedural road scenes (horizon, road with lane
marks, sidewalks, terrain, buildings with windows, walls, fences, trees,
poles with signs and traffic lights, cars and people at many scales: objects
on the ground plane shrink towards the horizon, as in LSE's Fig. 2) and
writes

  out_dir/source/images/NNNNN.png, labels/NNNNN.png        (GTA5 layout)
  out_dir/target/leftImg8bit/{train,val}/synth/*_leftImg8bit.png
  out_dir/target/gtFine/{train,val}/synth/*_gtFine_labelIds.png  (Cityscapes layout)
  out_dir/manifest.json

Labels are plain 8-bit PNGs with Cityscapes label ids. Both domains share
the scene geometry (same distributions of layout, object sizes and
positions); they differ in appearance the way game and real images differ:
the source is saturated, clean and sharp; the target has another colour
palette and white balance, uneven lighting, weaker textures, sensor noise and
blur. All drawing is vectorised NumPy from one seeded Generator per image,
so a tree is reproducible from its parameters.

CLI: python -m lse_fast.data.synthetic --out DIR [--num-source N ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

VERSION = 2

# Cityscapes label ids drawn here.
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = (
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 26)

# Base colours (RGB, 0..1) per domain. The target palette is related to the
# source one (a learnable shift), not a permutation of it.
_SOURCE = {
    ROAD: (0.42, 0.40, 0.44), SIDEWALK: (0.78, 0.62, 0.70), BUILDING: (0.62, 0.50, 0.36),
    WALL: (0.70, 0.66, 0.50), FENCE: (0.55, 0.45, 0.30), POLE: (0.60, 0.60, 0.62),
    LIGHT: (0.15, 0.15, 0.15), SIGN: (0.95, 0.80, 0.10), VEGETATION: (0.20, 0.62, 0.16),
    TERRAIN: (0.58, 0.70, 0.30), SKY: (0.35, 0.62, 0.95), PERSON: (0.80, 0.20, 0.25),
    CAR: (0.15, 0.25, 0.75),
}
_TARGET = {
    ROAD: (0.30, 0.31, 0.30), SIDEWALK: (0.55, 0.52, 0.50), BUILDING: (0.45, 0.44, 0.42),
    WALL: (0.58, 0.56, 0.50), FENCE: (0.42, 0.40, 0.36), POLE: (0.40, 0.40, 0.40),
    LIGHT: (0.10, 0.10, 0.10), SIGN: (0.80, 0.75, 0.30), VEGETATION: (0.28, 0.40, 0.20),
    TERRAIN: (0.48, 0.52, 0.32), SKY: (0.72, 0.78, 0.85), PERSON: (0.55, 0.30, 0.30),
    CAR: (0.25, 0.28, 0.45),
}
STYLES = {
    "source": dict(palette=_SOURCE, jitter=0.06, texture=1.0, noise=0.01, blur=0, gamma=(1.0, 1.0),
                   light=0.0, tint=0.0),
    "target": dict(palette=_TARGET, jitter=0.06, texture=0.5, noise=0.035, blur=2, gamma=(0.8, 1.3),
                   light=0.25, tint=0.04),
}


def _smooth_noise(rng, h, w, cell):
    """Low-frequency noise in [-1, 1]: a random grid of `cell` pixels, bilinear."""
    gh, gw = h // cell + 2, w // cell + 2
    g = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    y = np.arange(h, dtype=np.float32) / cell
    x = np.arange(w, dtype=np.float32) / cell
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _box_blur(img, r):
    """Two passes of a (2r+1) box blur per axis (about a Gaussian), edges clamped."""
    if r <= 0:
        return img
    for _ in range(2):
        for axis in (0, 1):
            n = img.shape[axis]
            pad = [(0, 0)] * img.ndim
            pad[axis] = (r + 1, r)
            c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis, dtype=np.float32)
            hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
            lo = np.take(c, np.arange(0, n), axis=axis)
            img = (hi - lo) / (2 * r + 1)
    return img


class _Canvas:
    def __init__(self, h, w, rng, style):
        self.h, self.w, self.rng, self.style = h, w, rng, style
        self.label = np.full((h, w), SKY, dtype=np.uint8)
        self.img = np.zeros((h, w, 3), dtype=np.float32)
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        # one palette draw per image and class (lighting and object paint vary)
        self.colors = {k: np.clip(np.asarray(v, np.float32) + rng.normal(0, style["jitter"], 3), 0, 1)
                       for k, v in style["palette"].items()}

    def window(self, cx, gy, s):
        """Local coordinates (Y, X) and the slice of an object's bounding box."""
        y0, y1 = max(int(gy - 2.0 * s) - 2, 0), min(int(gy + 0.25 * s) + 3, self.h)
        x0, x1 = max(int(cx - 0.75 * s) - 2, 0), min(int(cx + 0.75 * s) + 3, self.w)
        y1, x1 = max(y1, y0), max(x1, x0)
        sl = (slice(y0, y1), slice(x0, x1))
        return self.yy[sl], self.xx[sl], sl

    def paint(self, mask, cls, color=None, shade=None, sl=(slice(None), slice(None))):
        if color is None:
            color = self.colors[cls]
        label, img = self.label[sl], self.img[sl]
        label[mask] = cls
        col = np.asarray(color, np.float32)
        if shade is None:
            img[mask] = col
        else:
            img[mask] = np.clip(col[None, :] * (1.0 + shade[mask][:, None]), 0, 1)


def _render(rng, h, w, style):
    cv = _Canvas(h, w, rng, style)
    yy, xx = cv.yy, cv.xx
    tex = style["texture"]
    horizon = rng.uniform(0.36, 0.52) * h
    vx = rng.uniform(0.35, 0.65) * w
    depth = np.clip((yy - horizon) / (h - horizon), 0, None)  # 0 at horizon, 1 at the bottom row
    ground = yy > horizon
    # road and sidewalk edges are lines through the vanishing point (vx, horizon)
    road_l, road_r = vx - rng.uniform(0.25, 0.45) * w, vx + rng.uniform(0.25, 0.45) * w
    side = rng.uniform(0.15, 0.35) * w
    edge = lambda x0: vx + (x0 - vx) * depth  # noqa: E731
    # sky: vertical gradient (+ clouds in low-frequency noise)
    grad = (yy / max(horizon, 1.0) - 0.5) * 0.25
    cv.paint(~ground, SKY, shade=grad + 0.15 * tex * _smooth_noise(rng, h, w, 48))
    # ground: terrain, then sidewalks, then road
    cv.paint(ground, TERRAIN, shade=0.25 * tex * _smooth_noise(rng, h, w, 6))
    side_mask = ground & (xx > edge(road_l - side)) & (xx < edge(road_r + side))
    tiles = ((np.floor(xx / 12) + np.floor(yy / 6)) % 2) * 0.12 * tex - 0.06 * tex
    cv.paint(side_mask, SIDEWALK, shade=tiles)
    road_mask = ground & (xx > edge(road_l)) & (xx < edge(road_r))
    cv.paint(road_mask, ROAD, shade=0.12 * tex * _smooth_noise(rng, h, w, 4))
    lane = road_mask & (np.abs(xx - vx) < 0.012 * w * depth + 0.5) & ((np.floor(np.log1p(40 * depth) * 6) % 2) == 0)
    cv.paint(lane, ROAD, color=np.full(3, 0.9) * (1 - 0.3 * (1 - tex)))
    # buildings on both sides behind the sidewalks, bottoms at the outer sidewalk line
    outer_l, outer_r = road_l - side, road_r + side

    def ground_y(x, x0):  # row at which the line through (vx, horizon) and (x0, h) crosses column x
        return horizon + (h - horizon) * np.clip((x - vx) / (x0 - vx), 0, 1.5)

    win = (((xx % 14) < 8) & ((yy % 16) < 9)).astype(np.float32)
    for sgn, x0 in ((-1, outer_l), (1, outer_r)):
        x = vx + sgn * rng.uniform(0.0, 0.06) * w
        while 0 <= x <= w:
            bw = rng.uniform(0.06, 0.2) * w
            top = rng.uniform(0.02, 0.85) * horizon
            xa, xb = sorted((x, x + sgn * bw))
            sl = (slice(max(int(top), 0), h), slice(max(int(xa), 0), min(int(np.ceil(xb)) + 1, w)))
            Y, X = yy[sl], xx[sl]
            m = (X >= xa) & (X < xb) & (Y >= top) & (Y < ground_y(X, x0))
            kind = rng.random()
            if kind < 0.75:
                shade = rng.uniform(-0.15, 0.15) - 0.35 * tex * win[sl]
                cv.paint(m, BUILDING, shade=shade, sl=sl)
            elif kind < 0.88:
                m &= Y > horizon - rng.uniform(0.05, 0.2) * h
                cv.paint(m, WALL, shade=0.1 * tex * _smooth_noise(rng, X.shape[0], X.shape[1], 3), sl=sl)
            else:
                m &= Y > horizon - rng.uniform(0.05, 0.15) * h
                cv.paint(m & ((X % 6) < 2), FENCE, sl=sl)
            x += sgn * bw
    # objects on the ground plane, far to near: depth d in (0.03, 1]
    objects = []
    for _ in range(rng.integers(2, 7)):
        objects.append(("car", rng.uniform(0.03, 1.0)))
    for _ in range(rng.integers(1, 6)):
        objects.append(("person", rng.uniform(0.03, 1.0)))
    for _ in range(rng.integers(1, 4)):
        objects.append(("pole", rng.uniform(0.05, 0.9)))
    for _ in range(rng.integers(1, 4)):
        objects.append(("tree", rng.uniform(0.05, 0.8)))
    objects.sort(key=lambda o: o[1])
    for kind, d in objects:
        gy = horizon + d * (h - horizon)  # ground row of the object
        s = d * (h - horizon)  # pixels per unit height at that depth
        if kind == "car":
            cx = vx + (rng.uniform(road_l, road_r) - vx) * d
            Y, X, sl = cv.window(cx, gy, s)
            cw, ch = 1.0 * s, 0.5 * s
            body = (np.abs(X - cx) < cw / 2) & (Y < gy) & (Y > gy - ch * 0.6)
            roof = (np.abs(X - cx) < cw * 0.32) & (Y <= gy - ch * 0.6) & (Y > gy - ch)
            paint = np.clip(cv.colors[CAR] + rng.normal(0, 0.12, 3), 0, 1)
            cv.paint(body | roof, CAR, color=paint, sl=sl)
            glass = roof & (np.abs(X - cx) < cw * 0.26) & (Y > gy - ch * 0.92)
            cv.paint(glass, CAR, color=paint * 0.35, sl=sl)
            for wx in (cx - cw * 0.3, cx + cw * 0.3):
                wheel = ((X - wx) ** 2 + (Y - gy + ch * 0.05) ** 2) < (ch * 0.18) ** 2
                cv.paint(wheel, CAR, color=(0.05, 0.05, 0.05), sl=sl)
        elif kind == "person":
            sgn = rng.choice((-1, 1))
            x0 = (road_l - rng.uniform(0.1, 0.9) * side) if sgn < 0 else (road_r + rng.uniform(0.1, 0.9) * side)
            cx = vx + (x0 - vx) * d
            Y, X, sl = cv.window(cx, gy, s)
            ph = 0.8 * s
            body = (np.abs(X - cx) < ph * 0.13) & (Y < gy - ph * 0.45) & (Y > gy - ph * 0.82)
            legs = (np.abs(np.abs(X - cx) - ph * 0.06) < ph * 0.045) & (Y <= gy) & (Y >= gy - ph * 0.45)
            head = ((X - cx) ** 2 + (Y - gy + ph * 0.9) ** 2) < (ph * 0.09) ** 2
            shirt = np.clip(cv.colors[PERSON] + rng.normal(0, 0.15, 3), 0, 1)
            cv.paint(body, PERSON, color=shirt, sl=sl)
            cv.paint(legs, PERSON, color=shirt * 0.4, sl=sl)
            cv.paint(head, PERSON, color=np.clip(np.array([0.85, 0.65, 0.5]) + rng.normal(0, 0.05, 3), 0, 1), sl=sl)
        elif kind == "pole":
            x0 = rng.choice((road_l - 0.1 * side, road_r + 0.1 * side))
            cx = vx + (x0 - vx) * d
            Y, X, sl = cv.window(cx, gy, s)
            ph = 1.6 * s
            pole = (np.abs(X - cx) < max(0.02 * s, 0.6)) & (Y <= gy) & (Y > gy - ph)
            cv.paint(pole, POLE, sl=sl)
            if rng.random() < 0.6:
                r = 0.1 * s
                sign = ((X - cx) ** 2 + (Y - gy + ph * 0.85) ** 2) < r * r
                cv.paint(sign, SIGN, sl=sl)
                cv.paint(sign & (np.abs(Y - gy + ph * 0.85) < r * 0.25), SIGN, color=(0.95, 0.95, 0.95), sl=sl)
            else:
                box = (np.abs(X - cx) < 0.06 * s) & (np.abs(Y - gy + ph * 0.9) < 0.14 * s)
                cv.paint(box, LIGHT, sl=sl)
                lamp = ((X - cx) ** 2 + (Y - gy + ph * (0.9 - 0.1 * rng.integers(-1, 2)) / 1.0) ** 2) < (0.04 * s) ** 2
                cv.paint(lamp & box, LIGHT, color=((0.9, 0.1, 0.1), (0.95, 0.8, 0.1), (0.1, 0.9, 0.3))[rng.integers(3)], sl=sl)
        else:  # tree: trunk and crown, both vegetation
            x0 = rng.choice((road_l - rng.uniform(0.5, 1.0) * side, road_r + rng.uniform(0.5, 1.0) * side))
            cx = vx + (x0 - vx) * d
            Y, X, sl = cv.window(cx, gy, s)
            th = 1.8 * s
            trunk = (np.abs(X - cx) < 0.05 * s) & (Y <= gy) & (Y > gy - th * 0.6)
            crown = (((X - cx) / (0.5 * s)) ** 2 + ((Y - gy + th * 0.75) / (0.4 * s)) ** 2) < 1
            leaves = 0.3 * tex * _smooth_noise(rng, X.shape[0], X.shape[1], 2)
            cv.paint(trunk, VEGETATION, color=(0.35, 0.25, 0.15), sl=sl)
            cv.paint(crown, VEGETATION, shade=leaves, sl=sl)
    # camera: lighting gradient, white balance, gamma, blur, noise
    img = cv.img
    if style["light"] > 0:
        gx = rng.uniform(-1, 1)
        light = 1.0 + style["light"] * (gx * (xx / w - 0.5) + 0.5 * _smooth_noise(rng, h, w, 64))
        img = img * light[..., None]
    if style["tint"] > 0:
        img = img + rng.normal(0, style["tint"], 3).astype(np.float32)
    g = rng.uniform(*style["gamma"])
    img = np.clip(img, 0, 1) ** g
    img = _box_blur(img, style["blur"])
    img = img + rng.normal(0, style["noise"], img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), cv.label


def render(seed, size=(256, 512), domain="source"):
    """One (image uint8 [H,W,3], label uint8 [H,W] Cityscapes ids) pair."""
    if domain not in STYLES:
        raise ValueError(f"lse_fast.data.synthetic.render: `domain` must be one of {sorted(STYLES)}, got {domain!r}")
    rng = np.random.default_rng(seed)
    return _render(rng, int(size[0]), int(size[1]), STYLES[domain])


def _params(num_source, num_target_train, num_target_val, size, seed):
    for name, v in (("num_source", num_source), ("num_target_train", num_target_train),
                    ("num_target_val", num_target_val)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"lse_fast.data.synthetic: `{name}` must be a positive int, got {v!r}")
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"lse_fast.data.synthetic: `size` must be (H, W), got {size!r}") from None
    if h < 16 or w < 16:
        raise ValueError(f"lse_fast.data.synthetic: `size` must be at least 16x16, got {size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"lse_fast.data.synthetic: `seed` must be a non-negative int, got {seed!r}")
    return dict(version=VERSION, num_source=num_source, num_target_train=num_target_train,
                num_target_val=num_target_val, size=[h, w], seed=seed)


def _paths(out):
    return {"root": str(out), "source": str(out / "source"), "target": str(out / "target"),
            "manifest": str(out / "manifest.json")}


def generate(out_dir, *, num_source=200, num_target_train=100, num_target_val=50, size=(256, 512), seed=0):
    """Writes the benchmark under `out_dir` (replacing a previous one there) and
    returns {"root", "source", "target", "manifest"} paths. Use
    `GTA5(paths["source"])` and `Cityscapes(paths["target"], "train"/"val")`."""
    params = _params(num_source, num_target_train, num_target_val, size, seed)
    out = Path(out_dir)
    size = tuple(params["size"])
    for sub in ("source", "target"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    (out / "manifest.json").unlink(missing_ok=True)
    t0 = time.time()
    # per image seeds: (seed, domain, index) -> independent, order-free streams
    jobs = [("source", i, out / "source" / "images" / f"{i:05d}.png", out / "source" / "labels" / f"{i:05d}.png")
            for i in range(num_source)]
    for split, n, dom in (("train", num_target_train, 1), ("val", num_target_val, 2)):
        for i in range(n):
            stem = f"synth_{dom:06d}_{i:06d}"
            jobs.append(("target", (dom, i),
                         out / "target" / "leftImg8bit" / split / "synth" / f"{stem}_leftImg8bit.png",
                         out / "target" / "gtFine" / split / "synth" / f"{stem}_gtFine_labelIds.png"))
    for domain, key, ip, lp in jobs:
        ident = [seed, 0, key] if domain == "source" else [seed, key[0], key[1]]
        img, lab = render(ident, size, domain)
        ip.parent.mkdir(parents=True, exist_ok=True)
        lp.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(ip, compress_level=1)
        Image.fromarray(lab, mode="L").save(lp, compress_level=1)
    manifest = dict(params, seconds=round(time.time() - t0, 2))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return _paths(out)


def ensure(out_dir, *, num_source=200, num_target_train=100, num_target_val=50, size=(256, 512), seed=0):
    """Like `generate`, but reuses a tree whose manifest has the same parameters."""
    params = _params(num_source, num_target_train, num_target_val, size, seed)
    out = Path(out_dir)
    man = out / "manifest.json"
    if man.is_file():
        try:
            old = json.loads(man.read_text())
        except ValueError:
            old = None
        if old is not None and all(old.get(k) == v for k, v in params.items()):
            return _paths(out)
    return generate(out, num_source=num_source, num_target_train=num_target_train,
                    num_target_val=num_target_val, size=size, seed=seed)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lse_fast.data.synthetic", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--num-source", type=int, default=200)
    ap.add_argument("--num-target-train", type=int, default=100)
    ap.add_argument("--num-target-val", type=int, default=50)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="regenerate even if the manifest matches")
    a = ap.parse_args(argv)
    fn = generate if a.force else ensure
    t0 = time.time()
    paths = fn(a.out, num_source=a.num_source, num_target_train=a.num_target_train,
               num_target_val=a.num_target_val, size=tuple(a.size), seed=a.seed)
    print(json.dumps(dict(paths, seconds=round(time.time() - t0, 2)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
