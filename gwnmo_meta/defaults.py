"""Defaults that a benchmark tunes, each with where its value comes from.

The CLI (values and ``--help``), the library configs (``RunConfig``, ``MethodConfig``,
``ClassicConfig``) and the benchmark scripts read these, so the plain command runs the settings
that BENCHMARKS.md measured. Per-method values (step sizes, step-size grids) are stored with each
method in ``gwnmo_meta/registry.py``; ``INNER_LR`` and ``CLASSIC_LR`` here are views of it. When a
benchmark's selection moves a value, move it (here or in the method's registry entry) in the same
commit as the evidence; ``tests/test_defaults.py`` compares the CLI's defaults with the selections
recorded in the committed benchmark outputs and fails when they disagree.
"""

from __future__ import annotations

from gwnmo_meta.registry import METHODS, Tuned

# ---- classic training (gwnmo-meta train; benchmarks/classic_tables.py) ------------------------
_CLASSIC = "benchmarks/classic/results.json"
# Per-method step sizes live with each method in gwnmo_meta/registry.py (MethodInfo.classic_lr,
# MethodInfo.inner_lr); these are views of it.
CLASSIC_LR: dict[str, Tuned] = {n: m.classic_lr for n, m in METHODS.items() if m.classic_lr}
CLASSIC_META_LR = Tuned(
    1e-3, f"the thesis's; Tables 1-2 use it, Table 3 measures 1e-4 and 1e-2 too, {_CLASSIC}"
)
CLASSIC_HG_BETA = Tuned(1e-4, f"HG's hypergradient step in every classic table run, {_CLASSIC}")
# Not tuned, a protocol choice: the share of the train split held out to select the epoch.
CLASSIC_VAL_FRACTION = 0.1

# ---- few-shot meta-training (gwnmo-meta meta-train / benchmark) ------------------------------
_MAIN = "benchmarks/main/results.json"
INNER_LR: dict[str, Tuned] = {n: m.inner_lr for n, m in METHODS.items() if m.inner_lr}
META_LR = Tuned(1e-3, f"the meta-lr of every committed few-shot table, {_MAIN}")
# The default M (a name, not a number). Paired on the same meta-test tasks, the factored M scored
# +0.06 ± 0.15 points against the per-coordinate M on the linear head (MNIST 1-shot), +5.18 ± 0.76
# at the 134k head and +1.08 ± 0.64 at conv4 end to end (mixed 1-shot), at 10-25× less cost.
WEIGHTING = "factored"
WEIGHTING_SOURCE = (
    "the factored M measured no worse than the per-coordinate M at every target size, "
    "benchmarks/endtoend/factored-vs-coordinate-mnist-1shot-steps200.json, "
    "benchmarks/endtoend/factored-134k, benchmarks/endtoend/factored-conv4"
)
WEIGHTING_HIDDEN = Tuned(
    32,
    "M's width in every committed few-shot table, benchmarks/quick/results.json; "
    "8 measured equal on MNIST 1-shot at lower cost, benchmarks/m_hidden",
)
HG_BETA = Tuned(
    1e-3, "HG's hypergradient step in every committed few-shot table (BENCHMARKS.md appendix A)"
)
LOGREG_L2 = Tuned(
    1e-3,
    "logreg's L2 penalty: an a-priori small value (L-BFGS converges in tens of iterations on "
    "unit-norm features); benchmark protocol tunes it on meta-val (BENCHMARKS.md section 1)",
)

# ---- GWNMO's base direction (--base momentum/adam), both modes ------------------------------
BASE_MOMENTUM = Tuned(0.9, "untuned: torch.optim.Adam's default β1, and the customary SGD momentum")
BASE_BETA2 = Tuned(0.999, "untuned: torch.optim.Adam's default β2")
BASE_EPS = 1e-8  # torch.optim.Adam's default ε (not an option)
# gwnmo-meta train --optimizer gwnmo --base B: the scan's selection (at the default μ and β2)
CLASSIC_BASE_LR: dict[str, Tuned] = {
    base: Tuned(
        value, f"best mean validation accuracy of the classic lr scan (gwnmo+{base}), {_CLASSIC}"
    )
    for base, value in (("adam", 0.03), ("momentum", 0.3))
}
