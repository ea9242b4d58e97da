"""The official CycleGAN training step and test-time forward, re-stated in PyTorch, timed as
benchmark.py times this toolkit's; prints one JSON object with benchmark.py's keys.

    /path/to/python-with-torch benchmarks/pytorch_reference.py --crop_size 128 --iters 5
    /path/to/python-with-torch benchmarks/pytorch_reference.py --crop_size 64 --ngf 32 --ndf 32 --n_blocks 6

Run it only with an interpreter that has PyTorch; PyTorch is never a dependency of this toolkit.
benchmarks/compare_pytorch.py runs it and benchmark.py alternately and prints the ratios.

What it re-states (junyanz/pytorch-CycleGAN-and-pix2pix, written here from its definitions):
ResnetGenerator with instance norm (no affine, no running statistics, so convolutions have biases)
and no dropout; NLayerDiscriminator with n_layers 3; weights N(0, 0.02), biases 0; the LSGAN loss
(MSE against 1 or 0); cycle_gan_model's optimize_parameters: both generators forward and back,
identity passes, the generators' backward with the discriminators' requires_grad off, Adam, then
each discriminator on the real image and on a fake from a 50-image pool, (real + fake) * 0.5,
backward, Adam. Conversion is one generator under torch.no_grad() on a batch of uint8 images,
mapped to [-1, 1] and back, as benchmark.py times convert.py's path.
"""
import argparse
import itertools
import json
import os
import random
import resource
import statistics
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resident  # noqa: E402 -- beside this file (standard library only)

import numpy as np

try:
    import torch
    from torch import nn
except ImportError:  # build_parser() alone works without PyTorch: the tests read the flags in CI
    torch = None
    nn = types.SimpleNamespace(Module=object)

# benchmark.py's protocol: this many untimed iterations (allocation, first-call costs) first.
WARMUP = 2


def build_parser():
    """The flags, under benchmark.py's names and with its defaults (tests/test_compare_pytorch.py
    checks that they agree)."""
    p = argparse.ArgumentParser(description="Time the official CycleGAN step and forward in PyTorch.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--crop_size", type=int, default=256, help="training crop and conversion size")
    p.add_argument("--ngf", type=int, default=64, help="generator filters in the first layer")
    p.add_argument("--ndf", type=int, default=64, help="discriminator filters in the first layer")
    p.add_argument("--n_blocks", type=int, default=9, help="residual blocks in the generator")
    p.add_argument("--n_layers_D", type=int, default=3, help="stride-2 layers in the PatchGAN")
    p.add_argument("--pool_size", type=int, default=50, help="image pool of generated images (0: off)")
    p.add_argument("--batch_size", type=int, default=1, help="images of each domain per step")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    p.add_argument("--lambda_cycle", type=float, default=10.0, help="weight of the cycle loss (lambda_A, lambda_B)")
    p.add_argument("--lambda_identity", type=float, default=0.5, help="identity weight, relative to --lambda_cycle")
    p.add_argument("--iters", type=int, default=5, help=f"timed training iterations (after {WARMUP} untimed)")
    p.add_argument("--convert_iters", type=int, default=5, help=f"timed conversion batches (after {WARMUP} untimed)")
    p.add_argument("--convert_batch_size", type=int, default=4, help="images per conversion batch")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch.set_num_threads (default: every core this process may use)")
    p.add_argument("--seed", type=int, default=0, help="weights, images and the pools' draws")
    return p


class ResnetBlock(nn.Module):
    """x + [reflect-pad 1, conv 3x3, IN, ReLU, reflect-pad 1, conv 3x3, IN](x)."""

    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim))

    def forward(self, x):
        return x + self.conv_block(x)


def resnet_generator(ngf, n_blocks, channels=3):
    """ResnetGenerator(norm 'instance', no dropout, padding 'reflect'): c7s1-ngf, two stride-2
    3x3 convolutions (zero padding 1), n_blocks residual blocks at 4 ngf, two transposed 3x3
    convolutions (padding 1, output padding 1), c7s1-channels, tanh."""
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels, ngf, 7, bias=True), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
    for width in (ngf, 2 * ngf):
        layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=True), nn.InstanceNorm2d(2 * width),
                   nn.ReLU(True)]
    layers += [ResnetBlock(4 * ngf) for _ in range(n_blocks)]
    for width in (4 * ngf, 2 * ngf):
        layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1, bias=True),
                   nn.InstanceNorm2d(width // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def patch_discriminator(ndf, n_layers=3, channels=3):
    """NLayerDiscriminator: 4x4 convolutions with zero padding 1, stride 2 for the first n_layers
    then 1, widths ndf * min(2^i, 8), instance norm on all but the first, LeakyReLU 0.2; then a 4x4
    convolution to one channel of raw scores."""
    widths = [ndf * min(2 ** i, 8) for i in range(n_layers + 1)]
    layers, width_in = [], channels
    for i, width in enumerate(widths):
        layers.append(nn.Conv2d(width_in, width, 4, stride=2 if i < n_layers else 1, padding=1, bias=True))
        if i > 0:
            layers.append(nn.InstanceNorm2d(width))
        layers.append(nn.LeakyReLU(0.2, True))
        width_in = width
    layers.append(nn.Conv2d(width_in, 1, 4, stride=1, padding=1))
    return nn.Sequential(*layers)


def init_normal(net, gain=0.02):
    """init_weights('normal', 0.02): every convolution's weights N(0, gain), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            nn.init.zeros_(m.bias)
    return net


def lsgan(scores, real):
    """GANLoss('lsgan'): mean squared error against a map of ones (real) or zeros (fake)."""
    return nn.functional.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))


class ImagePool:
    """The history of generated images: while fewer than `size` are stored, store and return each
    new image; after that, with probability 1/2 return a random stored one and store the new one
    in its place, else return the new one."""

    def __init__(self, size, rng):
        self.size, self.rng, self.images = size, rng, []

    def query(self, images):
        """A batch of the same shape: the new images or older ones, detached."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.random() > 0.5:
                j = self.rng.randrange(self.size)
                out.append(self.images[j].clone())
                self.images[j] = image
            else:
                out.append(image)
        return torch.cat(out, 0)


class CycleGAN:
    """The four networks, both Adam optimizers and both pools of cycle_gan_model, under its names:
    G_A maps A to B and D_A scores B (this toolkit's G_A2B and D_B)."""

    def __init__(self, args):
        self.args = args
        self.G_A, self.G_B = (init_normal(resnet_generator(args.ngf, args.n_blocks)) for _ in range(2))
        self.D_A, self.D_B = (init_normal(patch_discriminator(args.ndf, args.n_layers_D)) for _ in range(2))
        adam = lambda *nets: torch.optim.Adam(itertools.chain(*(n.parameters() for n in nets)),
                                              lr=args.lr, betas=(args.beta1, 0.999))
        self.optimizer_G, self.optimizer_D = adam(self.G_A, self.G_B), adam(self.D_A, self.D_B)
        rng = random.Random(args.seed)
        self.fake_A_pool, self.fake_B_pool = ImagePool(args.pool_size, rng), ImagePool(args.pool_size, rng)

    def set_requires_grad(self, nets, flag):
        """Switches the gradients of every parameter of `nets` on or off."""
        for net in nets:
            for p in net.parameters():
                p.requires_grad = flag

    def backward_D(self, D, real, fake):
        """0.5 * (LSGAN(D(real), 1) + LSGAN(D(fake), 0)), backward; real and fake as two calls."""
        loss = 0.5 * (lsgan(D(real), True) + lsgan(D(fake.detach()), False))
        loss.backward()
        return loss

    def step(self, real_A, real_B):
        """optimize_parameters: 6 generator and 6 discriminator forward passes, their backward,
        two Adam updates; returns the losses as floats."""
        a = self.args
        fake_B = self.G_A(real_A)
        rec_A = self.G_B(fake_B)
        fake_A = self.G_B(real_B)
        rec_B = self.G_A(fake_A)

        self.set_requires_grad([self.D_A, self.D_B], False)
        self.optimizer_G.zero_grad()
        l1 = nn.functional.l1_loss
        if a.lambda_identity > 0:
            weight = a.lambda_cycle * a.lambda_identity
            loss_idt = l1(self.G_A(real_B), real_B) * weight + l1(self.G_B(real_A), real_A) * weight
        else:
            loss_idt = 0
        loss_G = (lsgan(self.D_A(fake_B), True) + lsgan(self.D_B(fake_A), True)
                  + l1(rec_A, real_A) * a.lambda_cycle + l1(rec_B, real_B) * a.lambda_cycle + loss_idt)
        loss_G.backward()
        self.optimizer_G.step()

        self.set_requires_grad([self.D_A, self.D_B], True)
        self.optimizer_D.zero_grad()
        loss_D_A = self.backward_D(self.D_A, real_B, self.fake_B_pool.query(fake_B))
        loss_D_B = self.backward_D(self.D_B, real_A, self.fake_A_pool.query(fake_A))
        self.optimizer_D.step()
        return loss_G.item(), loss_D_A.item(), loss_D_B.item()


def translate(G, images):
    """uint8 images (N, H, W, 3) -> G's translations, uint8 (N, H, W, 3): the official test
    path's arithmetic (to [-1, 1], the generator without gradients, back to [0, 255])."""
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        y = ((G(x) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return y.permute(0, 2, 3, 1).numpy()


def smooth_images(rng, n, size):
    """n random smooth RGB images in [-1, 1], (n, 3, size, size): the content does not change the
    speed, only the shape does."""
    small = torch.from_numpy(rng.uniform(-1, 1, (n, 3, max(size // 8, 2), max(size // 8, 2))).astype(np.float32))
    return nn.functional.interpolate(small, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def spread(times):
    """benchmark.py's summary of timed calls."""
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def main(argv=None):
    """Runs the reference with `argv`; prints JSON on stdout and a summary on stderr."""
    args = build_parser().parse_args(argv)
    if torch is None:
        print("pytorch_reference.py needs PyTorch: run it with a python that has torch", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    result = {"config": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads()}

    gan = CycleGAN(args)
    real_A, real_B = (smooth_images(rng, args.batch_size, args.crop_size) for _ in range(2))
    for _ in range(WARMUP):
        gan.step(real_A, real_B)
    times = [_timed(lambda: gan.step(real_A, real_B)) for _ in range(args.iters)]
    result["train_seconds_per_iteration"] = spread(times)
    result["train_images_per_s"] = 2 * args.batch_size / statistics.median(times)
    result["train_peak_rss_mb"] = resident.stage_peak_mb(lambda: gan.step(real_A, real_B))  # as benchmark.py's

    images = ((real_A[:1].permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    images = np.repeat(images, args.convert_batch_size, axis=0)
    for _ in range(WARMUP):
        translate(gan.G_A, images)
    times = [_timed(lambda: translate(gan.G_A, images)) for _ in range(args.convert_iters)]
    result["convert_seconds_per_batch"] = spread(times)
    result["convert_images_per_s"] = args.convert_batch_size / statistics.median(times)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"PyTorch {torch.__version__} ({result['threads']} threads): train "
          f"{result['train_seconds_per_iteration']['median']:.3f} s/iteration, convert "
          f"{result['convert_images_per_s']:.2f} img/s, peak memory {result['peak_rss_mb']:.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
