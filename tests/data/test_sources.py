import numpy as np
import pytest
from PIL import Image

from anogan.data.sources import resolve_data
from anogan.errors import DataError


def _png(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, np.uint8)).save(path)


def test_split_folders_like_the_brain_set(tmp_path):
    for name in ("a", "b"):
        _png(tmp_path / "train" / "healthy" / f"{name}.png")
    _png(tmp_path / "dev_val" / "healthy" / "c.jpg")
    _png(tmp_path / "dev_val" / "tumor" / "d.png")
    dataset = resolve_data(tmp_path)
    assert len(dataset.train) == 2
    assert sorted(item.label for item in dataset.validation) == [0, 1]
    assert {item.subtype for item in dataset.validation} == {"healthy", "tumor"}


def test_manifest_roles_labels_and_masks(tmp_path):
    for name in ("a", "b", "c", "m"):
        _png(tmp_path / f"{name}.png")
    (tmp_path / "list.csv").write_text(
        "path,label,role,mask\na.png,0,train,\nb.png,0,dev_val,\nc.png,1,dev_val,m.png\n"
    )
    dataset = resolve_data(tmp_path / "list.csv")
    assert [item.path.name for item in dataset.train] == ["a.png"]
    lesion = next(item for item in dataset.validation if item.label == 1)
    assert lesion.mask == tmp_path / "m.png"


def test_manifest_missing_column_is_named(tmp_path):
    (tmp_path / "list.csv").write_text("path,label\na.png,0\n")
    with pytest.raises(DataError, match="role"):
        resolve_data(tmp_path / "list.csv")


def test_plain_folder_holds_back_a_validation_share(tmp_path):
    for index in range(20):
        _png(tmp_path / f"{index:02d}.png")
    dataset = resolve_data(tmp_path, validation_fraction=0.2)
    assert len(dataset.train) == 16
    assert len(dataset.validation) == 4
    assert not {item.path for item in dataset.train} & {item.path for item in dataset.validation}


def test_missing_and_empty_inputs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        resolve_data(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        resolve_data(tmp_path / "empty")
