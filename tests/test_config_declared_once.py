"""Configs are declared once: a RunConfig field reaches the methods with no second declaration."""

from __future__ import annotations

import dataclasses

from gwnmo_meta.config import RunConfig
from gwnmo_meta.registry import METHODS
from gwnmo_meta.training.methods import MethodConfig
from gwnmo_meta.training.run_data import method_config


def test_method_config_declares_no_field_of_its_own():
    run = [(f.name, f.type, f.default) for f in dataclasses.fields(RunConfig)]
    assert [(f.name, f.type, f.default) for f in dataclasses.fields(MethodConfig)] == run


def test_every_run_setting_reaches_the_method():
    cfg = RunConfig(method="hg", schedule="unrolled", inner_lr=0.5, hg_beta=0.2, logreg_l2=0.3)
    cfg = cfg.replace(inner_steps=2, learn_init=False, seed=7, inner_batch=5, shots=2)
    mcfg = method_config(cfg)
    assert isinstance(mcfg, MethodConfig)
    assert dataclasses.asdict(mcfg) == cfg.to_dict()
    assert (mcfg.lr, mcfg.info.name) == (0.5, "hg")
    assert method_config(RunConfig(method="adam")).lr == METHODS["adam"].inner_lr.value  # unset α
