"""The official implementations' pretrained generators (the 18 of CycleGAN, the 6 of CUT and FastCUT),
and any .pth file they trained, read without PyTorch.

    python download.py --pretrained horse2zebra     # -> model/horse2zebra_pretrained/, a run folder
    python download.py --pretrained horse2zebra_cut # CUT's, from the official archive of all six
    python convert.py --model_filepath model/horse2zebra_pretrained --img_dir photos/ --output_dir out/
    python convert.py --model_filepath checkpoints/NAME/latest_net_G.pth --img_dir photos/ --output_dir out/

A .pth file is a pickle, and unpickling calls whatever the pickle names: read_state_dict uses an
unpickler that knows only the few names a state_dict of tensors needs and refuses any other, so
loading a file never runs code from it. It reads torch.save's zip format (torch >= 1.6) and the
legacy format of the published 2017-2019 files. resnet_generator maps the official ResnetGenerator's
keys (model.1.weight, model.10.conv_block.1.weight, ...) onto module.resnet_generator, the plain one
of CycleGAN or CUT's antialiased one (its fixed blur and upsampling filters, model.N.filt, checked).
"""
import collections
import hashlib
import os
import pickle
import re
import shutil
import sys
import zipfile

import numpy as np

import files
import utils

# Where the official download_cyclegan_model.sh fetches NAME.pth.
PRETRAINED_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/"

# Each official file is one generator; its run folder translates A2B, A being its input.
PRETRAINED = {
    "apple2orange": "apples to oranges (apple2orange's testA)",
    "orange2apple": "oranges to apples (apple2orange's testB)",
    "summer2winter_yosemite": "Yosemite in summer to winter (summer2winter_yosemite's testA)",
    "winter2summer_yosemite": "Yosemite in winter to summer (summer2winter_yosemite's testB)",
    "horse2zebra": "horses to zebras (horse2zebra's testA)",
    "zebra2horse": "zebras to horses (horse2zebra's testB)",
    "monet2photo": "Monet paintings to photos (monet2photo's testA)",
    "style_monet": "photos to Monet's style (monet2photo's testB)",
    "style_cezanne": "photos to Cezanne's style (cezanne2photo's testB)",
    "style_ukiyoe": "photos to ukiyo-e style (ukiyoe2photo's testB)",
    "style_vangogh": "photos to Van Gogh's style (vangogh2photo's testB)",
    "sat2map": "aerial photos to maps (maps' testA)",
    "map2sat": "maps to aerial photos (maps' testB)",
    "cityscapes_photo2label": "street photos to Cityscapes label colours",
    "cityscapes_label2photo": "Cityscapes label colours to street photos",
    "facades_photo2label": "building facade photos to facade label colours",
    "facades_label2photo": "facade label colours to building facade photos",
    "iphone2dslr_flower": "iPhone flower photos to DSLR-like shallow depth of field (iphone2dslr_flower's testA)",
}

# The official CUT's six generators, all in one archive (its README's pretrained_models.tar), each at
# NAME_pretrained/latest_net_G.pth inside it; the Cityscapes ones were trained --direction BtoA.
CUT_PRETRAINED_URL = "http://efrosgans.eecs.berkeley.edu/CUT/"
CUT_ARCHIVE = "pretrained_models.tar"
CUT_PRETRAINED = {
    "horse2zebra_cut": "CUT: horses to zebras (horse2zebra's testA)",
    "horse2zebra_fastcut": "FastCUT: horses to zebras (horse2zebra's testA)",
    "cat2dog_cut": "CUT: cats to dogs (AFHQ cat2dog's testA)",
    "cat2dog_fastcut": "FastCUT: cats to dogs (AFHQ cat2dog's testA)",
    "cityscapes_cut": "CUT: Cityscapes label colours to street photos (trained BtoA)",
    "cityscapes_fastcut": "FastCUT: Cityscapes label colours to street photos (trained BtoA)",
}
# Every name download.py --pretrained takes.
ALL_PRETRAINED = {**PRETRAINED, **CUT_PRETRAINED}

# torch.save's first pickle in the legacy format.
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c

# The storage classes a state_dict names, as the numpy type of their elements. bfloat16 has no
# numpy type: its 16 bits are the high half of a float32.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": "bfloat16", "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


# What convert.py --model_filepath takes as a PyTorch state_dict file.
PTH_EXTENSIONS = (".pth", ".pt")


def official_name(name):
    """The pretrained model `name` names (ALL_PRETRAINED), spelled as listed or with the official
    "_pretrained" suffix (horse2zebra_cut_pretrained, the folder name in the official archives); else None."""
    for spelled in (name, name.removesuffix("_pretrained")):
        if spelled in ALL_PRETRAINED:
            return spelled
    return None


def is_pth(path):
    return os.path.splitext(path)[1].lower() in PTH_EXTENSIONS


class PthError(utils.UserError):
    """A .pth file that cannot be read or is not what was expected; str() is the one-line reason."""


# ---------------------------------------------------------------------------- reading .pth files

class _Storage:
    """A storage the pickle refers to; its elements are read from the file afterwards."""

    def __init__(self, dtype):
        self.dtype, self.array = dtype, None


class _Tensor:
    """A tensor as torch._utils._rebuild_tensor_v2 describes it: a strided view of a storage."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    # _rebuild_tensor_v2 adds requires_grad, backward hooks and metadata, which weights don't need.
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the globals a state_dict of tensors holds; any other name (os.system,
    builtins.eval, a class of the pickler's choosing) is refused before it can be called."""

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        **{("torch", name): dtype for name, dtype in STORAGE_DTYPES.items()},
    }

    def __init__(self, file, path):
        super().__init__(file)
        self.path, self.storages = path, {}

    def find_class(self, module, name):
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise PthError(f"{self.path}: refused: the file asks to run {module}.{name}, which a PyTorch "
                           f"state_dict never needs (a .pth file can run code when it is unpickled)") from None

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel[, view metadata in the legacy format])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and any(pid[1] is t for t in STORAGE_DTYPES.values()) and isinstance(pid[2], str)):
            raise PthError(f"{self.path}: not a PyTorch state_dict (unknown persistent reference)")
        if len(pid) > 5 and pid[5] is not None:
            raise PthError(f"{self.path}: holds storage views, which no state_dict of weights has")
        return self.storages.setdefault(pid[2], _Storage(pid[1]))


def _unpickle(file, path):
    u = _StateDictUnpickler(file, path)
    try:
        return u.load(), u.storages
    except PthError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt pickle raises anything from EOFError to TypeError
        raise PthError(f"{path}: not a readable PyTorch file ({utils.first_line(e, 120)})") from None


def _elements(raw, dtype, path):
    if dtype == "bfloat16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    if len(raw) % dtype.itemsize:
        raise PthError(f"{path}: a storage's size is not a whole number of elements (corrupt file)")
    return np.frombuffer(raw, dtype)


def _read_zip(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise PthError(f"{path}: a zip, but not one torch.save wrote (no data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        if prefix + "byteorder" in names and z.read(prefix + "byteorder").strip() != b"little":
            raise PthError(f"{path}: written on a big-endian machine, which is not supported")
        with z.open(pickles[0]) as f:
            obj, storages = _unpickle(f, path)
        for key, storage in storages.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise PthError(f"{path}: storage {key} is missing (truncated or corrupt file)")
            storage.array = _elements(z.read(member), storage.dtype, path)
    return obj


def _read_legacy(path):
    with open(path, "rb") as f:
        magic, _ = _unpickle(f, path)  # restricted too: any pickle in the file may be hostile
        if magic != LEGACY_MAGIC:
            raise PthError(f"{path}: not a PyTorch checkpoint (neither torch.save's zip nor its legacy format)")
        # The protocol version and the writer's system information: plain values, read safely.
        _unpickle(f, path)
        _unpickle(f, path)
        obj, storages = _unpickle(f, path)
        keys, _ = _unpickle(f, path)
        if not isinstance(keys, list) or set(keys) != set(storages):
            raise PthError(f"{path}: the storage list does not match the tensors (corrupt file)")
        file_size = os.fstat(f.fileno()).st_size
        for key in keys:
            header = f.read(8)
            size = 2 if storages[key].dtype == "bfloat16" else storages[key].dtype.itemsize
            nbytes = int.from_bytes(header, "little") * size if len(header) == 8 else -1
            if not 0 <= nbytes <= file_size - f.tell():
                raise PthError(f"{path}: ends before its last tensor (truncated download?)")
            raw = f.read(nbytes)
            storages[key].array = _elements(raw, storages[key].dtype, path)
    return obj


def _materialize(t, path, key):
    """The tensor's elements, after checking that its view stays inside its storage (a hostile or
    corrupt file could otherwise read past it, or ask for a view far larger than the file)."""
    array = t.storage.array
    if not all(isinstance(n, int) and n >= 0 for n in (t.offset, *t.size, *t.stride)):
        raise PthError(f"{path}: tensor {key} has an invalid size, stride or offset (corrupt file)")
    count = int(np.prod(t.size, dtype=np.int64)) if t.size else 1
    if count:
        end = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride)) + 1
        if end > len(array) or count > len(array):
            raise PthError(f"{path}: tensor {key} reaches past its storage (corrupt file)")
    strides = [s * array.itemsize for s in t.stride]
    return np.lib.stride_tricks.as_strided(array[t.offset:], t.size, strides).copy()


def read_state_dict(path):
    """The tensors of a PyTorch state_dict file (.pth, .pt), zip or legacy format, as
    {name: numpy array}, without PyTorch and without running any code from the file.
    Raises PthError with a one-line reason (refused global, corrupt, not a state_dict)."""
    if not os.path.isfile(path):
        raise PthError(f"{path}: no such file")
    try:
        obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise PthError(f"{path}: cannot be read ({utils.first_line(e, 120)})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, _Tensor) for v in obj.values()):
        raise PthError(f"{path}: not a state_dict (a dictionary of tensors)")
    return {k: _materialize(v, path, k) for k, v in obj.items()}


# ---------------------------------------------------------------------------- the ResNet generator

# The fixed filters of the official CUT's Downsample and Upsample buffers ("filt", one per channel).
BLUR_FILTERS = {"_blur": np.outer([1, 2, 1], [1, 2, 1]) / 16.0, "_up": np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 16.0}


def _expected_modules(names, ngf, channels, second):
    """What an official ResnetGenerator whose modules are `names` (module.official_modules) holds:
    ({PyTorch module: (Keras layer, PyTorch weight shape)}, {blur buffer key: (shape, filter)}).
    second: the index of a residual block's second convolution (6 with dropout, else 5)."""
    expected, buffers = {}, {}
    for index, name in enumerate(names):
        stage = name.rsplit("_", 1)[0]
        k = int(stage[1:]) if stage[0] in "du" else None   # dk, uk: k filters
        if name.endswith("_add"):
            for n, j in ((1, 1), (2, second)):
                expected[f"model.{index}.conv_block.{j}"] = (f"{stage}_conv{n}", (4 * ngf, 4 * ngf, 3, 3))
        elif name == f"c7s1-{ngf}_conv":
            expected[f"model.{index}"] = (name, (ngf, channels, 7, 7))
        elif name == f"c7s1-{channels}-out_conv":
            expected[f"model.{index}"] = (name, (channels, ngf, 7, 7))
        elif name.endswith("_conv"):   # dk, or uk after CUT's Upsample: Conv2d (out, in, 3, 3)
            expected[f"model.{index}"] = (name, (k, k // 2 if stage[0] == "d" else 2 * k, 3, 3))
        elif name.endswith("_crop"):   # uk: ConvTranspose2d (in, out, 3, 3)
            expected[f"model.{index}"] = (f"{stage}_convT", (2 * k, k, 3, 3))
        elif name.endswith(tuple(BLUR_FILTERS)):
            filt = BLUR_FILTERS["_" + name.rsplit("_", 1)[1]]
            buffers[f"model.{index}.filt"] = ((2 * k if stage[0] == "u" else k, 1, *filt.shape), filt)
    return expected, buffers


def resnet_layout(state, path):
    """Checks that `state` is the official ResnetGenerator (any ngf and number of blocks, instance
    norm, with or without dropout; CycleGAN's, or CUT's with its antialiased down- and upsampling,
    found by their fixed "filt" buffers) and returns (architecture, weights): architecture
    {"ngf", "n_blocks", "channels", "dropout", "antialias", "antialias_up"}, weights {module.resnet_generator
    layer name: [kernel, bias]} with kernels in Keras' layout. The module indices are those
    module.official_modules counts. InstanceNorm's stale running_mean/running_var keys, which old
    files carry and the official loader drops too, are ignored. Raises PthError naming what does
    not match."""
    import module  # here: download.py lists and fetches without loading TensorFlow
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()
             if not k.endswith((".running_mean", ".running_var", ".num_batches_tracked"))}
    first = state.get("model.1.weight")
    if first is None or first.ndim != 4 or first.shape[2:] != (7, 7):
        found = ", ".join(sorted(state)[:3]) or "no tensors"
        raise PthError(f"{path}: not the official ResnetGenerator (no 7x7 model.1.weight; found {found}, ...): "
                       f"U-Net generators and discriminators cannot be imported")
    ngf, channels = (int(n) for n in first.shape[:2])
    antialias = "model.7.filt" in state    # CUT's Downsample after the first stride-1 convolution
    start = 12 if antialias else 10        # the first residual block
    n_blocks = 0
    while f"model.{start + n_blocks}.conv_block.1.weight" in state:
        n_blocks += 1
    antialias_up = f"model.{start + n_blocks}.filt" in state
    # With dropout (the official default outside CycleGAN) a Dropout sits before the second pad.
    second = 6 if f"model.{start}.conv_block.6.weight" in state else 5
    names = module.official_modules(ngf, n_blocks, channels, "instance", antialias, antialias_up)
    expected, buffers = _expected_modules(names, ngf, channels, second)
    keys = {f"{m}.{p}" for m in expected for p in ("weight", "bias")} | set(buffers)
    missing = sorted(keys - set(state), key=_natural)
    extra = sorted(set(state) - keys, key=_natural)
    kind = "CUT's antialiased ResnetGenerator" if antialias or antialias_up else "the official ResnetGenerator"
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise PthError(f"{path}: not {kind} with ngf {ngf} and {n_blocks} blocks ({what}"
                       f"{f' and {len(missing) + len(extra) - 1} more differences' if len(missing) + len(extra) > 1 else ''})")
    for key, (shape, filt) in buffers.items():
        if state[key].shape != shape or not np.allclose(state[key], filt[None, None], atol=1e-6):
            raise PthError(f"{path}: {key} is not the official fixed {filt.shape[0]}x{filt.shape[1]} filter "
                           f"of {shape[0]} channels")
    weights = {}
    for m, (layer, shape) in expected.items():
        w, b = state[f"{m}.weight"], state[f"{m}.bias"]
        out = shape[1] if layer.endswith("_convT") else shape[0]
        if w.shape != shape or b.shape != (out,):
            raise PthError(f"{path}: {m}.weight has shape {tuple(w.shape)}, expected {shape} for ngf {ngf}")
        # PyTorch's Conv2d is (out, in, h, w) and ConvTranspose2d (in, out, h, w); Keras' Conv2D is
        # (h, w, in, out) and Conv2DTranspose (h, w, out, in): one permutation serves both. Neither
        # framework flips a transposed convolution's kernel (both compute the adjoint of correlation).
        weights[layer] = [np.transpose(w, (2, 3, 1, 0)).astype(np.float32), b.astype(np.float32)]
    return {"ngf": ngf, "n_blocks": n_blocks, "channels": channels, "dropout": second == 6, "antialias": antialias,
            "antialias_up": antialias_up}, weights


def _natural(key):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def resnet_generator(path, name="G_A2B"):
    """A module.resnet_generator holding the weights of an official ResnetGenerator .pth file
    (CycleGAN's or CUT's). Returns (G, architecture) (see resnet_layout). Raises PthError."""
    import module  # here, not at the top: download.py lists and fetches without loading TensorFlow
    a, weights = resnet_layout(read_state_dict(path), path)
    if a["channels"] != 3:
        raise PthError(f"{path}: a generator of {a['channels']}-channel images; only RGB is supported")
    G = module.resnet_generator(a["ngf"], a["n_blocks"], a["channels"], dropout=a["dropout"], name=name,
                                antialias=a["antialias"], antialias_up=a["antialias_up"])
    for layer, values in weights.items():
        G.get_layer(layer).set_weights(values)
    return G, a


def run_settings(a):
    """(method name, its architecture for config.json) of a generator resnet_layout read: a CUT
    run's for an antialiased one (what the official CUT trains), else a CycleGAN run's."""
    architecture = {"netG": "resnet", "ngf": a["ngf"], "n_blocks": a["n_blocks"], "input_nc": a["channels"],
                    "output_nc": a["channels"], "norm": "instance", "dropout": a["dropout"]}
    if a["antialias"] or a["antialias_up"]:
        return "cut", dict(architecture, no_antialias=not a["antialias"], no_antialias_up=not a["antialias_up"])
    return "cycle_gan", architecture


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_run(pth_path, run_dir, source=None):
    """Imports a ResnetGenerator .pth file (CycleGAN's or CUT's) as a run folder that convert.py and
    the exports take like a trained one: config.json (the method, the architecture, the one
    direction A2B, the file's origin and SHA-256) and a checkpoint holding the generator under
    the method's key. Written beside run_dir and renamed into place."""
    utils.start_tensorflow()  # only here does download.py need TensorFlow: loaded without its start-up noise
    import tensorflow as tf

    import model
    import options
    import runs
    G, a = resnet_generator(pth_path)
    method, architecture = run_settings(a)
    parent = os.path.dirname(os.path.abspath(run_dir))
    tmp = files.make_temp_dir(parent, f".{os.path.basename(os.path.abspath(run_dir))}.tmp-")
    try:
        files.save_json(os.path.join(tmp, runs.CONFIG_FILE), {
            "model": method, "architecture": architecture, "directions": ["A2B"],
            "pretrained": {"source": source or os.path.abspath(pth_path), "sha256": sha256(pth_path)}})
        key = model.METHODS[method].GENERATOR_KEYS["A2B"]
        tf.train.Checkpoint(**{key: G}).save(os.path.join(tmp, options.CHECKPOINT_NAME))
        files.swap_into_place(tmp, run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    kind = "CUT's antialiased ResnetGenerator" if method == "cut" else "ResnetGenerator"
    print(f"imported {pth_path}: {kind}, ngf {a['ngf']}, {a['n_blocks']} blocks -> {run_dir}", file=sys.stderr)
    return a
