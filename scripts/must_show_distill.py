"""Issue 6, distillation claim: on scikit-learn's digits (30% held out, seeds 0-2), a student with
at most 1/8 of the teacher's parameters, distilled from it, reaches the teacher's accuracy minus at
most 1 point and beats the same student trained on the labels alone.

    PYTHONPATH=python python scripts/must_show_distill.py
"""

import sys
import time

import numpy as np

import edgepack
from edgepack.cli.demo import mlp
from edgepack.data import load_digits, train_test_split

TEACHER = (64, 1024, 1024, 10)
STUDENT = (64, 256, 256, 10)
TEACHER_EPOCHS = 15
STUDENT_EPOCHS = 80
TEMPERATURE, ALPHA = 4.0, 0.9


def run_seed(seed: int) -> dict:
    x, y = load_digits()
    xtr, xte, ytr, yte = train_test_split(x, y, 0.3, seed)

    def acc(m):
        return 100.0 * float((m.predict(xte).argmax(1) == yte).mean())
    teacher = mlp(TEACHER, seed)
    edgepack.train(teacher, xtr, ytr, epochs=TEACHER_EPOCHS, seed=seed, progress=False)
    labels = mlp(STUDENT, seed + 1)
    edgepack.train(labels, xtr, ytr, epochs=STUDENT_EPOCHS, seed=seed, progress=False)
    student = mlp(STUDENT, seed + 1)       # the same initial weights as the label-only student
    edgepack.distill(teacher, student, xtr, ytr, temperature=TEMPERATURE, alpha=ALPHA, epochs=STUDENT_EPOCHS,
                     seed=seed, progress=False)
    return {"teacher": acc(teacher), "labels": acc(labels), "distilled": acc(student),
            "teacher_params": teacher.num_parameters(), "student_params": student.num_parameters()}


def main() -> int:
    t0 = time.perf_counter()
    rows = [run_seed(s) for s in (0, 1, 2)]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("teacher", "labels", "distilled")}
    tp, sp = rows[0]["teacher_params"], rows[0]["student_params"]
    print(f"digits, 30% held out, seeds 0-2; teacher {'-'.join(map(str, TEACHER))} ({tp:,} params), "
          f"student {'-'.join(map(str, STUDENT))} ({sp:,} params, 1/{tp / sp:.1f}); T={TEMPERATURE}, alpha={ALPHA}")
    print("| model | seed 0 | seed 1 | seed 2 | mean |")
    print("|---|---|---|---|---|")
    for k, name in (("teacher", "teacher"), ("labels", "student, labels only"), ("distilled", "student, distilled")):
        print(f"| {name} | " + " | ".join(f"{r[k]:.2f}%" for r in rows) + f" | {mean[k]:.2f}% |")
    claims = [
        ("student has <= 1/8 of the teacher's parameters", sp * 8 <= tp),
        ("distilled >= teacher - 1.0 point", mean["distilled"] >= mean["teacher"] - 1.0),
        ("distilled > labels only", mean["distilled"] > mean["labels"]),
    ]
    for text, ok in claims:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0 if all(ok for _, ok in claims) else 1


if __name__ == "__main__":
    sys.exit(main())
