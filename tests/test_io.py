"""edgepack.save / edgepack.load: round trips give identical outputs; bad files give ValueError."""

import json
import pickle
import struct

import numpy as np
import pytest

import edgepack
from edgepack import nn
from edgepack.io import read_header


@nn.register_layer
class _DummyScale(nn.Module):
    """A layer defined outside edgepack (as quantized/sparse layers are): int8 tensor + config."""

    _tensor_names = ("q", "scale")

    def __init__(self, n: int, shift: float = 0.0):
        self.n = n
        self.shift = shift
        self.q = np.zeros(n, np.int8)
        self.scale = np.ones(1, np.float32)

    def get_config(self):
        return {"n": self.n, "shift": self.shift}

    def kernel_path(self):
        return "dummy int8"

    def forward(self, x, **kw):
        return x * (self.q.astype(np.float32) * self.scale) + np.float32(self.shift)


def _models(rng):
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Residual(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.SiLU()),
        nn.Conv2d(4, 6, 1), nn.AvgPool2d(2), nn.GlobalAvgPool2d(), nn.Linear(6, 3, bias=False),
        nn.Softmax())
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.GELU("tanh"), nn.Dropout(0.1),
                        nn.LayerNorm(8), nn.Linear(8, 4), nn.Tanh(), nn.Sigmoid())
    dummy = _DummyScale(4, 0.5)
    dummy.q = rng.integers(-128, 128, 4).astype(np.int8)
    dummy.scale = np.array([0.01], np.float32)
    mlp.append(dummy)
    enc = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16), nn.TransformerEncoderLayer(8, 2, 16, norm_first=True))
    return [
        (cnn, rng.standard_normal((2, 1, 8, 8)).astype(np.float32), {}),
        (mlp, rng.standard_normal((3, 1, 4, 4)).astype(np.float32), {}),
        (enc, rng.standard_normal((2, 5, 8)).astype(np.float32), {"mask": np.array([[1, 1, 1, 0, 0], [1] * 5])}),
        (nn.Sequential(nn.Embedding(11, 8), nn.Reshape([0, -1])), np.array([[1, 2], [10, 0]]), {}),
    ]


def test_round_trip_identical_outputs(tmp_path, rng):
    for i, (model, x, kw) in enumerate(_models(rng)):
        p = tmp_path / f"m{i}.edgepack"
        edgepack.save(model, p)
        back = edgepack.load(p)
        assert type(back) is type(model)
        assert [type(m) for m in back.modules()] == [type(m) for m in model.modules()]
        assert [n for n, _ in back.named_modules()] == [n for n, _ in model.named_modules()]
        np.testing.assert_array_equal(back(x, **kw), model(x, **kw))
        for (na, a), (nb, b) in zip(model.named_tensors(), back.named_tensors()):
            assert na == nb and a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_round_trip_keeps_configs(tmp_path, rng):
    conv = nn.Conv2d(4, 8, (3, 1), stride=(2, 1), padding=(0, 1, 2, 1), dilation=2, groups=2)
    edgepack.save(nn.Sequential(conv), tmp_path / "c")
    back = edgepack.load(tmp_path / "c")[0]
    assert back.get_config() == conv.get_config()
    x = rng.standard_normal((1, 4, 9, 5)).astype(np.float32)
    np.testing.assert_array_equal(back(x), conv(x))


def test_file_is_safetensors_layout_and_no_pickle(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy")
    model, x, _ = _models(rng)[1]
    p = tmp_path / "m.edgepack"
    edgepack.save(model, p, metadata={"input_shape": [1, 1, 4, 4]})
    tensors = st.load_file(str(p))
    np.testing.assert_array_equal(tensors["1.weight"], model[1].weight)
    info = read_header(p)
    assert info["format_version"] == 1 and info["metadata"] == {"input_shape": [1, 1, 4, 4]}
    assert info["architecture"]["class"] == "Sequential"


def test_unregistered_class_cannot_be_saved(tmp_path):
    class Local(nn.Module):
        def forward(self, x, **kw):
            return x

    with pytest.raises(TypeError, match="not registered"):
        edgepack.save(nn.Sequential(Local()), tmp_path / "x")


# -- bad files ------------------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path, rng):
    model, x, _ = _models(rng)[0]
    p = tmp_path / "good.edgepack"
    edgepack.save(model, p)
    return p


def _rewrite(src, dst, edit):
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    dst.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n:])
    return dst


def _edit_arch(fn):
    def edit(header):
        arch = json.loads(header["__metadata__"]["architecture"])
        fn(arch)
        header["__metadata__"]["architecture"] = json.dumps(arch)
    return edit


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        edgepack.load(tmp_path / "nope.edgepack")


@pytest.mark.parametrize("cut", [0, 5, 8, 40, -1, -100])
def test_truncated(saved, tmp_path, cut):
    raw = saved.read_bytes()
    bad = tmp_path / "t"
    bad.write_bytes(raw[:cut] if cut >= 0 else raw[:len(raw) + cut])
    with pytest.raises(ValueError, match="truncated|corrupt"):
        edgepack.load(bad)


def test_flipped_data_byte_fails_checksum(saved, tmp_path):
    raw = bytearray(saved.read_bytes())
    raw[-3] ^= 0x40
    bad = tmp_path / "f"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        edgepack.load(bad)


def test_garbage_header(saved, tmp_path):
    raw = bytearray(saved.read_bytes())
    raw[10:20] = b"\xff" * 10
    bad = tmp_path / "g"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt header"):
        edgepack.load(bad)


@pytest.mark.parametrize("edit,msg", [
    (lambda h: h["__metadata__"].__setitem__("format_version", "2"), "format version '2' is not supported"),
    (lambda h: h["__metadata__"].__setitem__("format", "other"), "not an edgepack model file"),
    (lambda h: h.pop("__metadata__"), "not an edgepack model file"),
    (lambda h: h["0.weight"].__setitem__("dtype", "Q7"), "unsupported dtype"),
    (lambda h: h["0.weight"].__setitem__("shape", [4, 1, 3, 4]), "needs .* bytes"),
    (lambda h: h["__metadata__"].__setitem__("architecture", "{nope"), "corrupt architecture JSON"),
    (_edit_arch(lambda a: a["children"][0][1].__setitem__("class", "os.system")), "unknown layer class 'os.system' at 0"),
    (_edit_arch(lambda a: a["children"][0][1]["config"].__setitem__("out_channels", 5)), r"layer 0 \(Conv2d\)"),
    (_edit_arch(lambda a: a["children"][0][1]["config"].__setitem__("evil", 1)), r"layer 0 \(Conv2d\)"),
    (_edit_arch(lambda a: a["children"][0][1]["tensors"].pop("bias")), "not used by any layer|bias"),
    (_edit_arch(lambda a: a["children"][0][1]["tensors"].__setitem__("bias", "zz")), "missing tensor 'zz'"),
    (_edit_arch(lambda a: a.__setitem__("children", "x")), "corrupt architecture"),
])
def test_corrupt_header_fields(saved, tmp_path, edit, msg):
    bad = _rewrite(saved, tmp_path / "bad", edit)
    with pytest.raises(ValueError, match=msg):
        edgepack.load(bad)


def test_other_file_types_rejected(tmp_path):
    npz = tmp_path / "w.npz"
    np.savez(npz, a=np.ones(3))
    with pytest.raises(ValueError, match="npz"):
        edgepack.load(npz)
    pk = tmp_path / "m.pkl"
    pk.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ValueError):
        edgepack.load(pk)
    st = pytest.importorskip("safetensors.numpy")
    plain = tmp_path / "plain.safetensors"
    st.save_file({"w": np.ones(3, np.float32)}, str(plain))
    with pytest.raises(ValueError, match="plain safetensors"):
        edgepack.load(plain)


def test_deep_nesting_rejected(saved, tmp_path):
    def deep(a):
        node = {"class": "Sequential", "config": {}, "tensors": {}, "children": []}
        for _ in range(300):
            node = {"class": "Sequential", "config": {}, "tensors": {}, "children": [["0", node]]}
        a["children"] = [["0", node]]
        a["class"] = "Sequential"

    bad = _rewrite(saved, tmp_path / "deep", _edit_arch(deep))
    with pytest.raises(ValueError, match="nesting deeper than 200"):
        edgepack.load(bad)
