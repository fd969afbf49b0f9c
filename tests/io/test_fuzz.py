"""Mutated DICOM files end in a Series or an ImageReadError: no other exception, no hang.

Seeded and bounded: MUTANTS files per seed file kind, each read under a SECONDS_PER_FILE alarm.
Mutations: truncation anywhere, bytes overwritten in the header, bytes overwritten in the
pixel data, and bytes overwritten anywhere.
"""

import logging
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from anogan.errors import ImageReadError
from anogan.io import ReadFailure, Series, iter_series, read_dicom_file
from tests.io.dicom_files import hounsfield_slices, write_ct_slice

SEED_FILES = (
    "CT_small.dcm",  # explicit little endian, CT with rescale
    "MR_small_bigendian.dcm",  # explicit big endian
    "MR_small_RLE.dcm",  # RLE
    "MR_small_jp2klossless.dcm",  # JPEG 2000
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "JPGExtended.dcm",  # JPEG extended
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, colour
    "emri_small.dcm",  # multi-frame
    "image_dfl.dcm",  # deflated
    "ExplVR_BigEnd.dcm",  # colour, big endian
)
MUTANTS = 60  # per seed file: 600 reads in all
SECONDS_PER_FILE = 10
MUTATIONS = ("truncate", "header", "pixels", "anywhere")


class ReadTookTooLong(BaseException):
    """Raised by the alarm; a BaseException so that no reader can mistake it for bad data."""


@contextmanager
def _time_limit(seconds: int, what: str) -> Iterator[None]:
    def _expire(signum: int, frame: object) -> None:
        raise ReadTookTooLong(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _mutate(data: bytes, rng: random.Random, mutation: str) -> bytes:
    mutated = bytearray(data)
    pixel_start = max(data.rfind(b"\xe0\x7f\x10\x00"), data.rfind(b"\x7f\xe0\x00\x10"), 132)
    if mutation == "truncate":
        return bytes(mutated[: rng.randrange(len(mutated))])
    if mutation == "header":
        low, high = 0, pixel_start + 12
    elif mutation == "pixels":
        low, high = pixel_start, len(mutated)
    else:
        low, high = 0, len(mutated)
    for _ in range(rng.randint(1, 16)):
        mutated[rng.randrange(low, max(low + 1, min(high, len(mutated))))] = rng.randrange(256)
    return bytes(mutated)


def _check(result: Series) -> None:
    assert result.pixels.ndim == 3 and result.pixels.dtype == np.float32
    assert np.isfinite(result.pixels).all()
    assert len(result.sources) == result.num_slices


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("seed_file", SEED_FILES)
def test_mutated_files_give_a_series_or_a_named_error(
    seed_file: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="anogan.io")  # many expected warnings
    original = Path(get_testdata_file(seed_file, download=False)).read_bytes()
    rng = random.Random(f"{seed_file}-fuzz")
    outcomes = {"series": 0, "error": 0}
    started = time.monotonic()
    for index in range(MUTANTS):
        mutation = MUTATIONS[index % len(MUTATIONS)]
        path = tmp_path / f"mutant_{index:03d}_{mutation}"
        path.write_bytes(_mutate(original, rng, mutation))
        with _time_limit(SECONDS_PER_FILE, f"{seed_file} {path.name}"):
            try:
                _check(read_dicom_file(path))
                outcomes["series"] += 1
            except ImageReadError as error:
                assert str(error).startswith(f"{path.name}: ") and error.reason
                outcomes["error"] += 1
    assert sum(outcomes.values()) == MUTANTS
    assert outcomes["error"] > 0  # the mutations do break files
    assert time.monotonic() - started < MUTANTS * SECONDS_PER_FILE


def test_mutated_series_folder_never_stops_at_a_bad_file(tmp_path: Path) -> None:
    volume = hounsfield_slices(12, 32, 32)
    for index in range(12):
        write_ct_slice(
            tmp_path / f"slice{index:02d}", volume[index], 2.0 * index, index + 1, "1.2.3"
        )
    rng = random.Random(7)
    for index in rng.sample(range(12), 5):
        path = tmp_path / f"slice{index:02d}"
        path.write_bytes(_mutate(path.read_bytes(), rng, MUTATIONS[index % len(MUTATIONS)]))
    with _time_limit(30, "reading the mutated series folder"):
        results = list(iter_series(tmp_path))
    assert all(isinstance(result, Series | ReadFailure) for result in results)
    series = [result for result in results if isinstance(result, Series)]
    for item in series:
        _check(item)
    assert sum(item.num_slices for item in series) >= 7  # the untouched files are all there
