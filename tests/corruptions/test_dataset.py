"""`damp corrupt` output layouts, the -C readers, and on-the-fly vs file-based agreement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from damp.cli import main
from damp.corruptions.dataset import (released_corruptions, corrupted_chunks, read_array_c, read_folder_c,
                                      write_array_c)
from damp.data import load_digits
from damp.evaluate import evaluate_clean, evaluate_corruptions
from tests.corruptions.conftest import smooth_images


def test_array_layout_is_severity_major_and_readable(tmp_path):
    images = (smooth_images(7, 32) * 255).to(torch.uint8)
    labels = torch.arange(7)
    write_array_c(tmp_path, images, labels, ["gaussian_noise", "contrast"], seed=3)
    raw = np.load(tmp_path / "contrast.npy")
    assert raw.shape == (35, 32, 32, 3) and raw.dtype == np.uint8
    assert np.load(tmp_path / "labels.npy").tolist() == list(range(7)) * 5
    for severity in (1, 4):
        block, block_labels = read_array_c(tmp_path, "contrast", severity)
        expected = torch.cat(list(corrupted_chunks(images, "contrast", severity, seed=3)))
        assert torch.equal(block, expected) and block_labels.tolist() == list(range(7))
    assert released_corruptions(tmp_path) == ["gaussian_noise", "contrast"]
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_cli_on_digits_then_evaluate_agrees_with_on_the_fly(tmp_path):
    out = tmp_path / "digits-c"
    assert main(["corrupt", "--data", "digits", "--out", str(out), "--corruptions", "shot_noise,glass_blur",
                 "--severities", "2,5", "--seed", "7", "--quiet"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["severities"] == [2, 5] and meta["num_images"] == 450
    data = load_digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    on_the_fly = evaluate_corruptions(model, data.test_images, data.test_labels, ["shot_noise", "glass_blur"],
                                      (2, 5), seed=7)
    for name in ("shot_noise", "glass_blur"):
        for severity in (2, 5):
            images, labels = read_array_c(out, name, severity)
            assert torch.equal(labels, data.test_labels)
            from_file = evaluate_clean(model, images, labels)
            expected = on_the_fly[name][str(severity)]
            # the same images; the logits of other batchings may differ in the last float32 bits
            assert from_file["error"] == expected["error"] and from_file == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="severity 3 not stored"):
        read_array_c(out, "shot_noise", 3)


def test_corrupt_cli_refuses_nonempty_out_and_bad_names(tmp_path, capsys):
    (tmp_path / "keep").write_text("x")
    assert main(["corrupt", "--data", "digits", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["corrupt", "--data", "digits", "--out", str(tmp_path / "o"), "--corruptions", "fogg"]) == 2
    assert main(["corrupt", "--data", "mnist", "--out", str(tmp_path / "o2")]) == 2
    assert (tmp_path / "keep").read_text() == "x"


def test_folder_layout_roundtrip(tmp_path):
    src = tmp_path / "val"
    rng = np.random.default_rng(0)
    for cls in ("n01", "n02"):
        (src / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (80, 70, 3), dtype=np.uint8)).save(src / cls / f"img{i}.JPEG")
    out = tmp_path / "val-c"
    assert main(["corrupt", "--data", "folder", "--root", str(src), "--size", "64", "--out", str(out),
                 "--corruptions", "fog,pixelate", "--severities", "1,3", "--quiet"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.JPEG"))
    assert len(files) == 2 * 2 * 4 and "fog/3/n02/img1.JPEG" in files
    samples, classes = read_folder_c(out, "pixelate", 3)
    assert classes == ["n01", "n02"] and [label for _, label in samples] == [0, 0, 1, 1]
    with Image.open(samples[0][0]) as im:
        assert im.size == (64, 64) and im.format == "JPEG"
    assert released_corruptions(out) == ["fog", "pixelate"]


@pytest.mark.skipif(not __import__("pathlib").Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="dataset-fashion-mnist not installed")
def test_corrupt_cli_on_fashion_mnist_uses_cifar_preset(tmp_path):
    out = tmp_path / "fm-c"
    assert main(["corrupt", "--data", "fashion_mnist", "--out", str(out), "--corruptions", "zoom_blur",
                 "--severities", "1", "--quiet"]) == 0
    images, labels = read_array_c(out, "zoom_blur", 1)
    assert images.shape == (10000, 1, 28, 28) and len(labels) == 10000
