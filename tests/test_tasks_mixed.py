"""The pooled three-dataset source: image format, names, class-disjoint and leave-one-dataset-out splits."""

import math

import pytest
import torch

import gwnmo_meta.tasks.fewshot as fewshot
from gwnmo_meta.errors import ConfigError
from gwnmo_meta.tasks.backbones import Conv4, canonical
from gwnmo_meta.tasks.data import SOURCES, class_names, load_images
from gwnmo_meta.tasks.episodes import TaskSpec
from gwnmo_meta.tasks.fewshot import FewShotConfig, prepare_fewshot, split_summary
from gwnmo_meta.tasks.splits import ClassSplit, dataset_split, parse_classes

PARTS = ("train", "val", "test")


def _source(label: int) -> str:
    return SOURCES[label // 10]


def _check_split(split: ClassSplit) -> dict[str, set[str]]:
    """Parts pairwise class-disjoint; returns the source datasets each part draws from."""
    sets = {p: set(getattr(split, p)) for p in PARTS}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"]
    assert not sets["val"] & sets["test"]
    assert all(0 <= c < 30 for s in sets.values() for c in s)
    return {p: {_source(c) for c in sets[p]} for p in PARTS}


def test_pool_format_labels_and_names(tiny_data_root):
    pool = load_images("mixed", tiny_data_root, skip_integrity_check=True)
    single = [load_images(s, tiny_data_root, skip_integrity_check=True) for s in SOURCES]
    assert pool.images.dtype == torch.uint8 and pool.images.shape[1:] == (3, 32, 32)
    assert len(pool.labels) == sum(len(s.labels) for s in single)
    assert pool.num_classes == 30 and pool.class_names[0] == "mnist:0"
    assert pool.class_names[17] == "fmnist:7" and pool.class_names[27] == "cifar10:7"
    start = 0
    for i, s in enumerate(single):
        rows = slice(start, start + len(s.labels))
        start += len(s.labels)
        assert torch.equal(pool.labels[rows], s.labels + 10 * i)
        assert torch.equal(pool.is_test[rows], s.is_test)
        # the pool stores exactly what the backbones see of the single dataset
        assert torch.equal(canonical(pool.images[rows][:8]), canonical(s.images[:8]))
    grey = pool.images[: len(single[0].labels)]
    assert (grey[:, :, :2] == 0).all() and torch.equal(grey[:, 0], grey[:, 2])  # padded, replicated


def test_pool_relabels_as_learn2learn_union(tiny_data_root):
    from gwnmo_meta.training.l2l import learn2learn

    l2l = learn2learn()
    # UnionMetaDataset numbers each dataset's classes by first appearance: sorted labels make
    # that the class order, and then its union labels are the pool's
    single = [load_images(s, tiny_data_root, skip_integrity_check=True) for s in SOURCES]
    labels = [s.labels.sort().values for s in single]
    union = l2l.data.UnionMetaDataset(
        [l2l.data.MetaDataset(torch.utils.data.TensorDataset(y, y)) for y in labels]
    )
    pool = load_images("mixed", tiny_data_root, skip_integrity_check=True)
    assert [int(union[i][1]) for i in range(len(union))] == pool.labels.sort().values.tolist()


def test_default_mixed_split_is_class_disjoint_over_every_dataset():
    split = dataset_split("mixed")
    sources = _check_split(split)
    assert all(sources[p] == set(SOURCES) for p in PARTS)  # every part draws from every dataset
    assert (len(split.train), len(split.val), len(split.test)) == (15, 6, 9)
    assert math.comb(len(split.test), 5) >= 100
    assert [class_names("mixed")[c] for c in split.test[:3]] == ["mnist:7", "mnist:8", "mnist:9"]


@pytest.mark.parametrize("held_out", SOURCES)
def test_leave_one_dataset_out(held_out):
    split = dataset_split("mixed", held_out)
    sources = _check_split(split)
    others = set(SOURCES) - {held_out}
    assert sources["test"] == {held_out} and sources["train"] == sources["val"] == others
    assert sorted(split.test) == [10 * SOURCES.index(held_out) + c for c in range(10)]
    assert len(split.train) >= 12 and len(split.val) >= 5


def test_split_errors():
    with pytest.raises(ConfigError, match="needs --dataset mixed"):
        dataset_split("mnist", "cifar10")
    with pytest.raises(ConfigError, match="unknown --test-dataset"):
        dataset_split("mixed", "svhn")


def test_class_lists_by_name():
    assert parse_classes("cifar10:7", "mixed") == (27,)
    assert parse_classes("cifar10:0-2, mnist:3", "mixed") == (20, 21, 22, 3)
    assert parse_classes("fmnist", "mixed") == tuple(range(10, 20))
    assert parse_classes("mnist:3,4", "mnist") == (3, 4)  # single datasets: names or numbers
    for text, match in [
        ("3", "name classes dataset:class"),
        ("svhn:1", "unknown dataset 'svhn'"),
        ("cifar10:10", "cifar10:10 .* does not exist"),
        ("cifar10:a", "cannot parse"),
        ("mnist:1,mnist:1", "repeats"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_classes(text, "mixed")
    with pytest.raises(ConfigError, match="unknown dataset 'cifar10'"):
        parse_classes("cifar10:1", "mnist")
    split = ClassSplit.from_strings("cifar10:0-7", None, None, dataset="mixed")
    with pytest.raises(ConfigError, match=r"overlap on classes \[cifar10:5, cifar10:6\]"):
        split.validate(30, "mixed")


def _cfg(root, **kw):
    kw.setdefault("backbone", "none")
    return FewShotConfig(
        dataset="mixed", data_root=str(root), skip_integrity_check=True, progress=False, **kw
    )


def test_split_summary_counts_without_features(tiny_data_root, monkeypatch):
    def no_features(*a, **k):
        raise AssertionError("split_summary must not build features")

    monkeypatch.setattr(fewshot, "_features", no_features)
    summary = split_summary(_cfg(tiny_data_root, backbone="conv4", test_dataset="fmnist"), ways=5)
    parts = summary["parts"]
    assert parts["test"]["classes"] == [f"fmnist:{c}" for c in range(10)]
    assert parts["test"]["class_sets"] == math.comb(10, 5) == 252
    assert parts["train"]["class_sets"] == math.comb(14, 5) and parts["val"]["class_sets"] == 6
    pool = load_images("mixed", tiny_data_root, skip_integrity_check=True)
    for part in PARTS:
        ids = parse_classes(",".join(parts[part]["classes"]), "mixed")
        assert parts[part]["images"] == int(torch.isin(pool.labels, torch.tensor(ids)).sum())


def test_mixed_tasks_and_backbone_sees_meta_train_classes_only(
    tiny_data_root, tmp_path, monkeypatch
):
    calls = []

    def spy(images, labels, classes, **kw):  # records what pre-training sees; skips the training
        calls.append((set(labels.tolist()), tuple(classes)))
        return Conv4().eval()

    monkeypatch.setattr(fewshot, "pretrain_conv4", spy)
    kw = dict(backbone="conv4", pretrain_epochs=1, cache_dir=str(tmp_path))
    data = prepare_fewshot(_cfg(tiny_data_root, test_dataset="cifar10", **kw))
    assert data.class_names("test") == [f"cifar10:{c}" for c in range(10)]
    assert calls[0][0] == set(calls[0][1]) == set(data.split.train)  # never a val or test class
    ep = data.sampler("test", TaskSpec(5, 1, 2), seed=0).sample()
    assert (data.labels[ep.image_ids] >= 20).all() and ep.support_x.shape == (5, 256)
    with pytest.raises(ConfigError, match=r"available for meta-val of mixed \(mnist:7"):
        data.sampler("val", TaskSpec(ways=7), seed=0)
    # another split is another backbone and other features (the split is in the cache keys)
    prepare_fewshot(_cfg(tiny_data_root, **kw))
    assert len(calls) == 2 and calls[1][0] == set(dataset_split("mixed").train)
    assert len(list((tmp_path / "backbones").glob("conv4-mixed-*.pt"))) == 2
    assert len(list((tmp_path / "features").glob("mixed-*-conv4-mixed-*.pt"))) == 2
