"""The methods: each one file holding its options' defaults, networks, losses and training step,
behind the one interface that train.py, convert.py, export.py, evaluate.py and benchmark.py use
without knowing which method it is.

    method = model.METHODS[args.model]                   # the class; --model cycle_gan or cut
    gan = model.build(args, train_size)                  # its training object, from parsed options
    losses = gan.train_step(real_A, real_B)              # one iteration: a vector, method.LOSS_NAMES
    fake = gan.translators["A2B"].translate(images)      # for each direction in method.DIRECTIONS

The interface of a method class (see cyclegan.CycleGAN, the first):
    defaults(chosen)    {option: default} where it differs from options.OPTIONS (modify_commandline_options;
                        training.Trainer's gives the class's DEFAULTS)
    LOSS_NAMES          the losses its step reports, in order (losses.csv's columns)
    DIRECTIONS          the directions its generators translate ("A2B", "B2A")
    GENERATOR_KEYS      {direction: the generator's key in a training checkpoint}
    BAR, PLOTTED        the progress bar's readings, losses.png's curves
    check_options(args), check_train_size(args, size, name, value)    one-line errors
    load_size(args, epoch)                                            the size training images load at
    architecture(args, train_size), saved_architecture(config)        what fixes the variables' shapes
    build_generator(architecture, direction)                          for convert.py and exports
    from_options(args, train_size, **kwargs)                          the training object, which has
        train_step, checkpoint(), generators, translators, passes() (what benchmark.py counts),
        counters(), begin_epoch(), end_epoch(), set_learning_rate(), weights_finite() (training.Trainer)
"""
import cut
import cyclegan
import utils

# --model: the official names.
METHODS = {"cycle_gan": cyclegan.CycleGAN, "cut": cut.CUT}
# What runs written before config.json named their method were trained with.
DEFAULT_METHOD = "cycle_gan"


def method(args):
    """The method class that parsed options (--model) name."""
    return METHODS[getattr(args, "model", None) or DEFAULT_METHOD]


def method_of(config):
    """The method class that trained a run, from its config.json (older runs: CycleGAN)."""
    name = config.get("model") or DEFAULT_METHOD
    if name not in METHODS:
        raise utils.UserError(f"--model {name}: not a method of this toolkit ({', '.join(METHODS)})")
    return METHODS[name]


def build(args, train_size=None, **kwargs):
    """The training object of the method parsed options name, for training images of train_size
    ((height, width); default the --crop_size square); kwargs add or override its arguments."""
    return method(args).from_options(args, train_size, **kwargs)
