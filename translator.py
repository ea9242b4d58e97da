"""Translating images with one generator, at their own size: padding to what the generator takes,
batches, the graphs per batch and image size, and large images in tiles in bounded memory.

    t = Translator(G)
    fakes = t.translate(batch)            # uint8 (N, H, W, 3) -> uint8 (N, H, W, 3)
    fake = t.translate_image(rgb, 1024)   # one image, tiled if larger than 1024 x 1024
"""
import contextlib
import itertools

import numpy as np
import tensorflow as tf

import image_io
import layers
import module


def image_spec(channels, batch=None, dtype=tf.uint8, height=None, width=None):
    """Batches of images with `channels` channels, of any height and width unless given (the
    exports': uint8, any size)."""
    return tf.TensorSpec([batch, height, width, channels], dtype, name="images")


# Side of the windows large images are convolved in. TensorFlow's CPU convolutions take scratch
# memory in proportion to the input area, so small windows bound the memory (docs/CONVERT.md, "Large
# images"); larger ones do not run faster.
WINDOW = 256
# Where the installed CPU rewrites ask for sized graphs (kernels' "auto" mode), how many image sizes
# met a second time a Translator traces graphs for at their own size (each costs a trace, and a
# timing of its new convolution and norm shapes once per machine); others share the graph for any size.
SIZED_GRAPHS = 4
TRANSLATION_ROUNDS = 25  # timed rounds of the translation check, at most (see Translator._graph)


class Translator:
    """Translates images at their own size with one generator.

        t = Translator(gan.G_A2B)
        fakes = t.translate(batch)            # uint8 (N, H, W, 3) -> uint8 (N, H, W, 3)
        fake = t.translate_image(rgb, 1024)   # one image, tiled if larger than 1024 x 1024

    Images have the generator's input channels (t.channels: 3, or 1 with --input_nc/--output_nc 1)
    and leave with its output channels, in the input's depth: uint8, or uint16 (16-bit scans).

    `translate` is one graph: reflect-pad to multiples of 4 (at least 8; 2^num_downs for a U-Net), G,
    crop, round.
    The exports hold that same graph, traced without the CPU rewrites (export.py). The graph
    is traced once per batch size, for any height and width, except that where the installed
    rewrites ask for sized graphs (kernels' "auto" mode) the first SIZED_GRAPHS image sizes met a second time get graphs of their own, so that
    each convolution and norm is computed the way timed fastest at its real size (on small
    images the ways timed at a typical size can be much slower); a size met once (a folder of
    photos of all sizes) is not worth a trace. With the batch size known, instance norm
    takes its batch layout, and with the CPU rewrites the two halves of a batch run side by side; a batch
    of unknown size (as in the export) gets the general graph.
    """

    def __init__(self, G, jit_compile=False):
        self.G = G
        self.jit_compile = jit_compile
        self.multiple = module.size_multiple(G)  # 4 for the ResNet, 2^num_downs for a U-Net
        self.channels = G.input_shape[-1]
        self._graphs = {}  # (batch size, height, width (each None: any), dtype) -> tf.function of _translate
        self._met = {}     # (batch size, height, width, dtype) -> batches met before it had a graph
        self._runs = {}  # tf.functions of the layer runs, for tiled translation

    def translate(self, images):
        """uint8 or uint16 images (N, H, W, channels) -> their translations, (N, H, W, output channels)
        of the same dtype."""
        n, h, w = images.shape[:3]
        dtype = tf.as_dtype(images.dtype)
        key = n, h, w, dtype
        if key not in self._graphs:
            self._met[key] = self._met.get(key, 0) + 1
            rewrites = layers.rewrites()
            if not (self._met[key] > 1 and rewrites is not None and rewrites.sized_graphs
                    and sum(k[1] is not None for k in self._graphs) < SIZED_GRAPHS):
                key = n, None, None, dtype
        if key not in self._graphs:
            self._graphs[key] = self._graph(image_spec(self.channels, n, dtype, key[1], key[2]), images)
        return self._graphs[key](images)

    def _graph(self, spec, images):
        """The tf.function of _translate for `spec`. For a size of its own (where the rewrites ask for
        sized graphs), run eagerly, the graph is also traced with Keras' own convolutions and the
        faster on `images` kept (timed once per machine and cached, see the rewrites' measured_choice): each
        convolution's way is timed apart from the graph, and on small maps a way that wins there by
        a few percent can lose by more inside the graph (docs/SPEED.md has the figures)."""
        def traced(direct_convolutions=False):
            # A function of its own per graph: TensorFlow warns when one function is traced often.
            fn = tf.function(lambda images: self._translate(images), input_signature=[spec],
                             jit_compile=self.jit_compile or None)
            with rewrites.direct_convolutions() if direct_convolutions else contextlib.nullcontext():
                fn.get_concrete_function()
            return fn

        rewrites = layers.rewrites()
        if (spec.shape[1] is None or self.jit_compile or rewrites is None or not rewrites.sized_graphs
                or not tf.executing_eagerly()):
            return traced()
        n, h, w, c = spec.shape
        key = (f"translation by {len(self.G.layers)} layers, {self.G.count_params()} weights "
               f"{n}x{h}x{w}x{c} {spec.dtype.name}")
        ways, made = ("tuned", "direct convolutions"), {}

        def make():  # only when not cached: both graphs, kept for the one chosen
            made.update((way, traced(way != "tuned")) for way in ways)
            return made
        # Timed alone (a translation already runs its two halves side by side), in more rounds
        # than a layer: the two graphs differ by a few percent, about a small batch's noise.
        choice = rewrites.measured_choice(key, ways, make, lambda: [tf.convert_to_tensor(images)],
                                          side_by_side=False, rounds=TRANSLATION_ROUNDS)
        return made.get(choice) or traced(choice != "tuned")

    def _translate(self, images):
        n = images.shape[0]
        rewrites = layers.rewrites()
        if n is not None and n > 1 and rewrites is not None and rewrites.split_batches:
            # Two halves of the batch as two independent runs of G, which TensorFlow executes side
            # by side (see kernels.CpuRewrites.split_batches).
            return tf.concat([self._translate_all(half) for half in tf.split(images, [n - n // 2, n // 2])], 0)
        return self._translate_all(images)

    def _translate_all(self, images):
        h, w = tf.shape(images)[1], tf.shape(images)[2]
        x = image_io.pad_to_multiple(image_io.to_float(images), self.multiple)
        return image_io.to_pixels(self.G(x, training=False)[:, :h, :w], images.dtype)

    def translate_image(self, rgb, tile_size=2048, window=WINDOW):
        """Translates one image (H, W, channels), uint8 or uint16; returns (H, W, output channels),
        the same dtype.

        An image of more than tile_size^2 pixels is translated in tiles: each run of layers that
        look at a small neighbourhood (padding, convolutions, ReLUs) on windows of `window` pixels,
        each with a margin that covers the run's reach; each instance norm, and each layer that
        joins two maps (the residual sums), over the whole feature map. The result is the
        whole-image translation (to float rounding), without seams, in far less memory: the
        largest feature maps are held once, never the whole network's activations, and the
        convolutions' scratch buffers stay the size of a window.
        """
        h, w = rgb.shape[:2]
        # The windows' grid is aligned for the ResNet's two stride-2 layers; a U-Net's innermost
        # layers see the whole image, so it is always translated whole.
        if h * w <= tile_size * tile_size or self.multiple != 4:
            return self.translate(rgb[None]).numpy()[0]
        x = image_io.pad_to_multiple(image_io.to_float(rgb[None])).numpy()

        def apply(layer, inputs):
            if self._per_image_norm(layer):   # normalised in place: a map of its own
                return self._norm_whole(layer, self._whole(inputs, window) if isinstance(inputs, _Run) else inputs.copy())
            if isinstance(inputs, list):
                return layer([self._whole(v, window) for v in inputs]).numpy()
            if isinstance(inputs, _Run):
                return _Run(inputs.x, inputs.layers + (layer,))
            return _Run(inputs, (layer,))

        y = self._whole(run_layers(self.G, x, apply), window)
        return image_io.to_pixels(y[0, :h, :w], rgb.dtype).numpy()

    def _whole(self, value, window):
        """A whole map: value itself, or a pending _Run computed tile by tile (a new array)."""
        return self._run_tiled(value.layers, value.x, window) if isinstance(value, _Run) else value

    def _run_tiled(self, layers, x, tile_size, margin=4):
        """Applies `layers` in turn to a whole map x (1, H, W, C), tile by tile. A margin of 4
        pixels covers every run the generator has (at most a 7x7 conv, or one stride-2 or
        transposed 3x3 conv); tile origins are multiples of 4, so strided layers sample the
        same grid as on the whole map. Returns the whole output map as a NumPy array."""
        if layers not in self._runs:
            def run(t):
                for layer in layers:
                    t = layer(t)
                return t
            self._runs[layers] = tf.function(run, reduce_retracing=True)
        x = np.asarray(x)
        core = max(8, tile_size // 4 * 4)
        out = None
        for (y0, y1, ty, ty1), (x0, x1, tx, tx1) in itertools.product(
                self._windows(x.shape[1], core, margin), self._windows(x.shape[2], core, margin)):
            tile = self._runs[layers](x[:, ty:ty1, tx:tx1]).numpy()
            r = tile.shape[1] / (ty1 - ty)  # 1/2, 1 or 2: the run's change of scale
            if out is None:
                out = np.empty((1, round(x.shape[1] * r), round(x.shape[2] * r), tile.shape[3]), np.float32)
            s = lambda a, b, o: slice(round((a - o) * r), round((b - o) * r))
            out[:, s(y0, y1, 0), s(x0, x1, 0)] = tile[:, s(y0, y1, ty), s(x0, x1, tx)]
        return out

    @staticmethod
    def _windows(length, core, margin):
        """Along one axis: (core start, core end, window start, window end) covering `length`.
        Every window has the same size (core + 2 margins, or the whole axis if shorter), shifted
        inwards at the edges, so the layers see one shape (one trace, one set of oneDNN
        primitives and scratch buffers, instead of one per edge-tile shape)."""
        size = min(length, core + 2 * margin)
        for start in range(0, length, core):
            end = min(start + core, length)
            window = min(max(0, start - margin), length - size)
            yield start, end, window, window + size

    @staticmethod
    def _per_image_norm(layer):
        """Whether a layer normalises by the statistics of the whole image: instance norm, and
        batch norm unless set to its running statistics (convert.py --eval)."""
        return isinstance(layer, layers.InstanceNorm) or (isinstance(layer, layers.BatchNorm)
                                                          and not layer.running_statistics)

    @staticmethod
    def _norm_whole(layer, x, rows=256):
        """An InstanceNorm (or per-image BatchNorm) layer applied to a whole (1, H, W, C) map in
        NumPy, in place, a band of rows at a time: sums in float64, so the statistics match the
        whole-image graph's; a BatchNorm's scale and offset then apply."""
        x = np.asarray(x)
        total = np.zeros(x.shape[3])
        squares = np.zeros(x.shape[3])
        for r in range(0, x.shape[1], rows):
            band = x[0, r:r + rows].astype(np.float64)
            total += band.sum(axis=(0, 1))
            squares += np.square(band).sum(axis=(0, 1))
        n = x.shape[1] * x.shape[2]
        mean = total / n
        scale = 1.0 / np.sqrt(np.maximum(squares / n - mean ** 2, 0.0) + layer.epsilon)
        offset = -mean * scale
        if isinstance(layer, layers.BatchNorm):
            gamma = layer.gamma.numpy()
            scale, offset = scale * gamma, offset * gamma + layer.beta.numpy()
        for r in range(0, x.shape[1], rows):
            x[0, r:r + rows] = x[0, r:r + rows] * scale + offset
        return x


def run_layers(model, x, apply):
    """A functional Keras model run on x layer by layer, in order of use: each layer's output is
    apply(layer, inputs), where inputs are the outputs of the layers it takes (a list if more than
    one). With apply = lambda layer, inputs: layer(inputs) this is model(x); translator.Translator
    uses it to run large images in tiles, benchmark.py to count each convolution's work."""
    values = {id(model.inputs[0]): x}
    for layer in model.layers[1:]:
        sources = layer.input
        inputs = [values[id(t)] for t in sources] if isinstance(sources, list) else values[id(sources)]
        values[id(layer.output)] = apply(layer, inputs)
    return values[id(model.outputs[0])]


class _Run:
    """Layers still to be applied, in order, to the whole map x (see Translator.translate_image)."""

    def __init__(self, x, layers):
        self.x, self.layers = x, layers
