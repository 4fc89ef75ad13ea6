"""Real dataset formats, tested on small fixtures written in those formats."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from damp.data import load_array_dataset
from damp.data.cifar import load_cifar, write_cifar_fixture
from damp.data.fashion_mnist import FILES, DEFAULT_ROOT, load_fashion_mnist
from damp.data.idx import DataFormatError, read_idx, write_idx


def fashion_fixture(root, n_train=12, n_test=6):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)), "train_labels": rng.integers(0, 10, n_train),
              "test_images": rng.integers(0, 256, (n_test, 28, 28)), "test_labels": rng.integers(0, 10, n_test)}
    for key, stem in FILES.items():
        write_idx(root / f"{stem}.gz", arrays[key])
    return arrays


def test_fashion_mnist_idx_roundtrip(tmp_path):
    arrays = fashion_fixture(tmp_path / "fm")
    ds = load_fashion_mnist(tmp_path / "fm")
    assert ds.train_images.shape == (12, 1, 28, 28) and ds.test_labels.dtype == torch.int64
    assert np.array_equal(ds.test_images[:, 0].numpy(), arrays["test_images"])
    assert load_array_dataset("fashion-mnist", str(tmp_path / "fm")).num_classes == 10


@pytest.mark.parametrize("corrupt,match", [
    (lambda b: b"\x00\x00\x08\x03" + b"\x00" * 8, "header"),
    (lambda b: b"\x01\x02" + b[2:], "magic"),
    (lambda b: b[:-5], "bytes follow"),
])
def test_malformed_idx_names_the_file(tmp_path, corrupt, match):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((2, 3, 3)))
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataFormatError, match=match) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_fashion_label_count_mismatch(tmp_path):
    fashion_fixture(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(DataFormatError, match="6 test images but 5 labels"):
        load_fashion_mnist(tmp_path)


def test_missing_fashion_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nope")


@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = load_fashion_mnist()
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.test_labels).tolist() == [1000] * 10


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_pickle_layout(tmp_path, num_classes):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, num_classes, 10)
    write_cifar_fixture(tmp_path, images, labels, num_classes)
    ds = load_cifar(tmp_path, num_classes)
    assert ds.train_images.shape == (10, 3, 32, 32) and torch.equal(ds.train_images, torch.from_numpy(images))
    assert ds.test_labels.tolist() == labels.tolist() and ds.num_classes == num_classes


def test_cifar_foreign_pickle_is_refused(tmp_path):
    write_cifar_fixture(tmp_path, np.zeros((5, 3, 32, 32), np.uint8), np.zeros(5, int))
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": gzip.GzipFile}, f)
    with pytest.raises(DataFormatError, match="test_batch"):
        load_cifar(tmp_path)


def test_cifar_wrong_shape_and_label_mismatch(tmp_path):
    write_cifar_fixture(tmp_path, np.zeros((5, 3, 32, 32), np.uint8), np.zeros(5, int))
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataFormatError, match=r"\(N, 3072\)"):
        load_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, f)
    with pytest.raises(DataFormatError, match="2 images but 1 labels"):
        load_cifar(tmp_path)
