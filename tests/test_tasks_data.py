"""Loading through torchvision's classes, data roots, error messages, class splits."""

import pickle
import urllib.error

import numpy as np
import pytest
import torch

from gwnmo_meta.errors import ConfigError, DataError
from gwnmo_meta.tasks.backbones import canonical
from gwnmo_meta.tasks.data import load_images, resolve_data_root
from gwnmo_meta.tasks.splits import ClassSplit, default_split, parse_classes, split_indices
from tests.conftest import PER_CLASS_TEST, write_tiny_datasets


@pytest.mark.parametrize(
    "name, channels, size", [("mnist", 1, 28), ("fmnist", 1, 28), ("cifar10", 3, 32)]
)
def test_load_images_through_torchvision(tiny_data_root, name, channels, size):
    imgs = load_images(name, tiny_data_root, skip_integrity_check=(name == "cifar10"))
    assert imgs.images.dtype == torch.uint8
    assert imgs.images.shape[1:] == (channels, size, size)
    assert sorted(set(imgs.labels.tolist())) == list(range(10))
    assert imgs.is_test.sum() == 10 * PER_CLASS_TEST  # the test split is marked
    assert not imgs.is_test[: len(imgs.labels) - 10 * PER_CLASS_TEST].any()  # train split first
    assert len(imgs.labels) == len(imgs.images) == len(imgs.is_test)


def test_cifar_repacked_loads_the_pickles_unchanged(tiny_data_root):
    imgs = load_images("cifar10", tiny_data_root, skip_integrity_check=True)
    with open(tiny_data_root / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        batch = pickle.load(fh)
    n = len(batch["labels"])
    expected = torch.from_numpy(np.asarray(batch["data"]).reshape(n, 3, 32, 32))
    assert torch.equal(imgs.images[:n], expected)
    assert imgs.labels[:n].tolist() == batch["labels"]
    with open(tiny_data_root / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        test = pickle.load(fh)
    assert imgs.labels[imgs.is_test].tolist() == test["labels"]


def test_cifar_integrity_check_needs_explicit_option(tiny_data_root):
    with pytest.raises(DataError, match="--skip-integrity-check") as exc:
        load_images("cifar10", tiny_data_root)
    assert "\n" not in str(exc.value) and str(tiny_data_root / "cifar-10-batches-py") in str(
        exc.value
    )


@pytest.mark.parametrize(
    "name, folder",
    [("mnist", "MNIST/raw"), ("fmnist", "FashionMNIST/raw"), ("cifar10", "cifar-10-batches-py")],
)
@pytest.mark.parametrize("skip", [False, True])
def test_missing_data_names_folder_and_flag(tmp_path, name, folder, skip):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as exc:
        load_images(name, root, skip_integrity_check=skip)
    msg = str(exc.value)
    assert str(root / folder) in msg and "\n" not in msg
    assert "--data-root" in msg and "--download" in msg
    assert "integrity" not in msg  # missing is not the same as corrupted


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    for name in ("fmnist", "cifar10"):
        with pytest.raises(DataError, match="could not download") as exc:
            load_images(name, tmp_path, download=True)
        assert (
            str(tmp_path) in str(exc.value)
            and "--data-root" in str(exc.value)
            and "\n" not in str(exc.value)
        )


def test_truncated_file_is_a_data_error(tmp_path):
    root = write_tiny_datasets(tmp_path)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="cannot read mnist"):
        load_images("mnist", root)


def test_fingerprint_follows_the_data(tmp_path):
    a = load_images("mnist", write_tiny_datasets(tmp_path / "a", seed=0))
    b = load_images("mnist", write_tiny_datasets(tmp_path / "b", seed=0))
    c = load_images("mnist", write_tiny_datasets(tmp_path / "c", seed=1))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_canonical_image_format(tiny_data_root):
    mn = canonical(load_images("mnist", tiny_data_root).images[:4])
    cf = canonical(load_images("cifar10", tiny_data_root, skip_integrity_check=True).images[:4])
    assert mn.shape == cf.shape == (4, 3, 32, 32) and mn.dtype == torch.float32
    assert torch.equal(mn[:, 0], mn[:, 1]) and torch.equal(mn[:, 1], mn[:, 2])  # grey replicated
    assert (mn[:, :, :2] == -1).all() and (mn[:, :, :, -2:] == -1).all()  # 28 → 32 zero padding
    assert mn.min() >= -1 and mn.max() <= 1 and cf.min() >= -1 and cf.max() <= 1


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_images("svhn", "/tmp")


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("GWNMO_DATA", str(tmp_path / "env"))
    assert resolve_data_root(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("GWNMO_DATA")
    assert resolve_data_root(None) == resolve_data_root("~/.cache/gwnmo-meta/data")


def test_parse_classes():
    assert parse_classes("0-4") == (0, 1, 2, 3, 4)
    assert parse_classes("0,2,5-7") == (0, 2, 5, 6, 7)
    assert parse_classes(" 7 , 3 ") == (7, 3)
    for bad in ("a-b", "5-3", "", "1,1", "-1", "0-2,2"):
        with pytest.raises(ConfigError):
            parse_classes(bad)


def test_split_validation():
    with pytest.raises(ConfigError, match="overlap"):
        ClassSplit((0, 1, 2), (), (2, 3)).validate(10)
    with pytest.raises(ConfigError, match="overlap"):
        ClassSplit((0, 1), (1, 5), (6, 7)).validate(10)
    with pytest.raises(ConfigError, match="outside"):
        ClassSplit((0, 1), (), (12,)).validate(10)
    with pytest.raises(ConfigError, match="empty"):
        ClassSplit((), (), (5,)).validate(10)
    assert default_split(10) == ClassSplit((0, 1, 2, 3, 4), (), (5, 6, 7, 8, 9))


@pytest.mark.parametrize("keep_image_split", [False, True])
def test_parts_are_disjoint_and_respect_classes(keep_image_split):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (500,), generator=g)
    is_test = torch.rand(500, generator=g) < 0.3
    split = default_split(10)
    parts = split_indices(labels, is_test, split, keep_image_split=keep_image_split, seed=0)
    tr, va, te = (set(parts[k].tolist()) for k in ("train", "val", "test"))
    assert not (tr & te) and not (tr & va) and not (va & te)
    assert set(labels[parts["train"]].tolist()) == set(split.train)
    assert set(labels[parts["val"]].tolist()) == set(
        split.train
    )  # default: held-out images of train classes
    assert set(labels[parts["test"]].tolist()) == set(split.test)
    pool = (
        torch.isin(labels, torch.tensor(split.train)) & (~is_test if keep_image_split else True)
    ).sum()
    assert len(tr) + len(va) == pool and abs(len(va) - 0.2 * pool) <= 5  # 20% held out per class
    if keep_image_split:
        assert (
            not is_test[parts["train"]].any()
            and not is_test[parts["val"]].any()
            and is_test[parts["test"]].all()
        )
    else:
        assert (
            len(te) == torch.isin(labels, torch.tensor(split.test)).sum()
        )  # pooled: all images of test classes
    # the held-out choice is seeded
    again = split_indices(labels, is_test, split, keep_image_split=keep_image_split, seed=0)
    other = split_indices(labels, is_test, split, keep_image_split=keep_image_split, seed=1)
    assert torch.equal(again["val"], parts["val"]) and not torch.equal(other["val"], parts["val"])
    # explicit val classes → class-disjoint validation
    split2 = ClassSplit((0, 1, 2, 3), (4, 5), (6, 7, 8, 9))
    parts2 = split_indices(labels, is_test, split2, keep_image_split=keep_image_split)
    assert set(labels[parts2["val"]].tolist()) == {4, 5}
    assert set(labels[parts2["train"]].tolist()) == {0, 1, 2, 3}
