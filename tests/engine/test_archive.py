"""The npz codec that checkpoints, saved models and the store's data sets share: never a pickle."""

import io
import zipfile

import numpy as np
import pytest

from nnserve.engine import SpecError, archive


def test_arrays_and_metadata_round_trip():
    blob = archive.pack(
        {"features": np.ones((2, 3), np.float32), "targets": np.array(["a", "b"])}, {"epoch": 3, "names": ["x"]}
    )
    arrays, metadata = archive.unpack(blob)
    assert arrays["targets"].tolist() == ["a", "b"] and arrays["features"].dtype == np.float32
    assert set(arrays) == {"features", "targets"} and metadata == {"epoch": 3, "names": ["x"]}


def test_without_metadata_it_is_a_plain_npz():
    blob = archive.pack({"features": np.arange(3.0)})
    with np.load(io.BytesIO(blob), allow_pickle=False) as loaded:
        assert loaded.files == ["features"]
    assert archive.unpack(blob)[1] == {}


def test_an_object_array_is_refused_not_pickled_nor_unpickled():
    with pytest.raises(ValueError, match="object arrays cannot be stored without pickle"):
        archive.pack({"bad": np.array([{"x": 1}], dtype=object)})
    pickled = io.BytesIO()
    np.savez(pickled, bad=np.array([{"x": 1}], dtype=object))  # as another program might write one
    with pytest.raises(SpecError, match=r"^dataset: not a readable nnserve archive \(Object arrays cannot be loaded"):
        archive.unpack(pickled.getvalue(), "dataset")


@pytest.mark.parametrize(
    "blob",
    [b"", b"garbage", b"PK\x03\x04" + bytes(100)],
    ids=["empty", "text", "a zip header then zeros"],
)
def test_anything_else_raises_spec_error_located_where_the_bytes_came_from(blob):
    with pytest.raises(SpecError) as caught:
        archive.unpack(blob, "checkpoint")
    assert caught.value.loc == ("checkpoint",) and "not a readable nnserve archive" in caught.value.message


def test_metadata_that_is_not_an_object_is_refused():
    buffer = io.BytesIO()
    np.savez(buffer, metadata=np.array("[1, 2]"))
    with pytest.raises(SpecError, match=r"its metadata is not an object"):
        archive.unpack(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(archive.pack({"a": np.zeros(1)}, {"k": 1}))) as zipped:
        assert sorted(zipped.namelist()) == ["a.npy", "metadata.npy"]
