"""End-to-end runs of the driver on a tiny synthetic benchmark (CPU), resume
after a kill, --verify, and the pure-PyTorch variants of the pseudo-labels."""

import json
import math

import pytest
import torch
import yaml

import lse_fast
import lse_fast.metrics
import lse_fast.models
from lse_fast import reference
from lse_fast.adapt import cli, main
from lse_fast.adapt import training as training_mod
from lse_fast.adapt.context import Ops
from lse_fast.adapt.verify import VerifyingOps
from lse_fast.patches import random_boxes
from lse_fast.selection import minmax_class_entropy, pseudo_labels

TINY = [
    "--synthetic-source", "12", "--synthetic-train", "12", "--synthetic-val", "4",
    "--image-size", "64x128", "--source-size", "64x128", "--pretrain-iters", "8", "--pretrain-batch-size", "4",
    "--rounds", "2", "--epochs", "1", "--batch-size", "4", "--source-batch-size", "2", "--score-batch-size", "4",
    "--portion-start", "0.3", "--portion-step", "0.2", "--lr", "1e-3", "--patch-scale", "0.5", "--no-progress",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lse_cache"))


@pytest.fixture(scope="module")
def fused_run(cache, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "fused"
    metrics = main(TINY + ["--cache-dir", cache, "--run-dir", str(run_dir), "--ops", "fused"])
    return run_dir, metrics


def _stable(run_dir):
    """metrics.json of a run without timings and provenance: source-only and round results."""
    m = json.loads((run_dir / "metrics.json").read_text())
    so = dict(m["source_only"])
    so.pop("seconds")
    rounds = []
    for r in m["rounds"]:
        r = dict(r)
        r.pop("seconds")
        rounds.append(r)
    return so, rounds


def test_tiny_run_writes_every_artefact(fused_run):
    run_dir, metrics = fused_run
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["rounds"][0]["selected"] == metrics["rounds"][0]["selected"]
    assert 0.0 <= on_disk["source_only"]["miou"] <= 1.0
    assert [r["round"] for r in on_disk["rounds"]] == [1, 2]
    assert [r["portion"] for r in on_disk["rounds"]] == [0.3, 0.5]
    for r in on_disk["rounds"]:
        assert set(r["seconds"]) == {"score", "select", "patches", "train", "eval"}
        assert len(r["thresholds"]) == 19 and len(r["per_class_iou"]) == 19
        assert r["selected"] == len(r["selected_images"]) > 0
        assert r["patches"] == 4 * r["selected"]
        assert 0.0 <= r["miou"] <= 1.0 and math.isfinite(r["loss"])
        # candidate maps kept while scoring: at most (share(N) + 1) per class, never the whole set's maps
        assert r["kept_probability_maps"] <= 12
    prov = on_disk["provenance"]
    assert prov["seed"] == 0 and prov["torch"] == torch.__version__ and prov["lse_fast"] == lse_fast.__version__
    assert "git_revision" in prov and "dali" in prov
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["image_size"] == [64, 128] and cfg["ops"] == "fused"
    for r in (0, 1, 2):
        assert (run_dir / "checkpoints" / f"round_{r}.pt").is_file()
    for name in ("miou_per_round", "per_class_iou", "selected_per_class", "thresholds_per_round",
                 "pseudo_labels_round1", "pseudo_labels_round2"):
        png = run_dir / "plots" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", name


def test_resume_after_kill_gives_the_same_metrics(fused_run, cache, tmp_path, monkeypatch):
    fused_dir, _ = fused_run
    run_dir = tmp_path / "killed"
    real = training_mod.train_round

    def killed_in_round_2(ctx, model, scores, selection, round_index):
        if round_index == 2:
            raise KeyboardInterrupt  # as a kill in the middle of round 2
        return real(ctx, model, scores, selection, round_index)

    monkeypatch.setattr(training_mod, "train_round", killed_in_round_2)
    assert cli(TINY + ["--cache-dir", cache, "--run-dir", str(run_dir)]) == 130
    partial = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in partial["rounds"]] == [1]  # lost only the round in progress
    monkeypatch.setattr(training_mod, "train_round", real)
    resumed = main(["--resume", str(run_dir)])
    assert _stable(run_dir) == _stable(fused_dir)
    assert len(resumed["resumed"]) == 1 and resumed["resumed"][0]["after_round"] == 1
    # a finished run resumed again has nothing left to do
    main(["--resume", str(run_dir)])
    assert _stable(run_dir) == _stable(fused_dir)
    # a new run into an existing run directory is refused
    assert cli(TINY + ["--cache-dir", cache, "--run-dir", str(run_dir)]) == 2


def test_verify_records_deviations(cache, tmp_path):
    m = main(TINY + ["--cache-dir", cache, "--run-dir", str(tmp_path / "v"), "--verify", "--rounds", "1",
                     "--no-plots"])
    rep = m["verify"]
    assert rep["checks"] > 0
    assert set(rep["max_deviation"]) == {"score", "focal_ce_loss", "crop_resize", "crop_pseudo_labels"}
    for op, fields in rep["max_deviation"].items():
        for f, v in fields.items():
            assert v <= rep["tolerance"][f"{op}.{f}"]


def test_verify_fails_loudly_beyond_tolerance():
    class Drifting:  # a fused op set whose score is off by 1e-3 in entropy
        def score(self, logits, size=None):
            s = lse_fast.ops.score(logits, size=size)
            return s._replace(entropy=s.entropy + 1e-3)

    logits = torch.randn(1, 5, 8, 8)
    good = VerifyingOps()
    assert torch.equal(good.score(logits).entropy, lse_fast.ops.score(logits).entropy)  # agrees, returns fused
    v = VerifyingOps(fused=Drifting())
    with pytest.raises(RuntimeError, match="score deviates from the reference: entropy"):
        v.score(logits)
    assert v.max["score"]["entropy"] >= 1e-3


def test_verify_is_an_op_set_no_step_names():
    """--verify replaces the run's ops (the seam every step calls) and checks every op, also under the authors'
    pseudo-label variants (which call crop_resize on a uint8 mask, nearest)."""
    from lse_fast.adapt.config import AdaptConfig
    from lse_fast.adapt.context import make_ops

    assert isinstance(make_ops(AdaptConfig(verify=True)), VerifyingOps)
    assert make_ops(AdaptConfig()).report() is None
    v = VerifyingOps()
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(2, 5, 8, 16, generator=g) * 3, 1)
    boxes = random_boxes(2, (32, 64), k=3, generator=g)
    thr = torch.tensor([0.2, 0.5, -1.0, 0.9, 0.4])
    want = pseudo_labels(probs, boxes, (16, 32), thr, image_size=(32, 64), entropy_norm="minmax",
                         filter_interp="nearest", ops=Ops("fused"))
    got = pseudo_labels(probs, boxes, (16, 32), thr, image_size=(32, 64), entropy_norm="minmax",
                        filter_interp="nearest", ops=v)
    assert torch.equal(got, want)
    assert set(v.report()["max_deviation"]) == {"crop_resize", "crop_pseudo_labels"}
    assert "nearest_disagreement" in v.report()["max_deviation"]["crop_resize"]
    x = torch.randn(2, 5, 4, 4, requires_grad=True)
    y = torch.randint(0, 5, (2, 4, 4))
    v.focal_ce_loss(x, y, gamma=3.0, beta=0.1).backward()  # the fused loss, still differentiable
    assert x.grad is not None and v.max["focal_ce_loss"]["grad_rel"] <= 1e-4


def test_stage_clock_counts_a_nested_stage_only_once():
    from lse_fast.adapt.context import StageClock

    clock = StageClock("cpu")
    ticks = iter([0.0, 1.0, 3.0, 10.0, 10.0, 12.0])
    clock.now = lambda: next(ticks)
    clock.reset("train", "patches")
    with clock("train"):  # 0 .. 10
        with clock("patches"):  # 1 .. 3
            pass
    with clock("patches"):  # 10 .. 12
        pass
    assert clock.seconds == {"train": 8.0, "patches": 4.0}


def test_torch_pseudo_labels_equal_the_op_by_default():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(2, 5, 8, 16, generator=g) * 3, 1)
    boxes = random_boxes(2, (32, 64), k=3, generator=g)
    thr = torch.tensor([0.2, 0.5, -1.0, 0.9, 0.4])
    b = reference.crop_pseudo_labels(probs, boxes, (32, 64), thr, image_size=(32, 64))
    for kind in ("reference", "fused"):
        ops = Ops(kind)
        a = pseudo_labels(probs, boxes, (32, 64), thr, image_size=(32, 64), ops=ops)
        assert torch.equal(a, b), kind
        # the authors' bilinear mask keeps every pixel nearest keeps, and more, with the same labels
        c = pseudo_labels(probs, boxes, (32, 64), thr, image_size=(32, 64), ops=ops, filter_interp="bilinear")
        assert bool(((a != 255) <= (c != 255)).all()) and int((c != 255).sum()) > int((a != 255).sum())
        assert torch.equal(c[a != 255], a[a != 255])
        d = pseudo_labels(probs, boxes, (32, 64), thr, image_size=(32, 64), ops=ops, entropy_norm="minmax")
        assert d.dtype == torch.uint8 and d.shape == a.shape
        # min-max keeps the pixels of a class whose entropy is constant in an image (0 after rescaling)
        everything = pseudo_labels(probs, boxes, (32, 64), torch.full((5,), 2.0), image_size=(32, 64), ops=ops,
                                   entropy_norm="minmax")
        assert bool((everything != 255).all())


def test_minmax_entropy_normalisation_by_hand():
    # one image, 2 classes: class 0 entropies {0.2, 0.4, 0.6}, class 1 constant {0.5, 0.5}
    ent = torch.tensor([[[0.2, 0.4, 0.6, 0.5, 0.5]]])
    lab = torch.tensor([[[0, 0, 0, 1, 1]]])
    norm, cmin, cmax = minmax_class_entropy(ent, lab, 3)
    assert torch.allclose(norm, torch.tensor([[[0.0, 0.5, 1.0, 0.0, 0.0]]]))  # constant class -> 0, no NaN
    assert cmin[0, :2].tolist() == pytest.approx([0.2, 0.5]) and math.isinf(cmin[0, 2].item())
    assert cmax[0, :2].tolist() == pytest.approx([0.6, 0.5])


def test_authors_options_run(cache, tmp_path):
    m = main(TINY + ["--cache-dir", cache, "--run-dir", str(tmp_path / "authors"), "--rounds", "1",
                     "--threshold-image", "first_unselected", "--entropy-norm", "minmax",
                     "--filter-interp", "bilinear", "--no-plots"])
    r = m["rounds"][0]
    assert r["selected"] > 0
    th = [t for t in r["thresholds"] if t is not None and not math.isnan(t)]
    assert th and all(0.0 <= t <= 1.0 for t in th)


def test_init_checkpoint_that_leaves_tensors_unset_is_an_error(cache, tmp_path, capsys):
    # A head for 5 classes cannot initialise a 19-class model: the run must
    # stop before anything is trained, naming the checkpoint and the tensors.
    ckpt = tmp_path / "five_classes.pt"
    torch.save(lse_fast.models.build("small_deeplab", num_classes=5).state_dict(), ckpt)
    code = cli(TINY + ["--cache-dir", cache, "--run-dir", str(tmp_path / "run"), "--init", str(ckpt)])
    err = capsys.readouterr().err
    assert code == 2
    assert "five_classes.pt" in err and "unset" in err


def test_freeze_bn_option_reaches_factories_that_take_it(monkeypatch):
    from lse_fast.adapt import build_model
    from lse_fast.adapt.config import AdaptConfig

    # a private copy of the registry, so the probe model leaks into no other test
    monkeypatch.setattr(lse_fast.models.registry, "_REGISTRY", dict(lse_fast.models.registry._REGISTRY))

    @lse_fast.models.register("test_freeze_bn_probe")
    def probe(num_classes=19, *, freeze_bn=True):
        model = lse_fast.models.build("small_deeplab", num_classes=num_classes)
        model.probe_freeze_bn = freeze_bn
        return model

    assert build_model(AdaptConfig(model="test_freeze_bn_probe", freeze_bn=False)).probe_freeze_bn is False
    assert build_model(AdaptConfig(model="test_freeze_bn_probe", freeze_bn=True)).probe_freeze_bn is True
    assert build_model(AdaptConfig(model="small_deeplab", freeze_bn=False)) is not None  # takes no freeze_bn


def test_without_dali_the_run_falls_back_to_pil_with_one_warning(fused_run, cache, tmp_path, monkeypatch):
    import warnings

    from lse_fast.adapt import context

    monkeypatch.setattr(context, "dali_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = main(TINY + ["--cache-dir", cache, "--run-dir", str(tmp_path / "pil"), "--rounds", "1", "--no-plots"])
    dali_warnings = [w for w in caught if "DALI is not installed" in str(w.message)]
    assert len(dali_warnings) == 1 and "--loader pil" in str(dali_warnings[0].message)
    _, dali_run = fused_run
    # the PIL loader gives the DALI loader's pixels (tests/test_data.py): the same selection
    assert m["rounds"][0]["selected_images"] == dali_run["rounds"][0]["selected_images"]
    assert m["source_only"]["miou"] == pytest.approx(dali_run["source_only"]["miou"], abs=1e-6)


def test_real_dataset_layouts_with_a_mismatched_gta5_label(tmp_path, capsys):
    import warnings

    import numpy as np
    from PIL import Image

    from tests.data_trees import make_cityscapes, make_gta5

    make_gta5(tmp_path / "gta5", n=6)
    make_cityscapes(tmp_path / "cityscapes", n_train=6, n_val=2)
    label = tmp_path / "gta5" / "labels" / "00003.png"
    Image.fromarray(np.asarray(Image.open(label))[:32], mode="L").save(label)  # 32x128 label, 64x128 image
    args = TINY + ["--source", f"gta5:{tmp_path / 'gta5'}", "--target", f"cityscapes:{tmp_path / 'cityscapes'}",
                   "--cache-dir", str(tmp_path / "cache"), "--rounds", "1", "--no-plots", "--pretrain-iters", "2",
                   "--image-size", "32x64", "--source-size", "32x64", "--epochs", "0.5"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = main(args + ["--run-dir", str(tmp_path / "resize")])
    assert any("00003.png" in str(w.message) and "resized (nearest)" in str(w.message) for w in caught)
    assert m["rounds"][0]["selected"] > 0 and 0.0 <= m["rounds"][0]["miou"] <= 1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(args + ["--run-dir", str(tmp_path / "skip"), "--label-size-mismatch", "skip"])
    assert any("skipped 1 of 6 pairs" in str(w.message) for w in caught)
    # an error names the file when the pair is loaded (a fresh cache: the source stage loads every pair)
    assert cli(args + ["--run-dir", str(tmp_path / "error"), "--label-size-mismatch", "error", "--cache-dir",
                       str(tmp_path / "cache_error"), "--pretrain-batch-size", "6"]) == 1
    assert "labels/00003.png' is 32x128 but its image" in capsys.readouterr().err


def test_synthia_with_a_16_class_head(tmp_path):
    from lse_fast.data import SYNTHIA16_TRAIN_IDS
    from tests.data_trees import make_cityscapes, make_synthia

    make_synthia(tmp_path / "synthia", n=6)
    make_cityscapes(tmp_path / "cityscapes", n_train=6, n_val=2)
    m = main(TINY + ["--source", f"synthia:{tmp_path / 'synthia'}", "--target",
                     f"cityscapes:{tmp_path / 'cityscapes'}", "--num-classes", "16", "--cache-dir",
                     str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run"), "--rounds", "1", "--no-plots",
                     "--image-size", "32x64", "--source-size", "32x64",  # evaluated on the native 64x128 labels
                     "--pretrain-iters", "2", "--epochs", "0.5"])
    assert m["classes"] == list(range(16))
    assert m["class_names"] == [lse_fast.metrics.CITYSCAPES_CLASSES[t] for t in SYNTHIA16_TRAIN_IDS]
    r = m["rounds"][0]
    assert len(r["per_class_iou"]) == 16 and len(r["thresholds"]) == 16
    iou = [v for v in r["per_class_iou"] if v is not None and not math.isnan(v)]
    assert r["miou"] == pytest.approx(sum(iou) / len(iou)) and r["miou16"] == pytest.approx(r["miou"])
    assert r["miou19"] is None or math.isnan(r["miou19"])
    assert cli(TINY + ["--num-classes", "5"]) == 2


def tiny_deeplab(num_classes=19, *, freeze_bn=True, input_normalization="caffe", aspp_branches=None):
    """DeepLab-v2 with one bottleneck per stage: the paper model's structure at test size."""
    from lse_fast.models.deeplab import DeepLabV2

    return DeepLabV2(num_classes, layers=(1, 1, 1, 1), freeze_bn=freeze_bn, input_normalization=input_normalization,
                     aspp_branches=aspp_branches)


def test_paper_models_never_start_from_random_weights_or_synthetic_data(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert cli(["--preset", "paper-gta5-deeplab", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "paper model for real data" in err and "--source gta5:PATH" in err
    (tmp_path / "g").mkdir()
    (tmp_path / "c").mkdir()
    real = ["--source", f"gta5:{tmp_path / 'g'}", "--target", f"cityscapes:{tmp_path / 'c'}"]
    assert cli(["--preset", "paper-gta5-fcn8s", "--run-dir", str(run_dir)] + real) == 2
    err = capsys.readouterr().err
    assert "needs a starting point: --init FILE" in err and "--backbone FILE" in err and "vgg16" in err
    assert not run_dir.exists()


def test_source_stage_from_an_imagenet_backbone_file(tmp_path, capsys):
    from lse_fast.adapt.config import AdaptConfig
    from lse_fast.adapt.source import source_optimizer
    from tests.data_trees import make_cityscapes, make_gta5

    make_gta5(tmp_path / "gta5", n=4)
    make_cityscapes(tmp_path / "cityscapes", n_train=4, n_val=2)
    # a torchvision-layout ResNet file: the backbone's keys plus an ImageNet `fc`, no segmentation head
    torch.manual_seed(7)
    donor = tiny_deeplab()
    state = {k: v for k, v in donor.state_dict().items() if not k.startswith("layer5.")}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    backbone = tmp_path / "resnet_imagenet.pth"
    torch.save(state, backbone)
    args = TINY + ["--source", f"gta5:{tmp_path / 'gta5'}", "--target", f"cityscapes:{tmp_path / 'cityscapes'}",
                   "--model", "tests.test_adapt:tiny_deeplab", "--backbone", str(backbone), "--cache-dir",
                   str(tmp_path / "cache"), "--rounds", "1", "--no-plots", "--pretrain-iters", "2",
                   "--pretrain-batch-size", "2", "--pretrain-optimizer", "sgd", "--pretrain-lr", "1e-3",
                   "--pretrain-weight-decay", "5e-4", "--pretrain-head-lr-mult", "10", "--no-pretrain-color-aug",
                   "--score-batch-size", "2", "--source-batch-size", "1", "--image-size", "32x64", "--source-size", "32x64",
                   "--epochs", "0.5"]
    m = main(args + ["--run-dir", str(tmp_path / "run")])
    assert m["input_normalization"] == "imagenet"  # torchvision layout detected
    saved = torch.load(m["init"], map_location="cpu", weights_only=True)["model"]
    assert m["init"].startswith(str(tmp_path / "cache" / "source_models")) and "layer5.conv2d_list.0.weight" in saved
    # SGD moved the loaded backbone a little, not back to random weights
    assert torch.allclose(saved["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"], atol=1e-2)
    assert "backbone" in capsys.readouterr().out
    # the recipe: 10x learning rate on the head only
    cfg = AdaptConfig(pretrain_optimizer="sgd", pretrain_lr=2.5e-4, pretrain_head_lr_mult=10.0,
                      pretrain_weight_decay=5e-4)
    opt = source_optimizer(cfg, donor)
    assert [g["lr"] for g in opt.param_groups] == [2.5e-4, 2.5e-3]
    assert sum(p.numel() for p in opt.param_groups[1]["params"]) == sum(p.numel() for p in donor.layer5.parameters())
    assert opt.param_groups[0]["weight_decay"] == 5e-4 and opt.param_groups[0]["momentum"] == 0.9
    # a file that leaves backbone tensors unset stops the run before anything is written
    del state["layer2.0.conv2.weight"]
    torch.save(state, backbone)
    assert cli(args + ["--run-dir", str(tmp_path / "bad")]) == 2
    assert "leaves 1 backbone tensors" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_recomputed_probability_maps_give_the_same_round(fused_run, cache, tmp_path):
    _, kept = fused_run
    m = main(TINY + ["--cache-dir", cache, "--run-dir", str(tmp_path / "recompute"), "--rounds", "1",
                     "--no-plots", "--probs-ram-budget", "0"])
    a, b = kept["rounds"][0], m["rounds"][0]
    assert a["probability_maps"] == "kept" and b["probability_maps"] == "recomputed"
    assert b["kept_probability_maps"] == 0 and b["peak_probability_map_bytes"] == 0
    assert a["selected_images"] == b["selected_images"]
    assert torch.equal(torch.tensor(a["thresholds"]).nan_to_num(-9), torch.tensor(b["thresholds"]).nan_to_num(-9))
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)


def test_host_ram_of_the_maps_is_bounded_on_a_dataset_10x_larger(tmp_path):
    from lse_fast.adapt.config import AdaptConfig
    from lse_fast.adapt.context import make_context
    from lse_fast.adapt.scoring import score_target
    from tests.data_trees import make_cityscapes, make_gta5

    make_gta5(tmp_path / "gta5", n=2, h=32, w=64)
    map_bytes = 19 * 4 * 8 * 4  # small_deeplab's softmax of a 32x64 image: stride 8
    budget = 30 * map_bytes
    peaks = {}
    for n in (12, 120):  # the tiny run's target set, and 10x
        make_cityscapes(tmp_path / f"cs{n}", n_train=n, n_val=1, h=32, w=64)
        cfg = AdaptConfig(source=f"gta5:{tmp_path / 'gta5'}", target=f"cityscapes:{tmp_path / f'cs{n}'}",
                          image_size=(32, 64), source_size=(32, 64), score_batch_size=4, progress=False,
                          probs_ram_budget=budget / 2**30).validate()
        ctx, model = make_context(cfg)
        scores = score_target(ctx, model, 0.4)
        peaks[n] = scores.peak_map_bytes
        assert scores.class_pixels.shape == (n, 19)  # the per-image tables: 24 bytes per image and class
        # the bound: the budget plus one scoring batch of maps, whatever n
        assert scores.peak_map_bytes <= budget + cfg.score_batch_size * map_bytes
        held = 0 if scores.probs is None else sum(p.numel() * 4 for p in scores.probs.values())
        assert held <= budget
    assert peaks[120] <= budget + 4 * map_bytes < 120 * map_bytes  # far below keeping every map


def test_export_pngs_decode_to_the_labels_and_tensorboard_logs(cache, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from lse_fast.adapt import tensorboard as tb
    from lse_fast.adapt.config import from_dict
    from lse_fast.adapt.context import View, make_context
    from lse_fast.data import TRAIN_ID_COLORS
    from lse_fast.evaluate.writer import TRAIN_ID_TO_LABEL_ID, prediction_path
    from lse_fast.evaluate import predict_labels

    have_tb = tb.importlib.util.find_spec("tensorboard") is not None
    run_dir = tmp_path / "export"
    m = main(TINY + ["--cache-dir", cache, "--run-dir", str(run_dir), "--rounds", "1", "--no-plots", "--export"]
             + (["--tensorboard"] if have_tb else []))
    cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    ctx, model = make_context(cfg)

    def read(directory, image_path):
        ids = np.asarray(Image.open(directory / prediction_path(image_path, "trainIds")))
        colour = np.asarray(Image.open(directory / prediction_path(image_path, "color")).convert("RGB"))
        label_ids = np.asarray(Image.open(directory / prediction_path(image_path, "labelIds")))
        palette = np.zeros((256, 3), np.uint8)
        palette[:19] = TRAIN_ID_COLORS
        assert np.array_equal(colour, palette[ids])
        assert np.array_equal(label_ids, TRAIN_ID_TO_LABEL_ID[ids])
        return ids

    # pseudo-labels of round 1: the round-0 model's maps, the round's thresholds, one box per whole image
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "round_0.pt", weights_only=True)["model"])
    model.eval()
    r = m["rounds"][0]
    thr = torch.tensor([-1.0 if t is None or math.isnan(t) else t for t in r["thresholds"]])
    chosen = r["selected_images"]
    pseudo_dir = run_dir / "export" / "round_1" / "pseudo_labels"
    assert len(list(pseudo_dir.glob("labelIds/*/*.png"))) == len(chosen)
    for batch in ctx.loader(View(ctx.target_base, chosen), batch_size=4, size=cfg.image_size):
        with torch.no_grad():
            probs = torch.softmax(model(batch["image"]).float(), 1)
        h, w = cfg.image_size
        boxes = torch.tensor([[j, 0.0, 0.0, float(w), float(h)] for j in range(probs.shape[0])])
        want = reference.crop_pseudo_labels(probs, boxes, (h, w), thr, image_size=(h, w)).numpy()
        for j, p in enumerate(batch["index"].tolist()):
            got = read(pseudo_dir, ctx.target_base.image_path(chosen[p]))
            assert (got == want[j]).mean() > 0.999  # fused vs reference op: agreement as --verify demands
            assert (got == 255).any() or thr.max() >= 1.0
    # final predictions: the last checkpoint's, at the labels' resolution
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "round_1.pt", weights_only=True)["model"])
    model.eval()
    pred_dir = run_dir / "export" / "predictions"
    for batch in ctx.val_loader:
        with torch.no_grad():
            want = predict_labels(model, batch["image"], tuple(batch["label"].shape[-2:]), amp=None, num_classes=19,
                                  input_size=tuple(cfg.image_size), scales=(1.0,), flip=False).numpy()
        for j, i in enumerate(batch["index"].tolist()):
            assert np.array_equal(read(pred_dir, ctx.val.image_path(i)), want[j])
    if have_tb:
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    # without the package: one clear error before anything is written
    monkeypatch.setattr(tb.importlib.util, "find_spec", lambda name: None)
    assert cli(TINY + ["--cache-dir", cache, "--run-dir", str(tmp_path / "tb"), "--tensorboard"]) == 2
    assert not (tmp_path / "tb").exists()


def test_progress_lines_every_tenth_or_every_30_s_with_rate_and_eta():
    from lse_fast.adapt.progress import Progress

    now = [0.0]
    lines = []
    p = Progress(range(100), total=100, desc="source", enabled=True, bar=False, lines=True,
                 clock=lambda: now[0], write=lines.append)
    for i in p:
        now[0] += 0.5 if i < 50 else 40.0  # 2 steps/s, then one step every 40 s
        p.note(f"loss {i / 100:.4f}")
    assert lines[0] == "[source] 10/100 steps (10%), 2 steps/s, ETA 45 s, loss 0.0900"
    assert lines[4] == "[source] 50/100 steps (50%), 2 steps/s, ETA 25 s, loss 0.4900"
    assert lines[5] == "[source] 51/100 steps (51%), 0.785 steps/s, ETA 1 min 02 s, loss 0.5000"  # 30 s passed
    assert lines[-1].startswith("[source] 100/100 steps (100%), ") and "ETA" not in lines[-1]
    assert len(lines) == 5 + 50  # every tenth while fast, then every step (each took over 30 s)
    quiet = Progress(range(3), total=3, desc="x", enabled=False, lines=True, write=lines.append)
    assert list(quiet) == [0, 1, 2] and len(lines) == 55


def test_a_run_without_a_terminal_prints_progress_lines(tmp_path, capsys):
    """Under pytest stdout is not a terminal: every long stage reports plain lines (no bars, no \\r)."""
    main(["--synthetic-source", "8", "--synthetic-train", "8", "--synthetic-val", "4", "--image-size", "32x64",
          "--source-size", "32x64", "--pretrain-iters", "4", "--pretrain-batch-size", "4", "--rounds", "1",
          "--epochs", "1", "--batch-size", "4", "--source-batch-size", "2", "--score-batch-size", "4",
          "--portion-start", "0.3", "--no-plots", "--loader", "pil", "--device", "cpu",
          "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    for stage in ("[source] 4/4 steps (100%)", "[score] 2/2 batches (100%)", "[train r1] ", "[eval] 1/1 batches"):
        assert stage in out, out
    assert "\r" not in out + err
