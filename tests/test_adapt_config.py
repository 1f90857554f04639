"""The driver's configuration: defaults, presets, YAML, command line, bad arguments."""

import dataclasses
import re

import pytest
import torch

from lse_fast.adapt import cli
from lse_fast.adapt.config import PRESETS, AdaptConfig, ConfigError, build_parser, from_dict, load_yaml, make_config


def cfg(argv):
    return make_config(build_parser().parse_args(argv))


def test_defaults_and_paper_schedule():
    c = cfg([])
    assert c == AdaptConfig().validate()
    assert c.portions() == [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4]  # the paper's 7 rounds
    assert (c.patches_per_image, c.gamma, c.beta) == (4, 3.0, 0.1)
    assert c.patch_scale == 0.5  # the paper's half-size patches, also on the synthetic default
    assert c.threshold_image == "last_selected" and c.entropy_norm == "log_c" and c.filter_interp == "nearest"
    assert cfg(["--rounds", "2"]).portions() == [0.1, 0.15]


def test_every_field_has_help_and_a_flag():
    parser = build_parser()
    text = parser.format_help()
    for f in dataclasses.fields(AdaptConfig):
        assert f.metadata.get("help"), f.name
        assert "--" + f.name.replace("_", "-") in text


def test_paper_preset(tmp_path):
    c = cfg(["--preset", "paper-gta5-deeplab"])
    assert c.model == "deeplab_v2_resnet101"
    assert c.image_size == (512, 1024)
    assert (c.optimizer, c.lr, c.momentum, c.batch_size) == ("adam", 1e-6, 0.9, 1)
    assert (c.patch_scale, c.patches_per_image, c.epochs) == (0.5, 4, 2.0)
    assert cfg(["--preset", "paper-gta5-fcn8s"]).model == "fcn8s_vgg16"
    assert set(PRESETS) >= {"synthetic", "paper-gta5-deeplab", "paper-synthia-deeplab"}


def test_synthia_presets_are_sixteen_class_runs_on_synthia_sized_images():
    """SYNTHIA -> Cityscapes is evaluated on 16 (and 13) classes (paper Table 2); the presets differ from the
    GTA5 ones in exactly the class count and the source image size, and keep their model."""
    for model, suffix in (("deeplab_v2_resnet101", "deeplab"), ("fcn8s_vgg16", "fcn8s")):
        gta, syn = cfg(["--preset", f"paper-gta5-{suffix}"]), cfg(["--preset", f"paper-synthia-{suffix}"])
        assert (gta.num_classes, syn.num_classes) == (19, 16)
        assert syn.model == gta.model == model
        assert syn.source_size == (760, 1280) and gta.source_size == (512, 1024)
        assert syn.image_size == gta.image_size == (512, 1024)
        differ = {k for k, v in syn.to_dict().items() if gta.to_dict()[k] != v}
        assert differ == {"num_classes", "source_size"}


def test_precedence_preset_yaml_cli(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.5\nimage-size: 64x128\nrounds: 3\nverify: true\n")
    c = cfg(["--preset", "paper-gta5-deeplab", "--config", str(y), "--rounds", "2", "--image-size", "32,64"])
    assert c.lr == 0.5  # yaml over preset
    assert c.image_size == (32, 64)  # command line over yaml
    assert c.rounds == 2 and c.verify is True
    assert c.model == "deeplab_v2_resnet101"  # preset kept
    assert from_dict(c.to_dict()) == c  # config.yaml round trip


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--image-size", "12"])
    assert e.value.code == 2
    assert "image_size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--threshold-image", "middle"])
    with pytest.raises(ValueError, match="`epochs` must be positive"):
        cfg(["--epochs", "0"])
    with pytest.raises(ValueError, match="`portion_stop`"):
        cfg(["--portion-start", "0.5", "--portion-stop", "0.2"])
    with pytest.raises(ValueError, match="`device`"):
        cfg(["--device", "tpu"])
    y = tmp_path / "bad.yaml"
    y.write_text("lrr: 1\n")
    with pytest.raises(ValueError, match="unknown option 'lrr'"):
        load_yaml(y)
    y.write_text("lr: fast\n")
    with pytest.raises(ValueError, match="`lr` in config file .* must be float"):
        load_yaml(y)
    with pytest.raises(ValueError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_bad_dataset_paths_give_clear_errors(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    rc = cli(["--source", f"gta5:{missing}", "--target", f"cityscapes:{tmp_path}", "--run-dir", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "`source` path" in err and str(missing) in err
    assert not (tmp_path / "r").exists()  # nothing created for a bad argument
    assert cli(["--source", f"imagenet:{tmp_path}", "--target", f"cityscapes:{tmp_path}"]) == 2
    assert "KIND one of gta5" in capsys.readouterr().err
    assert cli(["--source", "synthetic", "--target", f"cityscapes:{tmp_path}"]) == 2
    assert "both be 'synthetic'" in capsys.readouterr().err
    assert cli(["--init", str(tmp_path / "none.pt")]) == 2
    assert "`init` checkpoint" in capsys.readouterr().err
    assert cli(["--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_cross_field_errors_stop_before_anything_is_written(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert cli(["--verify", "--ops", "reference", "--run-dir", str(run_dir)]) == 2
    assert "--verify compares the fused ops" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli(["--device", "cuda", "--run-dir", str(run_dir)]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert cli(["--run-dir", str(tmp_path / "file")]) == 2
    assert "`run_dir`" in capsys.readouterr().err
    assert not run_dir.exists()
    with pytest.raises(ConfigError):
        cfg(["--verify", "--ops", "reference"])
    assert issubclass(ConfigError, ValueError)


def test_unknown_option_names_the_closest_one_in_two_lines(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--portion-strat", "0.2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2
    assert "unknown option --portion-strat; did you mean --portion-start?" in err[0]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--zzzz"])
    err = capsys.readouterr().err
    assert "unknown option --zzzz" in err and "did you mean" not in err


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    """A wrong --target path and a missing --source (and more) in one message, each in its own words."""
    argv = ["--target", f"cityscapes:{tmp_path}/nowhere", "--lr=-1", "--portion-start", "0", "--verify", "--ops",
            "reference", "--run-dir", str(tmp_path / "run")]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: lse_fast.adapt: 5 problems with the options:\n"), err
    for pattern in (r"`target` path '.*nowhere' does not exist",
                    r"`source` and `target` must both be 'synthetic' or both be KIND:PATH",
                    r"`lr` must be positive, got -1", r"`portion_start` must be in \(0, 1\], got 0",
                    r"--verify compares the fused ops .* got --ops reference"):
        assert re.search(r"\n  - " + pattern, err), (pattern, err)
    assert len([ln for ln in err.splitlines() if ln.startswith("error: ")]) == 1
    assert not (tmp_path / "run").exists()


def test_config_file_problems_are_listed_with_the_option_problems(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("batch_size: 2.5\nlrr: 0.1\ngamma: -1\n")
    with pytest.raises(ConfigError) as e:
        cfg(["--config", str(y), "--epochs", "0"])
    msg = str(e.value)
    assert msg.startswith("lse_fast.adapt: 4 problems with the options:")
    for part in ("`batch_size` in config file", "must be int, got 2.5", "unknown option 'lrr'", "did you mean 'lr'?",
                 "`gamma` must be >= 0, got -1", "`epochs` must be positive, got 0"):
        assert part in msg, msg
    d = tmp_path / "d.yaml"
    d.write_text("batch_size: x\nlrr: 1\n")
    with pytest.raises(ConfigError, match=r"^lse_fast.adapt: 2 problems.*\n  - `batch_size`.*\n  - unknown option"):
        load_yaml(d)
    # one problem of a field is reported once: an unknown dataset kind is not also a missing path
    with pytest.raises(ConfigError) as e:
        cfg(["--source", "imagenet:/nowhere", "--target", "imagenet:/nowhere"])
    assert str(e.value).count("`source`") == 1 and "2 problems" in str(e.value)
