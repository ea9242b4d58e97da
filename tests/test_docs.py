"""The documents that are written from the code are current."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_page_is_current_and_names_every_flag_of_every_command():
    maker = load(os.path.join(ROOT, "docs", "make_options.py"))
    text = maker.render()
    with open(maker.PAGE) as f:
        assert f.read() == text, "docs/OPTIONS.md is stale: run python docs/make_options.py"
    import options
    for command, names in options.COMMANDS.items():
        section = text.split(f"## {command}.py\n", 1)[1].split("\n## ", 1)[0]
        for name in names:
            assert f"| `--{name}` |" in section, (command, name)
    assert "| `--lambda_NCE` | — | 1.0 | 10.0 |" in text and "| `--n_epochs` | 100 | 200 | 150 |" in text
