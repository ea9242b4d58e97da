"""CycleGAN (Zhu et al. 2017): the two generators, the two discriminators, their losses and one
training step, as the official cycle_gan_model.py; the first method of model.py's registry.

    gan = CycleGAN(ngf=8, ndf=8, n_blocks=2, crop_size=32)
    losses = gan.train_step(real_A, real_B)      # images in [-1, 1], (batch, crop, crop, 3)
    fake_B = gan.translators["A2B"].translate(uint8_images_A)
    ckpt = gan.checkpoint()                      # tf.train.Checkpoint of everything that trains

Names follow the paper: G_A2B maps domain A to B, D_B tells real B from fake B.
"""
import tensorflow as tf

import layers
import module
import options
import training
import translator
import utils
from training import ImagePool, gan_loss, gradient_penalty, l1_loss


# Architecture settings: they fix every variable's shape, so a checkpoint only
# restores into a model built with the same values (with "train_size", see architecture()).
ARCHITECTURE_KEYS = ("netG", "ngf", "ndf", "n_blocks", "n_layers_D", "netD", "norm", "dropout", "input_nc", "output_nc",
                     "crop_size", "pool_size")
# What runs written before a key existed were built with.
ARCHITECTURE_DEFAULTS = {"netG": "resnet", "netD": "basic", "norm": "instance", "dropout": False, "input_nc": 3,
                         "output_nc": 3}
UNET_DOWNS = {"unet_128": 7, "unet_256": 8}
# Losses reported by train_step, in this order (also the losses CSV's columns).
LOSS_NAMES = ("G", "G_A2B", "G_B2A", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B")
# Where each direction's generator sits in a training checkpoint.
GENERATOR_KEYS = {"A2B": "G_A2B", "B2A": "G_B2A"}


def check_model_flags(args):
    """One-line errors (utils.UserError) for model flags that cannot work together (each flag's own
    bounds are its type's, options.number)."""
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
        netG, settings["n_blocks"] = "resnet", options.resnet_blocks(args)
    return {"netG": netG, **settings}


def generator(architecture, direction, dtype=None):
    """The generator of `direction` ("A2B": input_nc -> output_nc channels, "B2A" the reverse) that an
    architecture (see architecture(), saved_architecture()) names: the ResNet or a U-Net, named
    GENERATOR_KEYS[direction]."""
    a = {**ARCHITECTURE_DEFAULTS, **architecture}
    channels = (a["input_nc"], a["output_nc"])[::1 if direction == "A2B" else -1]
    settings = dict(norm=a["norm"], dropout=a["dropout"], name=GENERATOR_KEYS[direction], dtype=dtype)
    if a["netG"] in UNET_DOWNS:
        return module.unet_generator(a["ngf"], UNET_DOWNS[a["netG"]], *channels, **settings)
    return module.resnet_generator(a["ngf"], a["n_blocks"], *channels, **settings)


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
    """A CycleGAN from parsed options (options.py) for training images of train_size (see
    architecture()); kwargs add or override arguments."""
    settings = dict(architecture(args, train_size), lambda_cycle=args.lambda_cycle, lambda_A=args.lambda_A,
                    lambda_B=args.lambda_B, lambda_identity=args.lambda_identity,
                    lr=args.lr, beta1=args.beta1, beta2=args.beta2, batch_size=args.batch_size,
                    jit_compile=args.jit_compile,
                    gan_mode=args.gan_mode, lr_policy=args.lr_policy, lr_decay_iters=args.lr_decay_iters,
                    init_type=args.init_type, init_gain=args.init_gain,
                    mixed_precision=args.mixed_precision)
    return CycleGAN(**{**settings, **kwargs})


class CycleGAN(training.Trainer):
    """The CycleGAN model: networks, optimizers, pools, counters and the training step.

    Architecture (netG, ngf, ndf, n_blocks, n_layers_D, netD, norm, dropout, input_nc: domain A's
    channels, output_nc: domain B's) and the training images' size, train_size (height, width; by
    default crop_size square), are fixed at construction; the loss weights and Adam settings default
    to the paper's.

    The method's interface (see model.py) is its class attributes and staticmethods; the rest of
    training (counters, schedule, distributed step) is training.Trainer's.
    """

    LOSS_NAMES = LOSS_NAMES
    # The directions its generators translate, and their keys in a training checkpoint.
    DIRECTIONS = options.DIRECTIONS
    GENERATOR_KEYS = GENERATOR_KEYS
    # The progress bar's readings: name -> the losses summed.
    BAR = {"G": ("G",), "cyc": ("cycle_A", "cycle_B"), "D": ("D_A", "D_B")}
    # losses.png's curves.
    PLOTTED = ("G", "cycle_A", "cycle_B", "idt_A", "idt_B", "G_A2B", "G_B2A", "D_A", "D_B")
    check_options = staticmethod(check_model_flags)
    check_train_size = staticmethod(check_train_size)
    architecture = staticmethod(architecture)
    saved_architecture = staticmethod(saved_architecture)
    build_generator = staticmethod(generator)
    from_options = staticmethod(build)

    def __init__(self, ngf=64, ndf=64, n_blocks=9, n_layers_D=3, netD="basic", netG="resnet", norm="instance",
                 dropout=False, input_nc=3, output_nc=3, crop_size=256, train_size=None,
                 pool_size=50, lambda_cycle=10.0, lambda_identity=0.5, lr=2e-4, beta1=0.5,
                 gan_mode="lsgan", lr_policy="linear", lr_decay_iters=50, init_type="normal", init_gain=0.02,
                 beta2=0.999, batch_size=1, random_seed=0, jit_compile=False, strategy=None,
                 mixed_precision=False, lambda_A=None, lambda_B=None):
        self.init_training(lr, lr_policy, lr_decay_iters, strategy, mixed_precision)
        # The official per-domain weights; lambda_cycle is both (the official defaults make them equal).
        self.lambda_A = float(lambda_cycle if lambda_A is None else lambda_A)
        self.lambda_B = float(lambda_cycle if lambda_B is None else lambda_B)
        self.lambda_identity = float(lambda_identity)
        self.netD, self.netG, self.norm = netD, netG, norm
        # Batch norm's statistics span the batch, so what the official code runs as separate calls
        # stays separate; the other norms work image by image, so calls on the same weights are joined.
        self.join_batches = norm != "batch"
        self.init = (init_type, float(init_gain))
        self.gan_mode = gan_mode
        self.train_size = tuple(train_size or (crop_size, crop_size))
        with self.strategy.scope():
            self._build(dict(netG=netG, ngf=ngf, n_blocks=n_blocks, norm=norm, dropout=dropout, input_nc=input_nc,
                             output_nc=output_nc), ndf, n_layers_D, pool_size, beta1, beta2, random_seed)
        self.make_train_step([tf.TensorSpec([batch_size, *self.train_size, c], tf.float32)
                              for c in (input_nc, output_nc)], jit_compile)
        self.generators = {"A2B": self.G_A2B, "B2A": self.G_B2A}
        self.translators = {d: translator.Translator(G, jit_compile) for d, G in self.generators.items()}

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
                layers.initialize(net, *self.init)
        self.optimizer_G, self.optimizer_D = self.adam(beta1, beta2), self.adam(beta1, beta2)
        self.optimizers = {"optimizer_G": self.optimizer_G, "optimizer_D": self.optimizer_D}
        self.G_vars = self.G_A2B.trainable_variables + self.G_B2A.trainable_variables
        self.D_vars = self.D_A.trainable_variables + self.D_B.trainable_variables
        # Built now, not at the first step, so a checkpoint restores every slot.
        self.optimizer_G.build(self.G_vars)
        self.optimizer_D.build(self.D_vars)
        self.pool_A = ImagePool(pool_size, (*self.train_size, channels_A), "pool_A")
        self.pool_B = ImagePool(pool_size, (*self.train_size, channels_B), "pool_B")
        self.make_counters(random_seed)

    def checkpoint(self):
        """A tf.train.Checkpoint of everything training changes; these keys are the layout."""
        return tf.train.Checkpoint(
            **{GENERATOR_KEYS[d]: G for d, G in self.generators.items()}, D_A=self.D_A, D_B=self.D_B,
            **self.optimizers, pool_A_images=self.pool_A.images, pool_A_count=self.pool_A.count,
            pool_B_images=self.pool_B.images, pool_B_count=self.pool_B.count, **self.counter_checkpoint())

    def trainable_variables(self):
        return self.G_vars + self.D_vars

    def passes(self):
        """What one training step runs, for benchmark.py's count of its work: forward passes of a
        generator and of a discriminator per image pair (each backward counts as two forwards), the
        generator calls (translation and identity share one), and a generator and a discriminator
        of the step."""
        generator_passes = 6 if self.lambda_identity > 0 else 4
        return dict(generator=generator_passes, discriminator=6, generator_calls=4 if self.join_batches else
                    generator_passes, G=self.G_A2B, D=self.D_A)

    def generator_losses(self, real_A, real_B):
        """The full objective of the generators (Eq. 3 plus the identity term).

        L_G = (D_B(G_A2B(A)) - 1)^2 + (D_A(G_B2A(B)) - 1)^2                       LSGAN
            + lambda_A * |G_B2A(G_A2B(A)) - A| + lambda_B * |G_A2B(G_B2A(B)) - B|   Eq. 2
            + lambda_identity * (lambda_B * |G_A2B(B) - B| + lambda_A * |G_B2A(A) - A|)   Sec. 5.2
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
            "cycle_A": l1_loss(rec_A, real_A) * self.lambda_A,
            "cycle_B": l1_loss(rec_B, real_B) * self.lambda_B,
        }
        if identity:   # as the official: G_A2B's identity on B images weighs as B's cycle, and G_B2A's as A's
            losses["idt_A"] = l1_loss(idt_A, real_B) * self.lambda_B * self.lambda_identity
            losses["idt_B"] = l1_loss(idt_B, real_A) * self.lambda_A * self.lambda_identity
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
        grads_G = tape_G.gradient(self.scaled(self.optimizer_G, loss_G), self.G_vars)
        grads_D = tape_D.gradient(self.scaled(self.optimizer_D, loss_D), self.D_vars)
        self.optimizer_G.apply_gradients(zip(grads_G, self.G_vars))
        self.optimizer_D.apply_gradients(zip(grads_D, self.D_vars))
        return tf.stack([losses[k] for k in LOSS_NAMES]) * scale

    def generator(self, direction):
        """G_A2B for "A2B", G_B2A for "B2A"."""
        return self.generators[direction]
