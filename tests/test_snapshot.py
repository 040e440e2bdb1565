"""Snapshot files: round trips, the SHA-256 trailer, truncation at every byte, bounds checked before allocating
(even in a file whose checksum is valid), the dtype whitelist, and the string tables (RELIABILITY F20, F23)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecstore_ref import _crash
from vecstore_ref._fs import FaultFS, OSFileSystem
from vecstore_ref.errors import CorruptSnapshotError, InvalidArgumentError, UnsupportedFormatError
from vecstore_ref.storage.format import (
    SNAPSHOT_ALIGN,
    SNAPSHOT_FORMAT_VERSION,
    SNAPSHOT_HEADER,
    SNAPSHOT_MAGIC,
)
from vecstore_ref.storage.snapshot import pack_strings, read_snapshot, unpack_strings, write_snapshot

FS = OSFileSystem()


def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "vectors": rng.normal(size=(7, 5)).astype(np.float32),
        "state": np.array([0, 1, 2, 1, 1, 0, 2], dtype=np.uint8),
        "expires": np.array([np.inf, 1.5, 2.5, np.inf, 0.0, -1.0, 3.0]),
        "levels": np.array([-1, 0, 3], dtype=np.int8),
        "links": np.arange(24, dtype=np.int32).reshape(2, 3, 4),
        "offsets": np.array([0, 2**40], dtype=np.int64),
        "deleted": np.array([True, False, True]),
        "empty": np.zeros((0, 5), dtype=np.float32),
        "scalar": np.array(7, dtype=np.int64),
    }


def write_sample(tmp_path, header=None) -> str:
    write_snapshot(FS, str(tmp_path), "snap-0000000000000007.vss", header or {"seq": 7, "dim": 5},
                   sample_arrays())
    return str(tmp_path / "snap-0000000000000007.vss")


def craft(path: str, header: dict, data: bytes = b"", version: int = 1) -> None:
    """A snapshot written by hand with a *valid* SHA-256: only the structural checks can reject it."""
    text = json.dumps(header).encode()
    head = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, version, len(text)) + text
    head += b"\0" * ((-len(head)) % SNAPSHOT_ALIGN)
    body = head + data
    open(path, "wb").write(body + hashlib.sha256(body).digest())


def test_round_trip(tmp_path):
    path = write_sample(tmp_path, {"seq": 7, "dim": 5, "nested": {"a": [1, "x", None]}})
    header, arrays = read_snapshot(FS, path)
    assert header == {"seq": 7, "dim": 5, "nested": {"a": [1, "x", None]}}
    expected = sample_arrays()
    assert arrays.keys() == expected.keys()
    for name, arr in expected.items():
        got = arrays[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape and got.tobytes() == arr.tobytes(), name
        assert got.flags.writeable and got.flags.c_contiguous
    # every array has its own buffer
    names = list(arrays)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.shares_memory(arrays[a], arrays[b])


def test_layout_is_aligned_and_ends_with_block_checksums(tmp_path):
    path = write_sample(tmp_path)
    data = open(path, "rb").read()
    magic, version, json_len = SNAPSHOT_HEADER.unpack_from(data)
    assert magic == b"VSREFSNP" and version == SNAPSHOT_FORMAT_VERSION == 2
    table = json.loads(data[16 : 16 + json_len])["arrays"]
    start = 16 + json_len + (-(16 + json_len)) % 64
    assert start % 64 == 0 and all(e["offset"] % 64 == 0 for e in table)
    body_len, block, table_crc = struct.unpack("<QII", data[-16:])
    n_blocks = -(-body_len // block)
    sums = data[body_len : body_len + 4 * n_blocks]
    assert len(data) == body_len + 4 * n_blocks + 16 and zlib.crc32(sums) == table_crc
    assert list(struct.unpack(f"<{n_blocks}I", sums)) == [zlib.crc32(data[i : min(i + block, body_len)])
                                                           for i in range(0, body_len, block)]
    vec = next(e for e in table if e["name"] == "vectors")
    raw = data[start + vec["offset"] : start + vec["offset"] + vec["nbytes"]]
    assert raw == sample_arrays()["vectors"].astype("<f4").tobytes()


def test_big_endian_input_is_stored_little_endian(tmp_path):
    write_snapshot(FS, str(tmp_path), "s.vss", {}, {"x": np.arange(4, dtype=">i4")})
    _, arrays = read_snapshot(FS, str(tmp_path / "s.vss"))
    assert arrays["x"].dtype == np.int32 and arrays["x"].tolist() == [0, 1, 2, 3]


def test_write_goes_through_write_atomic_with_snapshot_crash_points(tmp_path, monkeypatch):
    log = tmp_path / "crash.log"
    monkeypatch.setenv("VECSTORE_CRASH_LOG", str(log))
    _crash.reload_from_env()
    try:
        d = tmp_path / "d"
        d.mkdir()
        n = write_snapshot(FS, str(d), "s.vss", {}, {"a": np.arange(3)})
    finally:
        monkeypatch.delenv("VECSTORE_CRASH_LOG")
        _crash.reload_from_env()
    assert n == os.path.getsize(d / "s.vss") and os.listdir(d) == ["s.vss"]
    assert log.read_text().split() == ["snapshot.tmp_written", "snapshot.tmp_fsynced", "snapshot.renamed",
                                       "snapshot.dir_fsynced"]


def test_failed_write_leaves_the_previous_snapshot(tmp_path):
    fs = FaultFS()
    write_snapshot(fs, str(tmp_path), "s.vss", {"v": 1}, {"a": np.arange(3)})
    fs.fail("write", nth=2, err=28)
    with pytest.raises(OSError):
        write_snapshot(fs, str(tmp_path), "s.vss", {"v": 2}, {"a": np.arange(1000)})
    assert read_snapshot(fs, str(tmp_path / "s.vss"))[0] == {"v": 1} and os.listdir(tmp_path) == ["s.vss"]


@pytest.mark.parametrize("dtype", ["float16", "uint16", "uint32", "complex64", "object", "U3", "datetime64[s]"])
def test_dtype_whitelist_on_write(tmp_path, dtype):
    arr = np.zeros(2, dtype=dtype)
    with pytest.raises(InvalidArgumentError):
        write_snapshot(FS, str(tmp_path), "s.vss", {}, {"a": arr})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad", [{"arrays": 1}, {"x": float("nan")}, {"x": object()}])
def test_bad_header_on_write(tmp_path, bad):
    with pytest.raises(InvalidArgumentError):
        write_snapshot(FS, str(tmp_path), "s.vss", bad, {})


@pytest.mark.parametrize("name", ["", "a/b", "..", "."])
def test_name_must_be_a_plain_file_name(tmp_path, name):
    with pytest.raises(InvalidArgumentError):
        write_snapshot(FS, str(tmp_path), name, {}, {})


def test_truncation_at_every_byte_is_detected(tmp_path):
    path = write_sample(tmp_path)
    data = open(path, "rb").read()
    cut_path = str(tmp_path / "cut.vss")
    for cut in range(len(data)):
        open(cut_path, "wb").write(data[:cut])
        with pytest.raises(CorruptSnapshotError):
            read_snapshot(FS, cut_path)


def test_a_flipped_bit_anywhere_is_detected(tmp_path):
    path = write_sample(tmp_path)
    data = open(path, "rb").read()
    flip_path = str(tmp_path / "flip.vss")
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 1 << (pos % 8)
        open(flip_path, "wb").write(bytes(damaged))
        with pytest.raises((CorruptSnapshotError, UnsupportedFormatError)):
            read_snapshot(FS, flip_path)


def test_appended_bytes_are_detected(tmp_path):
    path = write_sample(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(CorruptSnapshotError):
        read_snapshot(FS, path)


def test_missing_snapshot(tmp_path):
    with pytest.raises(CorruptSnapshotError):
        read_snapshot(FS, str(tmp_path / "none.vss"))


def test_version_from_the_future_leaves_the_file_alone(tmp_path):
    path = write_sample(tmp_path)
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", SNAPSHOT_FORMAT_VERSION + 1))
    before = open(path, "rb").read()
    with pytest.raises(UnsupportedFormatError):
        read_snapshot(FS, path)
    assert open(path, "rb").read() == before


def test_bad_magic(tmp_path):
    path = write_sample(tmp_path)
    with open(path, "r+b") as f:
        f.write(b"VSREFLOG")
    with pytest.raises(CorruptSnapshotError):
        read_snapshot(FS, path)


def entry(name="a", dtype="float32", shape=(2,), offset=0, nbytes=8):
    return {"name": name, "dtype": dtype, "shape": list(shape), "offset": offset, "nbytes": nbytes}


@pytest.mark.parametrize("table", [
    pytest.param([entry(shape=(2**40, 2**40), nbytes=0)], id="shape_product_overflows"),
    pytest.param([entry(shape=(2**31,), nbytes=2**33)], id="nbytes_past_the_end"),
    pytest.param([entry(offset=2**62)], id="offset_past_the_end"),
    pytest.param([entry(offset=-64)], id="negative_offset"),
    pytest.param([entry(shape=(-2,), nbytes=-8)], id="negative_shape"),
    pytest.param([entry(shape=(3,))], id="nbytes_disagrees_with_shape"),
    pytest.param([entry(dtype="object")], id="object_dtype"),
    pytest.param([entry(dtype="float16", nbytes=4)], id="dtype_not_whitelisted"),
    pytest.param([entry(dtype="<f4")], id="dtype_spelled_differently"),
    pytest.param([entry(), entry()], id="repeated_name"),
    pytest.param([entry("a"), entry("b", offset=4)], id="overlap"),
    pytest.param([entry(shape=(2.0,))], id="float_shape"),
    pytest.param([entry(shape=(True, 2))], id="bool_shape"),
    pytest.param([{**entry(), "extra": 1}], id="extra_key"),
    pytest.param([[0]], id="entry_not_an_object"),
    pytest.param({"a": 1}, id="table_not_a_list"),
])
def test_hostile_table_with_a_valid_checksum(tmp_path, table):
    path = str(tmp_path / "s.vss")
    craft(path, {"arrays": table}, b"\0" * 64)
    with pytest.raises(CorruptSnapshotError):
        read_snapshot(FS, path)


@pytest.mark.parametrize("header_json", [b"[1]", b"{}", b"{bad", b'{"arrays": [], "x": NaN}', b"\xff\xfe"])
def test_hostile_header_with_a_valid_checksum(tmp_path, header_json):
    path = str(tmp_path / "s.vss")
    head = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, 1, len(header_json)) + header_json
    head += b"\0" * ((-len(head)) % 64)
    open(path, "wb").write(head + hashlib.sha256(head).digest())
    with pytest.raises(CorruptSnapshotError):
        read_snapshot(FS, path)


def test_header_length_beyond_the_file(tmp_path):
    path = str(tmp_path / "s.vss")
    head = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, 1, 0xFFFFFFFF)
    open(path, "wb").write(head + hashlib.sha256(head).digest())
    with pytest.raises(CorruptSnapshotError):
        read_snapshot(FS, path)


def test_crafted_valid_snapshot_reads(tmp_path):
    """The hand-built format above is the format: a well-formed crafted file loads."""
    path = str(tmp_path / "s.vss")
    craft(path, {"seq": 1, "arrays": [entry()]}, np.array([1.5, 2.5], "<f4").tobytes() + b"\0" * 56)
    header, arrays = read_snapshot(FS, path)
    assert header == {"seq": 1} and arrays["a"].tolist() == [1.5, 2.5]


# --- string tables -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strings", [[], [""], ["a", "", "bc"], ["é", "文字", "🙂x", ""], ["a\x00b", "\u202e"]])
def test_pack_unpack_round_trip(strings):
    blob, offsets = pack_strings(strings)
    assert blob.dtype == np.uint8 and offsets.dtype == np.int64 and offsets.shape == (len(strings) + 1,)
    assert blob.tobytes() == "".join(strings).encode("utf-8") and offsets[0] == 0
    assert unpack_strings(blob, offsets) == strings


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8), max_size=30))
def test_pack_unpack_property(strings):
    assert unpack_strings(*pack_strings(strings)) == strings


def test_lone_surrogate_cannot_be_packed():
    with pytest.raises(InvalidArgumentError):
        pack_strings(["ok", "\ud800"])


@pytest.mark.parametrize("blob,offsets", [
    pytest.param(b"abc", [0, 2], id="end_short_of_blob"),
    pytest.param(b"abc", [1, 3], id="start_not_zero"),
    pytest.param(b"abc", [0, 2, 1, 3], id="decreasing"),
    pytest.param(b"abc", [], id="empty_offsets"),
    pytest.param(b"abc", [0, 4], id="past_the_end"),
    pytest.param("é".encode() + b"a", [0, 1, 3], id="cuts_a_character"),
    pytest.param(b"\xff", [0, 1], id="not_utf8"),
    pytest.param(b"\xed\xa0\x80", [0, 3], id="encoded_surrogate"),
])
def test_unpack_rejects(blob, offsets):
    with pytest.raises(CorruptSnapshotError):
        unpack_strings(np.frombuffer(blob, np.uint8), np.array(offsets, dtype=np.int64))


def test_unpack_rejects_wrong_dtypes():
    with pytest.raises(CorruptSnapshotError):
        unpack_strings(np.zeros(2, np.int32), np.array([0, 2]))
    with pytest.raises(CorruptSnapshotError):
        unpack_strings(np.zeros(2, np.uint8), np.array([0.0, 2.0]))


@pytest.mark.parametrize("ascii_only", [True, False])
def test_a_million_short_strings_round_trip(ascii_only):
    strings = [f"id-{i}" if ascii_only else f"ïd-{i}" for i in range(1_000_000)]
    blob, offsets = pack_strings(strings)
    out = unpack_strings(blob, offsets)
    assert out == strings  # (speed: benchmarks/, not here)
