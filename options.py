"""Every command-line option of the toolkit, defined once: its flag, type, default, help and group.

    parser = options.parser("train", description="...")     # the options train.py takes
    args = parser.parse_args(argv)                           # a method's own defaults applied first

A flag keeps one meaning across the commands that take it; where a command gives it another default
or reading (convert.py's --batch_size is images translated together, train.py's images per step),
VARIANTS says so beside the table. A method (see model.py) may set other defaults for the flags it
uses, as the official modify_commandline_options: parser() applies them for the --model chosen.
The choices each flag accepts are the toolkit's vocabulary and live here too, so that the commands'
--help starts without TensorFlow and docs/OPTIONS.md can be written from this table alone.
"""
import argparse
import math

import utils

# ---------------------------------------------------------------------------- the vocabulary
NET_G = ("resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256")
NET_D = ("basic", "n_layers", "pixel")


def resnet_blocks(args):
    """The residual blocks of the ResNet generator that parsed options name: --netG resnet_Nblocks
    means N, else --n_blocks."""
    netG = args.netG or ""
    return int(netG[len("resnet_"):-len("blocks")]) if netG.startswith("resnet_") else args.n_blocks
NORMS = ("instance", "batch", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
GAN_MODES = ("lsgan", "vanilla", "wgangp")
LR_POLICIES = ("linear", "step", "plateau", "cosine")
# --preprocess, as the official option: what is done to a training image before the flip.
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
# train.py --direction (which folders are the model's domain A) and a generator's direction.
TRAIN_DIRECTIONS = ("AtoB", "BtoA")
DIRECTIONS = ("A2B", "B2A")


def direction_spelled(choices):
    """The type of a direction flag: its own spellings (`choices`), or the other family's (AtoB for A2B,
    B2A for BtoA), as both the official training option and the classic conversion one are in use."""
    other = dict(zip(TRAIN_DIRECTIONS + DIRECTIONS, DIRECTIONS + TRAIN_DIRECTIONS))

    def parse(text):
        return text if text in choices else other.get(text, text)
    parse.__name__ = "direction"
    return parse


def opposite(direction):
    """The other direction: "B2A" for "A2B" and the reverse."""
    return DIRECTIONS[1 - DIRECTIONS.index(direction)]


# CUT's --CUT_mode (read in any letter case, as the official) and --netF.
CUT_MODES = ("CUT", "FastCUT")
NET_F = ("mlp_sample", "sample")


def cut_mode(value):
    """--CUT_mode's value as CUT_MODES spells it (any letter case in)."""
    found = {m.lower(): m for m in CUT_MODES}.get(str(value).lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(CUT_MODES)} (any letter case)")
    return found


def str2bool(value):
    """A boolean option's value, as the official util.str2bool: yes/true/t/y/1 or no/false/f/n/0."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"a boolean value is expected, not {value!r}")


def number(kind, low, high=None, above=False, below=False):
    """The argparse type of a numeric option: an int, or a finite float, from `low` (above it when
    `above`) up to `high` (below it when `below`); anything else is refused in one line naming the
    option and the bound."""
    if high is None:
        bound = ("must be positive" if low == 0 else f"must be above {low}") if above else (
            "must not be negative" if low == 0 else f"must be at least {low}")
    else:
        bound = f"must be {'above' if above else 'at least'} {low} and {'below' if below else 'at most'} {high}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
        if value < low or (above and value == low) or (high is not None and (value > high or (below and value == high))):
            raise argparse.ArgumentTypeError(f"{text}: {bound}")
        return value

    parse.__name__ = kind.__name__
    return parse


def boolean(help):
    """The official form of a boolean option: the bare flag means True, and --flag False|True also works."""
    return dict(type=str2bool, nargs="?", const=True, default=None, metavar="BOOL", help=help)


DISTRIBUTE = ("none", "mirrored", "multiworker")
CPU_KERNEL_MODES = ("auto", "fixed", "direct")
CPU_KERNELS_ENV = "CYCLEGAN_CPU_KERNELS"
KERNEL_CACHE = "$CYCLEGAN_CACHE_DIR/kernels.json, else ($XDG_CACHE_HOME or ~/.cache)/cyclegan-tf2/kernels.json"
# What each --export_format writes into the export folder.
EXPORT_FORMATS = {
    "savedmodel": "saved_model.pb and variables/: one signature per direction the model holds, A2B and B2A "
                  "(A2B only for CUT and one-way pretrained models; input and output key 'images')",
    "tflite": "A2B.tflite (and B2A.tflite where held): one model per direction, input resizable to any height and width",
    "onnx": "A2B.onnx (and B2A.onnx where held): one model per direction (opset 17), dynamic batch, height and width",
}
QUANTIZE = ("none", "float16")
# A run folder's checkpoints' default file prefix (--model_name).
CHECKPOINT_NAME = "cyclegan.ckpt"
# Still images of one size that convert.py translates together (its --batch_size default).
CONVERT_BATCH_SIZE = 4
JPEG_QUALITY = 95

# ---------------------------------------------------------------------------- the table
# name: (group, argparse keywords). The flag is --name.
OPTIONS = {
    # the method
    "model": ("method", dict(default="cycle_gan", help="the method, as the official --model: {methods}")),
    # data
    "dataset": ("data", dict(help="shortcut for DATA_DIR/NAME/trainA, trainB, testA, testB (test* as validation)")),
    "data_dir": ("data", dict(default="data", help="where --dataset looks for NAME/")),
    "img_A_dir": ("data", dict(help="folder of training images of domain A")),
    "img_B_dir": ("data", dict(help="folder of training images of domain B")),
    "validation_A_dir": ("data", dict(help="folder of A images translated to B (see --validation_every, --progress_images)")),
    "validation_B_dir": ("data", dict(help="folder of B images translated to A (see --validation_every, --progress_images)")),
    "validation_truth_dir": ("data", dict(
        help="true translations of the validation A images, same names (default with --dataset: "
             "DATA_DIR/NAME/testA_truth if present): PSNR and SSIM with --eval_every")),
    "no_flip": ("data", dict(action="store_true", help="no random horizontal flip")),
    "preprocess": ("data", dict(
        choices=PREPROCESS_MODES, default="resize_and_crop",
        help="as the official option: resize_and_crop (to --load_size square, then a random --crop_size "
             "square), crop (a random --crop_size square of the image at its own size), scale_width (width "
             "--load_size, height in proportion, at least --crop_size), scale_width_and_crop (then a random "
             "--crop_size square), none (sides rounded to multiples of 4). Without a crop every image "
             "must come out the same size (the training step has one shape)")),
    "max_dataset_size": ("data", dict(type=number(int, 1), help="use only the first N images (in sorted order) of each training "
                                                     "folder; default all")),
    "serial_batches": ("data", dict(action="store_true",
                                    help="pair the images in order (A i with B i, each folder sorted, wrapping round) "
                                         "instead of A shuffled with a random B")),
    "direction": ("data", dict(
        type=direction_spelled(TRAIN_DIRECTIONS), choices=TRAIN_DIRECTIONS, default="AtoB",
        help="AtoB or BtoA (A2B, B2A too). BtoA: the folders named B (trainB, testB, --img_B_dir, --validation_B_dir) are the model's "
             "domain A and those named A its domain B, as the official option; G_A2B then translates "
             "B-folder images into A-folder ones (saved in config.json)")),
    # run folder
    "model_dir": ("run folder", dict(help="run folder: config, checkpoints, logs (default: model/DATASET or model/cyclegan)")),
    "model_name": ("run folder", dict(default=CHECKPOINT_NAME, help="checkpoint file prefix inside --model_dir")),
    "output_dir": ("run folder", dict(help="validation translations go to OUTPUT_DIR/epoch_NNN/{{A2B,B2A}} "
                                           "(default: MODEL_DIR/validation)")),
    "validation_every": ("run folder", dict(type=number(int, 1), default=10, help="every N epochs (and at the last) translate all "
                                                                      "validation images into OUTPUT_DIR/epoch_NNN")),
    "progress_images": ("run folder", dict(type=number(int, 0), default=4,
                                           help="the first N validation images of each direction get a frame per "
                                                "epoch in their progress GIF (MODEL_DIR/progress/DIR/NAME.gif)")),
    "save_every_steps": ("run folder", dict(type=number(int, 0), default=0, help="also checkpoint every N steps (0: only at the "
                                                                      "end of each epoch)")),
    "keep_checkpoints": ("run folder", dict(type=number(int, 1), default=3, help="how many recent checkpoints to keep")),
    "eval_every": ("run folder", dict(type=number(int, 0), default=0,
                                      help="every N epochs (and at the last) score the validation translations: cycle "
                                           "L1, PSNR/SSIM against --validation_truth_dir, FID/KID if InceptionV3 "
                                           "weights are at hand (0: off)")),
    "inception_weights": ("run folder", dict(help="InceptionV3 weights file for FID/KID with --eval_every (else "
                                                  "Keras' cached ImageNet weights if present; never downloaded)")),
    # schedule
    "n_epochs": ("schedule", dict(type=number(int, 0), default=100, help="epochs at the initial learning rate")),
    "n_epochs_decay": ("schedule", dict(type=number(int, 0), default=100, help="epochs of linear decay of the learning rate (the official rule: the last trains at lr / (n_epochs_decay + 1))")),
    "epoch_count": ("schedule", dict(
        type=number(int, 1), default=1,
        help="the number of the first epoch, as the official option: a new run starts there (earlier "
             "epochs and their learning rates skipped); a resumed run goes on where it stopped and accepts "
             "only its recorded value or the epoch it resumes at")),
    "random_seed": ("schedule", dict(type=number(int, 0), default=0, help="seeds weights, data order, augmentation and the pools")),
    "distribute": ("schedule", dict(
        default="none", choices=DISTRIBUTE,
        help="none: one device; mirrored: every GPU of this machine (tf.distribute.MirroredStrategy); "
             "multiworker: several machines described by TF_CONFIG (MultiWorkerMirroredStrategy). "
             "--batch_size is per replica; the learning rate is not scaled")),
    # architecture
    "netG": ("architecture", dict(
        choices=NET_G,
        help="generator, as the official --netG: resnet_9blocks or resnet_6blocks (the same as --n_blocks "
             "9 or 6), unet_256 or unet_128 (the U-Net with skip connections; image sides multiples of "
             "256 or 128 in training). Default: the ResNet with --n_blocks blocks")),
    "ngf": ("architecture", dict(type=number(int, 1), default=64, help="generator filters in the first layer")),
    "ndf": ("architecture", dict(type=number(int, 1), default=64, help="discriminator filters in the first layer")),
    "n_blocks": ("architecture", dict(type=number(int, 0), default=9,
                                      help="residual blocks in the generator (9 for 256 px, 6 for 128 px)")),
    "netD": ("architecture", dict(
        choices=NET_D, default="basic",
        help="discriminator: basic or n_layers, the PatchGAN with --n_layers_D stride-2 layers (basic is "
             "the official name for 3: 70x70 patches); pixel, 1x1 convolutions: a score per pixel")),
    "n_layers_D": ("architecture", dict(type=number(int, 1), default=3, help="stride-2 layers in the PatchGAN (3: 70x70 "
                                                                  "patches); not used by --netD pixel")),
    "norm": ("architecture", dict(
        choices=NORMS, default="instance",
        help="normalization in both networks, as the official --norm: instance (the paper's), batch "
             "(learned scale and offset, running statistics for convert.py --eval) or none; as there, "
             "convolutions before a norm have a bias only with instance")),
    "dropout": ("architecture", dict(action="store_true",
                                     help="dropout 0.5 in the generator (each residual block, the U-Net's inner "
                                          "levels), as the official default outside CycleGAN")),
    "no_dropout": ("architecture", dict(dest="dropout", action="store_false",
                                        help="no dropout in the generator: the default, as the official CycleGAN")),
    "input_nc": ("architecture", dict(type=int, choices=(1, 3), default=3,
                                      help="channels of domain A's images: 3 (RGB) or 1 (grayscale; 16-bit PNGs "
                                           "keep their range)")),
    "output_nc": ("architecture", dict(type=int, choices=(1, 3), default=3, help="channels of domain B's images: 3 or 1")),
    "init_type": ("architecture", dict(choices=INIT_TYPES, default="normal",
                                       help="how convolution weights are first drawn, as the official init_weights: "
                                            "normal N(0, gain), xavier, kaiming (fan in), orthogonal; biases 0")),
    "init_gain": ("architecture", dict(type=number(float, 0, above=True), default=0.02, help="scale of --init_type normal, xavier and orthogonal")),
    "pool_size": ("architecture", dict(type=number(int, 0), default=50, help="image pool of generated images (0: off)")),
    "load_size": ("architecture", dict(type=number(int, 1), default=286,
                                       help="training images are resized to this square first (to this width with "
                                            "train.py's --preprocess scale_width*)")),
    "crop_size": ("architecture", dict(type=number(int, 1), default=256, help="then randomly cropped to this square (multiple of "
                                                                   "4); see train.py's --preprocess")),
    # objective and optimiser
    "lr": ("objective and optimiser", dict(type=number(float, 0, above=True), default=2e-4, help="initial Adam learning rate")),
    "beta1": ("objective and optimiser", dict(type=number(float, 0, 1, below=True), default=0.5, help="Adam beta1")),
    "beta2": ("objective and optimiser", dict(type=number(float, 0, 1, below=True), default=0.999, help="Adam beta2")),
    "batch_size": ("objective and optimiser", dict(type=number(int, 1), default=1, help="images of each domain per step (per replica)")),
    "lambda_cycle": ("objective and optimiser", dict(type=number(float, 0), default=10.0, help="weight of the cycle-consistency loss")),
    "lambda_A": ("objective and optimiser", dict(
        type=number(float, 0), help="as the official option: the weight of the cycle loss A -> B -> A (cycle_A) and, "
                                    "times --lambda_identity, of idt_B (G_B2A on A images); default --lambda_cycle")),
    "lambda_B": ("objective and optimiser", dict(
        type=number(float, 0), help="as the official option: the weight of the cycle loss B -> A -> B (cycle_B) and, "
                                    "times --lambda_identity, of idt_A (G_A2B on B images); default --lambda_cycle")),
    "lambda_identity": ("objective and optimiser", dict(
        type=number(float, 0), default=0.5,
        help="weight of the identity loss, relative to the cycle weights (0: off, and 2 fewer generator passes)")),
    "gan_mode": ("objective and optimiser", dict(
        choices=GAN_MODES, default="lsgan",
        help="the adversarial loss: lsgan (least squares, the paper's), vanilla (cross-entropy on logits, "
             "the original GAN's) or wgangp (Wasserstein, with a gradient penalty of weight 10 on the "
             "discriminators, the official lambda_gp)")),
    "lr_policy": ("objective and optimiser", dict(
        choices=LR_POLICIES, default="linear",
        help="learning-rate schedule by epoch: linear (constant for --n_epochs, then down by lr / "
             "(n_epochs_decay + 1) each epoch), step (x0.1 every --lr_decay_iters epochs), plateau (x0.2 every 6 epochs, "
             "as the official code's plateau rule on its constant metric), cosine (over --n_epochs)")),
    "lr_decay_iters": ("objective and optimiser", dict(type=number(int, 1), default=50, help="--lr_policy step: epochs between decays")),
    # CUT and FastCUT (--model cut): default None here, the mode's default set by cut.CUT.defaults
    "CUT_mode": ("cut", dict(type=cut_mode, help="CUT (PatchNCE with identity, 200 + 200 epochs) or FastCUT (no "
                                                 "identity, lambda_NCE 10, flip equivariance, 150 + 50 epochs); "
                                                 "any letter case. Default CUT")),
    "lambda_GAN": ("cut", dict(type=number(float, 0), help="weight of the GAN loss (default 1)")),
    "lambda_NCE": ("cut", dict(type=number(float, 0), help="weight of the PatchNCE loss (default 1 for CUT, 10 for FastCUT)")),
    "nce_idt": ("cut", boolean("also the PatchNCE loss of G(B) against B, averaged with A's (default true for CUT, "
                               "false for FastCUT)")),
    "nce_layers": ("cut", dict(help="the generator's layers PatchNCE compares, as the official indices of its "
                                    "modules, increasing (default 0,4,8,12,16)")),
    "nce_includes_all_negatives_from_minibatch": ("cut", boolean(
        "negatives from every image of the batch, not only the same image (default false; for single-image "
        "translation)")),
    "netF": ("cut", dict(choices=NET_F, help="the patch features: mlp_sample (a 2-layer MLP per layer, trained with "
                                             "G; the default) or sample (the features themselves)")),
    "netF_nc": ("cut", dict(type=number(int, 1), help="width of netF's MLP (default 256)")),
    "nce_T": ("cut", dict(type=number(float, 0, above=True), help="temperature of the PatchNCE loss (default 0.07)")),
    "num_patches": ("cut", dict(type=number(int, 1), help="patches sampled per layer (default 256)")),
    "flip_equivariance": ("cut", boolean("flip the batch horizontally with probability 1/2 before G and the "
                                         "query features back (default false for CUT, true for FastCUT)")),
    "no_antialias": ("cut", boolean("strided convolutions instead of the antialiased downsampling (conv, then "
                                    "blur) in G and D (default false)")),
    "no_antialias_up": ("cut", boolean("the learned transposed convolution instead of the fixed upsampling filter "
                                       "and a convolution in G (default false)")),
    # devices
    "jit_compile": ("devices", dict(action="store_true", help="compile with XLA: the training step (train.py) and "
                                                              "translations (once per image size)")),
    "mixed_precision": ("devices", dict(action="store_true",
                                        help="compute in float16 with loss scaling on a GPU, bfloat16 on a CPU; "
                                             "weights, generator outputs, discriminator scores and losses stay float32")),
    "cpu_kernels": ("devices", dict(
        choices=CPU_KERNEL_MODES, default=None,
        help=f"auto: each convolution shape computed the way measured fastest on this CPU (timed once, cached in "
             f"{KERNEL_CACHE}); fixed: the CPU rewrites of kernels/ (Winograd, bands, space-to-depth) by their fixed "
             f"rules; direct: Keras' own convolution everywhere (to debug or compare). Default: ${CPU_KERNELS_ENV}, "
             f"else auto. GPUs and exports always use direct")),
    # benchmark.py
    "iters": ("benchmark", dict(type=number(int, 1), default=5, help="timed training iterations (after 2 untimed)")),
    "convert_iters": ("benchmark", dict(type=number(int, 1), default=5, help="timed conversion batches (after 2 untimed)")),
    "convert_batch_size": ("benchmark", dict(type=number(int, 1), default=CONVERT_BATCH_SIZE,
                                             help="images per conversion batch (convert.py's --batch_size default)")),
    "pipeline_images": ("benchmark", dict(type=number(int, 1), default=200, help="images decoded to time the input pipeline")),
    "profile": ("benchmark", dict(action="store_true", help="profile one more training step and report the time of "
                                                            "each TensorFlow op type")),
    "deploy": ("benchmark", dict(action="store_true", help="instead: export one generator in each export format (SavedModel, "
                                                           "TFLite, ONNX) and time each runtime on one image")),
    "ceiling": ("benchmark", dict(action="store_true",
                                  help="also time the generator's residual convolution alone (forward, input and "
                                       "weight gradients) against the matmul peak: what TensorFlow's kernels reach here")),
    # convert.py (and evaluate.py)
    "model_filepath": ("conversion", dict(
        required=True,
        help="a run folder (model/NAME), a checkpoint prefix (model/NAME/cyclegan.ckpt or "
             "model/NAME/cyclegan.ckpt-1200), a SavedModel folder written by --export_dir, one "
             ".tflite or .onnx file it wrote, or a generator .pth file of the official PyTorch "
             "implementation (those files hold one generator, used for the direction asked)")),
    "img_dir": ("conversion", dict(help="folder of inputs: .jpg .jpeg .png .bmp .webp images, .gif animations, "
                                        ".mp4 .avi videos (any letter case); or one such file")),
    "conversion_direction": ("conversion", dict(default="A2B", type=direction_spelled(DIRECTIONS), choices=DIRECTIONS,
                                                   help="A2B (G_A2B) or B2A (G_B2A); AtoB, BtoA too")),
    "overwrite": ("conversion", dict(action="store_true", help="replace existing outputs (and an existing --export_dir)")),
    "save_cycle": ("conversion", dict(action="store_true",
                                      help="also write the reconstruction (OUTPUT_DIR/reconstructed/) and real | fake | "
                                           "reconstruction side by side (OUTPUT_DIR/real_fake_rec/) for each still image")),
    "jpeg_quality": ("conversion", dict(type=number(int, 1, 100), default=JPEG_QUALITY, help="quality of JPEG and WebP outputs (1-100)")),
    "tile_size": ("conversion", dict(type=number(int, 8), default=2048,
                                     help="images of more than TILE_SIZE^2 pixels are translated in tiles (the same "
                                          "result in far less memory, a little slower); not for exported models")),
    "eval": ("conversion", dict(
        action="store_true",
        help="batch norm (--norm batch runs) uses the running statistics learned in training, as the "
             "official test.py --eval; by default each image is normalised by its own statistics, as "
             "test.py without it. Also what --export_dir receives")),
    "export_dir": ("conversion", dict(help="write the generators to this folder for deployment, in --export_format "
                                           "(uint8 RGB images of any size in, the same size out)")),
    "export_format": ("conversion", dict(default="savedmodel", choices=tuple(EXPORT_FORMATS),
                                         help="what --export_dir receives: "
                                              + "; ".join(f"{k}: {v}" for k, v in EXPORT_FORMATS.items()))),
    "quantize": ("conversion", dict(default="none", choices=QUANTIZE,
                                    help="tflite only: float16 stores the weights in half precision (half the file size)")),
    # evaluate.py
    "real_dir": ("evaluation", dict(help="real images of the target domain (for FID and KID)")),
    "fake_dir": ("evaluation", dict(help="translated images to compare with --real_dir")),
    "truth_dir": ("evaluation", dict(help="ground-truth translations, same file names as --img_dir (PSNR, SSIM)")),
    "kid_subsets": ("evaluation", dict(type=number(int, 1), default=100, help="random subsets KID is averaged over")),
    "kid_subset_size": ("evaluation", dict(type=number(int, 2), default=1000, help="images per KID subset (at most the set size)")),
    "grid": ("evaluation", dict(help="also write a PNG grid of real | translated | reconstructed for up to --grid_rows "
                                     "images")),
    "grid_rows": ("evaluation", dict(type=number(int, 1), default=4, help="rows of --grid")),
    "json": ("evaluation", dict(action="store_true", help="print one JSON object on stdout instead of text")),
    # download.py
    "datasets": ("download", dict(nargs="+", default=[], metavar="NAME",
                                  help="datasets to fetch: {datasets}, or '{sample}' (generated offline)")),
    "download_dir": ("download", dict(default="download", help="where the zip files are kept")),
    "pretrained": ("download", dict(nargs="+", default=[], metavar="NAME",
                                    help="official pretrained generators to fetch and import as "
                                         "MODEL_DIR/NAME_pretrained/: {pretrained}")),
    "list": ("download", dict(action="store_true", help="list the datasets and pretrained models and exit")),
    "base_url": ("download", dict(help="server or mirror holding NAME.zip, NAME.pth and the CUT archive "
                                       "pretrained_models.tar (http://, https:// or file://); default: {base_url} "
                                       "for datasets, {pretrained_url} for CycleGAN models, {cut_pretrained_url} "
                                       "for CUT's")),
    "force": ("download", dict(action="store_true", help="download and extract again even if present")),
    "retries": ("download", dict(type=number(int, 1), default=5, help="attempts per download on connection errors and timeouts")),
    "retry_wait": ("download", dict(type=number(float, 0), default=2.0, help="seconds before the first retry; doubles each time")),
    "timeout": ("download", dict(type=number(float, 0, above=True), default=30.0,
                                 help="seconds without data before a connection counts as timed out")),
    "seed": ("download", dict(type=number(int, 0), default=0, help="random seed of the generated '{sample}' set")),
    # every command
    "verbose": ("output", dict(action="store_true", help="show TensorFlow's start-up lines (CUDA probing, oneDNN "
                                                         f"notices); also ${utils.VERBOSE_ENV}=1")),
}

# Where a command reads a flag otherwise: (command, name) -> the keywords that differ.
VARIANTS = {
    ("benchmark", "img_A_dir"): dict(help="time real images of domain A (default: synthetic JPEGs)"),
    ("benchmark", "img_B_dir"): dict(help="time real images of domain B"),
    ("convert", "output_dir"): dict(default="converted", help="where outputs go, with the inputs' file names"),
    ("convert", "batch_size"): dict(default=CONVERT_BATCH_SIZE, help="images of the same size translated together"),
    ("evaluate", "model_filepath"): dict(required=False, help="what convert.py's --model_filepath takes (a run folder, "
                                                              "checkpoint prefix, SavedModel, .tflite, .onnx or official .pth): "
                                                              "translate --img_dir"),
    ("evaluate", "img_dir"): dict(help="images to translate with --model_filepath"),
    ("evaluate", "conversion_direction"): dict(help="A2B or B2A"),
    ("evaluate", "inception_weights"): dict(help="InceptionV3 weights file (.h5, no top) for machines without internet"),
    ("evaluate", "batch_size"): dict(default=32, help="images per InceptionV3 batch"),
    ("download", "data_dir"): dict(help="where datasets are extracted, as DATA_DIR/NAME/"),
    ("download", "model_dir"): dict(default="model", help="where --pretrained writes its run folders"),
}

_GROUPS = {name: [n for n, (g, _) in OPTIONS.items() if g == name] for name in dict.fromkeys(g for g, _ in OPTIONS.values())}
_TRAINING = ["model", *_GROUPS["architecture"], *_GROUPS["objective and optimiser"], *_GROUPS["cut"], "jit_compile",
             "mixed_precision", "cpu_kernels"]
# The options only one method reads: {option group: the method (--model)}. Given to another, they are refused.
METHOD_GROUPS = {"cut": "cut"}
GROUP_TITLES = {"cut": "CUT and FastCUT (--model cut)"}
# The options each command takes, in the order --help lists them.
COMMANDS = {
    "train": [*_GROUPS["data"], *_GROUPS["run folder"], *_GROUPS["schedule"], *_TRAINING, "verbose"],
    "benchmark": [*_TRAINING, *_GROUPS["benchmark"], "img_A_dir", "img_B_dir", "verbose"],
    "convert": ["model_filepath", "img_dir", "conversion_direction", "output_dir", "batch_size", "overwrite",
                "save_cycle", "jpeg_quality", "tile_size", "eval", "jit_compile", "cpu_kernels", "export_dir",
                "export_format", "quantize", "verbose"],
    "evaluate": ["real_dir", "fake_dir", "model_filepath", "img_dir", "conversion_direction", "truth_dir",
                 "inception_weights", "kid_subsets", "kid_subset_size", "batch_size", "grid", "grid_rows", "json",
                 "verbose"],
    "download": [*_GROUPS["download"][:2], "data_dir", *_GROUPS["download"][2:3], "model_dir",
                 *_GROUPS["download"][3:], "verbose"],
}


def option(command, name):
    """(group, argparse keywords) of a flag as `command` takes it."""
    group, keywords = OPTIONS[name]
    return group, {**keywords, **VARIANTS.get((command, name), {})}


class OptionParser(utils.ArgumentParser):
    """The parser of one command's options. methods: {--model name: method class} for the commands that
    build one; the chosen method's defaults (its defaults(chosen), see model.py) replace the table's
    before the command line is read, so a flag given always wins. An option of a method's own group
    (METHOD_GROUPS) given with another --model is refused."""

    methods = None
    command = None
    _table_defaults = None    # the table's defaults of the options some method has replaced

    def parse_known_args(self, args=None, namespace=None):
        if not (self.methods and namespace is None):
            return super().parse_known_args(args, namespace)
        methods, self.methods = self.methods, None   # the first pass only finds --model (and a mode)
        # The table's own defaults first, so a parser used again does not keep another method's.
        self._table_defaults = self._table_defaults or {}
        self.set_defaults(**self._table_defaults)
        try:
            chosen, _ = self.parse_known_args(args)
        finally:
            self.methods = methods
        defaults = methods[chosen.model].defaults(chosen)
        for name in defaults:
            self._table_defaults.setdefault(name, self.get_default(name))
        self.set_defaults(**{**self._table_defaults, **defaults})
        parsed, rest = super().parse_known_args(args, namespace)
        for name, keywords in ((n, OPTIONS[n]) for n in COMMANDS.get(self.command, ())):
            owner = METHOD_GROUPS.get(keywords[0])
            if owner and owner != parsed.model and getattr(parsed, name, None) is not None:
                self.error(f"--{name} is an option of --model {owner}, not of --model {parsed.model}")
        return parsed, rest


def parser(command, description, epilog=None, methods=None, **values):
    """The parser of `command`'s options (COMMANDS), grouped as the table groups them. methods: the
    registry --model chooses from (model.METHODS); values fill the {placeholders} of help texts that
    name what the command knows (download.py's datasets...). A bad flag is a utils.UsageError."""
    p = OptionParser(description=description, epilog=epilog)
    p.methods, p.command = methods, command
    values = dict(values, methods=", ".join(methods or ()))
    groups = {}
    for name in COMMANDS[command]:
        group, keywords = option(command, name)
        if name == "model":
            keywords = dict(keywords, choices=tuple(methods))
        if group not in groups:
            groups[group] = p.add_argument_group(GROUP_TITLES.get(group, group))
        if "{" in keywords.get("help", ""):
            keywords = dict(keywords, help=keywords["help"].format(**values))
        groups[group].add_argument(f"--{name}", **keywords)
    return p
