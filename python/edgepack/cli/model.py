"""``edgepack info MODEL`` and ``edgepack eval MODEL --data X.npy --labels y.npy``.

Expected failures raise ``ValueError``/``FileNotFoundError``; ``edgepack.cli`` prints them as one
line and exits with status 2.  Option errors are raised the same way (not argparse's exit).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

__all__ = ["info_main", "eval_main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 via cli.py, instead of usage + sys.exit
        raise ValueError(f"{message} (see 'edgepack {self.prog.split()[-1]} --help')")


def _parse(parser: argparse.ArgumentParser, argv):
    try:
        return parser.parse_args(argv)
    except SystemExit as e:  # --help: argparse already printed
        return int(e.code or 0)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--input-shape must be comma-separated integers like 1,64; got {text!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"--input-shape must be positive integers like 1,64; got {text!r}")
    return shape


def _guess_input_shape(model):
    from ..nn import Embedding, Graph, Linear

    if isinstance(model, Graph):
        spec = model.inputs[0]["shape"] if len(model.inputs) == 1 else None
        if spec is not None:
            return tuple(d if isinstance(d, int) and d > 0 else 1 for d in spec)
        return None

    first = next((m for _, m in model.named_modules() if not m.children()), None)
    if isinstance(first, Linear):
        return (1, first.in_features)
    if isinstance(first, Embedding):
        return (1, 8)
    return None


def info_main(argv) -> int:
    """``edgepack info MODEL [--input-shape 1,1,8,8]``: file facts and the layer summary."""
    p = _Parser(prog="edgepack info", description="Describe a saved edgepack model.")
    p.add_argument("model", help="model file written by edgepack.save, or an .onnx file")
    p.add_argument("--input-shape", type=_shape, default=None,
                   help="input batch shape for the output-shape column, e.g. 1,1,8,8 "
                        "(default: from the file's metadata or the first layer)")
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    from ..io import read_model

    model, header = read_model(args.model)
    meta = header["metadata"] or {}
    shape = args.input_shape
    if shape is None and isinstance(meta, dict) and isinstance(meta.get("input_shape"), list):
        shape = tuple(int(s) for s in meta["input_shape"])
    if shape is None:
        shape = _guess_input_shape(model)
    print(f"file:      {args.model} ({header['file_bytes']:,} bytes, format version {header['format_version']})")
    print(f"model:     {type(model).__name__}, {model.num_parameters():,} parameters, "
          f"{model.nbytes():,} bytes of tensors")
    if meta:
        print(f"metadata:  {meta}")
    try:
        text = model.summary(shape, print_fn=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"cannot run the model on input shape {shape}: {e}") from None
    print(text)
    return 0


def _load_array(path: str, opt: str) -> np.ndarray:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{opt} {path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{opt} {path}: not a readable .npy file ({e})") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise ValueError(f"{opt} {path}: expected a single array (.npy), got an .npz archive")
    return arr


def eval_main(argv) -> int:
    """``edgepack eval MODEL --data X.npy --labels y.npy``: print top-1 accuracy."""
    p = _Parser(prog="edgepack eval", description="Top-1 accuracy of a saved model on labelled data.")
    p.add_argument("model", help="model file written by edgepack.save, or an .onnx file")
    p.add_argument("--data", required=True, help="inputs, a .npy array with N rows")
    p.add_argument("--labels", required=True, help="integer class labels, .npy of shape (N,) (or one-hot (N, C))")
    p.add_argument("--batch-size", type=int, default=256, help="rows per forward call (default 256)")
    args = _parse(p, argv)
    if isinstance(args, int):
        return args
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer; got {args.batch_size}")
    from ..io import read_model

    model, _ = read_model(args.model)
    x = _load_array(args.data, "--data")
    y = _load_array(args.labels, "--labels")
    if y.ndim == 2:
        y = y.argmax(axis=1)
    if y.ndim != 1 or y.dtype.kind not in "iub":
        raise ValueError(f"--labels must be integer class ids of shape (N,); got {y.dtype} {y.shape}")
    if x.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"--data has {x.shape[0] if x.ndim else 0} rows but --labels has {y.shape[0]}")
    if x.dtype.kind == "f" and x.dtype != np.float32:
        x = x.astype(np.float32)
    try:
        out = np.asarray(model.predict(x, batch_size=args.batch_size))
    except (ValueError, TypeError) as e:
        raise ValueError(f"the model cannot run on --data of shape {x.shape}: {e}") from None
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"the model output must be (N, classes) scores; got shape {out.shape}")
    pred = out.argmax(axis=1)
    correct = int((pred == y).sum())
    n = int(y.shape[0])
    print(f"top-1 accuracy: {correct / max(n, 1):.4f} ({correct}/{n})")
    return 0
