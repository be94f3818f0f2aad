"""Meta-val accuracy at every validation of each GWNMO cell of a suite (from its committed result.json).

python benchmarks/val_history.py benchmarks/main
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(suite_dir: str) -> None:
    print("| cell | meta-val accuracy (%) by meta-step |")
    print("|---|---|")
    for path in sorted(Path(suite_dir).glob("cells/*gwnmo*/result.json")):
        record = json.loads(path.read_text())
        vals = [
            f"{int(r['step'])}: {100 * r['val_accuracy']:.1f}"
            for r in record.get("history", [])
            if "val_accuracy" in r
        ]
        print(f"| {path.parent.name} | {', '.join(vals)} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/main")
