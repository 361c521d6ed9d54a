"""AV-digits: MNIST images paired with Free Spoken Digit Dataset recordings (AV-MNIST style).

Each spoken-digit recording is paired (seeded) with an MNIST image of the same digit. Both
modalities are weakened so that neither is near-perfect alone: images are projected onto the PCA
components that keep a share of the pixel variance ("energy", fit on the fold's training images
only), and white noise is added to the audio at a fixed SNR before the log-magnitude spectrogram.

Evaluation uses leave-one-speaker-out folds over the FSDD speakers found in the data directory
(`speakers`; five in this project's copy, six in the full public FSDD): the test set is every
recording of one speaker (an unseen voice); validation is, by default, every recording of the
next speaker (also an unseen voice, so model selection and calibration see the same shift as the
test), training the remaining ones (`val_mode="random"`: a stratified split of the other
speakers instead). Speakers and digits are never a fixed list: they come from the files found.
The MNIST images are split disjointly per fold (train/val/test pools per class, sized like the
audio splits), so no image is seen in two splits.

Expected files under the data directory::

    mnist/<prefix>-images-idx3-ubyte[.gz], mnist/<prefix>-labels-idx1-ubyte[.gz]
        for any of the prefixes mnist5k-train, train, t10k (all present ones are used)
    fsdd/recordings/{digit}_{speaker}_{take}.wav   (8 kHz mono 16-bit PCM)

Calibration of the defaults (`image_energy`, `audio_snr_db`) is documented in `DEFAULTS_NOTE`.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import wave
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from multiteacher.data.registry import DatasetInfo, register_dataset
from multiteacher.errors import DataError

SAMPLE_RATE = 8000
MNIST_PREFIXES = ("mnist5k-train", "train", "t10k")
SPEAKER_RE = re.compile(r"[A-Za-z]+")  # a speaker's name in an FSDD file name
WAV_RE = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
FSDD_HINT = (
    "put the Free Spoken Digit Dataset recordings (github.com/Jakobovski/free-spoken-digit-dataset, "
    "folder recordings/) at <data_dir>/fsdd/recordings/{digit}_{speaker}_{take}.wav"
)
MNIST_HINT = (
    "put MNIST IDX files (e.g. train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz from "
    "yann.lecun.com/exdb/mnist or a mirror) in <data_dir>/mnist/"
)
# Spectrogram geometry: 6048 samples (0.756 s, covers ~97% of FSDD recordings; longer ones are
# centre-cropped), Hann window 128, hop 96, centred frames -> 65 x 64; the top bin is dropped.
WAVE_LEN = 6048
N_FFT = 128
HOP = 96
SPEC_SHAPE = (64, 64)

DEFAULT_IMAGE_ENERGY = 0.3
DEFAULT_AUDIO_SNR_DB = 10.0
DEFAULTS_NOTE = """Calibration (mean over the 5 leave-one-speaker-out folds, [min-max]; seed 0; val = the
next speaker; plain CE training of the recipe's CNNs for 15 epochs, best epoch by val accuracy;
`python -m multiteacher.recipes.mst.calibrate --energy 0.3 --snr 5 10 15 --epochs 15
--folds george jackson lucas nicolas yweweler --device cuda`, run on one H200, when the script still had
its own training loop; it now trains with the engine's `fit`, so a rerun differs by batch order):

  image_energy 0.3 (5 PCs) | val image    | val audio    | val fusion   | test image | test audio | test fusion
  audio_snr_db  5          | .727 [.71-.74] | .397 [.18-.56] | .770 [.67-.83] | .719 | .312 | .691
  audio_snr_db 10 (default)| .729 [.72-.74] | .448 [.29-.61] | .797 [.71-.88] | .696 | .341 | .740
  audio_snr_db 15          | .733 [.71-.76] | .467 [.24-.63] | .818 [.74-.92] | .703 | .412 | .754

At 10 dB image-only lands at ~73% and audio-only at ~45% on validation, and the fusion net is
clearly better than either (+7 points over image on val, +4 on test). Audio accuracy varies a lot
with the speaker (an unseen voice); with a random (seen-voice) validation split the audio net
reaches 80-90% on validation, which is why validation holds out a speaker by default."""


# ----------------------------------------------------------------------------------------- IDX
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format, optionally gzipped) into a uint8 array.

    Args:
        path: ``*-idx3-ubyte[.gz]`` (images) or ``*-idx1-ubyte[.gz]`` (labels).

    Returns:
        ``(N, 28, 28)`` or ``(N,)`` uint8; a one-line DataError if unreadable, corrupt or truncated.

    Example:
        >>> read_idx(Path("data/mnist/train-labels-idx1-ubyte.gz")).shape  # doctest: +SKIP
        (60000,)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read IDX file ({e}); {MNIST_HINT}") from None
    if len(raw) < 4:
        raise DataError(f"{path}: corrupt IDX header (file has {len(raw)} bytes); {MNIST_HINT}")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        magic = struct.unpack(">I", raw[:4])[0]
        raise DataError(
            f"{path}: corrupt IDX header (magic {magic}, expected 2049 for labels or 2051 for images "
            f"of unsigned bytes); {MNIST_HINT}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: corrupt IDX header (truncated dimension list); {MNIST_HINT}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    need = int(np.prod(dims))
    if len(raw) - header != need:
        raise DataError(
            f"{path}: IDX payload has {len(raw) - header} bytes but the header {dims} needs {need} "
            f"(truncated or corrupt download); {MNIST_HINT}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_file(mnist_dir: Path, prefix: str, kind: str) -> Path | None:
    ndim = 3 if kind == "images" else 1
    for name in (f"{prefix}-{kind}-idx{ndim}-ubyte.gz", f"{prefix}-{kind}-idx{ndim}-ubyte",
                 f"{prefix}-{kind}.idx{ndim}-ubyte.gz", f"{prefix}-{kind}.idx{ndim}-ubyte"):
        if (mnist_dir / name).exists():
            return mnist_dir / name
    return None


@lru_cache(maxsize=4)
def _load_mnist_cached(mnist_dir: str) -> tuple[np.ndarray, np.ndarray]:
    d = Path(mnist_dir)
    images, labels = [], []
    for prefix in MNIST_PREFIXES:
        fi, fl = _idx_file(d, prefix, "images"), _idx_file(d, prefix, "labels")
        if fi is None and fl is None:
            continue
        if fi is None or fl is None:
            have = fi or fl
            raise DataError(f"{have}: its partner {prefix} {'labels' if fl is None else 'images'} file is "
                            f"missing in {d}; {MNIST_HINT}")
        x, y = read_idx(fi), read_idx(fl)
        if x.ndim != 3 or y.ndim != 1:
            raise DataError(f"{fi}: expected images (3-d) and {fl} labels (1-d); the files are swapped "
                            f"or corrupt; {MNIST_HINT}")
        if len(x) != len(y):
            raise DataError(f"{fi}: {len(x)} images but {fl} has {len(y)} labels; {MNIST_HINT}")
        if y.size and y.max() > 9:
            raise DataError(f"{fl}: label {int(y.max())} is not a digit 0-9; {MNIST_HINT}")
        images.append(x)
        labels.append(y)
    if not images:
        names = "/".join(MNIST_PREFIXES)
        raise DataError(f"missing MNIST: no IDX files named {names}-images-idx3-ubyte[.gz] in {d}; "
                        f"{MNIST_HINT}")
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def load_mnist(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """All MNIST images and labels found under `data_dir/mnist` (every known prefix, concatenated).

    Args:
        data_dir: the data directory.

    Returns:
        ``(images (N, 28, 28) uint8, labels (N,) int64)``; DataError saying what to put where.

    Example:
        >>> images, labels = load_mnist(Path("../shared/data"))  # doctest: +SKIP
    """
    d = Path(data_dir) / "mnist"
    if not d.is_dir():
        raise DataError(f"missing MNIST: {d} does not exist; {MNIST_HINT}")
    return _load_mnist_cached(str(d))


# ----------------------------------------------------------------------------------------- wav
def read_wav(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a mono 16-bit PCM wav as float32 in [-1, 1].

    Args:
        path: the wav file.
        sample_rate: the rate it must have (FSDD: 8 kHz).

    Returns:
        ``(n,)`` float32 samples; a one-line DataError if empty, truncated, off-rate or not mono 16-bit.

    Example:
        >>> read_wav(Path("data/fsdd/recordings/0_george_0.wav")).dtype  # doctest: +SKIP
        dtype('float32')
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, chans, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise DataError(f"{path}: not a readable wav file ({e}); re-download it or remove it; "
                        f"{FSDD_HINT}") from None
    if rate != sample_rate:
        raise DataError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz; resample it to "
                        f"{sample_rate} Hz mono 16-bit or replace it with the original FSDD file")
    if width != 2 or chans != 1:
        raise DataError(f"{path}: {chans} channel(s) of {8 * width}-bit samples, expected mono 16-bit PCM; "
                        f"replace it with the original FSDD file")
    if n == 0:
        raise DataError(f"{path}: empty wav (0 samples); replace it with the original FSDD file")
    if len(raw) != n * width * chans:
        raise DataError(f"{path}: truncated wav (header says {n} samples, file holds "
                        f"{len(raw) // (width * chans)}); replace it with the original FSDD file")
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


@dataclass(frozen=True)
class Recording:
    """One FSDD file: `{digit}_{speaker}_{take}.wav`.

    Args:
        path: the wav file.
        digit: the spoken digit (the label).
        speaker: the speaker's name (the fold unit).
        take: the recording's number.

    Returns:
        A frozen record; ``id`` is ``"{digit}_{speaker}_{take}"``.

    Example:
        >>> Recording(Path("3_lucas_7.wav"), 3, "lucas", 7).id
        '3_lucas_7'
    """

    path: Path
    digit: int
    speaker: str
    take: int

    @property
    def id(self) -> str:
        return f"{self.digit}_{self.speaker}_{self.take}"


def list_fsdd(data_dir: Path) -> list[Recording]:
    """All recordings under `data_dir/fsdd/recordings`, sorted by (speaker, digit, take).

    Args:
        data_dir: the data directory.

    Returns:
        The recordings (deterministic order); DataError saying what to put where if none.

    Example:
        >>> len(list_fsdd(Path("../shared/data")))  # doctest: +SKIP
        2500
    """
    d = Path(data_dir) / "fsdd" / "recordings"
    if not d.is_dir():
        raise DataError(f"missing FSDD: {d} does not exist; {FSDD_HINT}")
    recs = []
    for p in d.iterdir():
        m = WAV_RE.match(p.name)
        if m:
            recs.append(Recording(p, int(m.group(1)), m.group(2), int(m.group(3))))
    if not recs:
        raise DataError(f"missing FSDD: no files named {{digit}}_{{speaker}}_{{take}}.wav in {d}; "
                        f"{FSDD_HINT}")
    return sorted(recs, key=lambda r: (r.speaker, r.digit, r.take))


@lru_cache(maxsize=2)
def _load_waves_cached(rec_dir: str) -> tuple[tuple[Recording, ...], np.ndarray, np.ndarray]:
    recs = tuple(list_fsdd(Path(rec_dir).parents[1]))
    waves = np.zeros((len(recs), WAVE_LEN), np.float32)
    lengths = np.zeros(len(recs), np.int64)
    for i, r in enumerate(recs):
        raw = read_wav(r.path)
        waves[i] = fit_length(raw, WAVE_LEN)
        lengths[i] = min(len(raw), WAVE_LEN)  # the recording's own length: SNR is measured over it, not the padding
    return recs, waves, lengths


def fit_length(w: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop or zero-pad (at the end) a waveform to `length` samples.

    Args:
        w: ``(n,)`` waveform.
        length: samples wanted.

    Returns:
        ``(length,)`` waveform.

    Example:
        >>> fit_length(np.arange(5.0), 3).tolist(), fit_length(np.ones(2), 3).tolist()
        ([1.0, 2.0, 3.0], [1.0, 1.0, 0.0])
    """
    if len(w) >= length:
        start = (len(w) - length) // 2
        return w[start:start + length]
    return np.pad(w, (0, length - len(w)))


def add_noise_snr(
    w: np.ndarray, snr_db: float, rng: np.random.Generator, n_signal: int | None = None
) -> np.ndarray:
    """Add white Gaussian noise so that signal power / noise power = 10^(snr_db/10).

    Args:
        w: ``(n,)`` waveform.
        snr_db: the signal-to-noise ratio in dB.
        rng: the noise generator (the caller makes it per recording, for determinism).
        n_signal: measure the signal power over the first `n_signal` samples (the unpadded
            recording); None: all.

    Returns:
        ``(n,)`` float32 noisy waveform.

    Example:
        >>> x = np.ones(10_000, np.float32)
        >>> noise = add_noise_snr(x, 20.0, np.random.default_rng(0)) - x
        >>> round(float(np.mean(noise**2)), 3)  # power 1 / 10^(20/10)
        0.01
    """
    sig = w[: n_signal or len(w)]
    p_sig = float(np.mean(sig.astype(np.float64) ** 2)) + 1e-12
    p_noise = p_sig / (10.0 ** (snr_db / 10.0))
    return (w + rng.standard_normal(w.shape) * np.sqrt(p_noise)).astype(np.float32)


def spectrogram(waves: np.ndarray) -> np.ndarray:
    """Log-magnitude spectrograms of waveforms: ``log1p(10·|STFT|)``, Hann window 128, hop 96.

    Args:
        waves: ``(N, WAVE_LEN)`` waveforms.

    Returns:
        ``(N, 64, 64)`` float32 (frequency x time; the top frequency bin is dropped).

    Example:
        >>> spectrogram(np.zeros((2, WAVE_LEN), np.float32)).shape
        (2, 64, 64)
    """
    x = torch.as_tensor(waves, dtype=torch.float32)
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP, window=torch.hann_window(N_FFT), center=True,
                      return_complex=True).abs()
    spec = torch.log1p(spec * 10.0)[:, : SPEC_SHAPE[0], : SPEC_SHAPE[1]]
    return spec.numpy()


# ----------------------------------------------------------------------------------------- PCA
@dataclass
class PCAWeakener:
    """Weaken images: project them onto the top principal components that keep `energy` of the variance.

    Fit on training images only; `transform` maps any images to mean + top-k reconstruction, so
    fine detail is lost and an image-only classifier becomes imperfect.

    Args:
        energy: share of the pixel variance to keep, in (0, 1].
        mean: the fitted mean image (set by `fit`).
        components: the kept components, ``(k, pixels)`` (set by `fit`).

    Returns:
        A weakener; ``fit(images)`` returns itself, ``transform(images)`` the reconstructions.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(50, 4, 4))
        >>> PCAWeakener(energy=1.0).fit(x).transform(x).shape
        (50, 4, 4)
    """

    energy: float
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    components: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def fit(self, images: np.ndarray) -> PCAWeakener:
        """Fit mean and components on `images` ``(N, ...)``; returns self."""
        x = images.reshape(len(images), -1).astype(np.float64)
        self.mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        share = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.searchsorted(share, self.energy - 1e-12) + 1) if self.energy < 1 else len(s)
        self.components = vt[: max(1, k)]
        return self

    @property
    def n_components(self) -> int:
        """Number of kept principal components."""
        return len(self.components)

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Mean + projection onto the kept components, same shape as `images`, float32."""
        shape = images.shape
        x = images.reshape(len(images), -1).astype(np.float64) - self.mean
        rec = (x @ self.components.T) @ self.components + self.mean
        return rec.reshape(shape).astype(np.float32)


# ----------------------------------------------------------------------------------------- folds
@dataclass
class Split:
    """One split as tensors: paired images and spectrograms of the same digit.

    Args:
        image: ``(N, 1, 28, 28)`` standardised weakened images.
        audio: ``(N, 1, 64, 64)`` standardised noisy log-spectrograms.
        label: ``(N,)`` digits.
        ids: ``"{recording id}|mnist{image index}"`` per pair.

    Returns:
        A split; ``inputs()`` gives ``{"image", "audio"}``, ``subset(idx)`` a smaller split.

    Example:
        >>> s = Split(torch.zeros(3, 1, 28, 28), torch.zeros(3, 1, 64, 64), torch.tensor([1, 2, 3]),
        ...           ["1_a_0|mnist5", "2_a_0|mnist9", "3_a_0|mnist2"])
        >>> len(s.subset([0, 2])), s.subset([2]).ids
        (2, ['3_a_0|mnist2'])
    """

    image: torch.Tensor
    audio: torch.Tensor
    label: torch.Tensor
    ids: list[str]

    def __len__(self) -> int:
        return len(self.label)

    def inputs(self) -> dict[str, torch.Tensor]:
        """The model inputs by modality name (what a batch dict holds besides "label")."""
        return {"image": self.image, "audio": self.audio}

    def subset(self, idx: np.ndarray | list[int]) -> Split:
        """The pairs at positions `idx`, in that order."""
        i = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return Split(self.image[i], self.audio[i], self.label[i], [self.ids[j] for j in i.tolist()])


@dataclass
class Fold:
    """A leave-one-speaker-out fold: train/val on the other speakers, test on `test_speaker`.

    Args:
        test_speaker: the held-out speaker (the fold's name).
        train: training pairs.
        val: validation pairs (by default the next speaker's recordings).
        test: the test speaker's pairs.
        info: PCA components, weakening settings, validation speaker and split sizes.

    Returns:
        A fold (what `make_fold` builds).

    Example:
        >>> fold = make_fold(Path("../shared/data"), "george", seed=0)  # doctest: +SKIP
        >>> fold.info["val_speaker"]  # doctest: +SKIP
        'jackson'
    """

    test_speaker: str
    train: Split
    val: Split
    test: Split
    info: dict


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from any parts (their strings joined by "|"), stable across runs and machines.

    Unlike ``hash()``, it does not change with Python's hash randomisation.

    Args:
        *parts: values that identify what is seeded (e.g. "init", seed, fold, role).

    Returns:
        An int in ``[0, 2**64)``.

    Example:
        >>> stable_seed("noise", 0, "3_lucas_7") == stable_seed("noise", 0, "3_lucas_7")
        True
    """
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def _noise_rng(seed: int, rec_id: str) -> np.random.Generator:
    """Noise depends on (seed, recording) only, so a recording is equally noisy in every fold."""
    return np.random.default_rng(stable_seed("noise", seed, rec_id))


def make_fold(
    data_dir: Path,
    test_speaker: str,
    seed: int = 0,
    image_energy: float | None = None,
    audio_snr_db: float | None = None,
    val_fraction: float = 0.2,
    limit_per_digit: int | None = None,
    val_mode: str = "speaker",
) -> Fold:
    """Build one leave-one-speaker-out fold of paired, weakened images and recordings.

    Noise and pairing are deterministic in (seed, test_speaker, sample id). `val_mode="speaker"`
    (default): validation is all recordings of the next speaker after `test_speaker`
    (cyclically), so model selection also sees an unseen voice and validation accuracy predicts
    test accuracy; "random": a stratified `val_fraction` of the other speakers' recordings (seen
    voices: much higher val than test accuracy for audio).

    Args:
        data_dir: the data directory (``mnist/`` and ``fsdd/recordings/``).
        test_speaker: the held-out FSDD speaker.
        seed: seeds the split, the image pools and pairing, and the audio noise.
        image_energy: PCA variance share the images keep (None: `DEFAULT_IMAGE_ENERGY`).
        audio_snr_db: audio noise SNR in dB (None: `DEFAULT_AUDIO_SNR_DB`).
        val_fraction: validation share with ``val_mode="random"``.
        limit_per_digit: keep at most that many recordings per (speaker, digit) — for tiny runs.
        val_mode: "speaker" or "random".

    Returns:
        The `Fold`; DataError naming what is missing or wrong in the data directory.

    Example:
        >>> fold = make_fold(Path("../shared/data"), "george", seed=0, limit_per_digit=8)  # doctest: +SKIP
        >>> fold.train.image.shape, fold.info["pca_components"]  # doctest: +SKIP
        (torch.Size([240, 1, 28, 28]), 5)
    """
    data_dir = Path(data_dir)
    image_energy = DEFAULT_IMAGE_ENERGY if image_energy is None else image_energy
    audio_snr_db = DEFAULT_AUDIO_SNR_DB if audio_snr_db is None else audio_snr_db
    images, ilabels = load_mnist(data_dir)
    rec_dir = data_dir / "fsdd" / "recordings"
    if not rec_dir.is_dir():
        raise DataError(f"missing FSDD: {rec_dir} does not exist; {FSDD_HINT}")
    recs, waves, lengths = _load_waves_cached(str(rec_dir))
    speakers = sorted({r.speaker for r in recs})
    if test_speaker not in speakers:
        raise DataError(f"fold speaker {test_speaker!r} has no recordings in {rec_dir}; "
                        f"speakers found: {', '.join(speakers)}")
    # one generator, drawn in this order: validation split (random mode), image pools, pairing
    rng = np.random.default_rng(stable_seed("fold", seed, test_speaker))
    val_speaker = _val_speaker(speakers, test_speaker, val_mode, rec_dir)
    keep = _keep_mask(recs, limit_per_digit)
    parts = _audio_parts(recs, keep, speakers, test_speaker, val_speaker, val_fraction, rng)
    pools = _image_pools(ilabels, recs, parts, rng, data_dir / "mnist")
    # weakening: PCA on the training image pool only
    pca = PCAWeakener(image_energy).fit(images[np.concatenate(list(pools["train"].values()))] / 255.0)
    raw = {}
    for k, aidx in parts.items():
        img_idx = _pair_images(recs, aidx, pools[k], rng)
        noisy = np.stack([
            add_noise_snr(waves[i], audio_snr_db, _noise_rng(seed, recs[i].id), int(lengths[i])) for i in aidx
        ])
        raw[k] = (pca.transform(images[img_idx] / 255.0), spectrogram(noisy), aidx, img_idx)
    splits = _standardised_splits(raw, recs)
    info = {"pca_components": pca.n_components, "image_energy": image_energy, "audio_snr_db": audio_snr_db,
            "val_speaker": val_speaker,
            "n_train": len(splits["train"]), "n_val": len(splits["val"]), "n_test": len(splits["test"])}
    return Fold(test_speaker, splits["train"], splits["val"], splits["test"], info)


def _val_speaker(speakers: list[str], test_speaker: str, val_mode: str, rec_dir: Path) -> str | None:
    """The validation speaker (the next one after `test_speaker`, cyclically), or None for "random"."""
    if val_mode == "random":
        return None
    if val_mode != "speaker":
        raise DataError(f"unknown val_mode {val_mode!r}; use 'speaker' or 'random'")
    if len(speakers) < 3:
        raise DataError(f"val_mode 'speaker' needs at least 3 FSDD speakers in {rec_dir}, found "
                        f"{len(speakers)}; add recordings or use val_mode 'random'")
    return speakers[(speakers.index(test_speaker) + 1) % len(speakers)]


def _keep_mask(recs: Sequence[Recording], limit_per_digit: int | None) -> np.ndarray:
    """Bool per recording: at most `limit_per_digit` recordings per (speaker, digit), in id order."""
    keep = np.ones(len(recs), bool)
    if limit_per_digit is not None:
        seen: dict[tuple[str, int], int] = {}
        for i, r in enumerate(recs):
            key = (r.speaker, r.digit)
            seen[key] = seen.get(key, 0) + 1
            keep[i] = seen[key] <= limit_per_digit
    return keep


def _audio_parts(
    recs: Sequence[Recording], keep: np.ndarray, speakers: list[str], test_speaker: str,
    val_speaker: str | None, val_fraction: float, rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Recording indices of train / val / test (sorted): test = `test_speaker`; val = `val_speaker`,
    or (None) a stratified `val_fraction` per (speaker, digit) of the other speakers."""
    test_idx = [i for i, r in enumerate(recs) if keep[i] and r.speaker == test_speaker]
    train_idx: list[int] = []
    val_idx: list[int] = []
    for sp in speakers:
        if sp == test_speaker:
            continue
        if val_speaker is not None:
            (val_idx if sp == val_speaker else train_idx).extend(
                i for i, r in enumerate(recs) if keep[i] and r.speaker == sp)
            continue
        for d in range(10):
            idx = np.array([i for i, r in enumerate(recs) if keep[i] and r.speaker == sp and r.digit == d])
            rng.shuffle(idx)
            n_val = round(len(idx) * val_fraction)
            val_idx += idx[:n_val].tolist()
            train_idx += idx[n_val:].tolist()
    return {"train": np.array(sorted(train_idx)), "val": np.array(sorted(val_idx)),
            "test": np.array(sorted(test_idx))}


def _image_pools(
    ilabels: np.ndarray, recs: Sequence[Recording], parts: dict[str, np.ndarray], rng: np.random.Generator,
    mnist_dir: Path,
) -> dict[str, dict[int, np.ndarray]]:
    """Disjoint MNIST image indices per (split, digit), sized in proportion to the audio splits."""
    counts = {k: np.bincount([recs[i].digit for i in v], minlength=10) for k, v in parts.items()}
    pools: dict[str, dict[int, np.ndarray]] = {k: {} for k in parts}
    for d in range(10):
        idx = np.flatnonzero(ilabels == d)
        rng.shuffle(idx)
        need = {k: int(counts[k][d]) for k in parts}
        total = sum(need.values())
        if total == 0:
            continue
        if len(idx) < 3:
            raise DataError(f"MNIST in {mnist_dir} has only {len(idx)} images of digit {d}; "
                            f"need at least 3 to split disjointly; {MNIST_HINT}")
        # share images proportionally; each split gets >= 1 image if it has audio
        sizes = {k: max(1 if need[k] else 0, int(len(idx) * need[k] / total)) for k in parts}
        start = 0
        for k in ("test", "val", "train"):
            pools[k][d] = idx[start:start + sizes[k]]
            start += sizes[k]
    return pools


def _pair_images(
    recs: Sequence[Recording], aidx: np.ndarray, pool: dict[int, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """An image of the same digit for every recording in `aidx`: the split's pool, shuffled, cycled."""
    img_idx = np.empty(len(aidx), np.int64)
    for d in range(10):
        where = np.flatnonzero([recs[i].digit == d for i in aidx])
        if len(where) == 0:
            continue
        order = np.concatenate([rng.permutation(pool[d]) for _ in range(len(where) // len(pool[d]) + 1)])
        img_idx[where] = order[: len(where)]
    return img_idx


def _standardised_splits(
    raw: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], recs: Sequence[Recording]
) -> dict[str, Split]:
    """`Split`s from (images, spectrograms, recording indices, image indices), standardised with the
    training split's mean and standard deviation (one per modality)."""
    im_mu, im_sd = float(raw["train"][0].mean()), float(raw["train"][0].std()) + 1e-6
    au_mu, au_sd = float(raw["train"][1].mean()), float(raw["train"][1].std()) + 1e-6
    splits = {}
    for k, (im, au, aidx, img_idx) in raw.items():
        splits[k] = Split(
            image=torch.from_numpy((im - im_mu) / im_sd).float().unsqueeze(1),
            audio=torch.from_numpy((au - au_mu) / au_sd).float().unsqueeze(1),
            label=torch.tensor([recs[i].digit for i in aidx], dtype=torch.long),
            ids=[f"{recs[i].id}|mnist{j}" for i, j in zip(aidx, img_idx)],
        )
    return splits


def speakers(data_dir: Path) -> list[str]:
    """FSDD speakers present under the data directory (the fold names).

    Args:
        data_dir: the data directory.

    Returns:
        Sorted speaker names.

    Example:
        >>> speakers(Path("../shared/data"))  # doctest: +SKIP
        ['george', 'jackson', 'lucas', 'nicolas', 'yweweler']
    """
    return sorted({r.speaker for r in list_fsdd(data_dir)})


def resolve_folds(data_dir: Path, folds: Sequence[str] | None) -> list[str]:
    """The fold (test) speakers of a run, checked against the speakers found in the data directory.

    Why: which speakers exist is a fact of the data, not of the code — the full public FSDD has a
    sixth speaker (`theo`) that this project's copy lacks, so folds are never checked against a
    fixed list.

    Args:
        data_dir: the data directory (``fsdd/recordings/``).
        folds: the speakers asked for (None: every speaker found, sorted).

    Returns:
        The fold speakers, in the order asked; a one-line DataError naming every missing speaker
        and the speakers found.

    Example:
        >>> resolve_folds(Path("../shared/data"), ["lucas"])  # doctest: +SKIP
        ['lucas']
    """
    found = speakers(data_dir)
    if folds is None:
        return found
    missing = [f for f in folds if f not in found]
    if missing:
        rec_dir = Path(data_dir) / "fsdd" / "recordings"
        raise DataError(f"data.folds: speaker(s) {', '.join(map(repr, missing))} have no recordings in {rec_dir}; "
                        f"speakers found: {', '.join(found)} — fix data.folds or add their recordings")
    return list(folds)


# ----------------------------------------------------------------------------------------- registry
def check(data_dir: Path) -> str:
    """Check the AV-digits files (what `multiteacher data check` runs).

    Args:
        data_dir: the data directory.

    Returns:
        A one-line summary; a DataError saying what to put where if something is missing.

    Example:
        >>> check(Path("../shared/data"))  # doctest: +SKIP
        '4000 MNIST images, 2500 FSDD recordings from 5 speakers (george, jackson, lucas, nicolas, yweweler)'
    """
    images, labels = load_mnist(data_dir)
    recs = list_fsdd(data_dir)
    for rec in recs:  # every file, not the first: a damaged recording fails here, not mid-run
        read_wav(rec.path)
    sp = sorted({r.speaker for r in recs})
    # the digits spoken in the recordings found need images; a digit nobody speaks needs none
    missing = sorted({r.digit for r in recs} - set(labels.tolist()))
    if missing:
        raise DataError(f"MNIST in {Path(data_dir) / 'mnist'} has no images of digit(s) {missing}, which the "
                        f"FSDD recordings speak; {MNIST_HINT}")
    if len(sp) < 2:
        raise DataError(f"FSDD in {Path(data_dir) / 'fsdd/recordings'} has only speaker(s) {sp}; "
                        f"leave-one-speaker-out needs at least 2; {FSDD_HINT}")
    return (f"{len(images)} MNIST images, {len(recs)} FSDD recordings from {len(sp)} speakers "
            f"({', '.join(sp)})")


register_dataset(DatasetInfo(
    name="avdigits",
    description="MNIST images paired with FSDD spoken digits (AV-MNIST style), leave-one-speaker-out folds",
    check=check,
))
