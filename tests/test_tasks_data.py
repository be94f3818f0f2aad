"""Loading through torchvision's classes, data roots, class splits."""
import pytest
import torch

from gwnmo_meta.errors import ConfigError, DataError
from gwnmo_meta.tasks.data import load_images, resolve_data_root
from gwnmo_meta.tasks.splits import ClassSplit, default_split, parse_classes, split_indices


@pytest.mark.parametrize("name, channels, size", [("mnist", 1, 28), ("fmnist", 1, 28), ("cifar10", 3, 32)])
def test_load_images_through_torchvision(tiny_data_root, name, channels, size):
    imgs = load_images(name, tiny_data_root, skip_integrity_check=(name == "cifar10"))
    assert imgs.images.dtype == torch.uint8
    assert imgs.images.shape[1:] == (channels, size, size)
    assert sorted(set(imgs.labels.tolist())) == list(range(10))
    assert imgs.is_test.sum() == 10 * 8  # the test split is marked
    assert len(imgs.labels) == len(imgs.images) == len(imgs.is_test)


def test_cifar_integrity_check_needs_explicit_option(tiny_data_root):
    with pytest.raises(DataError, match="--skip-integrity-check"):
        load_images("cifar10", tiny_data_root)


def test_missing_data_names_folder_and_flag(tmp_path):
    with pytest.raises(DataError) as exc:
        load_images("mnist", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(exc.value)
    assert "--data-root" in str(exc.value) and "--download" in str(exc.value)


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_images("svhn", "/tmp")


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("GWNMO_DATA", str(tmp_path / "env"))
    assert resolve_data_root(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("GWNMO_DATA")
    assert resolve_data_root(None).name == "data"


def test_parse_classes():
    assert parse_classes("0-4") == (0, 1, 2, 3, 4)
    assert parse_classes("0,2,5-7") == (0, 2, 5, 6, 7)
    for bad in ("a-b", "5-3", "", "1,1"):
        with pytest.raises(ConfigError):
            parse_classes(bad)


def test_split_validation():
    with pytest.raises(ConfigError, match="overlap"):
        ClassSplit((0, 1, 2), (), (2, 3)).validate(10)
    with pytest.raises(ConfigError, match="outside"):
        ClassSplit((0, 1), (), (12,)).validate(10)


@pytest.mark.parametrize("keep_image_split", [False, True])
def test_parts_are_disjoint_and_respect_classes(keep_image_split):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (500,), generator=g)
    is_test = torch.rand(500, generator=g) < 0.3
    split = default_split(10)
    parts = split_indices(labels, is_test, split, keep_image_split=keep_image_split, seed=0)
    tr, va, te = (set(parts[k].tolist()) for k in ("train", "val", "test"))
    assert not (tr & te) and not (tr & va) and not (va & te)
    assert set(labels[parts["train"]].tolist()) <= set(split.train)
    assert set(labels[parts["val"]].tolist()) <= set(split.train)  # default: held-out images of train classes
    assert set(labels[parts["test"]].tolist()) <= set(split.test)
    if keep_image_split:
        assert not is_test[parts["train"]].any() and is_test[parts["test"]].all()
    # explicit val classes → class-disjoint validation
    split2 = ClassSplit((0, 1, 2, 3), (4, 5), (6, 7, 8, 9))
    parts2 = split_indices(labels, is_test, split2, keep_image_split=keep_image_split)
    assert set(labels[parts2["val"]].tolist()) <= {4, 5}
