"""``edgepack demo`` and ``edgepack report``.

The demo runs the whole story on the bundled 8x8 digits: train a float teacher, distill a small
student from it, prune the student, quantize it, and print what each step bought (file size,
accuracy, latency), plus an accuracy-vs-size plot when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

__all__ = ["demo_main", "report_main", "mlp", "pipeline"]

# The teacher is deliberately wide: digits is easy, so a 64-1024-1024-10 MLP (1.1 M parameters,
# 4.5 MB) is far larger than the task needs, the way real pretrained models are for edge tasks;
# that redundancy is what distillation, pruning and quantization remove.
TEACHER = (64, 1024, 1024, 10)
STUDENT = (64, 128, 128, 10)


def mlp(sizes, seed: int = 0):
    """A ReLU MLP ``Sequential(Linear, ReLU, ..., Linear)`` with deterministic init."""
    from ..nn import Linear, ReLU, Sequential, seed as nn_seed

    nn_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Sequential(*layers)


def accuracy(model, x, y) -> float:
    return float(np.mean(np.asarray(model.predict(x)).argmax(axis=-1) == y))


def pipeline(x_train, y_train, *, seed: int = 0, teacher_sizes=TEACHER, student_sizes=STUDENT,
             teacher_epochs: int = 15, distill_epochs: int = 40, sparsity: float = 0.75,
             prune_steps: int = 3, prune_epochs: int = 3, log=print) -> dict:
    """Teacher -> distilled student -> pruned student -> pruned + int8 student.

    Returns a dict name -> model, in that order (keys "teacher", "student", "student pruned",
    "student pruned int8").
    """
    from .. import distill, prune, quantize, train
    from ..nn.sparse import quantize_sparse

    t0 = time.perf_counter()
    teacher = mlp(teacher_sizes, seed)
    train(teacher, x_train, y_train, epochs=teacher_epochs, batch_size=64, lr=1e-3, seed=seed, progress=False)
    teacher.eval()
    log(f"  trained teacher {'-'.join(map(str, teacher_sizes))} ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    student = mlp(student_sizes, seed + 1)
    distill(teacher, student, x_train, y_train, epochs=distill_epochs, seed=seed, progress=False)
    student.eval()
    log(f"  distilled student {'-'.join(map(str, student_sizes))} ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    def fine_tune(model, epochs):  # keep learning from the teacher while the masks tighten
        distill(teacher, model, x_train, y_train, epochs=epochs, seed=seed, progress=False)

    pruned = prune(student, sparsity, schedule="gradual", steps=prune_steps, epochs=prune_epochs,
                   fine_tune=fine_tune)
    log(f"  pruned {sparsity:.0%} of the student's weights, gradually, distilling between steps "
        f"({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    q = quantize_sparse(quantize(pruned))
    log(f"  quantized to int8 ({time.perf_counter() - t0:.1f} s)")
    return {"teacher": teacher, "student": student, "student pruned": pruned, "student pruned int8": q}


def _plot(cmp, path: str) -> None:
    try:
        cmp.plot(path)
    except ModuleNotFoundError:
        print(f"(plot skipped: matplotlib is not installed; pip install 'edgepack[plot]' to get {path})")
        return
    print(f"plot: {path}")


def demo_main(argv: list[str]) -> int:
    """``edgepack demo``: train, distill, prune, quantize on digits; print the table; plot."""
    ap = argparse.ArgumentParser(prog="edgepack demo", description=(
        "Train a teacher MLP on the 8x8 digits, distill a small student, prune it, quantize it, "
        "and compare them (file size, accuracy, latency at batch 1 and 256)."))
    ap.add_argument("--plot", default="edgepack_demo.png", help="accuracy-vs-size plot (default: %(default)s)")
    ap.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    ap.add_argument("--out", help="also save the four models (.edgepack files) into this directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smaller models and fewer epochs (a few seconds)")
    args = ap.parse_args(argv)

    from .. import compare
    from ..data import load_digits, train_test_split

    t_start = time.perf_counter()
    x, y = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(x, y, 0.3, args.seed)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images (8x8, 10 classes)")
    kw = {}
    if args.quick:
        kw = dict(teacher_sizes=(64, 256, 10), student_sizes=(64, 32, 10), teacher_epochs=5,
                  distill_epochs=8, prune_steps=2, prune_epochs=1)
    models = pipeline(x_train, y_train, seed=args.seed, **kw)
    print("measuring ...")
    cmp = compare(models, x_test, y_test, min_time=0.05 if args.quick else 0.2)
    print()
    print(cmp)
    print()
    last = list(models)[-1]
    print(f"{last}: {cmp.ratio(last, 'file_bytes'):.0f}x smaller file and "
          f"{cmp.ratio(last, 'latency', 1):.1f}x faster at batch 1 than the teacher, "
          f"{100 * (cmp['teacher']['accuracy'] - cmp[last]['accuracy']):+.2f} points of accuracy lost")
    if args.out:
        from ..io import save

        os.makedirs(args.out, exist_ok=True)
        for name, m in models.items():
            p = os.path.join(args.out, name.replace(" ", "_") + ".edgepack")
            save(m, p)
        np.save(os.path.join(args.out, "digits_test_x.npy"), x_test)
        np.save(os.path.join(args.out, "digits_test_y.npy"), y_test)
        print(f"models and test data saved in {args.out}/ (try: edgepack report {args.out}/*.edgepack "
              f"--data {args.out}/digits_test_x.npy --labels {args.out}/digits_test_y.npy --plot out.png)")
    if not args.no_plot:
        _plot(cmp, args.plot)
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


def report_main(argv: list[str]) -> int:
    """``edgepack report MODEL... --data X.npy --labels y.npy [--plot out.png]``."""
    ap = argparse.ArgumentParser(prog="edgepack report", description=(
        "Compare saved models: parameters, file size, accuracy and latency at batch 1 and 256; "
        "optionally plot accuracy against file size."))
    ap.add_argument("models", nargs="+", metavar="MODEL", help="edgepack model files; the first is the baseline")
    ap.add_argument("--data", required=True, help="inputs, a .npy array (N, ...)")
    ap.add_argument("--labels", help="class labels, a .npy integer array (N,)")
    ap.add_argument("--plot", help="write the accuracy-vs-size plot here (needs matplotlib)")
    ap.add_argument("--batch-sizes", default="1,256", help="latency batch sizes (default: %(default)s)")
    args = ap.parse_args(argv)

    from .. import compare
    from ..io import load

    x = np.load(args.data, allow_pickle=False)
    if x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
    y = None if args.labels is None else np.load(args.labels, allow_pickle=False)
    if y is not None and y.dtype.kind not in "iu":
        raise ValueError(f"--labels must hold integer class labels; got {y.dtype}")
    if args.plot and y is None:
        raise ValueError("--plot draws accuracy, so it needs --labels")
    try:
        sizes = [int(s) for s in args.batch_sizes.split(",") if s]
    except ValueError:
        raise ValueError(f"--batch-sizes must be comma-separated integers; got {args.batch_sizes!r}") from None
    models = {}
    for p in args.models:
        name = os.path.splitext(os.path.basename(p))[0]
        while name in models:
            name += "'"
        models[name] = load(p)
    cmp = compare(models, x, y, batch_sizes=sizes)
    print(cmp)
    if args.plot:
        _plot(cmp, args.plot)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(demo_main(sys.argv[1:]))
