"""CycleGAN (Zhu et al. 2017): the two generators, the two discriminators, their losses,
the image pools, the learning-rate schedule, one training step and the checkpoint layout.

    gan = CycleGAN(ngf=8, ndf=8, n_blocks=2, crop_size=32)
    losses = gan.train_step(real_A, real_B)      # images in [-1, 1], (batch, crop, crop, 3)
    fake_B = gan.translators["A2B"].translate(uint8_images_A)
    ckpt = gan.checkpoint()                      # tf.train.Checkpoint of everything that trains

Names follow the paper: G_A2B maps domain A to B, D_B tells real B from fake B.
"""
import glob
import math
import os
import sys

import keras
import tensorflow as tf

import devices
import module
import translator
import utils
import files

# Architecture settings: they fix every variable's shape, so a checkpoint only
# restores into a model built with the same values (with "train_size", see architecture()).
ARCHITECTURE_KEYS = ("netG", "ngf", "ndf", "n_blocks", "n_layers_D", "netD", "norm", "dropout", "input_nc", "output_nc",
                     "crop_size", "pool_size")
# What runs written before a key existed were built with.
ARCHITECTURE_DEFAULTS = {"netG": "resnet", "netD": "basic", "norm": "instance", "dropout": False, "input_nc": 3,
                         "output_nc": 3}
NET_G = ("resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256")
UNET_DOWNS = {"unet_128": 7, "unet_256": 8}
NET_D = ("basic", "n_layers", "pixel")

# Losses reported by train_step, in this order (also the losses CSV's columns).
LOSS_NAMES = ("G", "G_A2B", "G_B2A", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B")

DIRECTIONS = ("A2B", "B2A")
# Still images of one size that convert.py translates together (its --batch_size default).
CONVERT_BATCH_SIZE = 4
# Where each direction's generator sits in a training checkpoint.
GENERATOR_KEYS = {"A2B": "G_A2B", "B2A": "G_B2A"}

# A run folder: its settings, and its checkpoints' default file prefix.
CONFIG_FILE = "config.json"
CHECKPOINT_NAME = "cyclegan.ckpt"


def add_model_flags(parser):
    """The flags that build a CycleGAN, declared once for every command that builds one (train.py,
    benchmark.py): architecture, training crop, objective and optimiser, devices. check_model_flags
    validates them."""
    g = parser.add_argument_group("architecture (saved in config.json; a resumed run must match)")
    g.add_argument("--netG", choices=NET_G,
                   help="generator, as the official --netG: resnet_9blocks or resnet_6blocks (the same as --n_blocks "
                        "9 or 6), unet_256 or unet_128 (the U-Net with skip connections; image sides multiples of "
                        "256 or 128 in training). Default: the ResNet with --n_blocks blocks")
    g.add_argument("--ngf", type=int, default=64, help="generator filters in the first layer")
    g.add_argument("--ndf", type=int, default=64, help="discriminator filters in the first layer")
    g.add_argument("--n_blocks", type=int, default=9, help="residual blocks in the generator (9 for 256 px, 6 for 128 px)")
    g.add_argument("--netD", choices=NET_D, default="basic",
                   help="discriminator: basic or n_layers, the PatchGAN with --n_layers_D stride-2 layers (basic is "
                        "the official name for 3: 70x70 patches); pixel, 1x1 convolutions: a score per pixel")
    g.add_argument("--n_layers_D", type=int, default=3,
                   help="stride-2 layers in the PatchGAN (3: 70x70 patches); not used by --netD pixel")
    g.add_argument("--norm", choices=module.NORMS, default="instance",
                   help="normalization in both networks, as the official --norm: instance (the paper's), batch "
                        "(learned scale and offset, running statistics for convert.py --eval) or none; as there, "
                        "convolutions before a norm have a bias only with instance")
    g.add_argument("--dropout", action="store_true",
                   help="dropout 0.5 in the generator (each residual block, the U-Net's inner levels), as the "
                        "official default outside CycleGAN")
    g.add_argument("--no_dropout", dest="dropout", action="store_false",
                   help="no dropout in the generator: the default, as the official CycleGAN")
    g.add_argument("--input_nc", type=int, choices=(1, 3), default=3,
                   help="channels of domain A's images: 3 (RGB) or 1 (grayscale; 16-bit PNGs keep their range)")
    g.add_argument("--output_nc", type=int, choices=(1, 3), default=3, help="channels of domain B's images: 3 or 1")
    g.add_argument("--init_type", choices=module.INIT_TYPES, default="normal",
                   help="how convolution weights are first drawn, as the official init_weights: normal N(0, gain), "
                        "xavier, kaiming (fan in), orthogonal; biases 0")
    g.add_argument("--init_gain", type=float, default=0.02, help="scale of --init_type normal, xavier and orthogonal")
    g.add_argument("--pool_size", type=int, default=50, help="image pool of generated images (0: off)")
    g.add_argument("--load_size", type=int, default=286,
                   help="training images are resized to this square first (to this width with train.py's "
                        "--preprocess scale_width*)")
    g.add_argument("--crop_size", type=int, default=256,
                   help="then randomly cropped to this square (multiple of 4); see train.py's --preprocess")
    g = parser.add_argument_group("objective and optimiser")
    g.add_argument("--lr", type=float, default=2e-4, help="initial Adam learning rate")
    g.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    g.add_argument("--batch_size", type=int, default=1, help="images of each domain per step (per replica)")
    g.add_argument("--lambda_cycle", type=float, default=10.0, help="weight of the cycle-consistency loss")
    g.add_argument("--lambda_identity", type=float, default=0.5,
                   help="weight of the identity loss, relative to --lambda_cycle (0: off, and 2 fewer generator passes)")
    g.add_argument("--gan_mode", choices=GAN_MODES, default="lsgan",
                   help="the adversarial loss: lsgan (least squares, the paper's), vanilla (cross-entropy on logits, "
                        "the original GAN's) or wgangp (Wasserstein, with a gradient penalty of weight "
                        f"{GRADIENT_PENALTY_WEIGHT:g} on the discriminators)")
    g.add_argument("--lr_policy", choices=LR_POLICIES, default="linear",
                   help="learning-rate schedule by epoch: linear (constant for --n_epochs, then to 0 over "
                        "--n_epochs_decay), step (x0.1 every --lr_decay_iters epochs), plateau (x0.2 every 6 epochs, "
                        "as the official code's plateau rule on its constant metric), cosine (over --n_epochs)")
    g.add_argument("--lr_decay_iters", type=int, default=50, help="--lr_policy step: epochs between decays")
    add_device_flags(parser, training=True)


def add_device_flags(parser, training):
    """--jit_compile, --cpu_kernels and, for training, --mixed_precision."""
    g = parser.add_argument_group("devices")
    g.add_argument("--jit_compile", action="store_true",
                   help="compile with XLA: the training step (train.py) and translations (once per image size)")
    if training:
        g.add_argument("--mixed_precision", action="store_true",
                       help="compute in float16 with loss scaling on a GPU, bfloat16 on a CPU; weights, generator "
                            "outputs, discriminator scores and losses stay float32")
    g.add_argument("--cpu_kernels", choices=devices.CPU_KERNEL_MODES, default=None,
                   help=f"auto: each convolution shape computed the way measured fastest on this CPU (timed once, "
                        f"cached in {devices.KERNEL_CACHE}); fixed: the CPU rewrites of kernels/ (Winograd, bands, "
                        f"space-to-depth) by their fixed rules; direct: Keras' own convolution everywhere (to debug or "
                        f"compare). Default: ${devices.CPU_KERNELS_ENV}, else auto. GPUs and exports always use direct")


def check_model_flags(args):
    """One-line errors (utils.UserError) for model flags that cannot work."""
    for name in ("load_size", "crop_size", "batch_size", "ngf", "ndf", "n_layers_D", "lr_decay_iters"):
        if getattr(args, name) < 1:
            raise utils.UserError(f"--{name} must be at least 1")
    for name in ("n_blocks", "pool_size"):
        if getattr(args, name) < 0:
            raise utils.UserError(f"--{name} must not be negative")
    if args.input_nc != args.output_nc and args.lambda_identity > 0:
        raise utils.UserError(f"--input_nc {args.input_nc} and --output_nc {args.output_nc} differ, so there is no "
                              f"identity loss (G_A2B cannot take domain A's images): add --lambda_identity 0")
    check_train_size(args, (args.crop_size, args.crop_size), "--crop_size", str(args.crop_size))


def check_train_size(args, size, name, value):
    """One-line errors (utils.UserError) unless training images of size (height, width) suit the
    networks that parsed model flags describe: sides multiples of 4 (2^levels for a U-Net), at least
    8, and a discriminator's score map of at least 1 x 1. name and value say in the message where the
    size comes from ("--crop_size", "32")."""
    multiple = 2 ** UNET_DOWNS.get(args.netG, 2)
    if args.netG in UNET_DOWNS and any(side % multiple for side in size):
        raise utils.UserError(f"--netG {args.netG} needs {name} a multiple of {multiple} (its "
                              f"{UNET_DOWNS[args.netG]} stride-2 levels), not {value}")
    if any(side % 4 or side < 8 for side in size):
        raise utils.UserError(f"{name} {value}: must be a multiple of 4 and at least 8")
    if args.netD != "pixel" and min(module.patch_map_size(side, args.n_layers_D) for side in size) < 1:
        raise utils.UserError(f"{name} {value} is too small for a discriminator "
                              f"with --n_layers_D {args.n_layers_D}")


def architecture(args, train_size=None):
    """The settings of parsed model flags that fix the networks and variable shapes (ARCHITECTURE_KEYS).
    netG is "resnet" (with n_blocks; --netG resnet_6blocks means n_blocks 6), "unet_128" or "unet_256".
    train_size is [height, width] of the training images (the pools' and the step's shape; default
    the crop_size square; train.py's --preprocess may give another)."""
    settings = {k: getattr(args, k) for k in ARCHITECTURE_KEYS if k != "netG"}
    settings["train_size"] = list(train_size or (args.crop_size, args.crop_size))
    netG = args.netG or "resnet"
    if netG.startswith("resnet_"):
        netG, settings["n_blocks"] = "resnet", int(netG[len("resnet_"):-len("blocks")])
    return {"netG": netG, **settings}


def generator(architecture, direction, dtype=None):
    """The generator of `direction` ("A2B": input_nc -> output_nc channels, "B2A" the reverse) that an
    architecture (see architecture(), saved_architecture()) names: the ResNet or a U-Net, named
    GENERATOR_KEYS[direction]."""
    a = {**ARCHITECTURE_DEFAULTS, **architecture}
    channels = (a["input_nc"], a["output_nc"])[::1 if direction == "A2B" else -1]
    options = dict(norm=a["norm"], dropout=a["dropout"], name=GENERATOR_KEYS[direction], dtype=dtype)
    if a["netG"] in UNET_DOWNS:
        return module.unet_generator(a["ngf"], UNET_DOWNS[a["netG"]], *channels, **options)
    return module.resnet_generator(a["ngf"], a["n_blocks"], *channels, **options)


def saved_architecture(config):
    """The architecture recorded in a run's config.json, with ARCHITECTURE_DEFAULTS for the keys
    that did not exist when the run was written (runs and imports before --input_nc/--output_nc
    recorded one "channels" for both; runs before "train_size" trained on crop_size squares)."""
    saved = dict(config.get("architecture", {}))
    if "channels" in saved:
        saved.setdefault("input_nc", saved["channels"])
        saved.setdefault("output_nc", saved.pop("channels"))
    if "crop_size" in saved:
        saved.setdefault("train_size", [saved["crop_size"]] * 2)
    return {**ARCHITECTURE_DEFAULTS, **saved}


def discriminator(netD, ndf, n_layers_D, channels, norm, name, dtype=None):
    """The discriminator --netD names (see module.patch_discriminator, module.pixel_discriminator),
    of `channels`-channel images."""
    if netD == "pixel":
        return module.pixel_discriminator(ndf, channels, norm, name=name, dtype=dtype)
    return module.patch_discriminator(ndf, n_layers_D, channels, norm, name=name, dtype=dtype)


def build(args, train_size=None, **kwargs):
    """A CycleGAN from parsed model flags (add_model_flags) for training images of train_size
    (see architecture()); kwargs add or override arguments."""
    settings = dict(architecture(args, train_size), lambda_cycle=args.lambda_cycle, lambda_identity=args.lambda_identity,
                    lr=args.lr, beta1=args.beta1, batch_size=args.batch_size, jit_compile=args.jit_compile,
                    gan_mode=args.gan_mode, lr_policy=args.lr_policy, lr_decay_iters=args.lr_decay_iters,
                    init_type=args.init_type, init_gain=args.init_gain,
                    mixed_precision=args.mixed_precision)
    return CycleGAN(**{**settings, **kwargs})


GAN_MODES = ("lsgan", "vanilla", "wgangp")
GRADIENT_PENALTY_WEIGHT = 10.0      # the official cal_gradient_penalty's lambda_gp
LR_POLICIES = ("linear", "step", "plateau", "cosine")


def lsgan_loss(scores, target):
    """Least-squares GAN loss: mean((D(x) - target)^2), target 1 for real, 0 for fake."""
    scores = tf.cast(scores, tf.float32)
    return tf.reduce_mean(tf.square(scores - target))


def gan_loss(mode, scores, real):
    """The adversarial loss of raw discriminator scores for images taken as real (True) or fake,
    as the official GANLoss: lsgan mean((D - t)^2) with t = 1 or 0; vanilla the cross-entropy of
    sigmoid(D) against t; wgangp -mean(D) for real, mean(D) for fake."""
    scores = tf.cast(scores, tf.float32)
    if mode == "lsgan":
        return lsgan_loss(scores, 1.0 if real else 0.0)
    if mode == "vanilla":
        labels = tf.ones_like(scores) if real else tf.zeros_like(scores)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=scores))
    return -tf.reduce_mean(scores) if real else tf.reduce_mean(scores)


def gradient_penalty(D, real, fake, alpha):
    """WGAN-GP's penalty (Gulrajani et al. 2017), as the official cal_gradient_penalty ('mixed'):
    GRADIENT_PENALTY_WEIGHT * mean over images of (||grad_x sum D(x)||_2 - 1)^2 at
    x = alpha * real + (1 - alpha) * fake, alpha (N, 1, 1, 1) uniform in [0, 1)."""
    x = alpha * tf.cast(real, tf.float32) + (1.0 - alpha) * tf.cast(fake, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = tf.cast(D(x, training=True), tf.float32)
    grads = tf.reshape(tape.gradient(scores, x), [tf.shape(x)[0], -1])
    norms = tf.norm(grads + 1e-16, axis=1)
    return GRADIENT_PENALTY_WEIGHT * tf.reduce_mean(tf.square(norms - 1.0))


def l1_loss(x, y):
    """Mean absolute error, the paper's ||x - y||_1 (Eq. 2) averaged over pixels."""
    return tf.reduce_mean(tf.abs(tf.cast(x, tf.float32) - tf.cast(y, tf.float32)))


def lr_factor(epoch, n_epochs, n_epochs_decay, policy="linear", decay_iters=50):
    """Learning-rate multiplier for 1-based `epoch` under --lr_policy.

    linear: 1 for epochs 1..n_epochs, then falls linearly to exactly 0 at the last epoch:
        factor(e) = 1 - max(0, e - n_epochs) / n_epochs_decay
    so with 100 + 100 epochs: epoch 1 -> 1, 100 -> 1, 101 -> 0.99, 150 -> 0.5, 200 -> 0.
    The others are the official schedulers' values in epoch e (which have stepped e times by then):
    step 0.1^floor(e / decay_iters); plateau 0.2^floor((e - 1) / 6) (ReduceLROnPlateau, patience 5,
    fed the constant metric 0 by the official code, so it decays every 6 epochs); cosine
    (1 + cos(pi e / n_epochs)) / 2 (CosineAnnealingLR with T_max = n_epochs).
    """
    if policy == "step":
        return 0.1 ** (epoch // decay_iters)
    if policy == "plateau":
        return 0.2 ** ((epoch - 1) // 6)
    if policy == "cosine":
        return (1.0 + math.cos(math.pi * epoch / max(1, n_epochs))) / 2.0
    if n_epochs_decay <= 0 or epoch <= n_epochs:
        return 1.0
    return max(0.0, 1.0 - (epoch - n_epochs) / float(n_epochs_decay))


class ImagePool:
    """The history of generated images of Shrivastava et al., kept as graph state.

    While fewer than `size` images are stored, each new image is stored and returned.
    After that, each image is, with probability 0.5, swapped for a random stored one
    (which is returned, the new one taking its place), else returned as it is.
    size 0 turns the pool off. Images and the fill count are variables, so the pool is
    part of the tf.function step and of the checkpoint.
    """

    def __init__(self, size, image_shape, name):
        self.size = int(size)
        # Under tf.distribute each replica keeps its own pool (ON_READ variables are replica-
        # local); a checkpoint holds the first replica's, and a restore gives it to every replica.
        # Such variables cannot scatter, so an update assigns the whole pool (a copy of 50 crops).
        local = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.images = tf.Variable(tf.zeros([max(self.size, 1), *image_shape], tf.float32),
                                  name=f"{name}_images", **local)
        self.count = tf.Variable(0, dtype=tf.int32, name=f"{name}_count", **local)

    def query(self, images, rng):
        """Returns a batch of the same shape: new images or older ones from the pool."""
        if self.size == 0:
            return images
        images = tf.cast(images, tf.float32)
        out = tf.TensorArray(tf.float32, size=tf.shape(images)[0], element_shape=images.shape[1:])
        for i in tf.range(tf.shape(images)[0]):
            # Both draws happen for every image so the generator state advances the same
            # way however full the pool is.
            u = rng.uniform([])
            j = rng.uniform([], 0, self.size, dtype=tf.int32)
            image = images[i]
            if self.count < self.size:
                self.images.assign(tf.tensor_scatter_nd_update(self.images, [[self.count]], image[None]))
                self.count.assign_add(1)
                picked = image
            elif u > 0.5:
                picked = tf.identity(self.images[j])
                with tf.control_dependencies([picked]):
                    self.images.assign(tf.tensor_scatter_nd_update(self.images, [[j]], image[None]))
            else:
                picked = image
            out = out.write(i, picked)
        return out.stack()


class CycleGAN:
    """The CycleGAN model: networks, optimizers, pools, counters and the training step.

    Architecture (netG, ngf, ndf, n_blocks, n_layers_D, netD, norm, dropout, input_nc: domain A's
    channels, output_nc: domain B's) and the training images' size, train_size (height, width; by
    default crop_size square), are fixed at construction; the loss weights and Adam settings default
    to the paper's.
    """

    def __init__(self, ngf=64, ndf=64, n_blocks=9, n_layers_D=3, netD="basic", netG="resnet", norm="instance",
                 dropout=False, input_nc=3, output_nc=3, crop_size=256, train_size=None,
                 pool_size=50, lambda_cycle=10.0, lambda_identity=0.5, lr=2e-4, beta1=0.5,
                 gan_mode="lsgan", lr_policy="linear", lr_decay_iters=50, init_type="normal", init_gain=0.02,
                 beta2=0.999, batch_size=1, random_seed=0, jit_compile=False, strategy=None,
                 mixed_precision=False):
        self.lambda_cycle = float(lambda_cycle)
        self.lambda_identity = float(lambda_identity)
        self.lr = float(lr)
        self.netD, self.netG, self.norm = netD, netG, norm
        # Batch norm's statistics span the batch, so what the official code runs as separate calls
        # stays separate; the other norms work image by image, so calls on the same weights are joined.
        self.join_batches = norm != "batch"
        self.init = (init_type, float(init_gain))
        self.gan_mode, self.lr_policy, self.lr_decay_iters = gan_mode, lr_policy, int(lr_decay_iters)
        # batch_size is per replica; the default strategy is one device.
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.policy = mixed_precision_policy() if mixed_precision else None
        self.train_size = tuple(train_size or (crop_size, crop_size))
        with self.strategy.scope():
            self._build(dict(netG=netG, ngf=ngf, n_blocks=n_blocks, norm=norm, dropout=dropout, input_nc=input_nc,
                             output_nc=output_nc), ndf, n_layers_D, pool_size, beta1, beta2, random_seed)
        specs = [tf.TensorSpec([batch_size, *self.train_size, c], tf.float32) for c in (input_nc, output_nc)]
        if self.replicas == 1 and not self.strategy.extended._in_multi_worker_mode():
            self.train_step = tf.function(self._train_step, input_signature=specs,
                                          jit_compile=jit_compile or None)
        else:  # distributed values in; their spec comes from the distributed dataset
            self.train_step = tf.function(self._train_step, jit_compile=jit_compile or None)
        self.translators = {d: translator.Translator(self.generator(d), jit_compile) for d in DIRECTIONS}

    def _build(self, architecture, ndf, n_layers_D, pool_size, beta1, beta2, random_seed):
        p = self.policy
        self.G_A2B = generator(architecture, "A2B", p)
        self.G_B2A = generator(architecture, "B2A", p)
        # D_A tells real from generated images of domain A, D_B of domain B.
        channels_A, channels_B = architecture["input_nc"], architecture["output_nc"]
        self.D_A = discriminator(self.netD, ndf, n_layers_D, channels_A, self.norm, name="D_A", dtype=p)
        self.D_B = discriminator(self.netD, ndf, n_layers_D, channels_B, self.norm, name="D_B", dtype=p)
        if self.init != ("normal", 0.02):  # the layers' own draw is the default's
            for net in (self.G_A2B, self.G_B2A, self.D_A, self.D_B):
                module.initialize(net, *self.init)
        # PyTorch's Adam has eps 1e-8; Keras defaults to 1e-7.
        adam = lambda: keras.optimizers.Adam(self.lr, beta_1=beta1, beta_2=beta2, epsilon=1e-8)
        if p == "mixed_float16":  # float16 gradients underflow without loss scaling
            self.optimizer_G = keras.optimizers.LossScaleOptimizer(adam())
            self.optimizer_D = keras.optimizers.LossScaleOptimizer(adam())
        else:
            self.optimizer_G, self.optimizer_D = adam(), adam()
        self.G_vars = self.G_A2B.trainable_variables + self.G_B2A.trainable_variables
        self.D_vars = self.D_A.trainable_variables + self.D_B.trainable_variables
        # Built now, not at the first step, so a checkpoint restores every slot.
        self.optimizer_G.build(self.G_vars)
        self.optimizer_D.build(self.D_vars)
        self.pool_A = ImagePool(pool_size, (*self.train_size, channels_A), "pool_A")
        self.pool_B = ImagePool(pool_size, (*self.train_size, channels_B), "pool_B")
        self.rng = tf.random.Generator.from_seed(random_seed)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_step")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.loss_sums = tf.Variable(tf.zeros([len(LOSS_NAMES)], tf.float64), trainable=False,
                                     name="loss_sums")

    def checkpoint(self):
        """A tf.train.Checkpoint of everything training changes; these keys are the layout."""
        return tf.train.Checkpoint(
            **{GENERATOR_KEYS[d]: self.generator(d) for d in DIRECTIONS}, D_A=self.D_A, D_B=self.D_B,
            optimizer_G=self.optimizer_G, optimizer_D=self.optimizer_D,
            pool_A_images=self.pool_A.images, pool_A_count=self.pool_A.count,
            pool_B_images=self.pool_B.images, pool_B_count=self.pool_B.count,
            rng=self.rng, epoch=self.epoch, epoch_step=self.epoch_step, step=self.step,
            loss_sums=self.loss_sums)

    def weights_finite(self):
        """True if every float variable of the four networks and both optimizers (Adam's moments)
        is finite. One graph reduces them all, so a save costs one value fetched to the host, not a
        round trip per variable."""
        if not hasattr(self, "_finite"):
            float_vars = [v for v in self.G_vars + self.D_vars + self.optimizer_G.variables + self.optimizer_D.variables
                          if tf.as_dtype(v.dtype).is_floating]
            self._finite = tf.function(lambda: tf.reduce_all(tf.stack(
                [tf.reduce_all(tf.math.is_finite(v)) for v in float_vars])))
        return bool(self._finite())

    def begin_epoch(self):
        """Zeroes the loss sums when an epoch starts from its first step (a resumed epoch keeps
        them); returns the steps of this epoch already done."""
        done = int(self.epoch_step.numpy())
        if done == 0:
            self.loss_sums.assign(tf.zeros_like(self.loss_sums))
        return done

    def end_epoch(self, epoch):
        """Marks 1-based `epoch` done; returns its mean losses (LOSS_NAMES order, NumPy)."""
        means = self.loss_sums.numpy() / max(int(self.epoch_step.numpy()), 1)
        self.epoch.assign(epoch)
        self.epoch_step.assign(0)
        return means

    def counters(self):
        """(epochs done, steps done in the current epoch, steps done in all) as ints."""
        return int(self.epoch.numpy()), int(self.epoch_step.numpy()), int(self.step.numpy())

    def set_learning_rate(self, epoch, n_epochs, n_epochs_decay):
        """Sets both optimizers' rate for 1-based `epoch` (see lr_factor, with this model's
        --lr_policy); returns it."""
        lr = self.lr * lr_factor(epoch, n_epochs, n_epochs_decay, self.lr_policy, self.lr_decay_iters)
        self.optimizer_G.learning_rate = lr
        self.optimizer_D.learning_rate = lr
        return lr

    def generator_losses(self, real_A, real_B):
        """The full objective of the generators (Eq. 3 plus the identity term).

        L_G = (D_B(G_A2B(A)) - 1)^2 + (D_A(G_B2A(B)) - 1)^2                       LSGAN
            + lambda_cycle * (|G_B2A(G_A2B(A)) - A| + |G_A2B(G_B2A(B)) - B|)      Eq. 2
            + lambda_identity * lambda_cycle * (|G_A2B(B) - B| + |G_B2A(A) - A|)  Sec. 5.2
        Returns (losses dict, fake_A, fake_B); identity passes are skipped when its weight is 0.
        A generator's translation and identity passes take the same weights on inputs of one
        shape, so they run as one batch: 4 generator calls instead of 6, with larger (faster)
        convolutions. Exact, because instance norm works image by image; with batch norm the six
        calls stay apart, in the official order (each moves the running statistics).
        """
        identity = self.lambda_identity > 0
        n = tf.shape(real_A)[0]
        if identity and self.join_batches:
            fake_B, idt_A = tf.split(self.G_A2B(tf.concat([real_A, real_B], 0), training=True), [n, -1])
            fake_A, idt_B = tf.split(self.G_B2A(tf.concat([real_B, real_A], 0), training=True), [n, -1])
            rec_A = self.G_B2A(fake_B, training=True)
            rec_B = self.G_A2B(fake_A, training=True)
        else:
            fake_B = self.G_A2B(real_A, training=True)
            rec_A = self.G_B2A(fake_B, training=True)
            fake_A = self.G_B2A(real_B, training=True)
            rec_B = self.G_A2B(fake_A, training=True)
            if identity:
                idt_A = self.G_A2B(real_B, training=True)
                idt_B = self.G_B2A(real_A, training=True)
        losses = {
            "G_A2B": gan_loss(self.gan_mode, self.D_B(fake_B, training=True), True),
            "G_B2A": gan_loss(self.gan_mode, self.D_A(fake_A, training=True), True),
            "cycle_A": l1_loss(rec_A, real_A) * self.lambda_cycle,
            "cycle_B": l1_loss(rec_B, real_B) * self.lambda_cycle,
        }
        if identity:
            weight = self.lambda_cycle * self.lambda_identity
            losses["idt_A"] = l1_loss(idt_A, real_B) * weight
            losses["idt_B"] = l1_loss(idt_B, real_A) * weight
        else:
            losses["idt_A"] = losses["idt_B"] = tf.constant(0.0)
        losses["G"] = tf.add_n([losses[k] for k in LOSS_NAMES[1:7]])
        return losses, fake_A, fake_B

    def discriminator_loss(self, D, real, fake):
        """0.5 * (loss(D(real), real) + loss(D(fake), fake)): the D side of the GAN loss, halved
        as the reference does to slow D relative to G (LSGAN: 0.5 * (mean((D(real) - 1)^2) +
        mean(D(fake)^2))), plus the gradient penalty under wgangp. Real and fake images go
        through D as one batch (per-image norms keep them independent), or apart with batch norm."""
        fake = tf.cast(fake, real.dtype)
        if self.join_batches:
            scores_real, scores_fake = tf.split(D(tf.concat([real, fake], 0), training=True), 2)
        else:
            scores_real, scores_fake = D(real, training=True), D(fake, training=True)
        loss = 0.5 * (gan_loss(self.gan_mode, scores_real, True) + gan_loss(self.gan_mode, scores_fake, False))
        if self.gan_mode == "wgangp":
            alpha = self.rng.uniform([tf.shape(real)[0], 1, 1, 1])
            loss += gradient_penalty(D, real, fake, alpha)
        return loss

    def _train_step(self, real_A, real_B):
        """One training iteration on every replica (see _replica_step); returns the losses,
        averaged over the global batch, as one vector in LOSS_NAMES order."""
        per_replica = self.strategy.run(self._replica_step, args=(real_A, real_B))
        vector = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        self.loss_sums.assign_add(tf.cast(vector, tf.float64))
        self.step.assign_add(1)
        self.epoch_step.assign_add(1)
        return vector

    def _replica_step(self, real_A, real_B):
        """One iteration of Algorithm 1 on one replica's batch, as one graph:
        1. translate both ways and back, score the fakes; generator loss (Eq. 3 + identity);
        2. pass the fakes through the pools (history of 50 generated images);
        3. discriminator losses on real images and pooled fakes;
        4. Adam on both generators, then on both discriminators.
        The discriminators' gradients do not depend on the generators' update (the fakes
        were made before it), so computing both before applying either is the reference order.
        Losses are divided by the number of replicas: the optimizers sum the replicas'
        gradients, which then are those of the mean over the global batch.
        """
        scale = 1.0 / self.replicas
        with tf.GradientTape() as tape_G:
            losses, fake_A, fake_B = self.generator_losses(real_A, real_B)
            loss_G = losses["G"] * scale
        pooled_A = self.pool_A.query(tf.stop_gradient(fake_A), self.rng)
        pooled_B = self.pool_B.query(tf.stop_gradient(fake_B), self.rng)
        with tf.GradientTape() as tape_D:
            losses["D_A"] = self.discriminator_loss(self.D_A, real_A, pooled_A)
            losses["D_B"] = self.discriminator_loss(self.D_B, real_B, pooled_B)
            loss_D = (losses["D_A"] + losses["D_B"]) * scale
        grads_G = tape_G.gradient(self._scaled(self.optimizer_G, loss_G), self.G_vars)
        grads_D = tape_D.gradient(self._scaled(self.optimizer_D, loss_D), self.D_vars)
        self.optimizer_G.apply_gradients(zip(grads_G, self.G_vars))
        self.optimizer_D.apply_gradients(zip(grads_D, self.D_vars))
        return tf.stack([losses[k] for k in LOSS_NAMES]) * scale

    @staticmethod
    def _scaled(optimizer, loss):
        """The loss as the optimizer wants its gradient: scaled up under float16 (a
        LossScaleOptimizer unscales the gradients and skips steps that overflow)."""
        return optimizer.scale_loss(loss) if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else loss

    def generator(self, direction):
        """G_A2B for "A2B", G_B2A for "B2A"."""
        return self.G_A2B if direction == "A2B" else self.G_B2A


def mixed_precision_policy():
    """mixed_float16 where a GPU computes (with loss scaling), else mixed_bfloat16: CPUs have
    bfloat16 convolutions (oneDNN) but no fast float16. Variables stay float32 either way."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def find_checkpoint(model_filepath):
    """Resolves a run folder, a checkpoint prefix ("run/cyclegan.ckpt-12") or a prefix without
    its number ("run/cyclegan.ckpt": the newest of that name) to (checkpoint path, run folder).
    Raises utils.UserError with a one-line reason."""
    path = model_filepath.rstrip("/") or "/"
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise utils.UserError(f"{model_filepath}: folder holds no checkpoint (and no saved_model.pb)")
        return latest, path
    folder = os.path.dirname(path) or "."
    if os.path.exists(path + ".index"):
        return path, folder
    numbered = sorted(glob.glob(glob.escape(path) + "-*.index"),
                      key=lambda p: int(p[len(path) + 1:-len(".index")]) if p[len(path) + 1:-6].isdigit() else -1)
    if numbered:
        return numbered[-1][:-len(".index")], folder
    raise utils.UserError(f"{model_filepath}: no such model (expected a run folder, a checkpoint prefix "
                          f"or a SavedModel folder)")


def run_config(model_filepath):
    """(checkpoint path, config) of a run folder or checkpoint prefix (see find_checkpoint); the
    config holds the architecture and, for an imported pretrained model, the one direction it
    translates ("directions"). Raises utils.UserError."""
    checkpoint, run_dir = find_checkpoint(model_filepath)
    config_path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise utils.UserError(f"{run_dir}: no {CONFIG_FILE} beside the checkpoint, so its architecture is unknown")
    config = files.load_json(config_path)
    if not isinstance(config.get("architecture"), dict):
        raise utils.UserError(f"{config_path}: holds no architecture")
    return checkpoint, config


def load_run_generators(model_filepath, directions):
    """The generators for `directions` of a run folder or checkpoint prefix (see find_checkpoint),
    built with the architecture of the run's config.json. Raises utils.UserError."""
    checkpoint, config = run_config(model_filepath)
    held = config.get("directions", DIRECTIONS)
    missing = [d for d in directions if d not in held]
    if missing:
        why = " (--save_cycle needs both)" if len(directions) > 1 else ""
        if "pretrained" in config:
            why += "; a pretrained model translates its own input domain, as A2B"
        raise utils.UserError(f"{model_filepath}: holds only the {' and '.join(held)} generator, not "
                              f"{', '.join(missing)}{why}")
    generators = load_generators(checkpoint, saved_architecture(config), directions)
    print(f"model: {checkpoint}", file=sys.stderr)
    if config.get("direction") == "BtoA":  # train.py --direction: its domain A is the folders named B
        print("the run was trained with --direction BtoA: A2B translates images like those of its folders named B "
              "(trainB) into those named A, B2A the other way", file=sys.stderr)
    return generators


def load_generators(checkpoint_path, architecture, directions):
    """Builds only the generators asked for and restores them from a training checkpoint.
    Raises utils.UserError if the checkpoint does not hold them with this architecture."""
    generators = {d: generator(architecture, d) for d in directions}
    ckpt = tf.train.Checkpoint(**{GENERATOR_KEYS[d]: G for d, G in generators.items()})
    try:
        ckpt.read(checkpoint_path).assert_existing_objects_matched().expect_partial()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        raise utils.UserError(f"{checkpoint_path}: cannot restore the generators ({utils.first_line(e)})") from None
    return generators
