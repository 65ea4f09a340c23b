"""Every Python block of README.md runs as written, each in a fresh interpreter, and prints something
a reader can check; blocks that need a GPU (their first line is `# needs a GPU`) run where one is."""
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
GPU_MARK = "# needs a GPU"


def _params():
    for i, code in enumerate(BLOCKS):
        first = code.splitlines()[0] if code.strip() else ""
        marks = [pytest.mark.cuda] if first.startswith(GPU_MARK) else []
        yield pytest.param(code, id=f"block{i}", marks=marks)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("code", list(_params()))
def test_readme_block_runs(code, tmp_path):
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"README block failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
    assert r.stdout.strip(), f"README block printed nothing a reader could check:\n{code}"
