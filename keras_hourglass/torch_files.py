"""Reading PyTorch checkpoint files (`torch.save`) into NumPy without PyTorch and without running their code.

A `.pth`/`.pt` file is a pickle, and unpickling can call any importable
function. `load_torch_file` therefore unpickles with an allow-list: the only
globals it resolves are the tensor-rebuild functions, the storage types and
the containers that checkpoints hold (`ALLOWED_GLOBALS`), each mapped to a
function here that builds NumPy data; PyTorch is never imported. Any other
global (a class of the training script, `os.system`, ...) stops the read
with an error that names it.

Both of `torch.save`'s formats are read:

* the zip format (torch >= 1.6): an archive `NAME/data.pkl` whose
  persistent ids `("storage", StorageType, key, location, numel)` point at
  raw little-endian arrays `NAME/data/<key>`;
* the legacy format (torch < 1.6, and `_use_new_zipfile_serialization=False`),
  in which the published hourglass checkpoints were written: five pickles
  in a row (magic number 0x1950a86a20f9469cfc6c, protocol version 1001,
  system info, the object with persistent ids `("storage", StorageType, key,
  location, numel, view)`, the sorted list of storage keys), then each
  storage in that order as an int64 element count and its raw bytes.

The older tar format (torch < 0.4) is refused with a message saying so.
Tensors come back as NumPy arrays with their PyTorch shape (NCHW for conv
weights); `bfloat16` storages become float32.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
ZIP_START = b"PK\x03\x04"
TRUNCATED = "the file is truncated, an incomplete download: download it again"

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",  # no NumPy type: read as uint16, widened to float32
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class StorageType:
    """Stands in for `torch.FloatStorage` etc.: only its element type matters."""

    def __init__(self, name: str):
        self.name = name
        dtype = STORAGE_DTYPES[name]
        self.dtype = np.dtype(np.uint16 if dtype == "bfloat16" else dtype)
        self.bfloat16 = dtype == "bfloat16"


class Storage:
    """One flat storage: a 1-D NumPy array of its elements."""

    def __init__(self, kind: StorageType, data: np.ndarray):
        self.kind = kind
        self.data = data


class _Tensor:
    """A tensor as unpickled: a strided view of a storage, made an array by `_materialize` once storages are read."""

    def __init__(self, storage: Storage, offset, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def array(self) -> np.ndarray:
        data = self.storage.data
        if any(n == 0 for n in self.size):
            array = np.zeros(self.size, data.dtype)
        else:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if self.offset < 0 or last >= len(data) or min(self.stride, default=0) < 0:
                raise ValueError(f"a tensor of size {self.size} and stride {self.stride} at offset {self.offset} "
                                 f"overruns its storage of {len(data)} elements")
            strides = tuple(s * data.dtype.itemsize for s in self.stride)
            array = np.lib.stride_tricks.as_strided(data[self.offset:], self.size, strides).copy()
        if self.storage.kind.bfloat16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _rebuild_tensor(storage, offset, size, stride, *unused) -> _Tensor:
    """`torch._utils._rebuild_tensor_v2` / `_rebuild_tensor`."""
    if not isinstance(storage, Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _Tensor(storage, offset, size, stride)


def _materialize(value):
    """The unpickled object with every `_Tensor` replaced by its NumPy array."""
    if isinstance(value, _Tensor):
        return value.array()
    if isinstance(value, dict):
        return type(value)((key, _materialize(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialize(item) for item in value)
    return value


def _rebuild_parameter(data, requires_grad=None, hooks=None, *unused):
    """`torch._utils._rebuild_parameter`: a parameter is its data."""
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


def _numpy_scalar(dtype, data=None):
    """`numpy.core.multiarray.scalar`: a NumPy scalar from its dtype and raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar of an object dtype")
    return np.frombuffer(data, dtype, count=1)[0]


def _numpy_dtype(spec, align=False, copy=False):
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"numpy dtype {dtype} holds Python objects")
    return dtype


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only `ALLOWED_GLOBALS`; persistent ids become `Storage`s through `load_storage`."""

    def __init__(self, file, source: str, load_storage):
        super().__init__(file, encoding="latin1")
        self.source = source
        self.load_storage = load_storage
        self.storages = {}

    def find_class(self, module, name):
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise ValueError(f"{self.source}: refusing to load the global {module}.{name}: a checkpoint holds tensors "
                             "and containers only, and unpickling anything else could run code.")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], StorageType)):
            raise ValueError(f"{self.source}: unexpected persistent id {pid!r:.80}; not a torch tensor storage.")
        kind, key, numel = pid[1], str(pid[2]), int(pid[4])
        if len(pid) > 5 and pid[5] is not None:
            raise ValueError(f"{self.source}: storage views (legacy files of torch < 0.4) are not supported.")
        if key not in self.storages:
            self.storages[key] = Storage(kind, self.load_storage(key, kind, numel))
        return self.storages[key]


def load_torch_file(path: str):
    """The object saved by `torch.save` at `path`, tensors as NumPy arrays.

    Raises:
        ValueError: naming the file, for a file that is missing, truncated,
            of another format, or that refers to a global outside
            `ALLOWED_GLOBALS`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file.")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        with open(path, "rb") as f:
            if f.read(len(ZIP_START)) == ZIP_START:  # a zip's start without its directory at the end
                raise ValueError(f"{path}: {TRUNCATED} (a zip archive without its end)")
            f.seek(0)
            return _load_legacy(f, path)
    except (EOFError, struct.error) as error:
        raise ValueError(f"{path}: {TRUNCATED} ({type(error).__name__}: {error})") from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, TypeError,
            AttributeError, IndexError) as error:
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error}).") from None


def _load_zip(path: str):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path}: a zip file without one data.pkl; not a torch checkpoint.")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in names and archive.read(byteorder).decode().strip() != "little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported.")

        def load_storage(key, kind, numel):
            raw = archive.read(f"{prefix}data/{key}")
            if len(raw) < numel * kind.dtype.itemsize:
                raise ValueError(f"{path}: storage {key} holds {len(raw)} bytes, fewer than {numel} elements.")
            return np.frombuffer(raw, kind.dtype, count=numel)

        with archive.open(pickles[0]) as f:
            return _materialize(_AllowListUnpickler(io.BytesIO(f.read()), path, load_storage).load())


def _load_legacy(f, path: str):
    if f.read(5)[:1] != b"\x80" and not _is_tar(path):
        raise ValueError(f"{path}: not a torch checkpoint (neither a zip archive nor a pickle).")
    f.seek(0)
    if _is_tar(path):
        raise ValueError(f"{path}: a tar checkpoint of torch < 0.4; load and re-save it with a newer torch first.")
    def plain():  # the magic number, the protocol, the system info, the key list: one unpickler each
        return _PlainUnpickler(f, path).load()

    if plain() != LEGACY_MAGIC:
        raise ValueError(f"{path}: a pickle, but not a torch checkpoint (no torch magic number).")
    if plain() != LEGACY_PROTOCOL:
        raise ValueError(f"{path}: unsupported torch legacy protocol version.")
    system = plain()
    if isinstance(system, dict) and not system.get("little_endian", True):
        raise ValueError(f"{path}: big-endian checkpoints are not supported.")
    pending = {}  # key -> (kind, numel, array to fill): storages follow the object in the file

    def load_storage(key, kind, numel):
        array = np.zeros(numel, kind.dtype)
        pending[key] = (kind, numel, array)
        return array

    unpickler = _AllowListUnpickler(f, path, load_storage)
    result = unpickler.load()
    keys = plain()
    if not isinstance(keys, list) or set(map(str, keys)) != set(pending):
        raise ValueError(f"{path}: the storage list does not match the tensors of the checkpoint.")
    for key in keys:
        kind, numel, array = pending[str(key)]
        (count,) = struct.unpack("<q", f.read(8))
        raw = f.read(count * kind.dtype.itemsize)
        if len(raw) != count * kind.dtype.itemsize:
            raise ValueError(f"{path}: {TRUNCATED} (its last tensor storage has {len(raw)} of its "
                             f"{count * kind.dtype.itemsize} bytes)")
        if count < numel:
            raise ValueError(f"{path}: storage {key} holds {count} elements, fewer than the {numel} its tensors use.")
        array[:] = np.frombuffer(raw, kind.dtype, count=numel)
    return _materialize(result)


def _is_tar(path: str) -> bool:
    import tarfile

    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


class _PlainUnpickler(pickle.Unpickler):
    """Plain data only (numbers, strings, containers): no global at all."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module, name):
        raise ValueError(f"{self.source}: refusing to load the global {module}.{name} in the checkpoint's header.")
