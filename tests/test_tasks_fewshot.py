"""prepare_fewshot on tiny on-disk datasets: parts, no shared images, cross-dataset, conv4 cache, errors."""

import pytest
import torch

import gwnmo_meta.tasks.fewshot as fewshot
from gwnmo_meta.errors import ConfigError, DataError
from gwnmo_meta.tasks.episodes import TaskSpec
from gwnmo_meta.tasks.fewshot import FewShotConfig, prepare_fewshot
from gwnmo_meta.tasks.splits import ClassSplit
from tests.test_tasks_episodes import check_episode


def _cfg(root, dataset="mnist", **kw):
    kw.setdefault("backbone", "none")
    return FewShotConfig(
        dataset=dataset,
        data_root=str(root),
        skip_integrity_check=(dataset == "cifar10"),
        progress=False,
        **kw,
    )


@pytest.mark.parametrize("dataset", ["mnist", "fmnist", "cifar10"])
@pytest.mark.parametrize("keep_image_split", [False, True])
def test_tasks_from_disk_never_share_images_between_train_and_test(
    tiny_data_root, dataset, keep_image_split
):
    data = prepare_fewshot(_cfg(tiny_data_root, dataset, keep_image_split=keep_image_split))
    assert data.feature_dim == 3 * 32 * 32  # canonical 3×32×32 for every dataset
    assert torch.allclose(
        data.features.norm(dim=1), torch.ones(len(data.labels)), atol=1e-5
    )  # unit-norm rows
    assert data.classes("train") == data.classes("val") == (0, 1, 2, 3, 4)
    assert data.classes("test") == (5, 6, 7, 8, 9)
    spec = TaskSpec(5, 1, 2)
    seen = {}
    for part in ("train", "val", "test"):
        s = data.sampler(part, spec, seed=0)
        ids = set()
        for _ in range(12):
            ep = s.sample()
            check_episode(ep, data, part, spec)
            ids |= set(ep.image_ids.tolist())
        seen[part] = ids
    assert (
        not seen["train"] & seen["test"]
        and not seen["train"] & seen["val"]
        and not seen["val"] & seen["test"]
    )
    parts = {k: set(v.tolist()) for k, v in data.indices.items()}
    assert not parts["train"] & parts["test"] and not parts["train"] & parts["val"]
    if keep_image_split:
        assert (
            data.is_test[data.indices["test"]].all()
            and not data.is_test[data.indices["train"]].any()
        )
    else:
        assert data.is_test[data.indices["train"]].any()  # pooled


def test_explicit_val_classes(tiny_data_root):
    split = ClassSplit((0, 1, 2), (3, 4, 5), (6, 7, 8, 9))
    data = prepare_fewshot(_cfg(tiny_data_root, split=split))
    assert data.classes("val") == (3, 4, 5) and data.classes("train") == (0, 1, 2)
    with pytest.raises(ConfigError, match="exceeds the 3 classes available for meta-val"):
        data.sampler("val", TaskSpec(ways=5), seed=0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(backbone="vgg"), "unknown backbone"),
        (dict(dataset="svhn"), "unknown dataset"),
        (dict(backbone_dataset="svhn"), "unknown dataset"),
        (dict(split=ClassSplit((0, 1, 2), (), (2, 3))), "overlap"),
        (dict(split=ClassSplit((0, 1, 2), (), (9, 10))), "outside 0-9"),
        (dict(pretrain_epochs=0), "positive"),
    ],
)
def test_config_errors(tmp_path, bad, match):
    cfg = _cfg(tmp_path / "no-data-needed-for-this")
    for k, v in bad.items():
        setattr(cfg, k, v)
    with pytest.raises(ConfigError, match=match):
        prepare_fewshot(cfg)


def test_missing_data_through_prepare(tmp_path, monkeypatch):
    monkeypatch.setenv("GWNMO_DATA", str(tmp_path / "env-root"))
    with pytest.raises(DataError, match="env-root"):
        prepare_fewshot(FewShotConfig(dataset="fmnist", backbone="none", progress=False))


def test_too_many_shots_for_the_data(tiny_data_root):
    data = prepare_fewshot(_cfg(tiny_data_root, "cifar10"))
    with pytest.raises(DataError, match=r"class cifar10:\d has only \d+ images"):
        data.sampler("val", TaskSpec(5, 5, 15), seed=0)


def test_cross_dataset_uses_all_target_classes(tiny_data_root):
    data = prepare_fewshot(_cfg(tiny_data_root, "cifar10", backbone_dataset="mnist"))
    assert data.classes("test") == tuple(range(10)) and data.feature_dim == 3072
    assert len(data.indices["train"]) == len(data.indices["val"]) == 0
    with pytest.raises(ConfigError, match="empty"):
        data.sampler("train", TaskSpec(), seed=0)
    check_episode(
        data.sampler("test", TaskSpec(10, 1, 2), seed=0).sample(), data, "test", TaskSpec(10, 1, 2)
    )


def test_conv4_pretrained_on_meta_train_images_only_and_cached(
    tiny_data_root, tmp_path, monkeypatch
):
    calls = []
    real = fewshot.pretrain_conv4

    def spy(images, labels, classes, **kw):
        calls.append((labels.clone(), tuple(classes), kw["epochs"]))
        return real(images, labels, classes, **kw)

    monkeypatch.setattr(fewshot, "pretrain_conv4", spy)
    cfg = _cfg(
        tiny_data_root, "fmnist", backbone="conv4", pretrain_epochs=1, cache_dir=str(tmp_path)
    )
    rng_before = torch.get_rng_state()
    first = prepare_fewshot(cfg)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global torch RNG is untouched
    assert first.feature_dim == 256
    assert len(calls) == 1
    labels, classes, epochs = calls[0]
    assert classes == (0, 1, 2, 3, 4) and epochs == 1
    assert set(labels.tolist()) <= set(classes)
    assert len(labels) == len(first.indices["train"])  # held-out meta-val images excluded as well
    weights = list((tmp_path / "backbones").glob("conv4-fmnist-*.pt"))
    features = list((tmp_path / "features").glob("fmnist-*-conv4-*.pt"))
    assert len(weights) == 1 and len(features) == 1
    second = prepare_fewshot(cfg)  # both from the caches: no second pre-training
    assert len(calls) == 1 and torch.equal(first.features, second.features)
    features[0].write_bytes(b"truncated")  # a corrupt cache is recomputed, not fatal
    third = prepare_fewshot(cfg)
    assert len(calls) == 1 and torch.allclose(first.features, third.features, atol=1e-5)
    # another seed or another class split is another backbone
    prepare_fewshot(
        _cfg(
            tiny_data_root,
            "fmnist",
            backbone="conv4",
            pretrain_epochs=1,
            cache_dir=str(tmp_path),
            seed=1,
        )
    )
    assert len(calls) == 2 and len(list((tmp_path / "backbones").glob("conv4-fmnist-*.pt"))) == 2
    # cross-dataset: mnist meta-test features through the fmnist backbone (same cached weights)
    cross = prepare_fewshot(
        _cfg(
            tiny_data_root,
            "mnist",
            backbone="conv4",
            backbone_dataset="fmnist",
            pretrain_epochs=1,
            cache_dir=str(tmp_path),
        )
    )
    assert (
        len(calls) == 2 and cross.feature_dim == 256 and cross.classes("test") == tuple(range(10))
    )
