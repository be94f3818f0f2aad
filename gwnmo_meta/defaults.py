"""Defaults that a benchmark tunes, in one place, each with where its value comes from.

The CLI (values and ``--help``), the library configs (``RunConfig``, ``MethodConfig``,
``ClassicConfig``) and the benchmark scripts read these, so the plain command runs the settings
that BENCHMARKS.md measured. When a benchmark's selection moves a value, move it here in the same
commit as the evidence; ``tests/test_defaults.py`` compares the CLI's defaults with the selections
recorded in the committed benchmark outputs and fails when they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuned:
    """A default value and its provenance (which benchmark chose it, and where the evidence is)."""

    value: float
    source: str

    def describe(self, symbol: str) -> str:
        """``"α = 1 (best of …)"``: the value and its provenance, for ``--help`` and docs.

        Args:
            symbol: The quantity's name, e.g. ``"α"``.

        Returns:
            One line.
        """
        return f"{symbol} = {self.value:g} ({self.source})"


# ---- classic training (gwnmo-meta train; benchmarks/classic_tables.py) ------------------------
_CLASSIC = "benchmarks/classic/results.json"
_CLASSIC_SCAN = (
    f"best mean validation accuracy of the classic lr scan on all three datasets, {_CLASSIC}"
)
CLASSIC_LR: dict[str, Tuned] = {
    "gwnmo": Tuned(1.0, _CLASSIC_SCAN),
    "gwnmo-prime": Tuned(1.0, _CLASSIC_SCAN),
    "adam": Tuned(0.03, _CLASSIC_SCAN),
    "hg": Tuned(1.0, _CLASSIC_SCAN),
    "sgd": Tuned(1.0, _CLASSIC_SCAN),
}
CLASSIC_META_LR = Tuned(
    1e-3, f"the thesis's; Tables 1-2 use it, Table 3 measures 1e-4 and 1e-2 too, {_CLASSIC}"
)
CLASSIC_HG_BETA = Tuned(1e-4, f"HG's hypergradient step in every classic table run, {_CLASSIC}")
# Not tuned, a protocol choice: the share of the train split held out to select the epoch.
CLASSIC_VAL_FRACTION = 0.1

# ---- few-shot meta-training (gwnmo-meta meta-train / benchmark) ------------------------------
_MAIN = "benchmarks/main/results.json"
_MAIN_SEL = f"the step size meta-val selected most often in the main table, {_MAIN}"
_SCAN = f"best mean meta-val accuracy of the fine-tuning lr scan, benchmarks/lr_scan/*.json; {_MAIN_SEL}"
INNER_LR: dict[str, Tuned] = {
    "gwnmo": Tuned(3.0, _MAIN_SEL),
    "gwnmo-prime": Tuned(3.0, _MAIN_SEL),
    "maml": Tuned(3.0, _MAIN_SEL),
    "meta-sgd": Tuned(3.0, _MAIN_SEL),
    "hg": Tuned(3.0, _MAIN_SEL),
    "sgd": Tuned(3.0, _SCAN),
    "adam": Tuned(0.1, _SCAN),
}
META_LR = Tuned(1e-3, f"the meta-lr of every committed few-shot table, {_MAIN}")
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
