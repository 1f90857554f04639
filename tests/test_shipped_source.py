"""The source model shipped for the built-in benchmark's default
configuration (lse_fast/assets): its manifest, when the driver uses it, and
that it is the model the manifest describes (same bytes, same source-only
mIoU on the val split, made from the same source images)."""

import copy
import dataclasses
import json
import shutil

import pytest
import torch

from lse_fast.adapt import source
from lse_fast.adapt.config import ConfigError, build_parser, make_config
from lse_fast.adapt.context import make_context
from lse_fast.adapt.evaluation import evaluate_target
from lse_fast.assets import rebuild


def cfg(argv=()):
    return make_config(build_parser().parse_args(list(argv)))


@pytest.fixture(scope="module")
def manifest():
    return source.read_manifest()


def test_manifest_describes_the_file(manifest):
    assert source.SHIPPED_MODEL.name == manifest["file"]
    assert source.sha256_file(source.SHIPPED_MODEL) == manifest["sha256"]
    assert source.SHIPPED_MODEL.stat().st_size == manifest["bytes"]
    state = torch.load(source.SHIPPED_MODEL, map_location="cpu", weights_only=True)["model"]
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    assert all(torch.isfinite(v).all() for v in floats)
    assert 0.2 < manifest["source_only_miou"] < 0.5  # 28.7% when first made (README, Results)


def test_default_configuration_uses_the_shipped_model(manifest):
    assert source.fingerprint_differences(cfg(), manifest) == []
    assert source.shipped_source_model(cfg()) == source.SHIPPED_MODEL
    assert source.shipped_source_model(cfg(["--source-model", "shipped"]), strict=True) == source.SHIPPED_MODEL
    # options that do not determine the source model keep it
    for argv in (["--rounds", "2"], ["--lr", "1e-4"], ["--no-plots"], ["--ops", "reference"]):
        assert source.shipped_source_model(cfg(argv)) == source.SHIPPED_MODEL, argv


@pytest.mark.parametrize("argv, field", [
    (["--seed", "1"], "seed"),
    (["--pretrain-iters", "599"], "pretrain_iters"),
    (["--pretrain-lr", "1e-3"], "pretrain_lr"),
    (["--no-pretrain-color-aug"], "pretrain_color_aug"),
    (["--synthetic-source", "100"], "synthetic"),
    (["--synthetic-val", "20"], "synthetic"),
    (["--image-size", "128x256", "--source-size", "128x256"], "image_size"),
    (["--no-freeze-bn"], "model_options"),
    (["--pretrain-batch-size", "4"], "pretrain_batch_size"),
])
def test_a_changed_option_trains_instead(argv, field, manifest):
    c = cfg(argv)
    assert field in source.fingerprint_differences(c, manifest)
    assert source.shipped_source_model(c) is None
    with pytest.raises(ConfigError, match=rf"source_model.*shipped.*{field}"):
        cfg(argv + ["--source-model", "shipped"]).check_runnable()


def test_train_and_init_never_use_it(tmp_path):
    assert source.shipped_source_model(cfg(["--source-model", "train"])) is None
    init = tmp_path / "init.pt"
    torch.save({}, init)
    assert source.shipped_source_model(cfg(["--init", str(init)])) is None
    with pytest.raises(ConfigError, match="--init.*--source-model shipped"):
        cfg(["--init", str(init), "--source-model", "shipped"])


def test_the_source_images_are_those_it_was_trained_on(manifest):
    assert manifest["source_render_images"] == list(rebuild.PROBE_IMAGES)
    assert rebuild.render_digest(cfg().image_size) == manifest["source_render_sha256"]


def test_a_damaged_file_is_refused(tmp_path, manifest):
    bad = tmp_path / source.SHIPPED_MODEL.name
    data = bytearray(source.SHIPPED_MODEL.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    man = tmp_path / "m.json"
    man.write_text(json.dumps(manifest))
    model = torch.nn.Linear(1, 1)
    with pytest.raises(ConfigError, match="sha256"):
        source.load_shipped(model, bad, man)
    man.write_text("{")
    with pytest.raises(ConfigError, match="manifest"):
        source.read_manifest(man)


def test_its_source_only_miou_and_the_driver_loads_it(tmp_path, manifest):
    """Evaluated on the built-in val split (generated alone: one source and
    one train image besides the 40 val images; every image's content depends
    only on its own index), it gives the manifest's mIoU; a different CPU
    instruction set may move the argmax of a few pixels, hence 0.2 points."""
    small = cfg(["--synthetic-source", "1", "--synthetic-train", "1", "--cache-dir", str(tmp_path), "--no-progress"])
    ctx, model = make_context(small)
    assert len(ctx.val) == manifest["val_images"]
    source.load_shipped(model)
    res = evaluate_target(ctx, model)
    assert res["miou"] == pytest.approx(manifest["source_only_miou"], abs=0.002)
    for got, want in zip(res["per_class_iou"], manifest["source_only_per_class_iou"]):
        assert got == pytest.approx(float("nan") if want is None else want, abs=0.01, nan_ok=True)
    # the source stage of a run with the default fingerprint loads it instead of training (nothing is cached)
    dctx = copy.copy(ctx)
    dctx.cfg = dataclasses.replace(small, synthetic_source=200, synthetic_train=160)
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    assert source.pretrain_source(dctx, fresh) == str(source.SHIPPED_MODEL)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert not (tmp_path / "source_models").exists()
    shutil.rmtree(tmp_path / "synthetic")


TINY = ["--synthetic-source", "8", "--synthetic-train", "8", "--synthetic-val", "4", "--image-size", "32x64",
        "--source-size", "32x64", "--pretrain-iters", "3", "--pretrain-batch-size", "4", "--loader", "pil",
        "--no-progress", "--device", "cpu"]


def test_rebuild_gives_the_same_bytes_twice(tmp_path):
    """The rebuild command on a tiny configuration: two trainings from
    scratch write byte-identical files, and the manifest it writes is one
    load_shipped accepts (the shipped file is made the same way with the
    default options: `python -m lse_fast.assets.rebuild`)."""
    a = rebuild.build(tmp_path / "a", tmp_path / "cache_a", TINY)
    b = rebuild.build(tmp_path / "b", tmp_path / "cache_b", TINY)
    name = source.SHIPPED_MODEL.name
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a["sha256"] == b["sha256"] == source.sha256_file(tmp_path / "a" / name)
    assert a["fingerprint"] == source.source_fingerprint(cfg(TINY))
    assert a["fingerprint"]["pretrain_iters"] == 3 and a["made_with"]["torch"] == torch.__version__
    assert (tmp_path / "cache_a" / "source_models").is_dir()  # trained there, not taken from elsewhere
    ctx_cfg = cfg(TINY + ["--cache-dir", str(tmp_path / "cache_a")])
    _, model = make_context(ctx_cfg)
    source.load_shipped(model, tmp_path / "a" / name, tmp_path / "a" / source.SHIPPED_MANIFEST.name)
    trained = torch.load(tmp_path / "a" / name, map_location="cpu", weights_only=True)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, trained[k]), k
