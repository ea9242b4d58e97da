"""The documents that are written from the code are current."""
import glob
import importlib.util
import os
import re
import subprocess

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


def anchor(heading):
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_of_the_readme_and_docs_reaches_a_file_and_heading():
    pages = [os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "*.md"))
    headings = {}
    for page in pages:
        with open(page) as f:
            headings[os.path.realpath(page)] = {anchor(line.lstrip("#")) for line in f if line.startswith("#")}
    checked = 0
    for page in pages:
        with open(page) as f:
            text = re.sub(r"`[^`\n]*`", "", re.sub(r"(?ms)^```.*?^```", "", f.read()))   # links, not code
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if "://" in target:
                continue
            path, _, fragment = target.partition("#")
            full = os.path.realpath(os.path.join(os.path.dirname(page), path)) if path else os.path.realpath(page)
            assert os.path.exists(full), f"{page}: {target}: no such file"
            if fragment:
                assert fragment in headings.get(full, ()), f"{page}: {target}: no such heading"
            checked += 1
    assert checked > 30


def test_the_readme_file_table_names_every_file_of_the_project():
    with open(os.path.join(ROOT, "README.md")) as f:
        table = f.read().split("## What is where", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([^`]+)`", table))
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    top = {p for p in tracked if "/" not in p and p.endswith(".py")} | {p.split("/")[0] + "/" for p in tracked if "/" in p}
    top -= {".ci/"}
    missing = sorted(t for t in top if t not in named)
    assert not missing, f"the README's file table lacks {missing}"
    assert len(top) > 25
    with open(os.path.join(ROOT, "README.md")) as f:
        assert len(f.read().splitlines()) <= 320     # a README a newcomer reads in one sitting
