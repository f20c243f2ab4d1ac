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
import zlib

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
    """Stands in for `torch.FloatStorage` etc.: only its element type matters. Immutable: one file cannot
    change how the next one loads (the unpickler's BUILD is refused on it too)."""

    __slots__ = ("name", "dtype", "bfloat16")

    def __init__(self, name: str):
        dtype = STORAGE_DTYPES[name]
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", np.dtype(np.uint16 if dtype == "bfloat16" else dtype))
        object.__setattr__(self, "bfloat16", dtype == "bfloat16")

    def __setattr__(self, name, value):
        raise AttributeError("a storage type cannot be changed")


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
        if any(n < 0 for n in self.size) or len(self.size) > 32:
            raise ValueError(f"a tensor of size {self.size}: not a shape")
        if any(n == 0 for n in self.size):
            array = np.zeros(self.size, data.dtype)
        else:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if self.offset < 0 or last >= len(data) or min(self.stride, default=0) < 0:
                raise ValueError(f"a tensor of size {self.size} and stride {self.stride} at offset {self.offset} "
                                 f"overruns its storage of {len(data)} elements")
            elements = int(np.prod(self.size, dtype=object))
            if elements > len(data) - self.offset:  # a stride-0 or overlapping view: more values than stored
                raise ValueError(f"a tensor of size {self.size} and stride {self.stride} repeats the values of its "
                                 f"storage of {len(data)} elements ({elements} elements); checkpoints store each "
                                 "value once")
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


MAX_DEPTH = 64  # containers inside containers; a state dict inside a checkpoint is 2 or 3 deep
LEAVES = (str, bytes, int, float, complex, bool, type(None), np.generic)


def _materialize(value, budget: int):
    """The unpickled object with every `_Tensor` replaced by its NumPy array, checked as it goes.

    Only containers (dict, list, tuple), strings, numbers and tensors may be in it, at most `MAX_DEPTH`
    deep. An object that the pickle refers to many times (its memo) is materialised once and shared, so a
    file cannot multiply itself; containers, strings and arrays together may not come to more than
    `budget` bytes (the file's own size, about: every value of a checkpoint is stored in it once).
    """
    done, used = {}, [0]

    def visit(item, depth):
        if depth > MAX_DEPTH:
            raise ValueError(f"containers nested more than {MAX_DEPTH} deep")
        if id(item) in done:
            return done[id(item)][1]
        if isinstance(item, _Tensor):
            result = item.array()
            size = result.nbytes
        elif isinstance(item, dict):
            result = type(item)((visit(key, depth + 1), visit(entry, depth + 1)) for key, entry in item.items())
            size = 64 * len(item)
        elif isinstance(item, (list, tuple)):
            result = type(item)(visit(entry, depth + 1) for entry in item)
            size = 8 * len(item)
        elif isinstance(item, LEAVES):
            result, size = item, len(item) if isinstance(item, (str, bytes)) else 8
        else:
            raise ValueError(f"a {type(item).__name__} object, where a checkpoint holds tensors, containers, "
                             "numbers and strings only")
        used[0] += size
        if used[0] > budget:
            raise ValueError(f"its objects come to more than {budget:,} bytes, more than a file of its size can "
                             "hold; refused")
        done[id(item)] = (item, result)  # the item is kept alive so that its id is not reused
        return result

    return visit(value, 0)


def _budget(path: str) -> int:
    """What the objects of a checkpoint file may come to: its size, twice, and a megabyte for small files."""
    return 2 * os.path.getsize(path) + 2**20


def _rebuild_parameter(data, requires_grad=None, hooks=None, *unused):
    """`torch._utils._rebuild_parameter`: a parameter is its data."""
    return data


def _ordered_dict(*args):
    """`collections.OrderedDict(pairs)`, the pairs' keys checked before anything hashes them (see `_check_keys`)."""
    if len(args) > 1:
        raise pickle.UnpicklingError("an OrderedDict made from more than one argument")
    if not args or isinstance(args[0], dict):  # a dict's keys were checked as it was filled
        return collections.OrderedDict(*args)
    if not isinstance(args[0], (list, tuple)):
        raise pickle.UnpicklingError(f"an OrderedDict made from a {type(args[0]).__name__}")
    pairs = list(args[0])
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise pickle.UnpicklingError("an OrderedDict made from items that are not (key, value) pairs")
    _check_key_types(pair[0] for pair in pairs)
    return collections.OrderedDict(pairs)


def _check_key_types(keys) -> None:
    """Dict keys are names and numbers: a tuple key would be hashed, which walks every element of a tuple that
    holds itself through the memo, 2^40 of them in a few hundred bytes."""
    for key in keys:
        if not isinstance(key, (str, bytes, int, float, bool, type(None))):
            raise pickle.UnpicklingError(f"a dict key that is a {type(key).__name__}; checkpoint keys are names "
                                         "and numbers")


PLAIN_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex: what a number in a checkpoint is


def _plain_dtype(dtype) -> bool:
    """A plain numeric scalar type of at most 16 bytes: no fields, no sub-arrays, no objects, no void."""
    return (isinstance(dtype, np.dtype) and dtype.kind in PLAIN_KINDS and dtype.fields is None
            and dtype.subdtype is None and not dtype.hasobject and dtype.itemsize <= 16)


def _numpy_scalar(dtype, data=None):
    """`numpy.core.multiarray.scalar`: a NumPy scalar from a plain dtype and exactly its bytes."""
    if not _plain_dtype(dtype) or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar that is not a plain number of its dtype's size")
    return np.frombuffer(data, dtype, count=1)[0].copy()


def _numpy_dtype(spec, align=False, copy=False):
    """`numpy.dtype(spec)` for a type code of a plain number (`'f8'`, `'i4'`, ...) only."""
    if not isinstance(spec, str) or len(spec) > 4:  # described by its type: a hostile value's text can be huge
        raise pickle.UnpicklingError(f"a numpy dtype from a {type(spec).__name__}: only plain numeric type codes "
                                     "are allowed")
    try:
        dtype = np.dtype(spec)
    except TypeError:
        raise pickle.UnpicklingError(f"numpy dtype {spec!r}: not a type") from None
    if not _plain_dtype(dtype):
        raise pickle.UnpicklingError(f"numpy dtype {spec!r}: only plain numbers are allowed (no structured, "
                                     "void or object types)")
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


def _refuse(opcode: str):
    def refuse(self):
        raise pickle.UnpicklingError(f"the pickle opcode {opcode}, which a checkpoint does not use")
    return refuse


class _AllowListUnpickler(pickle._Unpickler):
    """Resolves only `ALLOWED_GLOBALS`; persistent ids become `Storage` objects through `load_storage`.

    The opcodes that call or change objects are checked, as PyTorch's `weights_only` loader does: REDUCE
    calls only the functions of `ALLOWED_GLOBALS`; BUILD (setting an object's state) is taken only on an
    `OrderedDict`, whose state torch writes as its `_metadata` (dropped here, nothing reads it), and on a
    plain numeric dtype with little-endian or no byte order (the state is not applied: the type code
    already is the dtype); NEWOBJ, NEWOBJ_EX, INST and OBJ are refused. The pure-Python unpickler is
    used because the C one cannot be hooked per opcode; a checkpoint's pickle is small (tensors are
    references to storages), so this costs milliseconds.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, source: str, load_storage):
        super().__init__(file, encoding="latin1")
        self.source = source
        self.load_storage = load_storage
        self.storages = {}

    def load_reduce(self):
        function = self.stack[-2]
        if not any(function is allowed for allowed in ALLOWED_GLOBALS.values() if callable(allowed)) or \
                isinstance(function, StorageType):
            raise pickle.UnpicklingError(f"a call of {type(function).__name__}, which is not an allowed function")
        pickle._Unpickler.load_reduce(self)

    def load_build(self):
        state = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, collections.OrderedDict):
            if state is not None and not isinstance(state, (dict, tuple)):
                raise pickle.UnpicklingError("an OrderedDict with a state that is not its attributes")
            return
        if _plain_dtype(target) and isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", "|", "="):
            if any(item is not None for item in state[2:5]):  # sub-array, names, fields
                raise pickle.UnpicklingError("a numpy dtype with fields")
            return
        raise pickle.UnpicklingError(f"setting the state of a {type(target).__name__}, which a checkpoint does "
                                     "not do")

    def _check_keys(self, keys):
        _check_key_types(keys)

    def load_setitem(self):
        self._check_keys(self.stack[-2:-1])
        pickle._Unpickler.load_setitem(self)

    def load_setitems(self):
        self._check_keys(self.stack[0::2])  # the pure-Python unpickler's stack holds what follows the MARK
        pickle._Unpickler.load_setitems(self)

    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.BUILD[0]] = load_build
    for _opcode in ("NEWOBJ", "NEWOBJ_EX", "INST", "OBJ", "EMPTY_SET", "ADDITEMS", "FROZENSET"):
        dispatch[getattr(pickle, _opcode)[0]] = _refuse(_opcode)
    del _opcode

    def find_class(self, module, name):
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise ValueError(f"{self.source}: refusing to load the global {module}.{name}: a checkpoint holds tensors "
                             "and containers only, and unpickling anything else could run code.")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], StorageType)):
            raise ValueError(f"{self.source}: unexpected persistent id (a {type(pid).__name__}); not a torch tensor "
                             "storage.")
        if not isinstance(pid[2], (str, int)) or len(str(pid[2])) > 64 or not isinstance(pid[4], int):
            raise ValueError(f"{self.source}: a storage whose key or size is not a short name and a number.")
        kind, key, numel = pid[1], str(pid[2]), pid[4]
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
    except pickle.UnpicklingError as error:
        if str(error) == "pickle data was truncated":  # the pickle module's own words for a cut-off file
            raise ValueError(f"{path}: {TRUNCATED} (the pickle data end before their STOP)") from None
        message = str(error).splitlines()[0][:200] if str(error) else ""
        raise ValueError(f"{path}: not a readable torch checkpoint (UnpicklingError: {message}).") from None
    except RecursionError:
        raise ValueError(f"{path}: not a readable torch checkpoint (objects nested too deep).") from None
    except (zipfile.BadZipFile, zlib.error, KeyError, TypeError, AttributeError,
            IndexError, NotImplementedError, OverflowError, MemoryError, RuntimeError, UnicodeDecodeError) as error:
        message = str(error).splitlines()[0][:200] if str(error) else ""
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {message}).") from None
    except ValueError as error:
        message = str(error)
        raise ValueError(message if message.startswith(path) else f"{path}: {message[:300]}.") from None


def _load_zip(path: str):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path}: a zip file without one data.pkl; not a torch checkpoint.")
        prefix = pickles[0][: -len("data.pkl")]
        budget, inflated = _budget(path), [0]

        def read(name: str) -> bytes:
            """An entry, once its declared size is known to fit what is left of the budget, inflated no further
            than that size."""
            info = archive.getinfo(name)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):  # torch.save stores
                raise ValueError(f"{path}: entry {name} is compressed with method {info.compress_type}; a torch "
                                 "checkpoint's entries are stored (or deflated)")
            inflated[0] += info.file_size
            if inflated[0] > budget:
                raise ValueError(f"{path}: its entries inflate to more than {budget:,} bytes (entry {name} declares "
                                 f"{info.file_size:,} bytes from {info.compress_size:,}); refused")
            # Read as far as the declared size: deflate inflates no further than asked (`archive.read` asks for
            # up to 2 GiB at once), zipfile stops there and checks the CRC, so a stream longer than it says fails.
            with archive.open(info) as entry:
                return entry.read(info.file_size)

        def load_storage(key, kind, numel):
            name = f"{prefix}data/{key}"
            if name not in names:
                raise ValueError(f"{path}: storage {key} is missing from the archive")
            if numel < 0 or numel * kind.dtype.itemsize > archive.getinfo(name).file_size:
                raise ValueError(f"{path}: storage {key} holds {archive.getinfo(name).file_size} bytes, fewer than "
                                 f"{numel} elements")
            return np.frombuffer(read(name), kind.dtype, count=numel)

        byteorder = prefix + "byteorder"
        if byteorder in names and read(byteorder).decode(errors="replace").strip() != "little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported.")
        data = read(pickles[0])
        return _materialize(_AllowListUnpickler(io.BytesIO(data), path, load_storage).load(), budget)


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

    size = os.path.getsize(path)

    def load_storage(key, kind, numel):
        if numel < 0 or numel * kind.dtype.itemsize > size:  # the storages follow in this file
            raise ValueError(f"{path}: storage {key} declares {numel} elements, more than the file's {size:,} bytes "
                             "can hold; refused")
        array = np.zeros(numel, kind.dtype)
        pending[key] = (kind, numel, array)
        return array

    unpickler = _AllowListUnpickler(f, path, load_storage)
    result = unpickler.load()
    keys = plain()
    if not isinstance(keys, list) or len(keys) != len(pending) or not all(
            isinstance(key, (str, int)) and len(str(key)) <= 64 for key in keys) or set(map(str, keys)) != set(pending):
        raise ValueError(f"{path}: the storage list does not match the tensors of the checkpoint.")
    for key in keys:
        kind, numel, array = pending[str(key)]
        (count,) = struct.unpack("<q", f.read(8))
        if not 0 <= count * kind.dtype.itemsize <= size - f.tell():
            raise ValueError(f"{path}: {TRUNCATED} (storage {key} declares {count} elements, more than is left of "
                             "the file)")
        raw = f.read(count * kind.dtype.itemsize)
        if len(raw) != count * kind.dtype.itemsize:
            raise ValueError(f"{path}: {TRUNCATED} (its last tensor storage has {len(raw)} of its "
                             f"{count * kind.dtype.itemsize} bytes)")
        if count < numel:
            raise ValueError(f"{path}: storage {key} holds {count} elements, fewer than the {numel} its tensors use.")
        array[:] = np.frombuffer(raw, kind.dtype, count=numel)
    return _materialize(result, _budget(path))


def _is_tar(path: str) -> bool:
    import tarfile

    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


class _PlainUnpickler(_AllowListUnpickler):
    """Plain data only (numbers, strings, containers): no global at all, and the opcode checks of
    `_AllowListUnpickler` (its memo is a dict: an index of 2^28 is one entry, not an array of that size)."""

    def __init__(self, file, source: str):
        super().__init__(file, source, load_storage=None)

    def find_class(self, module, name):
        raise ValueError(f"{self.source}: refusing to load the global {module}.{name} in the checkpoint's header.")
