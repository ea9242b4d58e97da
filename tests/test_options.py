"""options.py: every flag defined once and taken from there by every command; a method's own defaults."""
import ast
import glob
import importlib
import os

import pytest

import cyclegan
import model
import options
import train
import utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_command_defines_a_flag_of_its_own():
    for path in glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "kernels", "*.py")):
        if os.path.basename(path) == "options.py":
            continue
        calls = [n for n in ast.walk(ast.parse(open(path).read()))
                 if isinstance(n, ast.Call) and getattr(n.func, "attr", "") in ("add_argument", "add_argument_group")]
        assert not calls, f"{os.path.basename(path)} line {calls[0].lineno}: a flag outside options.py"


def test_every_command_takes_flags_of_the_table_and_variants_name_real_ones():
    for command, names in options.COMMANDS.items():
        assert len(names) == len(set(names)) and set(names) <= set(options.OPTIONS), command
        p = options.parser(command, command, methods=model.METHODS, datasets="d", sample="s", pretrained="p",
                           base_url="u", pretrained_url="v", cut_pretrained_url="w")
        flags = {a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"}
        assert flags == {f"--{n}" for n in names}
    assert all(name in options.COMMANDS[command] for command, name in options.VARIANTS)
    # One flag, one meaning: convert.py's --batch_size is its own, with its own default and help.
    convert, training = options.option("convert", "batch_size")[1], options.option("train", "batch_size")[1]
    assert convert["default"] == options.CONVERT_BATCH_SIZE == 4 and training["default"] == 1


class Other(cyclegan.CycleGAN):
    """A method that only sets other defaults, as the official modify_commandline_options."""
    DEFAULTS = {"lr": 1e-3, "n_epochs": 7, "pool_size": 0}


def test_a_method_sets_its_defaults_and_the_command_line_still_wins(monkeypatch):
    monkeypatch.setitem(model.METHODS, "other", Other)
    parse = lambda *argv: train.build_parser().parse_args(list(argv))
    mine = parse("--model", "other")
    assert (mine.lr, mine.n_epochs, mine.pool_size, mine.n_epochs_decay) == (1e-3, 7, 0, 100)
    given = parse("--model", "other", "--lr", "5e-4", "--pool_size", "3")
    assert (given.lr, given.n_epochs, given.pool_size) == (5e-4, 7, 3)
    assert (parse().lr, parse().n_epochs, parse().model) == (2e-4, 100, "cycle_gan")
    # One parser used for both methods in turn: the second parse has CycleGAN's defaults again.
    parser = train.build_parser()
    assert parser.parse_args(["--model", "other"]).lr == 1e-3 and parser.parse_args([]).lr == 2e-4
    assert model.method(mine) is Other and model.method(parse()) is cyclegan.CycleGAN
    with pytest.raises(utils.UserError, match="invalid choice"):
        parse("--model", "nonesuch")


def test_the_method_interface_is_complete():
    # What train.py, convert.py, export.py, evaluate.py and benchmark.py use of a method (model.py).
    for name in ("defaults", "LOSS_NAMES", "DIRECTIONS", "GENERATOR_KEYS", "BAR", "PLOTTED", "check_options",
                 "check_train_size", "architecture", "saved_architecture", "build_generator", "from_options", "passes"):
        for method in model.METHODS.values():
            assert hasattr(method, name), (method, name)
    for method in model.METHODS.values():
        assert set(method.PLOTTED) <= set(method.LOSS_NAMES)
        assert all(set(summed) <= set(method.LOSS_NAMES) for summed in method.BAR.values())
        assert set(method.GENERATOR_KEYS) == set(method.DIRECTIONS)


# Every numeric flag: a value just past its bound, and its bound, which is accepted.
BOUNDS = {
    "max_dataset_size": ("0", "1"), "validation_every": ("0", "1"), "progress_images": ("-1", "0"),
    "save_every_steps": ("-1", "0"), "keep_checkpoints": ("0", "1"), "eval_every": ("-1", "0"),
    "n_epochs": ("-1", "0"), "n_epochs_decay": ("-1", "0"), "epoch_count": ("0", "1"), "random_seed": ("-1", "0"),
    "ngf": ("0", "1"), "ndf": ("0", "1"), "n_blocks": ("-1", "0"), "n_layers_D": ("0", "1"),
    "init_gain": ("0", "1e-9"), "pool_size": ("-1", "0"), "load_size": ("0", "1"), "crop_size": ("0", "1"),
    "lr": ("0", "1e-9"), "beta1": ("1", "0"), "beta2": ("-0.1", "0.9999"), "batch_size": ("0", "1"),
    "lambda_cycle": ("-1", "0"), "lambda_A": ("-1", "0"), "lambda_B": ("-1", "0"), "lambda_identity": ("-0.5", "0"), "lr_decay_iters": ("0", "1"),
    "lambda_GAN": ("-1", "0"), "lambda_NCE": ("-1", "0"), "netF_nc": ("0", "1"), "nce_T": ("0", "0.01"),
    "num_patches": ("0", "1"), "iters": ("0", "1"), "convert_iters": ("0", "1"), "convert_batch_size": ("0", "1"),
    "pipeline_images": ("0", "1"), "jpeg_quality": ("101", "100"), "tile_size": ("7", "8"),
    "kid_subsets": ("0", "1"), "kid_subset_size": ("1", "2"), "grid_rows": ("0", "1"), "retries": ("0", "1"),
    "retry_wait": ("-1", "0"), "timeout": ("0", "0.5"), "seed": ("-1", "0"),
}


def test_every_numeric_flag_of_every_command_has_a_bound_and_refuses_past_it_in_one_line(capsys):
    numeric = {name for name, (_, kw) in options.OPTIONS.items()
               if kw.get("type") in (int, float) or getattr(kw.get("type"), "__name__", "") in ("int", "float")}
    assert numeric - {"input_nc", "output_nc"} == set(BOUNDS)  # (the channels are a choice of 1 or 3)
    for command, names in options.COMMANDS.items():
        for name in set(names) & set(BOUNDS):
            bad, good = BOUNDS[name]
            extra = ["--model", "cut"] if options.OPTIONS[name][0] == "cut" else []
            parser = importlib.import_module(command).build_parser()
            extra += [x for a in parser._actions if a.required for x in (a.option_strings[0], "x")]
            assert getattr(parser.parse_args(extra + [f"--{name}", good]), name) == pytest.approx(float(good))
            for value in (bad, "nan", "inf") if options.OPTIONS[name][1]["type"].__name__ == "float" else (bad, "1.5x"):
                with pytest.raises(utils.UsageError) as e:
                    parser.parse_args(extra + [f"--{name}", value])
                error = str(e.value)
                assert f"argument --{name}: {value}:" in error or f"argument --{name}: {value!r}" in error, error
                assert "\n" not in error and ("must" in error or "not a" in error), error


def test_a_flag_is_never_taken_as_a_prefix_of_another(capsys):
    for command, flag in (("train", "--n_epoch"), ("download", "--dataset"), ("convert", "--model"),
                          ("evaluate", "--kid_subset")):
        parser = importlib.import_module(command).build_parser()
        with pytest.raises(utils.UsageError) as e:
            parser.parse_args([flag, "3"] + [x for a in parser._actions if a.required for x in (a.option_strings[0], "x")])
        assert f"unrecognized arguments: {flag} 3" in str(e.value), e.value


def test_every_command_exits_2_in_one_line_for_a_bad_command_line(capsys):
    """The same status for the same failure everywhere (docs/OPTIONS.md): 2 for a flag refused."""
    for command in options.COMMANDS:
        capsys.readouterr()
        assert importlib.import_module(command).main(["--no_such_flag"]) == utils.EXIT_USAGE == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: unrecognized arguments: --no_such_flag"] or \
            (len(err) == 1 and err[0].startswith("error: the following arguments are required")), (command, err)


def test_help_states_each_default_once_and_never_none():
    for command in options.COMMANDS:
        text = importlib.import_module(command).build_parser().format_help()
        assert "(default: None)" not in text, command
    assert "(default: 0.0002)" in train.build_parser().format_help()


def test_directions_take_both_spelling_families():
    for given, want in (("AtoB", "AtoB"), ("A2B", "AtoB"), ("BtoA", "BtoA"), ("B2A", "BtoA")):
        assert train.build_parser().parse_args(["--direction", given]).direction == want
    for command in ("convert", "evaluate"):
        parser = importlib.import_module(command).build_parser()
        required = [x for a in parser._actions if a.required for x in (a.option_strings[0], "x")]
        for given, want in (("A2B", "A2B"), ("AtoB", "A2B"), ("B2A", "B2A"), ("BtoA", "B2A")):
            assert parser.parse_args(required + ["--conversion_direction", given]).conversion_direction == want
        with pytest.raises(utils.UserError, match="invalid choice: 'A2C'"):
            parser.parse_args(required + ["--conversion_direction", "A2C"])
