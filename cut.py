"""CUT and FastCUT (Park, Efros, Zhang, Zhu, "Contrastive Learning for Unpaired Image-to-Image
Translation", ECCV 2020): one generator, no cycle, a patchwise contrastive loss (PatchNCE) between
the features of an input and of its translation; as the official cut_model.py and patchnce.py.

    gan = CUT(ngf=8, ndf=8, n_blocks=2, crop_size=32, num_patches=16)   # the options give the mode defaults (defaults())
    losses = gan.train_step(real_A, real_B)      # images in [-1, 1], (batch, crop, crop, 3)
    fake_B = gan.translators["A2B"].translate(uint8_images_A)

One step (optimize_parameters): G translates A (and B, with nce_idt, in the same batch; the batch
flipped left-right with probability 1/2 under flip_equivariance); D is updated on
0.5 (D(real B) as real + D(fake B) as fake); then G and F together on
    lambda_GAN GAN(D(G(A))) + NCE,   NCE = mean over layers of lambda_NCE PatchNCE(F(E(G(A))), F(E(A)))
averaged with the identity term PatchNCE(F(E(G(B))), F(E(B))) under nce_idt, where E is G's encoder
at --nce_layers, F samples --num_patches locations (the same for query and key) and projects them.
"""
import tensorflow as tf

import layers
import module
import options
import training
import translator
import utils
from training import gan_loss

# The options whose defaults differ from options.OPTIONS' (CycleGAN's), for both modes, then per mode:
# the official cut_model.modify_commandline_options, base_options and train_options.
COMMON_DEFAULTS = dict(CUT_mode="CUT", lambda_GAN=1.0, nce_layers="0,4,8,12,16",
                       nce_includes_all_negatives_from_minibatch=False, netF="mlp_sample", netF_nc=256, nce_T=0.07,
                       num_patches=256, no_antialias=False, no_antialias_up=False, pool_size=0, init_type="xavier")
MODE_DEFAULTS = {
    "CUT": dict(nce_idt=True, lambda_NCE=1.0, flip_equivariance=False, n_epochs=200, n_epochs_decay=200),
    "FastCUT": dict(nce_idt=False, lambda_NCE=10.0, flip_equivariance=True, n_epochs=150, n_epochs_decay=50),
}
ARCHITECTURE_KEYS = ("ngf", "ndf", "n_blocks", "n_layers_D", "netD", "norm", "dropout", "input_nc", "output_nc",
                     "crop_size", "no_antialias", "no_antialias_up", "netF", "netF_nc")
LOSS_NAMES = ("G_GAN", "D_real", "D_fake", "G", "NCE", "NCE_Y")
GENERATOR_KEYS = {"A2B": "G"}
# The official Normalize: x / (||x||_2 + 1e-7); and the logit of a patch against itself among the negatives.
L2_EPSILON = 1e-7
SELF_SIMILARITY = -10.0


def nce_layers(text):
    """--nce_layers "0,4,8,12,16" as a tuple of ints; a utils.UserError unless increasing integers."""
    try:
        found = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise utils.UserError(f"--nce_layers {text}: expected comma-separated layer indices, as 0,4,8,12,16") from None
    if any(i < 0 for i in found) or list(found) != sorted(set(found)):
        raise utils.UserError(f"--nce_layers {text}: the indices must be increasing and not negative")
    return found


def check_options(args):
    """One-line errors (utils.UserError) for CUT options that cannot work together (each flag's own
    bounds are its type's, options.number)."""
    if args.netG and not args.netG.startswith("resnet_"):
        raise utils.UserError(f"--model cut takes the ResNet generators (resnet_9blocks, resnet_6blocks), not {args.netG}")
    if args.netD == "pixel":
        raise utils.UserError("--model cut takes the PatchGAN discriminator (--netD basic or n_layers), not pixel")
    if args.pool_size:
        raise utils.UserError(f"--pool_size {args.pool_size}: --model cut keeps no pool of generated images (0)")
    if args.input_nc != args.output_nc:
        raise utils.UserError(f"--input_nc {args.input_nc} and --output_nc {args.output_nc} differ: PatchNCE compares "
                              f"G's features of its input and of its output, so both domains need the same channels")
    deepest = len(module.official_modules(args.ngf, options.resnet_blocks(args), args.output_nc, args.norm, not args.no_antialias,
                                          not args.no_antialias_up)) - 1
    layers_given = nce_layers(args.nce_layers)
    if layers_given[-1] > deepest:
        raise utils.UserError(f"--nce_layers {args.nce_layers}: this generator's deepest layer is {deepest}")
    check_train_size(args, (args.crop_size, args.crop_size), "--crop_size", str(args.crop_size))


def check_train_size(args, size, name, value):
    """One-line errors (utils.UserError) unless training images of size (height, width) suit CUT's
    networks: sides multiples of 4, at least 8, and a score map of at least 1 x 1."""
    if any(side % 4 or side < 8 for side in size):
        raise utils.UserError(f"{name} {value}: must be a multiple of 4 and at least 8")
    if min(module.patch_map_size(side, args.n_layers_D, not args.no_antialias) for side in size) < 1:
        raise utils.UserError(f"{name} {value} is too small for a discriminator with --n_layers_D {args.n_layers_D}")


def architecture(args, train_size=None):
    """The settings of parsed options that fix CUT's variables' shapes: G's and D's (as CycleGAN's,
    netG always the ResNet, and the antialiasing) and F's (netF, netF_nc, the layers it projects)."""
    settings = {k: getattr(args, k) for k in ARCHITECTURE_KEYS}
    return {"netG": "resnet", **settings, "n_blocks": options.resnet_blocks(args), "nce_layers": list(nce_layers(args.nce_layers)),
            "train_size": list(train_size or (args.crop_size, args.crop_size))}


def saved_architecture(config):
    """The architecture a CUT run's config.json records."""
    return dict(config.get("architecture", {}))


def generator(architecture, direction="A2B", dtype=None):
    """CUT's one generator (A2B): the ResNet generator with the official CUT's antialiasing."""
    a = architecture
    if direction != "A2B":
        raise utils.UserError("a CUT model translates one way only, A2B")
    return module.resnet_generator(a["ngf"], a["n_blocks"], a["input_nc"], a["output_nc"], a["norm"], a["dropout"],
                                   name="G", dtype=dtype, antialias=not a["no_antialias"],
                                   antialias_up=not a["no_antialias_up"])


def build(args, train_size=None, **kwargs):
    """A CUT from parsed options (options.py) for training images of train_size; kwargs add or override."""
    settings = dict(architecture(args, train_size), lambda_GAN=args.lambda_GAN,
                    lambda_NCE=args.lambda_NCE, nce_idt=args.nce_idt, nce_T=args.nce_T, num_patches=args.num_patches,
                    nce_includes_all_negatives_from_minibatch=args.nce_includes_all_negatives_from_minibatch,
                    flip_equivariance=args.flip_equivariance, lr=args.lr, beta1=args.beta1, beta2=args.beta2,
                    gan_mode=args.gan_mode, lr_policy=args.lr_policy, lr_decay_iters=args.lr_decay_iters,
                    init_type=args.init_type, init_gain=args.init_gain, batch_size=args.batch_size,
                    jit_compile=args.jit_compile, mixed_precision=args.mixed_precision)
    settings.pop("netG")
    return CUT(**{**settings, **kwargs})


def load_size(args, epoch):
    """The size training images are loaded at in 1-based `epoch`: --load_size, but --crop_size in the
    decay epochs (epoch > --n_epochs), where the official CUT dataset stops the resize-and-crop
    augmentation (flips stay). Kept under --preprocess scale_width, whose training size it would
    change (this toolkit's step has one shape)."""
    finetuning = epoch > args.n_epochs and args.preprocess != "scale_width"
    return args.crop_size if finetuning else args.load_size


def patch_nce_loss(feat_q, feat_k, batch_size, nce_T, all_negatives=False):
    """The official PatchNCELoss: per query patch, the cross-entropy of
    [q . k+, q . k- for the other patches' keys] / nce_T against index 0, where k+ is the key of the
    same location. feat_q, feat_k: (batch_size * patches, C) rows image by image, L2-normalised; the
    negatives are the patches of the same image (all_negatives: of the whole batch), the logit of a
    patch with itself among them set to -10 (exp(-10) is about 0). The keys take no gradient.
    Returns one loss per query patch, float32."""
    feat_q, feat_k = tf.cast(feat_q, tf.float32), tf.stop_gradient(tf.cast(feat_k, tf.float32))
    positive = tf.reduce_sum(feat_q * feat_k, axis=1, keepdims=True)
    groups = 1 if all_negatives else batch_size
    q = tf.reshape(feat_q, [groups, -1, feat_q.shape[-1]])
    k = tf.reshape(feat_k, [groups, -1, feat_k.shape[-1]])
    negatives = tf.matmul(q, k, transpose_b=True)
    n = tf.shape(q)[1]
    negatives = tf.where(tf.eye(n, dtype=tf.bool)[None], SELF_SIMILARITY, negatives)
    logits = tf.concat([positive, tf.reshape(negatives, [-1, n])], axis=1) / nce_T
    labels = tf.zeros([tf.shape(logits)[0]], tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def l2_normalize(x):
    """The official Normalize(2): x / (||x||_2 + 1e-7) along the last axis."""
    x = tf.cast(x, tf.float32)
    return x / (tf.norm(x, axis=-1, keepdims=True) + L2_EPSILON)


class CUT(training.Trainer):
    """The CUT and FastCUT model: G, D, F, their optimizers, the counters and the training step.

    --CUT_mode is no argument: its defaults reach the arguments through the options (defaults()).
    The architecture (as CycleGAN's, plus no_antialias, no_antialias_up,
    netF, netF_nc, nce_layers) and train_size are fixed at construction.
    """

    LOSS_NAMES = LOSS_NAMES
    DIRECTIONS = ("A2B",)
    GENERATOR_KEYS = GENERATOR_KEYS
    BAR = {"G": ("G",), "NCE": ("NCE",), "D_real": ("D_real",), "D_fake": ("D_fake",)}
    PLOTTED = LOSS_NAMES
    check_options = staticmethod(check_options)
    check_train_size = staticmethod(check_train_size)
    architecture = staticmethod(architecture)
    saved_architecture = staticmethod(saved_architecture)
    build_generator = staticmethod(generator)
    from_options = staticmethod(build)
    load_size = staticmethod(load_size)

    @classmethod
    def defaults(cls, chosen):
        """The official defaults of CUT, then those of --CUT_mode (CUT or FastCUT)."""
        return {**COMMON_DEFAULTS, **MODE_DEFAULTS[chosen.CUT_mode or COMMON_DEFAULTS["CUT_mode"]]}

    def __init__(self, ngf=64, ndf=64, n_blocks=9, n_layers_D=3, netD="basic", norm="instance", dropout=False,
                 input_nc=3, output_nc=3, crop_size=256, train_size=None, no_antialias=False, no_antialias_up=False,
                 netF="mlp_sample", netF_nc=256, nce_layers=(0, 4, 8, 12, 16), lambda_GAN=1.0,
                 lambda_NCE=1.0, nce_idt=True, nce_T=0.07, num_patches=256,
                 nce_includes_all_negatives_from_minibatch=False, flip_equivariance=False, lr=2e-4, beta1=0.5,
                 beta2=0.999, gan_mode="lsgan", lr_policy="linear", lr_decay_iters=50, init_type="xavier",
                 init_gain=0.02, batch_size=1, random_seed=0, jit_compile=False, strategy=None,
                 mixed_precision=False):
        self.init_training(lr, lr_policy, lr_decay_iters, strategy, mixed_precision)
        self.gan_mode = gan_mode
        self.lambda_GAN, self.lambda_NCE, self.nce_T = float(lambda_GAN), float(lambda_NCE), float(nce_T)
        self.nce_idt, self.flip_equivariance = bool(nce_idt), bool(flip_equivariance)
        self.num_patches, self.all_negatives = int(num_patches), bool(nce_includes_all_negatives_from_minibatch)
        self.nce_layers = tuple(nce_layers)
        # Per-image norms let calls on the same weights share one batch; batch norm keeps the official calls.
        self.join_batches = norm != "batch"
        self.train_size = tuple(train_size or (crop_size, crop_size))
        arch = dict(ngf=ngf, n_blocks=n_blocks, norm=norm, dropout=dropout, input_nc=input_nc, output_nc=output_nc,
                    no_antialias=no_antialias, no_antialias_up=no_antialias_up)
        with self.strategy.scope():
            self._build(arch, ndf, n_layers_D, netD, netF, netF_nc, (init_type, float(init_gain)), beta1, beta2,
                        random_seed)
        self.make_train_step([tf.TensorSpec([batch_size, *self.train_size, c], tf.float32)
                              for c in (input_nc, output_nc)], jit_compile)
        self.generators = {"A2B": self.G}
        self.translators = {"A2B": translator.Translator(self.G, jit_compile)}

    def _build(self, arch, ndf, n_layers_D, netD, netF, netF_nc, init, beta1, beta2, random_seed):
        p = self.policy
        self.G = generator(arch, "A2B", p)
        self.D = module.patch_discriminator(ndf, 3 if netD == "basic" else n_layers_D, arch["output_nc"], arch["norm"],
                                            name="D", dtype=p, antialias=not arch["no_antialias"])
        for net in (self.G, self.D):
            layers.initialize(net, *init)
        # G's encoder at the NCE layers (the same weights), alone and with G's output in one pass.
        self.E = module.encoder(self.G, self.nce_layers)
        self.G_and_E = module.encoder(self.G, self.nce_layers, with_output=True)
        channels = [int(f.shape[-1]) for f in self.E.outputs]
        self.F = module.patch_sample_mlps(channels, netF_nc, init, dtype=p) if netF == "mlp_sample" else None
        self.optimizer_G, self.optimizer_D = self.adam(beta1, beta2), self.adam(beta1, beta2)
        self.optimizers = {"optimizer_G": self.optimizer_G, "optimizer_D": self.optimizer_D}
        self.G_vars, self.D_vars = self.G.trainable_variables, self.D.trainable_variables
        self.F_vars = self.F.trainable_variables if self.F is not None else []
        self.optimizer_G.build(self.G_vars)
        self.optimizer_D.build(self.D_vars)
        if self.F is not None:  # its own Adam with G's settings, as the official optimizer_F
            self.optimizer_F = self.optimizers["optimizer_F"] = self.adam(beta1, beta2)
            self.optimizer_F.build(self.F_vars)
        self.make_counters(random_seed)

    def checkpoint(self):
        """A tf.train.Checkpoint of everything training changes; these keys are the layout."""
        nets = dict(G=self.G, D=self.D, **({"F": self.F} if self.F is not None else {}))
        return tf.train.Checkpoint(**nets, **self.optimizers, **self.counter_checkpoint())

    def trainable_variables(self):
        return self.G_vars + self.D_vars + self.F_vars

    def passes(self):
        """What one step runs, for benchmark.py (see cyclegan.CycleGAN.passes): per image pair, G on
        A (and B), the encoder on their translations (counted as full passes, an upper bound), and D
        three times (the fake and the real in D's update, the fake again in G's)."""
        images = 2 if self.nce_idt else 1
        return dict(generator=2 * images, discriminator=3, generator_calls=2, G=self.G, D=self.D)

    def sample_ids(self, features):
        """For each feature map (batch, h, w, C), num_patches locations (row-major indices h w) drawn
        without replacement from the step's random generator, the same for every image of the batch
        (the official PatchSampleF's np.random.permutation, here from the training seed)."""
        ids = []
        for f in features:
            locations = int(f.shape[1]) * int(f.shape[2])
            order = tf.argsort(self.rng.uniform([locations]))
            ids.append(order[:min(self.num_patches, locations)])
        return ids

    def patch_features(self, features, ids):
        """The official PatchSampleF: each map's features at `ids` (batch * patches rows, image by
        image), through its MLP head (--netF mlp_sample), L2-normalised."""
        sampled = [tf.reshape(tf.gather(tf.reshape(f, [tf.shape(f)[0], -1, f.shape[-1]]), i, axis=1), [-1, f.shape[-1]])
                   for f, i in zip(features, ids)]
        if self.F is not None:
            sampled = self.F(sampled, training=True)
            sampled = sampled if isinstance(sampled, (list, tuple)) else [sampled]
        return [l2_normalize(s) for s in sampled]

    def nce_loss(self, feat_q, feat_k):
        """calculate_NCE_loss: the mean over the layers of lambda_NCE x the mean PatchNCE of the
        query features (of G's output) against the key features (of its input) at the same
        locations."""
        ids = self.sample_ids(feat_k)
        queries, keys = self.patch_features(feat_q, ids), self.patch_features(feat_k, ids)
        batch = tf.shape(feat_q[0])[0]
        total = tf.add_n([tf.reduce_mean(patch_nce_loss(q, k, batch, self.nce_T, self.all_negatives)) * self.lambda_NCE
                          for q, k in zip(queries, keys)])
        return total / len(self.nce_layers)

    def encode(self, images):
        """The encoder's features of a list of image batches, one call (or one each, with batch norm)."""
        if self.join_batches and len(images) > 1:
            n = [tf.shape(x)[0] for x in images]
            joined = self.E(tf.concat(images, 0), training=True)
            return list(zip(*[tf.split(f, n) for f in joined]))
        return [self.E(x, training=True) for x in images]

    def update_D(self, fake_B, real_B, scale):
        """D's update on 0.5 (D(real) as real + D(fake) as fake); returns its two losses."""
        with tf.GradientTape() as tape_D:
            if self.join_batches:   # -- one call on both: D's norms work image by image
                scores_fake, scores_real = tf.split(self.D(tf.concat([fake_B, real_B], 0), training=True), 2)
            else:
                scores_fake, scores_real = self.D(fake_B, training=True), self.D(real_B, training=True)
            losses = {"D_fake": gan_loss(self.gan_mode, scores_fake, False),
                      "D_real": gan_loss(self.gan_mode, scores_real, True)}
            loss_D = (losses["D_fake"] + losses["D_real"]) * 0.5 * scale
        grads_D = tape_D.gradient(self.scaled(self.optimizer_D, loss_D), self.D_vars)
        self.optimizer_D.apply_gradients(zip(grads_D, self.D_vars))
        return losses

    def nce_terms(self, sources, targets, keys, flipped):
        """PatchNCE of each target batch (G's translations) against its source (G's inputs): the
        queries from the encoder on the targets (flipped back when the step was flipped); the keys
        from G's own pass (`keys`, of the inputs joined, None where not taken) when it was not
        flipped, else from a second encoder pass as the official code always does."""
        queries = self.encode(targets)
        if self.flip_equivariance:
            queries = [[tf.cond(flipped, lambda f=f: tf.reverse(f, [2]), lambda f=f: f) for f in q] for q in queries]

        def own_pass():
            return [[tf.split(k, len(sources))[i] for k in keys] for i in range(len(sources))]

        def second_pass():
            return [[tf.stop_gradient(k) for k in ks] for ks in self.encode(sources)]

        if keys is not None and self.flip_equivariance:
            key_sets = tf.cond(flipped, second_pass, own_pass)
        else:
            key_sets = own_pass() if keys is not None else second_pass()
        return [self.nce_loss(q, k) for q, k in zip(queries, key_sets)]

    def _replica_step(self, real_A, real_B):
        """optimize_parameters on one replica's batch, as one graph: forward; D updated; then G and F
        updated on the GAN and NCE losses, D's score taken after D's update, as there. Losses divided
        by the number of replicas (see cyclegan.CycleGAN._replica_step)."""
        scale = 1.0 / self.replicas
        n = tf.shape(real_A)[0]
        real = tf.concat([real_A, real_B], 0) if self.nce_idt else real_A
        flipped = self.rng.uniform([]) < 0.5 if self.flip_equivariance else tf.constant(False)
        if self.flip_equivariance:
            real = tf.cond(flipped, lambda: tf.reverse(real, [2]), lambda: real)
        # The key features of the inputs take no gradient and, with per-image norms, are those of G's
        # own pass when it was not flipped: the official second pass of the encoder gives the same
        # values. A flipped pass saw the flipped input, so then the keys take the second pass.
        reuse_keys = self.join_batches and self.lambda_NCE > 0
        losses = {}
        with tf.GradientTape(persistent=self.policy == "mixed_float16") as tape:
            if reuse_keys:
                fake, *keys = self.G_and_E(real, training=True)
                keys = [tf.stop_gradient(k) for k in keys]
            else:
                fake = self.G(real, training=True)
            fake_B = fake[:n]
            with tape.stop_recording():   # -- D first, on G's output as it is now
                losses.update(self.update_D(tf.stop_gradient(fake_B), real_B, scale))
            # -- then G and F, D's score after its update
            losses["G_GAN"] = (gan_loss(self.gan_mode, self.D(fake_B, training=True), True) * self.lambda_GAN
                               if self.lambda_GAN > 0 else tf.constant(0.0))
            losses["NCE"] = losses["NCE_Y"] = tf.constant(0.0)
            if self.lambda_NCE > 0:
                sources = [real_A, real_B] if self.nce_idt else [real_A]
                targets = [fake_B, fake[n:]] if self.nce_idt else [fake_B]
                nces = self.nce_terms(sources, targets, keys if reuse_keys else None, flipped)
                losses["NCE"] = nces[0]
                if self.nce_idt:
                    losses["NCE_Y"] = nces[1]
            nce = (losses["NCE"] + losses["NCE_Y"]) * 0.5 if self.nce_idt and self.lambda_NCE > 0 else losses["NCE"]
            losses["G"] = losses["G_GAN"] + nce
            loss_G = losses["G"] * scale
        F_trained = self.F is not None and self.lambda_NCE > 0
        if F_trained and self.policy == "mixed_float16":   # each optimizer scales the loss its own way
            grads_G = tape.gradient(self.scaled(self.optimizer_G, loss_G), self.G_vars)
            grads_F = tape.gradient(self.scaled(self.optimizer_F, loss_G), self.F_vars)
        else:
            grads = tape.gradient(self.scaled(self.optimizer_G, loss_G), self.G_vars + (self.F_vars if F_trained else []))
            grads_G, grads_F = grads[:len(self.G_vars)], grads[len(self.G_vars):]
        self.optimizer_G.apply_gradients(zip(grads_G, self.G_vars))
        if F_trained:
            self.optimizer_F.apply_gradients(zip(grads_F, self.F_vars))
        return tf.stack([tf.cast(losses[k], tf.float32) for k in LOSS_NAMES]) * scale
