"""Exports the generators for deployment (SavedModel, TFLite, ONNX); translators over exported files.

    export.write(generators, "export/h2z")                               # saved_model.pb, variables/
    export.write(generators, "export/h2z", "tflite", quantize="float16")  # A2B.tflite, B2A.tflite
    export.write(generators, "export/h2z", "onnx")                        # A2B.onnx, B2A.onnx
    translators, _ = export.load_translators("export/h2z/A2B.onnx", ["A2B"])   # or a run folder

Every format holds the graph convert.py runs (translator.Translator.translate): uint8 RGB images
(N, H, W, 3) of any size in, reflect-padded to multiples of 4 inside the graph, the generator,
cropped back, uint8 of the same size out. It is traced with Keras' own convolution whatever the
machine (layers.plain(); TFLite and ONNX also with instance norm as plain ops, layers.plain(portable=True)),
so nothing CPU-specific or XLA-compiled is in the files.
"""
import os
import shutil
import sys
import warnings

import numpy as np
import tensorflow as tf

import cyclegan
import options
import files
import layers
import model
import pretrained
import runs
import translator
import utils

ONNX_OPSET = 17


def _translation(G, output_key="images"):
    """The translation graph of G as a tf.function of uint8 images of any batch and size, returning
    {output_key: images} (or the images alone if output_key is None)."""
    t = translator.Translator(G)
    spec = translator.image_spec(t.channels)
    if output_key is None:
        return tf.function(t.translate, input_signature=[spec])
    return tf.function(lambda images: {output_key: t.translate(images)}, input_signature=[spec])


def write(generators, export_dir, export_format="savedmodel", quantize="none"):
    """Writes generators ({"A2B": G, "B2A": G}) to export_dir in one of options.EXPORT_FORMATS, into a folder
    beside it renamed into place (an existing export_dir is replaced only once the new one is
    complete). quantize "float16" halves TFLite's weights."""
    parent = os.path.dirname(os.path.abspath(export_dir))
    tmp = files.make_temp_dir(parent, f".{os.path.basename(os.path.abspath(export_dir))}.tmp-")
    try:
        if export_format == "savedmodel":
            _savedmodel(generators, tmp)
        else:
            for direction, G in generators.items():
                path = os.path.join(tmp, f"{direction}.{export_format}")
                if export_format == "tflite":
                    _tflite(G, path, quantize)
                else:
                    _onnx(G, path)
        files.swap_into_place(tmp, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _savedmodel(generators, folder):
    root = tf.Module()
    signatures = {}
    with layers.plain():
        for direction, G in generators.items():
            setattr(root, f"G_{direction}", G)
            signatures[direction] = _translation(G)
            setattr(root, direction, signatures[direction])
        tf.saved_model.save(root, folder, signatures=signatures)


def _frozen(G):
    """G's translation as a concrete function with the weights as constants (portable ops)."""
    # TFLite's converter leaves Keras 3 variables as resource variables it never initialises;
    # freezing them first is what the converters themselves do for a graph (tf2onnx too).
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    with layers.plain(portable=True):
        return convert_variables_to_constants_v2(_translation(G).get_concrete_function())


def _tflite(G, path, quantize):
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen(G)], G)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    data = converter.convert()
    with open(path, "wb") as f:
        f.write(data)


def _onnx(G, path):
    try:
        import tf2onnx
    except ImportError:
        raise utils.UserError("--export_format onnx needs tf2onnx (pip install -r requirements.txt)") from None
    with layers.plain(portable=True):
        # One output, not a dict: tf2onnx cannot name an output as its input ("images").
        tf2onnx.convert.from_function(_translation(G, None), input_signature=[translator.image_spec(G.input_shape[-1])],
                                      opset=ONNX_OPSET, output_path=path)


# ---------------------------------------------------------------------------- running exports

class ExportedTranslator:
    """The translator.Translator interface over an exported file: translate(images) is the subclass's;
    one image goes whole (exports do not tile)."""

    def translate_image(self, rgb, tile_size=None):
        return self.translate(rgb[None])[0]


class SavedModelTranslator(ExportedTranslator):
    """Translates by an exported SavedModel's signature."""

    def __init__(self, loaded, direction):
        self.signature = loaded.signatures[direction]
        self.channels = self.signature.structured_input_signature[1]["images"].shape[-1]

    def translate(self, images):
        return np.asarray(self.signature(images=tf.convert_to_tensor(images, tf.uint8))["images"])


class TFLiteTranslator(ExportedTranslator):
    """Translates by an exported .tflite file (input resized per image size)."""

    def __init__(self, path):
        with warnings.catch_warnings():  # its notice that LiteRT's interpreter will replace it
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = tf.lite.Interpreter(model_path=path)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.channels = int(self.interpreter.get_input_details()[0]["shape"][-1])
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.shape = None

    def translate(self, images):
        images = np.asarray(images, np.uint8)
        if images.shape != self.shape:
            self.interpreter.resize_tensor_input(self.input, images.shape)
            self.interpreter.allocate_tensors()
            self.shape = images.shape
        self.interpreter.set_tensor(self.input, images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)


class OnnxTranslator(ExportedTranslator):
    """Translates by an exported .onnx file, run by onnxruntime on the CPU."""

    def __init__(self, path):
        try:
            import onnxruntime
        except ImportError:
            raise utils.UserError(f"{path}: running an ONNX model needs onnxruntime "
                                  f"(pip install -r requirements.txt)") from None
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.channels = self.session.get_inputs()[0].shape[-1]

    def translate(self, images):
        return self.session.run(None, {self.input: np.asarray(images, np.uint8)})[0]


def load_translators(model_filepath, directions, jit_compile=False, running_statistics=False):
    """Translators for `directions` from whatever a user points at: an export (see
    exported_translators), a PyTorch ResnetGenerator .pth file (one generator, serving the one
    direction asked), or a run folder or checkpoint (runs.load_run_generators). Returns
    (translators, generators), generators None for an export. running_statistics: batch norms use
    their running statistics (convert.py --eval; see layers.BatchNorm). Raises utils.UserError."""
    translators = exported_translators(model_filepath, directions)
    if translators is not None:
        if running_statistics:
            raise utils.UserError(f"{model_filepath}: an export computes as it was exported; --eval applies "
                                  f"to a run folder (and to what it exports)")
        return translators, None
    if pretrained.is_pth(model_filepath):
        _one_generator(model_filepath, directions)
        G, _ = pretrained.resnet_generator(model_filepath, name=cyclegan.GENERATOR_KEYS[directions[0]])
        print(f"model: {model_filepath}", file=sys.stderr)
        generators = {directions[0]: G}
    else:
        generators = runs.load_run_generators(model_filepath, directions)
    for G in generators.values():
        layers.use_running_statistics(G, running_statistics)
    return {d: translator.Translator(G, jit_compile) for d, G in generators.items()}, generators


def directions_held(model_filepath, asked):
    """The directions a model translates: those of its run's config.json (both, or the one of an
    imported pretrained model), a SavedModel's signatures, or [asked] for a file holding one generator
    (.pth, .tflite, .onnx)."""
    if pretrained.is_pth(model_filepath) or os.path.splitext(model_filepath)[1].lower() in (".tflite", ".onnx"):
        return [asked]
    if is_export(model_filepath):  # a SavedModel folder: its signatures
        try:
            signatures = tf.saved_model.load(model_filepath).signatures
        except Exception as e:  # noqa: BLE001 - TF raises many types for a broken SavedModel
            raise utils.UserError(f"{model_filepath}: cannot load the SavedModel ({utils.first_line(e)})") from None
        return [d for d in options.DIRECTIONS if d in signatures]
    config = runs.run_config(model_filepath)[1]
    return list(config.get("directions", model.method_of(config).DIRECTIONS))


def _one_generator(path, directions):
    if len(directions) > 1:
        raise utils.UserError(f"{path}: holds one generator; --save_cycle needs both (use a run folder "
                              f"or a SavedModel)")


def is_export(path):
    """Whether path is something write() made: a SavedModel folder, or a .tflite or .onnx file."""
    return os.path.splitext(path)[1].lower() in (".tflite", ".onnx") or os.path.isfile(os.path.join(path, "saved_model.pb"))


def exported_translators(path, directions):
    """Translators for `directions` from an export: a SavedModel folder (one per signature), or a
    .tflite or .onnx file (which holds one generator: it serves the one direction asked for).
    Returns None if path is not an export. Raises utils.UserError with a one-line reason."""
    ext = os.path.splitext(path)[1].lower()
    if ext in (".tflite", ".onnx"):
        _one_generator(path, directions)
        if not os.path.isfile(path):
            raise utils.UserError(f"{path}: no such file")
        try:
            exported = TFLiteTranslator(path) if ext == ".tflite" else OnnxTranslator(path)
        except utils.UserError:
            raise
        except Exception as e:  # noqa: BLE001 - each runtime raises its own types for a bad file
            raise utils.UserError(f"{path}: cannot load the {ext[1:]} model ({utils.first_line(e)})") from None
        return {directions[0]: exported}
    if not is_export(path):
        return None
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 - TF raises many types for a broken SavedModel
        raise utils.UserError(f"{path}: cannot load the SavedModel ({utils.first_line(e)})") from None
    missing = [d for d in directions if d not in loaded.signatures]
    if missing:
        raise utils.UserError(f"{path}: SavedModel has no signature {', '.join(missing)}")
    return {d: SavedModelTranslator(loaded, d) for d in directions}
