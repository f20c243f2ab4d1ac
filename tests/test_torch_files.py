"""The torch-free reader: both torch formats, the allow-list, and files that are not checkpoints."""

import pickle
import struct
import time
import zipfile

import numpy as np
import pytest

from keras_hourglass.torch_files import load_torch_file
from tests.conftest import ROOT

REFERENCE = ROOT / "tests" / "data" / "reference"


def test_zip_and_legacy_files_hold_the_same_tensors():
    zipped = load_torch_file(REFERENCE / "pp_s8_b1_j16_w4.pt")
    legacy = load_torch_file(REFERENCE / "pp_s8_b1_j16_w4_legacy.pt")
    assert list(zipped) == list(legacy) == ["epoch", "arch", "state_dict", "best_acc", "optimizer"]
    assert zipped["epoch"] == 37 and zipped["arch"] == "hg"
    assert isinstance(zipped["best_acc"], np.ndarray) and zipped["best_acc"].shape == ()  # a 0-d tensor
    assert list(zipped["state_dict"]) == list(legacy["state_dict"])
    for key, value in zipped["state_dict"].items():
        assert value.dtype == legacy["state_dict"][key].dtype and np.array_equal(value, legacy["state_dict"][key]), key
    conv = zipped["state_dict"]["module.conv1.weight"]
    assert conv.shape == (4, 3, 7, 7) and conv.dtype == np.float32 and np.abs(conv).max() > 0
    assert zipped["state_dict"]["module.bn1.num_batches_tracked"].dtype == np.int64


def test_a_foreign_global_is_refused_by_name():
    with pytest.raises(ValueError, match=r"foreign_global\.pt: refusing to load the global argparse\.Namespace"):
        load_torch_file(REFERENCE / "bad" / "foreign_global.pt")


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never be printed",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"state_dict": Payload()}, protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pt: refusing to load the global (__builtin__|builtins)\.print"):
        load_torch_file(path)


@pytest.mark.parametrize("content, message", [
    (b"", "not a torch checkpoint"),
    (b"hello world", "not a torch checkpoint"),
    (pickle.dumps({"a": 1}, protocol=2), "no torch magic number"),
])
def test_other_files_are_named(tmp_path, content, message):
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_torch_file(path)
    with pytest.raises(ValueError, match="no such checkpoint file"):
        load_torch_file(tmp_path / "missing.pth")


def test_truncated_files_are_refused(tmp_path):
    for name in ("pp_s8_b1_j16_w4.pt", "pp_s8_b1_j16_w4_legacy.pt"):
        data = (REFERENCE / name).read_bytes()
        path = tmp_path / name
        for cut in (100, len(data) // 2, len(data) - 3):  # a partial download ends anywhere
            path.write_bytes(data[:cut])
            with pytest.raises(ValueError, match=f"{name}: the file is truncated, an incomplete download: "
                                                 "download it again"):
                load_torch_file(path)


# --- Hostile files: each written here, opcode by opcode (protocol 2), as an attacker would write them.

def op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value) if -2**31 <= value < 2**31 else b"\x8a\x08" + struct.pack("<q", value)


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def op_storage(key: str, numel: int, legacy: bool = False) -> bytes:
    fields = [op_str("storage"), op_global("torch", "FloatStorage"), op_str(key), op_str("cpu"), op_int(numel)]
    return op_tuple(*fields, *([b"N"] if legacy else [])) + b"Q"


def op_tensor(storage: bytes, size, stride) -> bytes:
    return (op_global("torch._utils", "_rebuild_tensor_v2")
            + op_tuple(storage, op_int(0), op_tuple(*map(op_int, size)), op_tuple(*map(op_int, stride)), b"\x89",
                       op_global("collections", "OrderedDict") + b")R") + b"R")


def op_dict(**items: bytes) -> bytes:
    return b"}(" + b"".join(op_str(k) + v for k, v in items.items()) + b"u"


def write_zip(path, body: bytes, storages: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + body + b".")
        archive.writestr("archive/byteorder", b"little")
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def peak_mib_of(function) -> float:
    """Runs `function` and returns how far the process's peak resident memory rose, in MiB."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    function()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def refused(path, match: str):
    with pytest.raises(ValueError, match=match) as error:
        load_torch_file(path)
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message and len(message) < 600, message
    return message


def test_a_structured_dtype_cannot_make_numpy_read_outside_its_buffer(tmp_path):
    # numpy.dtype('f8') given a field at offset 64 by BUILD, then a scalar built from it: an out-of-bounds read.
    dtype = (op_global("numpy", "dtype") + op_tuple(op_str("f8"), b"\x89", b"\x88") + b"R"
             + op_tuple(op_int(3), op_str("<"), b"N", op_tuple(op_str("a")),
                        b"}" + op_str("a") + op_tuple(op_global("numpy", "dtype") + op_tuple(op_str("f8"), b"\x89", b"\x88")
                                                         + b"R", op_int(64)) + b"s",
                        op_int(8), op_int(1), op_int(0)) + b"b")
    scalar = op_global("numpy._core.multiarray", "scalar") + op_tuple(dtype, b"C\x08" + b"\0" * 8) + b"R"
    refused(write_zip(tmp_path / "fields.pt", op_dict(epoch=scalar), {}), "a numpy dtype with fields")
    # A void type code is refused as it is named.
    void = op_global("numpy._core.multiarray", "scalar") + op_tuple(
        op_global("numpy", "dtype") + op_tuple(op_str("V8"), b"\x89", b"\x88") + b"R", b"C\x08" + b"\0" * 8) + b"R"
    refused(write_zip(tmp_path / "void.pt", op_dict(epoch=void), {}), "only plain numeric type codes|plain numbers")
    # A plain number still loads: the scalar numpy writes for a float64 epoch.
    plain = op_global("numpy._core.multiarray", "scalar") + op_tuple(
        op_global("numpy", "dtype") + op_tuple(op_str("f8"), b"\x89", b"\x88") + b"R"
        + op_tuple(op_int(3), op_str("<"), b"N", b"N", b"N", op_int(-1), op_int(-1), op_int(0)) + b"b",
        b"C\x08" + struct.pack("<d", 37.0)) + b"R"
    assert load_torch_file(write_zip(tmp_path / "plain.pt", op_dict(epoch=plain), {}))["epoch"] == 37.0


def test_one_file_cannot_change_how_the_next_one_loads(tmp_path):
    # BUILD on the allow-listed torch.FloatStorage, setting its element type to int8.
    int8 = op_global("numpy", "dtype") + op_tuple(op_str("i1"), b"\x89", b"\x88") + b"R"
    evil = op_global("torch", "FloatStorage") + b"}" + op_str("dtype") + int8 + b"sb"
    refused(write_zip(tmp_path / "evil.pt", op_dict(x=evil), {}), "setting the state of a StorageType")
    genuine = load_torch_file(REFERENCE / "pp_s8_b1_j16_w4.pt")["state_dict"]["module.conv1.weight"]
    assert genuine.dtype == np.float32 and np.abs(genuine).max() < 10


def test_a_stride_0_tensor_cannot_multiply_one_stored_value(tmp_path):
    path = write_zip(tmp_path / "stride0.pt", op_dict(w=op_tensor(op_storage("0", 1), (16000, 16000), (0, 0))),
                     {"0": np.ones(1, np.float32).tobytes()})
    assert peak_mib_of(lambda: refused(path, "repeats the values of its storage of 1 elements")) < 50


def test_shared_objects_are_materialised_once_and_copies_are_budgeted(tmp_path):
    values = np.arange(2**20, dtype=np.float32)  # a 4 MiB storage
    tensor = op_tensor(op_storage("0", 2**20), (1024, 1024), (1024, 1))
    shared = write_zip(tmp_path / "shared.pt", op_dict(w=tensor + b"q\x010" + b"(" + b"h\x01" * 250 + b"l"),
                       {"0": values.tobytes()})
    loaded = []
    assert peak_mib_of(lambda: loaded.append(load_torch_file(shared))) < 100
    first = loaded[0]["w"][0]
    assert len(loaded[0]["w"]) == 250 and all(item is first for item in loaded[0]["w"])  # one array, 250 names
    np.testing.assert_array_equal(first.ravel(), values)
    # 250 distinct views of the same storage would be 250 copies: more than the file can stand for.
    copies = write_zip(tmp_path / "copies.pt", op_dict(w=b"(" + tensor * 250 + b"l"), {"0": values.tobytes()})
    assert peak_mib_of(lambda: refused(copies, "more than .* bytes, more than a file of its size can hold")) < 100


def test_nesting_and_inflation_are_refused_before_they_cost(tmp_path):
    # each list holds the one before twice ("billion laughs"); POP leaves only the memo's reference
    nested = b"]q\x000" + b"".join(b"(h" + bytes([i]) + b"h" + bytes([i]) + b"lq" + bytes([i + 1]) + b"0"
                                   for i in range(100)) + b"h\x64"
    refused(write_zip(tmp_path / "laughs.pt", op_dict(x=nested), {}), "nested more than 64 deep")
    bomb = write_zip(tmp_path / "bomb.pt", op_dict(w=op_tensor(op_storage("0", 2**24), (2**24,), (1,))),
                     {"0": bytes(2**26)}, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 2**20
    assert peak_mib_of(lambda: refused(bomb, "inflate to more than")) < 50


def test_a_legacy_file_cannot_declare_more_than_it_holds(tmp_path):
    for numel in (10**12, 2**62):
        body = op_dict(w=op_tensor(op_storage("0", numel, legacy=True), (1,), (1,)))
        data = b"".join(pickle.dumps(part, protocol=2) for part in (0x1950A86A20F9469CFC6C, 1001,
                                                                     {"little_endian": True}))
        path = tmp_path / f"legacy{numel}.pt"
        path.write_bytes(data + b"\x80\x02" + body + b"." + pickle.dumps(["0"], protocol=2))
        refused(path, "declares .* elements, more than the file's")


def laughs(levels: int = 40) -> bytes:
    """A list holding the previous list twice, `levels` times over, through the memo: tiny, exponential as text."""
    return (b"]q\x000" + b"".join(b"(h" + bytes([i]) + b"h" + bytes([i]) + b"lq" + bytes([i + 1]) + b"0"
                                  for i in range(levels)) + b"h" + bytes([levels]))


@pytest.mark.parametrize("name, body, storages, match", [
    ("dtype", op_global("numpy", "dtype") + b"(" + laughs() + b"tR", {}, "a numpy dtype from a list"),
    ("pid", laughs() + b"Q", {}, r"unexpected persistent id \(a list\)"),
    ("key", op_tuple(op_str("storage"), op_global("torch", "FloatStorage"), laughs(), op_str("cpu"), op_int(4))
     + b"Q", {}, "not a short name and a number"),
])
def test_hostile_values_are_never_turned_into_text(tmp_path, name, body, storages, match):
    path = write_zip(tmp_path / f"{name}.pt", op_dict(x=body), storages)
    assert peak_mib_of(lambda: refused(path, match)) < 50


def test_the_byteorder_entry_is_budgeted_too(tmp_path):
    path = tmp_path / "byteorder.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}.")
        archive.writestr("archive/byteorder", b"little" + bytes(2**26))
    assert peak_mib_of(lambda: refused(path, "inflate to more than")) < 50


def test_a_key_that_would_be_hashed_forever_is_refused(tmp_path):
    # a tuple holding the previous tuple twice, 40 times over: hashing it as a dict key walks 2^40 elements
    nested = (b"X\x01\x00\x00\x00x\x85q\x000" + b"".join(b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q"
                                                           + bytes([i + 1]) + b"0" for i in range(40)) + b"h\x28")
    for name, body in (("setitem", b"}" + nested + op_int(1) + b"s"), ("setitems", b"}(" + nested + op_int(1) + b"u"),
                       ("frozenset", b"(" + op_str("x") + b"\x91")):
        path = write_zip(tmp_path / f"{name}.pt", op_dict(x=body), {})
        started = time.monotonic()
        refused(path, "a dict key that is a tuple|FROZENSET")
        assert time.monotonic() - started < 5


# --- Found by the second attack trial

def test_a_zip_entry_that_understates_its_size_is_not_inflated_past_it(tmp_path):
    """A deflated storage of 256 MiB of zeros (about 256 KB in the file) that declares 16 bytes: the reader stops
    inflating at 16 and the CRC refuses it; other compression methods than torch's are refused by name."""
    tensor = op_tensor(op_storage("0", 4), (4,), (1,))
    path = write_zip(tmp_path / "liar.pt", op_dict(w=tensor), {"0": bytes(256 * 2**20)}, zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as archive:
        entry = archive.getinfo("archive/data/0")
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, entry.header_offset + 22, 16)  # the local header's uncompressed size
    directory = data.find(b"PK\x01\x02" + data[entry.header_offset + 4:entry.header_offset + 6])
    while data[directory + 46:directory + 46 + len(entry.filename)] != entry.filename.encode():
        directory = data.find(b"PK\x01\x02", directory + 4)
    struct.pack_into("<I", data, directory + 24, 16)  # the central directory's
    path.write_bytes(bytes(data))
    assert peak_mib_of(lambda: refused(path, "Bad CRC-32 for file 'archive/data/0'")) < 50
    bz2 = write_zip(tmp_path / "bz2.pt", op_dict(w=tensor), {"0": bytes(16)}, zipfile.ZIP_BZIP2)
    refused(bz2, "compressed with method 12; a torch checkpoint's entries are stored")


def test_the_legacy_header_cannot_grow_a_memo_or_hash_for_ever(tmp_path):
    """The header pickles go through the same checked unpickler: a memo index of 2^28 is one entry, and a
    tuple key (which hashing would walk for ever through the memo) is refused before it is hashed."""
    memo = tmp_path / "memo.pt"
    memo.write_bytes(b"\x80\x02Nr\x00\x00\x00\x10.")  # None, stored at memo index 2^28
    assert peak_mib_of(lambda: refused(memo, "no torch magic number")) < 50
    key = tmp_path / "key.pt"
    key.write_bytes(b"\x80\x02}(" + op_tuple(op_int(1)) + op_int(2) + b"u.")
    refused(key, "a dict key that is a tuple")


def test_an_ordered_dict_made_from_pairs_has_its_keys_checked(tmp_path):
    pairs = op_global("collections", "OrderedDict") + op_tuple(b"(" + op_tuple(op_tuple(op_int(1)), op_int(2)) + b"l") + b"R"
    refused(write_zip(tmp_path / "pairs.pt", op_dict(state_dict=pairs), {}), "a dict key that is a tuple")
    good = op_global("collections", "OrderedDict") + op_tuple(b"(" + op_tuple(op_str("a"), op_int(2)) + b"l") + b"R"
    assert dict(load_torch_file(write_zip(tmp_path / "good.pt", op_dict(state_dict=good), {}))["state_dict"]) == {"a": 2}
