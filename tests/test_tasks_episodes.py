"""Episodes: structure, learn2learn equivalence, seeding and isolation, resume, validation."""

import json
import random
import subprocess
import sys

import pytest
import torch

from gwnmo_meta.errors import ConfigError, DataError
from gwnmo_meta.tasks.episodes import Episode, EpisodeSampler, TaskSpec
from gwnmo_meta.tasks.fewshot import FewShotData, synthetic_fewshot
from gwnmo_meta.tasks.splits import ClassSplit


def _rows(x):
    return {tuple(r) for r in x.tolist()}


def check_episode(ep: Episode, data: FewShotData, part: str, spec: TaskSpec) -> None:
    """Exactly N classes of ``part``, K support + Q query per class, labels 0..N-1, disjoint images."""
    n, k, q = spec.ways, spec.shots, spec.query
    assert ep.support_x.shape == (n * k, data.feature_dim) and ep.query_x.shape == (
        n * q,
        data.feature_dim,
    )
    assert (
        ep.support_x.dtype == torch.float32
        and ep.support_y.dtype == ep.query_y.dtype == torch.int64
    )
    assert torch.equal(ep.support_y, torch.arange(n).repeat_interleave(k))
    assert torch.equal(ep.query_y, torch.arange(n).repeat_interleave(q))
    ids = ep.image_ids
    assert (
        ids is not None and len(ids) == n * (k + q) and len(set(ids.tolist())) == len(ids)
    )  # disjoint
    assert set(ids.tolist()) <= set(data.indices[part].tolist())
    assert torch.equal(data.features[ids], torch.cat([ep.support_x, ep.query_x]))
    original = data.labels[ids]
    y = torch.cat([ep.support_y, ep.query_y])
    mapping = {}
    for a, b in zip(y.tolist(), original.tolist(), strict=False):
        assert mapping.setdefault(a, b) == b  # one episode label ↔ one original class
    assert len(set(mapping.values())) == n


@pytest.mark.parametrize("ways, shots, query", [(5, 1, 3), (3, 2, 4), (2, 5, 1)])
def test_episode_structure(ways, shots, query):
    data = synthetic_fewshot(per_class=30, dim=8)
    spec = TaskSpec(ways, shots, query)
    for part in ("train", "val", "test"):
        s = data.sampler(part, spec, seed=0)
        for _ in range(20):
            check_episode(s.sample(), data, part, spec)


def test_label_assignment_is_shuffled_per_task():
    data = synthetic_fewshot()
    s = data.sampler("test", TaskSpec(5, 1, 1), seed=0)
    firsts = {int(data.labels[s.sample().image_ids[0]]) for _ in range(50)}
    assert len(firsts) > 1  # label 0 is not always the same class (RemapLabels-style shuffling)


def test_matches_learn2learn_load_data_pipeline():
    """Our gather gives the same task as learn2learn's own FusedNWaysKShots + LoadData + RemapLabels."""
    import learn2learn as l2l

    data = synthetic_fewshot(per_class=25, dim=6)
    spec = TaskSpec(4, 2, 3)
    idx = data.indices["train"]
    part = torch.utils.data.TensorDataset(data.features[idx], data.labels[idx])
    meta = l2l.data.MetaDataset(part)
    taskset = l2l.data.Taskset(
        meta,
        task_transforms=[
            l2l.data.transforms.FusedNWaysKShots(meta, n=spec.ways, k=spec.shots + spec.query),
            l2l.data.transforms.LoadData(meta),
            l2l.data.transforms.RemapLabels(meta, shuffle=False),
        ],
        num_tasks=-1,
    )
    ours = data.sampler("train", spec, seed=11)
    outer = random.getstate()
    random.seed(11)
    try:
        reference = [taskset[0] for _ in range(5)]
    finally:
        random.setstate(outer)
    need = spec.shots + spec.query
    for x_ref, y_ref in reference:
        ep = ours.sample()
        blocks = x_ref.view(spec.ways, need, -1)
        assert torch.equal(ep.support_x, blocks[:, : spec.shots].reshape(-1, x_ref.shape[1]))
        assert torch.equal(ep.query_x, blocks[:, spec.shots :].reshape(-1, x_ref.shape[1]))
        labels_ref = y_ref.view(spec.ways, need)
        assert (labels_ref == labels_ref[:, :1]).all() and len(
            set(labels_ref[:, 0].tolist())
        ) == spec.ways


def test_same_seed_same_tasks_and_isolated_from_global_random():
    data = synthetic_fewshot()
    a = data.sampler("train", TaskSpec(), seed=7)
    b = data.sampler("train", TaskSpec(), seed=7)
    c = data.sampler("train", TaskSpec(), seed=8)
    random.seed(5)
    expected_user = [random.random() for _ in range(3)]
    random.seed(5)
    ea = [a.sample() for _ in range(5)]
    assert [random.random() for _ in range(3)] == expected_user  # sampling leaves `random` alone
    random.seed(999)  # user code touching `random` must not change the stream
    random.random()
    eb = [b.sample() for _ in range(5)]
    ec = [c.sample() for _ in range(5)]
    assert all(
        torch.equal(x.image_ids, y.image_ids) and torch.equal(x.query_x, y.query_x)
        for x, y in zip(ea, eb, strict=False)
    )
    assert not all(torch.equal(x.image_ids, y.image_ids) for x, y in zip(ea, ec, strict=False))
    assert len({tuple(e.image_ids.tolist()) for e in ea}) == 5  # the stream moves on


def test_sampler_state_dict_resumes_stream():
    data = synthetic_fewshot()
    s = data.sampler("train", TaskSpec(), seed=1)
    s.sample()
    state = s.state_dict()
    expected = [s.sample().image_ids for _ in range(3)]
    t = data.sampler("train", TaskSpec(), seed=123)
    t.load_state_dict(state)
    assert all(torch.equal(e, t.sample().image_ids) for e in expected)
    u = data.sampler("train", TaskSpec(), seed=123)
    u.load_state_dict(json.loads(json.dumps(state)))  # survives a JSON round trip too
    assert all(torch.equal(e, u.sample().image_ids) for e in expected)


def test_validation_errors():
    data = synthetic_fewshot(per_class=10)
    with pytest.raises(ConfigError, match="exceeds the 5 classes"):
        data.sampler("train", TaskSpec(ways=6), seed=0)
    with pytest.raises(DataError, match="fewer than --shots"):
        data.sampler("train", TaskSpec(shots=5, query=10), seed=0)
    for bad in (TaskSpec(shots=0), TaskSpec(ways=-1), TaskSpec(query=0)):
        with pytest.raises(ConfigError, match="positive"):
            data.sampler("train", bad, seed=0)
    with pytest.raises(ConfigError, match="integer"):
        data.sampler("train", TaskSpec(ways=2.5), seed=0)
    with pytest.raises(ConfigError, match="unknown part"):
        data.sampler("holdout", TaskSpec(), seed=0)


def test_too_few_images_names_smallest_class():
    labels = torch.tensor([0] * 20 + [1] * 7 + [2] * 12)
    feats = torch.randn(len(labels), 4)
    with pytest.raises(DataError, match=r"class 1 has only 7 images"):
        EpisodeSampler(feats, labels, torch.arange(len(labels)), TaskSpec(2, 3, 5), seed=0)
    EpisodeSampler(
        feats, labels, torch.arange(len(labels)), TaskSpec(2, 2, 5), seed=0
    ).sample()  # 7 suffice


def test_synthetic_fewshot_is_separable_and_typed():
    data = synthetic_fewshot(num_classes=10, per_class=40, dim=16, seed=0)
    assert isinstance(data, FewShotData) and data.feature_dim == 16 and len(data.labels) == 400
    assert data.split == ClassSplit((0, 1, 2, 3, 4), (), (5, 6, 7, 8, 9))
    centers = torch.stack([data.features[data.labels == c].mean(0) for c in range(10)])
    nearest = torch.cdist(data.features, centers).argmin(1)
    assert (nearest == data.labels).float().mean() > 0.9


_CHILD = """
import sys, json
from gwnmo_meta.tasks.episodes import TaskSpec
from gwnmo_meta.tasks.fewshot import FewShotConfig, prepare_fewshot, synthetic_fewshot
out = {}
s = synthetic_fewshot().sampler("test", TaskSpec(), seed=3)
out["synthetic"] = [s.sample().image_ids.tolist() for _ in range(3)]
d = prepare_fewshot(FewShotConfig(dataset="mnist", data_root=sys.argv[1], backbone="none", progress=False))
s = d.sampler("train", TaskSpec(5, 1, 3), seed=4)
out["mnist"] = [s.sample().image_ids.tolist() for _ in range(3)]
print(json.dumps(out))
"""


def test_same_seed_same_tasks_across_processes(tiny_data_root):
    from gwnmo_meta.tasks.fewshot import FewShotConfig, prepare_fewshot

    here = {"synthetic": None, "mnist": None}
    s = synthetic_fewshot().sampler("test", TaskSpec(), seed=3)
    here["synthetic"] = [s.sample().image_ids.tolist() for _ in range(3)]
    d = prepare_fewshot(
        FewShotConfig(
            dataset="mnist", data_root=str(tiny_data_root), backbone="none", progress=False
        )
    )
    s = d.sampler("train", TaskSpec(5, 1, 3), seed=4)
    here["mnist"] = [s.sample().image_ids.tolist() for _ in range(3)]
    random.seed(0)  # a different global `random` state in this process must not matter
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tiny_data_root)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONHASHSEED": "123"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here
