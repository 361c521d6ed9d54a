"""AV-digits: IDX and wav readers, weakening ops, leave-one-speaker-out folds, one-line errors."""

from __future__ import annotations

import gzip
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from multiteacher.data import avdigits as av
from multiteacher.data.registry import load_all
from multiteacher.errors import DataError
from tests.conftest import require_data


def _write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def _write_idx(path: Path, arr: np.ndarray) -> Path:
    magic = 0x0800 | arr.ndim
    raw = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(raw)
    return path


def _one_line(e: pytest.ExceptionInfo[DataError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------ IDX
def test_read_idx_real_mnist(data_dir: Path) -> None:
    x = av.read_idx(require_data(data_dir, "mnist", "mnist5k-train-images-idx3-ubyte.gz"))
    y = av.read_idx(require_data(data_dir, "mnist", "mnist5k-train-labels-idx1-ubyte.gz"))
    assert x.shape == (4000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [400] * 10


def test_read_idx_roundtrip_and_corrupt(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(av.read_idx(_write_idx(tmp_path / "a-images-idx3-ubyte.gz", arr)), arr)
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 20)
    with pytest.raises(DataError) as e:
        av.read_idx(bad)
    assert "corrupt IDX header" in _one_line(e) and str(bad) in str(e.value) and "mnist" in str(e.value)
    short = tmp_path / "short-images-idx3-ubyte"
    short.write_bytes(struct.pack(">I3I", 2051, 10, 28, 28) + b"\x00" * 100)
    with pytest.raises(DataError, match="truncated"):
        av.read_idx(short)


def test_load_mnist_missing_partner_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        av.load_mnist(tmp_path)
    assert "mnist" in _one_line(e)
    (tmp_path / "mnist").mkdir()
    _write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="labels"):
        av.load_mnist(tmp_path)


# ------------------------------------------------------------------------------------------ wav
def test_read_wav_real_and_errors(data_dir: Path, tmp_path: Path) -> None:
    w = av.read_wav(require_data(data_dir, "fsdd", "recordings", "3_lucas_7.wav"))
    assert w.dtype == np.float32 and 1000 < len(w) < 20000 and np.abs(w).max() <= 1.0
    sig = np.sin(np.linspace(0, 100, 800)).astype(np.float32) * 0.5
    np.testing.assert_allclose(av.read_wav(_write_wav(tmp_path / "ok.wav", sig)), sig, atol=1e-4)
    with pytest.raises(DataError) as e:
        av.read_wav(_write_wav(tmp_path / "rate.wav", sig, rate=16000))
    assert "16000 Hz" in _one_line(e) and "rate.wav" in str(e.value)
    with pytest.raises(DataError, match="empty wav"):
        av.read_wav(_write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32)))
    trunc = _write_wav(tmp_path / "trunc.wav", sig)
    trunc.write_bytes(trunc.read_bytes()[:-500])
    with pytest.raises(DataError, match="truncated wav"):
        av.read_wav(trunc)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    with pytest.raises(DataError, match="not a readable wav"):
        av.read_wav(junk)


def test_missing_fsdd_says_where(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        av.list_fsdd(tmp_path)
    assert "fsdd/recordings" in _one_line(e)


# ------------------------------------------------------------------------------------------ ops
def test_noise_snr_golden() -> None:
    rng = np.random.default_rng(0)
    sig = np.sin(np.linspace(0, 300, 50_000)).astype(np.float32)
    noisy = av.add_noise_snr(sig, 5.0, rng)
    snr = 10 * np.log10(np.mean(sig.astype(np.float64) ** 2) / np.mean((noisy - sig).astype(np.float64) ** 2))
    assert abs(snr - 5.0) < 0.1
    # power measured on the unpadded part only
    padded = np.concatenate([sig[:1000], np.zeros(9000, np.float32)])
    n2 = av.add_noise_snr(padded, 0.0, np.random.default_rng(1), n_signal=1000)
    assert abs(np.mean((n2 - padded) ** 2) / np.mean(sig[:1000] ** 2) - 1.0) < 0.1


def test_spectrogram_shape_and_fit_length() -> None:
    assert av.fit_length(np.ones(10, np.float32), 4).tolist() == [1, 1, 1, 1]
    assert av.fit_length(np.ones(3, np.float32), 5).tolist() == [1, 1, 1, 0, 0]
    spec = av.spectrogram(np.random.default_rng(0).standard_normal((3, av.WAVE_LEN)).astype(np.float32))
    assert spec.shape == (3, *av.SPEC_SHAPE) and np.isfinite(spec).all()


def test_pca_energy_against_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)) @ np.diag([5, 3, 1, 0.5, 0.2, 0.1])
    ev = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    share = np.cumsum(ev) / ev.sum()
    for energy in (0.5, 0.8, 0.95):
        p = av.PCAWeakener(energy).fit(x)
        assert p.n_components == int(np.argmax(share >= energy)) + 1
    full = av.PCAWeakener(1.0).fit(x)
    np.testing.assert_allclose(full.transform(x), x, atol=1e-4)
    # reconstruction keeps the stated share of the variance (on the fitted data)
    p = av.PCAWeakener(0.8).fit(x)
    kept = np.var(p.transform(x) - x.mean(0), axis=0).sum() / np.var(x, axis=0).sum()
    assert kept == pytest.approx(share[p.n_components - 1], abs=1e-6)


# ------------------------------------------------------------------------------------------ folds
def test_fold_leave_one_speaker_out(data_dir: Path) -> None:
    _, mnist_labels = av.load_mnist(data_dir)
    fold = av.make_fold(data_dir, "jackson", seed=3)
    assert (len(fold.train), len(fold.val), len(fold.test)) == (1500, 500, 500)
    assert all("_jackson_" in i for i in fold.test.ids)
    assert all("_lucas_" in i for i in fold.val.ids) and fold.info["val_speaker"] == "lucas"
    assert not any("_jackson_" in i or "_lucas_" in i for i in fold.train.ids)
    imgs = {k: {int(i.split("|mnist")[1]) for i in getattr(fold, k).ids} for k in ("train", "val", "test")}
    assert not (imgs["train"] & imgs["val"]) and not (imgs["train"] & imgs["test"])
    assert not (imgs["val"] & imgs["test"])
    for split in (fold.train, fold.test):
        for i, y in zip(split.ids, split.label.tolist()):
            audio_id, img = i.split("|mnist")
            assert int(audio_id[0]) == y == mnist_labels[int(img)]
    assert fold.train.image.shape[1:] == (1, 28, 28) and fold.train.audio.shape[1:] == (1, 64, 64)
    assert abs(float(fold.train.image.mean())) < 1e-3 and abs(float(fold.train.audio.std()) - 1) < 1e-3
    again = av.make_fold(data_dir, "jackson", seed=3)
    assert again.train.ids == fold.train.ids
    assert bool((again.train.audio == fold.train.audio).all())
    other = av.make_fold(data_dir, "jackson", seed=4)
    assert other.train.ids != fold.train.ids


def test_fold_random_val_mode(data_dir: Path) -> None:
    fold = av.make_fold(data_dir, "yweweler", seed=0, val_mode="random")
    assert (len(fold.train), len(fold.val), len(fold.test)) == (1600, 400, 500)
    assert fold.info["val_speaker"] is None
    assert fold.val.label.bincount().tolist() == [40] * 10
    assert {i.split("_")[1] for i in fold.val.ids} == {"george", "jackson", "lucas", "nicolas"}
    with pytest.raises(DataError, match="val_mode"):
        av.make_fold(data_dir, "george", val_mode="bogus")


def test_fold_limit_and_bad_speaker(data_dir: Path) -> None:
    fold = av.make_fold(data_dir, "george", limit_per_digit=5)
    assert len(fold.test) == 50 and len(fold.train) + len(fold.val) == 200
    with pytest.raises(DataError, match="speakers found"):
        av.make_fold(data_dir, "nobody")


def test_registered_and_check(data_dir: Path) -> None:
    info = load_all()["avdigits"]
    summary = info.check(data_dir)
    assert "4000 MNIST" in summary and "2500 FSDD" in summary and "5 speakers" in summary
