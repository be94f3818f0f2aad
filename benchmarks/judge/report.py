"""Report of benchmarks/judge/run.sh: the sampled judge (Q query examples per class) against the full
judge, paired on the same meta-test tasks, per target, shots and seed, and over seeds.

    .venv/bin/python benchmarks/judge/report.py   # → benchmarks/judge/results.{md,json}

A Q *qualifies* where, in every (target, shots, seed) cell, its paired difference to the full
judge has a 95% CI that reaches 0 or lies above it (its accuracy is within the CI of the full
judge's); the default is the cheapest qualifying Q.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gwnmo_meta.evaluation.stats import mean_ci95, paired_diff_ci95

HERE = Path(__file__).resolve().parent
CELL = re.compile(r"mixed-(\d)shot-gwnmo_alg2(?:_judge_(\d+))?-[0-9a-f]+-learned-lr[\d.]+-s(\d+)")


def load() -> dict:
    """{(target, shots, seed): {Q or 'full': per-task accuracies}} from every suite's cells."""
    cells: dict = {}
    for suite in sorted(HERE.glob("*-*shot")):
        target = suite.name.split("-")[0]
        for cell in sorted((suite / "cells").iterdir()):
            m = CELL.fullmatch(cell.name)
            test = cell / "test.json"
            if m is None or not test.exists():
                continue
            shots, q, seed = int(m[1]), m[2], int(m[3])
            accs = json.loads(test.read_text())["eval"]["task_accuracies"]
            cells.setdefault((target, shots, seed), {})[int(q) if q else "full"] = accs
    return cells


def main() -> None:
    cells = load()
    rows, per_q = [], {}
    for (target, shots, seed), by_q in sorted(cells.items()):
        full = by_q.get("full")
        if full is None:
            continue
        for q in sorted(k for k in by_q if k != "full"):
            d = paired_diff_ci95(by_q[q], full)
            within = d.mean + d.ci95 >= 0
            rows.append(
                dict(
                    target=target,
                    shots=shots,
                    seed=seed,
                    q=q,
                    full=mean_ci95(full).mean,
                    sampled=mean_ci95(by_q[q]).mean,
                    diff=d.mean,
                    ci95=d.ci95,
                    within=within,
                )
            )
            per_q.setdefault(q, []).append(within)
    over_seeds = []
    for target, shots, q in sorted({(r["target"], r["shots"], r["q"]) for r in rows}):
        diffs = [r["diff"] for r in rows if (r["target"], r["shots"], r["q"]) == (target, shots, q)]
        s = mean_ci95(diffs)
        over_seeds.append(
            dict(target=target, shots=shots, q=q, seeds=len(diffs), diff=s.mean, ci95=s.ci95)
        )
    planned = {(tg, s, seed) for tg in ("head", "conv4") for s in (1, 5) for seed in (0, 1)}
    done = {(r["target"], r["shots"], r["seed"]) for r in rows}
    missing = sorted(planned - done)
    qualifying = sorted(
        q for q, ok in per_q.items() if all(ok) and len(ok) == 2 * len(planned) // 2
    )
    lines = [
        "# The sampled judge against the full judge (GWNMO alg2, factored M, learned init, mixed)",
        "",
        "Paired on the same meta-test tasks; Δ = sampled − full judge, points, 95% CI of the "
        "per-task differences; within = the CI reaches 0 or lies above it.",
        "",
        "| target | shots | seed | Q | full judge (%) | sampled (%) | Δ (points) | within |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['shots']} | {r['seed']} | {r['q']} | {100 * r['full']:.2f} | "
            f"{100 * r['sampled']:.2f} | {100 * r['diff']:+.2f} ± {100 * r['ci95']:.2f} | "
            f"{'yes' if r['within'] else '**no**'} |"
        )
    lines += [
        "",
        "Over seeds (mean of the per-seed Δ, Student-t 95% CI over seeds; with 2 seeds the "
        "interval is wide):",
        "",
        "| target | shots | Q | seeds | Δ (points) |",
        "|---|---|---|---|---|",
    ]
    for r in over_seeds:
        ci = f" ± {100 * r['ci95']:.2f}" if r["seeds"] > 1 else ""
        lines.append(
            f"| {r['target']} | {r['shots']} | {r['q']} | {r['seeds']} | {100 * r['diff']:+.2f}{ci} |"
        )
    failed = sorted(q for q, ok in per_q.items() if not all(ok))  # out, whatever the rest says
    if missing and set(failed) == set(per_q):
        verdict = (
            f"No Q qualifies: every sampled judge tried ({', '.join(map(str, failed))}) already "
            "falls outside the full judge's CI in at least one cell, so the cells still missing "
            f"({', '.join(f'{t} {s}-shot seed {d}' for t, s, d in missing)}) cannot change the "
            "choice. The full judge stays the default."
        )
    elif missing:
        verdict = (
            f"Incomplete: no paired result yet for {', '.join(f'{t} {s}-shot seed {d}' for t, s, d in missing)}; "
            "no default is chosen until every cell is in (the full judge stays the default)."
        )
    elif qualifying:
        verdict = (
            f"Qualifying Q (within in every cell): {', '.join(map(str, qualifying))}; the cheapest "
            f"is {qualifying[0]}."
        )
    else:
        verdict = "No Q qualifies: the full judge stays the default."
    lines += ["", verdict]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    (HERE / "results.json").write_text(
        json.dumps({"rows": rows, "over_seeds": over_seeds, "qualifying": qualifying}, indent=2)
        + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
