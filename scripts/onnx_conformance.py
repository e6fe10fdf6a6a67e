"""Pass counts per operator of the ONNX backend node cases on edgepack (the README's table).

Runs what tests/test_onnx_backend.py runs (every case whose operators are all registered, minus
its SKIP list) and prints, per operator, the cases that contain it: run, passed, skipped.

    PYTHONPATH=python python scripts/onnx_conformance.py
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def main() -> int:
    import test_onnx_backend as T

    counts: dict[str, list[int]] = {}
    failed = []
    for case in T._cases():
        ops = {n.op_type for n in case.model.graph.node}
        ok = "skip" if case.name in T.SKIP else "pass"
        if ok == "pass":
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    T.test_node_case(case.name)
            except Exception as e:  # noqa: BLE001 - a failure is a row of the report
                ok = "fail"
                failed.append((case.name, f"{type(e).__name__}: {str(e)[:120]}"))
        for op in ops:
            c = counts.setdefault(op, [0, 0, 0])
            c[{"pass": 0, "fail": 1, "skip": 2}[ok]] += 1
    total = len(T._cases())
    print(f"{total} node cases selected; {sum(1 for c in T._cases() if c.name not in T.SKIP) - len(failed)} passed, "
          f"{len(failed)} failed, {sum(1 for c in T._cases() if c.name in T.SKIP)} skipped with a reason")
    print("\n| operator | cases passed | failed | skipped |\n|---|---|---|---|")
    for op in sorted(counts):
        p, f, s = counts[op]
        print(f"| {op} | {p} | {f} | {s} |")
    for name, why in failed:
        print(f"FAILED {name}: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
