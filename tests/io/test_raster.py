"""PNG, JPEG and TIFF images: grey and grey-content RGB, folders, manifests, broken files."""

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from anogan.io import ReadFailure, Series, iter_series, read_image


def _grey(seed: int = 0, size: tuple[int, int] = (20, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=size).astype(np.uint8)


def test_grey_8_and_16_bit_keep_their_levels(tmp_path: Path) -> None:
    grey = _grey()
    Image.fromarray(grey).save(tmp_path / "eight.png")
    deep = (grey.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "sixteen.png")
    np.testing.assert_array_equal(read_image(tmp_path / "eight.png").pixels[0], grey)
    np.testing.assert_array_equal(read_image(tmp_path / "sixteen.png").pixels[0], deep)


def test_rgb_with_grey_content_is_grey_without_warning(tmp_path: Path, caplog) -> None:
    grey = _grey()
    Image.fromarray(np.stack([grey] * 3, axis=2)).save(tmp_path / "rgb.png")
    with caplog.at_level(logging.WARNING):
        series = read_image(tmp_path / "rgb.png")
    np.testing.assert_allclose(series.pixels[0], grey, atol=1e-3)
    assert caplog.text == ""


def test_colour_becomes_grey_with_a_warning(tmp_path: Path, caplog) -> None:
    colour = np.zeros((10, 10, 3), dtype=np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(tmp_path / "red.png")
    with caplog.at_level(logging.WARNING):
        series = read_image(tmp_path / "red.png")
    np.testing.assert_allclose(series.pixels, 0.299 * 255, atol=1e-3)
    assert "red.png" in caplog.text and "grey" in caplog.text


def test_multipage_tiff_gives_one_slice_per_page(tmp_path: Path) -> None:
    pages = [Image.fromarray(_grey(seed)) for seed in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    series = read_image(tmp_path / "stack.tif")
    assert series.pixels.shape == (3, 20, 30)
    np.testing.assert_array_equal(series.pixels[2], _grey(2))


def test_folder_and_manifest_with_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    Image.fromarray(_grey(1)).save(tmp_path / "nested" / "a.png")
    Image.fromarray(_grey(2)).save(tmp_path / "b.jpg", quality=95)
    (tmp_path / "c.tiff").write_bytes(b"II*\0garbage")
    results = list(iter_series(tmp_path))
    series = [item for item in results if isinstance(item, Series)]
    failures = [item for item in results if isinstance(item, ReadFailure)]
    assert sorted(item.sources[0] for item in series) == ["b.jpg", "nested/a.png"]
    assert [item.source for item in failures] == ["c.tiff"]
    assert "not a readable image" in failures[0].reason
    jpeg = next(item for item in series if item.sources[0] == "b.jpg")
    assert np.abs(jpeg.pixels[0] - _grey(2)).mean() < 20  # lossy, never exact

    (tmp_path / "list.csv").write_text("path,label\nnested/a.png,0\nmissing.png,1\n")
    listed = list(iter_series(tmp_path / "list.csv"))
    assert isinstance(listed[0], Series) and listed[0].sources == ("nested/a.png",)
    assert isinstance(listed[1], ReadFailure) and listed[1].source == "missing.png"
