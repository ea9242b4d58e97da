"""What every method's training shares: the adversarial losses of the official GANLoss, the
L1 loss, the learning-rate schedules, the image pool of generated images, the mixed-precision
policy, and Trainer: the counters, loss sums, optimizers' rates and the distributed step that a
method's own step runs inside.
"""
import math

import keras
import tensorflow as tf


GRADIENT_PENALTY_WEIGHT = 10.0      # the official cal_gradient_penalty's lambda_gp


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


def lr_factor(epoch, n_epochs, n_epochs_decay, policy="linear", decay_iters=50, epoch_count=1):
    """Learning-rate multiplier for 1-based `epoch` under --lr_policy, exactly as the official
    get_scheduler with its scheduler stepped at the end of every epoch (the official CUT train.py, and
    CycleGAN's as the paper was trained): in epoch e the scheduler has stepped s = e - epoch_count
    times since the run started at --epoch_count.

    linear: 1 - max(0, s + epoch_count - n_epochs) / (n_epochs_decay + 1) = 1 - max(0, e - n_epochs) /
        (n_epochs_decay + 1): 1 for epochs 1..n_epochs, then d/(d+1), (d-1)/(d+1), ... and 1/(d+1) in
        the last epoch (never 0): with 100 + 100 epochs 101 -> 100/101, 150 -> 51/101, 200 -> 1/101.
    step: 0.1^floor(s / decay_iters) (StepLR). plateau: 0.2^floor((s - 1) / 6) for s >= 1 (the
    official ReduceLROnPlateau, patience 5, is fed the constant metric 0: its first step sets the
    best, every later one is 'bad', and each sixth bad step in a row decays, at steps 7, 13, ...). cosine:
    (1 + cos(pi s / n_epochs)) / 2 (CosineAnnealingLR with T_max = n_epochs).
    """
    s = epoch - epoch_count
    if policy == "step":
        return 0.1 ** (s // decay_iters)
    if policy == "plateau":
        return 0.2 ** (max(0, s - 1) // 6)
    if policy == "cosine":
        return (1.0 + math.cos(math.pi * s / max(1, n_epochs))) / 2.0
    return 1.0 - max(0, epoch - n_epochs) / float(n_epochs_decay + 1)


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


def mixed_precision_policy():
    """mixed_float16 where a GPU computes (with loss scaling), else mixed_bfloat16: CPUs have
    bfloat16 convolutions (oneDNN) but no fast float16. Variables stay float32 either way."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


class Trainer:
    """What a method's training object shares whatever the method (CycleGAN, and the next ones):
    the counters and loss sums that the checkpoint keeps, the learning rate set per epoch on every
    optimizer, the check that the weights are finite, and the step run on every replica.

    A method sets LOSS_NAMES, builds its networks and self.optimizers ({checkpoint key: optimizer})
    inside self.strategy.scope() after init_training(), then make_train_step(), and defines
    _replica_step(real_A, real_B) -> the vector of its losses (LOSS_NAMES order) for one replica.
    """

    LOSS_NAMES = ()
    DEFAULTS = {}

    @classmethod
    def defaults(cls, chosen):
        """{option: default} where this method's differ from options.OPTIONS, as the official
        modify_commandline_options; chosen: the options parsed with the table's defaults (a method
        whose defaults depend on a mode reads it there). By default DEFAULTS."""
        return dict(cls.DEFAULTS)

    @staticmethod
    def load_size(args, epoch):
        """The size training images are loaded at in 1-based `epoch`: --load_size (a method may vary it)."""
        return args.load_size

    def init_training(self, lr, lr_policy, lr_decay_iters, strategy, mixed_precision):
        """The settings every method's step needs; call first in a method's __init__."""
        self.lr = float(lr)
        self.lr_policy, self.lr_decay_iters = lr_policy, int(lr_decay_iters)
        # batch_size is per replica; the default strategy is one device.
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.policy = mixed_precision_policy() if mixed_precision else None
        self.optimizers = {}

    def make_counters(self, random_seed):
        """The random generator, epoch and step counters and loss sums: graph state, checkpointed.
        Call inside the strategy's scope."""
        self.rng = tf.random.Generator.from_seed(random_seed)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_step")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.loss_sums = tf.Variable(tf.zeros([len(self.LOSS_NAMES)], tf.float64), trainable=False, name="loss_sums")

    def counter_checkpoint(self):
        """The checkpoint entries of make_counters' state (a method adds its networks, optimizers and pools)."""
        return dict(rng=self.rng, epoch=self.epoch, epoch_step=self.epoch_step, step=self.step, loss_sums=self.loss_sums)

    def make_train_step(self, specs, jit_compile):
        """self.train_step: the tf.function of one iteration on every replica, for inputs of `specs`."""
        if self.replicas == 1 and not self.strategy.extended._in_multi_worker_mode():
            self.train_step = tf.function(self._train_step, input_signature=specs, jit_compile=jit_compile or None)
        else:  # distributed values in; their spec comes from the distributed dataset
            self.train_step = tf.function(self._train_step, jit_compile=jit_compile or None)

    def _train_step(self, real_A, real_B):
        """One training iteration on every replica (see _replica_step); returns the losses,
        averaged over the global batch, as one vector in LOSS_NAMES order."""
        per_replica = self.strategy.run(self._replica_step, args=(real_A, real_B))
        vector = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        self.loss_sums.assign_add(tf.cast(vector, tf.float64))
        self.step.assign_add(1)
        self.epoch_step.assign_add(1)
        return vector

    def weights_finite(self):
        """True if every float variable of the networks and optimizers (Adam's moments) is finite.
        One graph reduces them all, so a save costs one value fetched to the host, not a round trip
        per variable."""
        if not hasattr(self, "_finite"):
            float_vars = [v for v in self.trainable_variables() + [v for o in self.optimizers.values() for v in o.variables]
                          if tf.as_dtype(v.dtype).is_floating]
            self._finite = tf.function(lambda: tf.reduce_all(tf.stack(
                [tf.reduce_all(tf.math.is_finite(v)) for v in float_vars])))
        return bool(self._finite())

    def trainable_variables(self):
        """Every variable the optimizers train (the method's networks)."""
        raise NotImplementedError

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

    def set_learning_rate(self, epoch, n_epochs, n_epochs_decay, epoch_count=1):
        """Sets every optimizer's rate for 1-based `epoch` of a run started at --epoch_count (see
        lr_factor, with this model's --lr_policy); returns it."""
        lr = self.lr * lr_factor(epoch, n_epochs, n_epochs_decay, self.lr_policy, self.lr_decay_iters, epoch_count)
        for optimizer in self.optimizers.values():
            optimizer.learning_rate = lr
        return lr

    def adam(self, beta1, beta2):
        """An Adam optimizer as the official code's (PyTorch's eps 1e-8; Keras defaults to 1e-7), with
        loss scaling under float16, whose gradients underflow without it."""
        optimizer = keras.optimizers.Adam(self.lr, beta_1=beta1, beta_2=beta2, epsilon=1e-8)
        return keras.optimizers.LossScaleOptimizer(optimizer) if self.policy == "mixed_float16" else optimizer

    @staticmethod
    def scaled(optimizer, loss):
        """The loss as the optimizer wants its gradient: scaled up under float16 (a
        LossScaleOptimizer unscales the gradients and skips steps that overflow)."""
        return optimizer.scale_loss(loss) if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else loss
