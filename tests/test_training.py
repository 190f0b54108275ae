"""Tests for napari_hrmatt.training (config, data, loss, loop) and ``hrmatt train``.

Everything runs on tiny randomly initialised networks and generated data; no weights,
no downloads, no bench data.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_hrmatt.cli import main  # noqa: E402
from napari_hrmatt.models.hdmatt import HDMattModel, HDMattNet  # noqa: E402
from napari_hrmatt.training import (  # noqa: E402
    PRESETS,
    TrainConfig,
    TrainingSamples,
    border_ramp,
    make_config,
    matting_loss,
    training_step,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_training_config_refuses_held_out_images():
    with pytest.raises(ValueError, match="held-out"):
        TrainConfig(train_images=("GT01", "GT19"))
    with pytest.raises(ValueError, match="held-out"):
        make_config("gpu", {"val_images": ["GT27"]})
    with pytest.raises(ValueError, match="disjoint"):
        make_config("gpu", {"val_images": ["GT01"]})
    with pytest.raises(ValueError, match="unknown training setting"):
        make_config("gpu", {"learning_rate": 1})


def test_samples_are_reproducible_composites():
    cfg = make_config("tiny")
    samples = TrainingSamples(cfg)
    a, b, c = samples[3], samples[3], samples[4]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["alpha"], c["alpha"])
    s, cs = cfg.size, cfg.context_size
    assert a["image"].shape == (3, s, s) and a["ctx_image"].shape == (3, cs, cs)
    assert set(np.unique(a["trimap"])) <= {0, 128, 255}
    assert np.allclose(a["ctx_fractions"].sum(0), 1)
    for x in (a["alpha"], a["coarse"], a["fg"], a["bg"], a["image"]):
        assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    composite = a["alpha"] * a["fg"] + (1 - a["alpha"]) * a["bg"]
    assert np.abs(composite - a["image"]).mean() < 0.02  # noise + 8-bit rounding only
    # Known trimap pixels agree with the truth.
    assert (a["alpha"][a["trimap"] == 255] > 0.99).all()
    assert (a["alpha"][a["trimap"] == 0] < 0.01).all()


def test_loss_weights_unknown_pixels_with_a_border_ramp():
    ramp = border_ramp(16, 4)
    assert ramp[0, 0, 0, 8] == 0.5 / 4 and ramp[0, 0, 3, 8] == 3.5 / 4  # patch_pass's ramp
    assert ramp[0, 0, 4, 8] == 1 and ramp[0, 0, 8, 8] == 1 and ramp[0, 0, 0, 0] == 0.5 / 4
    alpha = torch.rand(1, 1, 16, 16)
    fg, bg = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    image = alpha * fg + (1 - alpha) * bg
    unknown = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    unknown[..., 4:12, 4:12] = True
    exact, _ = matting_loss(alpha, alpha, image, fg, bg, unknown, ramp)
    assert exact < 1e-5
    wrong_outside = torch.where(unknown, alpha, 1 - alpha)  # errors on known pixels only
    assert matting_loss(wrong_outside, alpha, image, fg, bg, unknown, ramp)[0] < 1e-5
    loss, parts = matting_loss(1 - alpha, alpha, image, fg, bg, unknown, ramp)
    assert loss > 0.1 and parts["alpha"] > 0 and parts["comp"] > 0


def test_training_steps_lower_the_loss():
    cfg = make_config("tiny", {"batch_size": 2})
    samples = TrainingSamples(cfg)
    batch = torch.utils.data.default_collate([samples[0], samples[1]])
    torch.manual_seed(0)
    net = HDMattNet(cfg.arch)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = [training_step(net, opt, batch, cfg)["loss"] for _ in range(8)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]


def hrmatt_train(*argv) -> int:
    """``hrmatt train ARGV``: the command line, exit status returned."""
    return main(["train", *argv])


def test_train_cli_runs_resumes_logs_and_exports(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--preset", "tiny", "--out", str(out), "--quiet", "--device", "cpu"]
    # Stopped by the time limit after one step, then resumed to the end.
    assert hrmatt_train(*base, "--steps", "5", "--time-limit", "0") == 0
    assert (out / "last.pt").is_file()
    assert hrmatt_train(*base, "--steps", "5") == 0
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [(r["start_step"], r["end_step"], r["stopped"]) for r in records] == [
        (0, 1, "time-limit"),
        (1, 5, "done"),
    ]
    assert records[-1]["hardware"]["device"] == "cpu" and records[-1]["config"]["seed"] == 0
    # Same config and seed in one go, fresh folder: the same weights (reproducible).
    again = tmp_path / "again"
    assert hrmatt_train(*base[:2], "--out", str(again), *base[4:], "--steps", "5") == 0
    a = torch.load(out / "last.pt", weights_only=True)["model"]
    b = torch.load(again / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Export and load as a model.
    weights = tmp_path / "hdmatt.pt"
    assert hrmatt_train(*base, "--export", str(weights)) == 0
    model = HDMattModel(device="cpu", weights=weights, coarse="none")
    assert model.meta["steps"] == 5 and model.meta["receptive_radius"] > 0
    # A resumed run must not silently change the recipe; held-out images are refused.
    assert hrmatt_train(*base, "--set", "lr=0.5") == 2
    assert hrmatt_train(*base, "--set", 'val_images=["GT20"]') == 2
    err = capsys.readouterr().err
    assert "different config" in err and "held-out" in err
    assert hrmatt_train("--preset", "tiny", "--print-config") == 0
    assert json.loads(capsys.readouterr().out)["size"] == PRESETS["tiny"]["size"]


def test_real_data_without_a_data_folder_is_one_clear_error(tmp_path, capsys, monkeypatch):
    """No default data path: the cpu preset (real photos) names both ways to give one."""
    monkeypatch.delenv("HRMATT_DATA_DIR", raising=False)
    argv = ["--preset", "cpu", "--out", str(tmp_path / "run"), "--device", "cpu", "-q"]
    assert hrmatt_train(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data-dir" in err[0] and "HRMATT_DATA_DIR" in err[0]
    assert not (tmp_path / "run" / "last.pt").exists()
    # The environment variable is read when --data-dir is absent.
    monkeypatch.setenv("HRMATT_DATA_DIR", str(tmp_path / "nowhere"))
    assert hrmatt_train(*argv) == 2
    assert "no alphamatting.com training data in" in capsys.readouterr().err
