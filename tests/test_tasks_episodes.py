"""Episodes: shapes, labels, disjointness, seeding, validation, features from real on-disk formats."""
import random
import subprocess
import sys

import pytest
import torch

from gwnmo_meta.errors import ConfigError, DataError
from gwnmo_meta.tasks.episodes import TaskSpec
from gwnmo_meta.tasks.fewshot import FewShotConfig, prepare_fewshot, synthetic_fewshot


def _rows(x):
    return {tuple(r) for r in x.tolist()}


@pytest.mark.parametrize("ways, shots, query", [(5, 1, 3), (3, 2, 4)])
def test_episode_structure(ways, shots, query):
    data = synthetic_fewshot(per_class=30, dim=8)
    ep = data.sampler("train", TaskSpec(ways, shots, query), seed=0).sample()
    assert ep.support_x.shape == (ways * shots, 8) and ep.query_x.shape == (ways * query, 8)
    for y, per in ((ep.support_y, shots), (ep.query_y, query)):
        assert torch.equal(torch.bincount(y, minlength=ways), torch.full((ways,), per))
    assert not (_rows(ep.support_x) & _rows(ep.query_x))  # support and query disjoint
    # one label ↔ one original class, consistent between support and query
    centers = {}
    for x, y in zip(torch.cat([ep.support_x, ep.query_x]), torch.cat([ep.support_y, ep.query_y])):
        cls = int(torch.cdist(x[None], data.features).argmin())
        centers.setdefault(int(y), set()).add(int(data.labels[cls]))
    assert all(len(v) == 1 for v in centers.values()) and len(set().union(*centers.values())) == ways


def test_same_seed_same_tasks_and_isolated_from_global_random():
    data = synthetic_fewshot()
    a = data.sampler("train", TaskSpec(), seed=7)
    b = data.sampler("train", TaskSpec(), seed=7)
    c = data.sampler("train", TaskSpec(), seed=8)
    ea = [a.sample() for _ in range(5)]
    random.seed(999)  # user code touching `random` must not change the stream
    random.random()
    eb = [b.sample() for _ in range(5)]
    ec = [c.sample() for _ in range(5)]
    assert all(torch.equal(x.query_x, y.query_x) for x, y in zip(ea, eb))
    assert not all(torch.equal(x.query_x, y.query_x) for x, y in zip(ea, ec))


def test_sampler_state_dict_resumes_stream():
    data = synthetic_fewshot()
    s = data.sampler("train", TaskSpec(), seed=1)
    s.sample()
    state = s.state_dict()
    expected = [s.sample().support_x for _ in range(3)]
    t = data.sampler("train", TaskSpec(), seed=123)
    t.load_state_dict(state)
    assert all(torch.equal(e, t.sample().support_x) for e in expected)


def test_same_seed_same_tasks_across_processes():
    code = (
        "from gwnmo_meta.tasks.fewshot import synthetic_fewshot; from gwnmo_meta.tasks.episodes import TaskSpec;"
        "s = synthetic_fewshot().sampler('test', TaskSpec(), seed=3);"
        "print([round(float(s.sample().query_x.sum()), 4) for _ in range(3)])"
    )
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert outs[0] == outs[1] and outs[0].startswith("[")


def test_validation_errors():
    data = synthetic_fewshot(per_class=10)
    with pytest.raises(ConfigError, match="exceeds"):
        data.sampler("train", TaskSpec(ways=6), seed=0)
    with pytest.raises(DataError, match="fewer than --shots"):
        data.sampler("train", TaskSpec(shots=5, query=10), seed=0)
    with pytest.raises(ConfigError, match="positive"):
        data.sampler("train", TaskSpec(shots=0), seed=0)
    with pytest.raises(ConfigError, match="unknown part"):
        data.sampler("holdout", TaskSpec(), seed=0)


def test_prepare_fewshot_from_disk_no_image_shared(tiny_data_root):
    data = prepare_fewshot(FewShotConfig(dataset="mnist", data_root=str(tiny_data_root), backbone="none", progress=False))
    assert data.feature_dim == 3 * 32 * 32
    tr, te = set(data.indices["train"].tolist()), set(data.indices["test"].tolist())
    assert not tr & te
    assert set(data.labels[data.indices["test"]].tolist()) == {5, 6, 7, 8, 9}
    ep = data.sampler("test", TaskSpec(5, 1, 3), seed=0).sample()
    assert ep.support_x.shape == (5, 3072)
    assert torch.allclose(ep.support_x.norm(dim=1), torch.ones(5), atol=1e-5)  # unit-norm features


def test_conv4_backbone_pretrained_and_cached(tiny_data_root, isolated_cache):
    cfg = FewShotConfig(dataset="fmnist", data_root=str(tiny_data_root), backbone="conv4", progress=False)
    first = prepare_fewshot(cfg)
    assert first.feature_dim == 256
    weights = list((isolated_cache / "backbones").glob("conv4-fmnist-*.pt"))
    assert len(weights) == 1
    second = prepare_fewshot(cfg)  # from the caches
    assert torch.equal(first.features, second.features)


def test_cross_dataset_uses_source_backbone_and_all_target_classes(tiny_data_root):
    cfg = FewShotConfig(dataset="cifar10", data_root=str(tiny_data_root), backbone="none",
                        backbone_dataset="mnist", skip_integrity_check=True, progress=False)
    data = prepare_fewshot(cfg)
    assert set(data.labels[data.indices["test"]].tolist()) == set(range(10))
    assert data.feature_dim == 3072
