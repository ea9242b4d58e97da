"""The toolkit from Python: translate with a trained or pretrained model, train, export.

    import sys; sys.path.insert(0, "/path/to/this/checkout")
    import unpaired

    model = unpaired.load("horse2zebra_pretrained")      # a run folder, a checkpoint, an export, a .pth, a pretrained name
    zebra = model.translate(unpaired.read_image("horse.jpg"))   # uint8 RGB (H, W, 3) in, the same size out
    run = unpaired.train(dataset="horse2zebra", n_epochs=100)   # train.py's options, as keywords
    unpaired.export(run, "exported/horse2zebra", format="onnx")

Each call takes the options of the command it stands for (train.py, convert.py; docs/OPTIONS.md),
with the same defaults, and raises unpaired.Error with the one line the command would print.
The examples in the docstrings run as written (tests/test_api.py) in a folder holding the
`sample` set (`python download.py --datasets sample`).

The toolkit's own modules (utils, model, module, ...) load under those names: import unpaired
before any module of yours with one of those names, or the import stops and names the clash.
"""
import importlib
import os
import sys

import numpy as np

_ROOT = os.path.dirname(os.path.abspath(__file__))
# The checkout's modules: names that must be this toolkit's wherever they are imported from.
_OURS = sorted({os.path.splitext(n)[0] for n in os.listdir(_ROOT) if n.endswith(".py")} | {"kernels"})


def _check_no_clash():
    for name in _OURS:
        found = sys.modules.get(name)
        where = getattr(found, "__file__", None)
        if found is not None and (where is None or not os.path.abspath(where).startswith(_ROOT + os.sep)):
            raise ImportError(f"a module named {name} ({where or 'built in'}) is already imported: this toolkit's "
                              f"{name} cannot load beside it; import unpaired first, or rename yours")


_check_no_clash()
_user_path = list(sys.path)
sys.path.insert(0, _ROOT)   # ours first while they load (a utils.py in the user's folder is not ours)
try:
    import utils  # noqa: E402  (first: TensorFlow's start-up noise kept quiet)

    utils.start_tensorflow()

    import convert  # noqa: E402
    import devices  # noqa: E402
    import download  # noqa: E402
    import export as _export  # noqa: E402
    import image_io  # noqa: E402
    import options  # noqa: E402
    import pretrained  # noqa: E402
    import train as _train  # noqa: E402
    for _name in ("model", "module", "runs", "kernels"):   # those the others import inside functions
        try:
            importlib.import_module(_name)
        except ModuleNotFoundError as e:   # (a copy without kernels/, the CPU rewrites)
            if e.name != "kernels":
                raise
finally:
    sys.path[:] = _user_path
_check_no_clash()

Error = utils.UserError
read_image = image_io.read_image     # path -> uint8 RGB (H, W, 3) (uint16 for 16-bit files)
write_image = image_io.write_image   # (path, image): PNG, JPEG, ... by the name's extension


class Model:
    """One direction of a loaded model (see load): translate arrays, or files."""

    def __init__(self, translator, direction, source):
        self._translator, self.direction, self.source = translator, direction, source
        self.channels = translator.channels

    def translate(self, image):
        """uint8 (or uint16) image (H, W, channels), or a batch (N, H, W, channels) of one size ->
        its translation, the same shape and dtype."""
        if image.ndim == 3:
            return np.asarray(self._translator.translate_image(image))
        return np.asarray(self._translator.translate(image))

    def translate_file(self, path, out_path):
        """Translates the still image at `path` into `out_path` (its format by its extension); returns out_path."""
        write_image(out_path, self.translate(read_image(path, self.channels)))
        return out_path

    def __repr__(self):
        return f"Model({self.source!r}, direction={self.direction!r})"


def load(source, direction="A2B", model_dir="model", cpu_kernels=None):
    """The model `source` names, translating `direction` ("A2B" or "B2A"; "AtoB", "BtoA" too):
    a run folder or checkpoint of train.py, an export of convert.py --export_dir (SavedModel
    folder, .tflite, .onnx), an official generator .pth file, or the name of an official pretrained
    model (`python download.py --list`), fetched into MODEL_DIR/NAME_pretrained the first time. Images keep
    their size. cpu_kernels: as convert.py's --cpu_kernels (None: $CYCLEGAN_CPU_KERNELS, else auto).

    >>> model = load("model/demo")                          # trained by the example of train()
    >>> horse = read_image("data/sample/testA/0000.png")
    >>> zebra = model.translate(horse)
    >>> zebra.shape == horse.shape, zebra.dtype.name
    (True, 'uint8')
    >>> model.translate_file("data/sample/testA/0001.png", "converted/0001.png")
    'converted/0001.png'
    >>> load("model/demo", direction="BtoA")
    Model('model/demo', direction='B2A')
    """
    direction = options.direction_spelled(options.DIRECTIONS)(direction)
    if direction not in options.DIRECTIONS:
        raise Error(f"direction {direction!r}: use A2B or B2A")
    name = pretrained.official_name(source)
    if name and not os.path.exists(source):   # the run folder download.py --pretrained makes
        folder = os.path.join(model_dir, f"{name}_pretrained")
        if not os.path.isdir(folder) and download.main(["--pretrained", name, "--model_dir", model_dir]) != 0:
            raise Error(f"{source}: the download failed (the reason is above)")
        source = folder
    devices.setup(cpu_kernels)
    translators, _ = _export.load_translators(source, [direction])
    return Model(translators[direction], direction, source)


def _argv(values):
    """Command-line flags from keyword options: True -> the bare flag, False/None -> left out, a list
    -> its items, anything else -> its text."""
    argv = []
    for name, value in values.items():
        if value is None or value is False:
            continue
        argv.append(f"--{name}")
        if value is not True:
            argv += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return argv


def _run(command, argv):
    """Runs a command's job in this process: its exit status, or Error for what it refuses."""
    args = command.build_parser().parse_args(argv)
    job = _train.train if command is _train else convert.convert
    status = job(args)
    if status == utils.EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if status not in (utils.EXIT_OK, None):
        raise Error(f"{command.__name__}.py stopped with exit status {status} (the reason is above)")
    return args


def train(**options_given):
    """Trains (or resumes) a run with train.py's options as keywords (`dataset="horse2zebra"`,
    `model="cut"`, `n_epochs=5`; a flag without a value as True); returns the run folder.
    Interrupted (Ctrl-C), it saves the step and raises KeyboardInterrupt; calling it again resumes.

    >>> train(img_A_dir="data/sample/trainA", img_B_dir="data/sample/trainB", model_dir="model/demo",
    ...       load_size=36, crop_size=32, ngf=8, ndf=8, n_blocks=2, n_epochs=1, n_epochs_decay=0,
    ...       max_dataset_size=6, validation_A_dir="data/sample/testA")
    'model/demo'
    """
    return _run(_train, _argv(options_given)).model_dir


def export(source, export_dir, format="savedmodel", quantize="none", overwrite=False):
    """Writes the generators of `source` (a run folder or checkpoint, or a .pth file) to export_dir
    for deployment: format "savedmodel" (one folder, a signature per direction), "tflite" or "onnx"
    (a file per direction); quantize "float16" halves a TFLite file. Returns the paths written.

    >>> export("model/demo", "exported/demo", format="onnx")
    ['exported/demo/A2B.onnx', 'exported/demo/B2A.onnx']
    >>> horse = read_image("data/sample/testA/0000.png")
    >>> load("exported/demo/A2B.onnx").translate(horse).shape == horse.shape
    True
    """
    _run(convert, _argv({"model_filepath": source, "export_dir": export_dir, "export_format": format,
                         "quantize": quantize, "overwrite": overwrite}))
    if format == "savedmodel":
        return [export_dir]
    return sorted(os.path.join(export_dir, name).replace(os.sep, "/") for name in os.listdir(export_dir)
                  if name.endswith(f".{format}"))
