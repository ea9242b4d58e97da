"""options.py: every flag defined once and taken from there by every command; a method's own defaults."""
import ast
import glob
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
