"""The project's shape: no import circle among its modules, files and functions that fit a screen or
a few, and a toolkit without the CPU kernels (kernels/) still trains, converts and exports, the direct way."""
import ast
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import image_io
from conftest import SMALLEST_FLAGS, write_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project_imports():
    """{module: the project's modules it imports, at the top or inside a function}."""
    sources = {os.path.relpath(p, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__"): p
               for p in glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "kernels", "*.py"))}
    found = {}
    for name, path in sources.items():
        imported = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        found[name] = {m for m in imported if m in sources and m != name}
    return found


def test_no_import_circle_and_networks_free_of_the_kernels():
    imports = project_imports()
    assert "kernels" in imports and "module" in imports and "kernels.convolution" in imports

    def reaches(start, goal, seen=()):
        return any(m == goal or (m not in seen and reaches(m, goal, (*seen, m))) for m in imports[start])
    # A package's modules may import their siblings through it; the package itself is one node.
    node = lambda m: m.split(".")[0]
    for name in imports:
        for m in imports[name]:
            if node(m) != node(name):
                assert not reaches(m, name), f"{name} imports {m}, which leads back to {name}"
    assert not any(m.startswith("kernels") for m in imports["module"] | imports["layers"])
    # devices.setup installs them; benchmark.py counts what their Winograd layers execute.
    assert sorted(name for name in imports if any(m.startswith("kernels") for m in imports[name])
                  and not name.startswith("kernels")) == ["benchmark", "devices"]


def test_no_source_file_over_500_lines_and_no_function_over_60():
    sources = [p for pattern in ("*.py", "kernels/*.py", "benchmarks/*.py", "docs/*.py")
               for p in glob.glob(os.path.join(ROOT, pattern))]
    assert len(sources) > 20
    for path in sources:
        text = open(path).read()
        assert text.count("\n") <= 500, f"{path}: {text.count(chr(10))} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 60, f"{path}: {node.name} has {node.end_lineno - node.lineno + 1} lines"


@pytest.mark.slow
def test_without_the_kernels_package_it_trains_converts_and_exports(tmp_path):
    copy = tmp_path / "toolkit"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("kernels", "tests", ".git", "__pycache__"))
    assert not (copy / "kernels").exists()
    data = tmp_path / "data"
    write_images(str(data / "A"), 2, seed=1)
    write_images(str(data / "B"), 2, seed=2)
    env = {k: v for k, v in os.environ.items() if k != "CYCLEGAN_CPU_KERNELS"}
    run = lambda *argv: subprocess.run([sys.executable, *argv], cwd=copy, env=env, capture_output=True, text=True)
    trained = run("train.py", "--img_A_dir", str(data / "A"), "--img_B_dir", str(data / "B"), "--model_dir",
                  str(tmp_path / "run"), *SMALLEST_FLAGS, "--n_epochs", "1", "--n_epochs_decay", "0")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert os.path.exists(tmp_path / "run" / "cyclegan.ckpt-2.index")
    converted = run("convert.py", "--model_filepath", str(tmp_path / "run"), "--img_dir", str(data / "A"),
                    "--output_dir", str(tmp_path / "out"), "--export_dir", str(tmp_path / "export"))
    assert converted.returncode == 0, converted.stderr[-2000:]
    fakes = image_io.list_images(str(tmp_path / "out"))
    assert len(fakes) == 2 and image_io.read_image(fakes[0]).shape == (40, 48, 3)
    assert os.path.exists(tmp_path / "export" / "saved_model.pb")
    # Asking for the rewrites themselves is one line, not a traceback.
    asked = run("convert.py", "--model_filepath", str(tmp_path / "run"), "--img_dir", str(data / "A"),
                "--output_dir", str(tmp_path / "out2"), "--cpu_kernels", "auto")
    lines = asked.stderr.strip().splitlines()
    assert asked.returncode == 1 and len(lines) == 1 and "no kernels/ package" in lines[0], asked.stderr
    assert np.isfinite(image_io.read_image(fakes[1])).all()
