"""Reading speed of the DICOM reader against plain pydicom, on a CT series written here.

`python -m pipelines.bench_io [--slices 300] [--size 512]` writes a CT series (16-bit,
uncompressed, shuffled file names) to a temporary folder, then reads it twice, each in a fresh
process: with `anogan.io.iter_series` (grouping, ordering, HU, window; one float32 volume),
and with plain `pydicom.dcmread` + `pixel_array` per file (the stored integers, unordered)
as the reference. It prints slices/s, MB/s of files on disk and each process's peak memory.
"""

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from anogan.io import ReadFailure, iter_series

SLICE_SPACING_MM = 1.25
PIXEL_SPACING_MM = 0.7


def main(argv: list[str] | None = None) -> None:
    """Write the series, time both readers, print one line per reader."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    arguments = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="anogan-bench-io-") as folder:
        started = time.perf_counter()
        megabytes = write_ct_series(Path(folder), arguments.slices, arguments.size)
        print(
            f"wrote {arguments.slices} slices of {arguments.size}x{arguments.size} "
            f"({megabytes:.0f} MB) in {time.perf_counter() - started:.1f} s"
        )
        context = multiprocessing.get_context("spawn")  # fresh processes: honest peak memory
        with context.Pool(1, maxtasksperchild=1) as pool:
            for name, reader in (("anogan.io", _read_anogan), ("pydicom", _read_pydicom)):
                seconds, slices, peak_megabytes = pool.apply(reader, (folder,))
                print(
                    f"{name:>10}: {slices / seconds:7.1f} slices/s  "
                    f"{megabytes / seconds:7.1f} MB/s  {seconds:6.2f} s  "
                    f"peak memory {peak_megabytes:6.0f} MB"
                )


def write_ct_series(folder: Path, slices: int, size: int) -> float:
    """Write `slices` CT files of `size` x `size` under shuffled names; returns MB written."""
    rng = np.random.default_rng(0)
    series_uid, study_uid = generate_uid(), generate_uid()
    rows, columns = np.mgrid[0:size, 0:size]
    body = (rows - size / 2) ** 2 + (columns - size / 2) ** 2 < (0.42 * size) ** 2
    names = rng.permutation(slices)
    for index in range(slices):
        hounsfield = np.where(body, rng.normal(40, 15, size=(size, size)), -1000.0)
        dataset = _ct_header(series_uid, study_uid, index, size)
        dataset.PixelData = np.round(hounsfield + 1024).clip(0, 4095).astype(np.uint16).tobytes()
        dataset.save_as(folder / f"{names[index]:06d}", enforce_file_format=True)
    return sum(path.stat().st_size for path in folder.iterdir()) / 1e6


def _ct_header(series_uid: str, study_uid: str, index: int, size: int) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.SOPClassUID = CTImageStorage
    dataset.SeriesInstanceUID, dataset.StudyInstanceUID = series_uid, study_uid
    dataset.Modality = "CT"
    dataset.InstanceNumber = index + 1
    dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    dataset.ImagePositionPatient = [-180.0, -180.0, SLICE_SPACING_MM * index]
    dataset.PixelSpacing = [PIXEL_SPACING_MM, PIXEL_SPACING_MM]
    dataset.SliceThickness = SLICE_SPACING_MM
    dataset.Rows = dataset.Columns = size
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    dataset.RescaleSlope, dataset.RescaleIntercept = "1", "-1024"
    return dataset


def _read_anogan(folder: str) -> tuple[float, int, float]:
    started = time.perf_counter()
    slices = 0
    for result in iter_series(folder, kind="dicom"):
        if isinstance(result, ReadFailure):
            raise RuntimeError(f"benchmark series unreadable: {result.source}: {result.reason}")
        slices += result.num_slices
    return time.perf_counter() - started, slices, _peak_megabytes()


def _read_pydicom(folder: str) -> tuple[float, int, float]:
    started = time.perf_counter()
    arrays = [pydicom.dcmread(path).pixel_array for path in sorted(Path(folder).iterdir())]
    return time.perf_counter() - started, len(arrays), _peak_megabytes()


def _peak_megabytes() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


if __name__ == "__main__":
    main()
