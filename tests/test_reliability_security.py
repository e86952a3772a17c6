"""Security: no unpickling of user files except the restricted CIFAR reader, which runs no code
from the file; list-file paths cannot leave the dataset root. (test_data_readers.py already covers
an os.system pickle in a CIFAR batch, the CLI on a GLOBAL pickle, and '../' in a list file.)"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lthash.data.readers import load_dataset
from lthash.data.safe_pickle import safe_loads
from lthash.errors import LthashError

PACKAGE = Path(__file__).resolve().parents[1] / "lthash"
ALLOWED_UNPICKLER = PACKAGE / "data" / "safe_pickle.py"

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
PICKLE_CALLS = {"load", "loads", "Unpickler", "open"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str, filename: str = "<source>", allow_pickle: bool = False) -> list[str]:
    """Every deserialisation that can run code from a file, as 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not allow_pickle:
            module = getattr(node, "module", None) or ""
            names = [alias.name for alias in node.names]
            if module.split(".")[0] in PICKLE_MODULES and set(names) & PICKLE_CALLS:
                found.append(f"{where}: from {module} import {', '.join(names)}")
            if module.split(".")[0] == "torch" and "load" in names:
                found.append(f"{where}: from {module} import load (not checkable for weights_only)")
        if isinstance(node, ast.Attribute) and not allow_pickle:
            # any use, not only a call: `class U(pickle.Unpickler)`, `load = pickle.loads`
            name = _dotted(node)
            head, _, tail = name.rpartition(".")
            if head.split(".")[-1] in PICKLE_MODULES and tail in PICKLE_CALLS:
                found.append(f"{where}: {name}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, tail = name.rpartition(".")
        if name in ("torch.load",) and not _is_true(_keyword(node, "weights_only")):
            found.append(f"{where}: torch.load( without weights_only=True")
        elif tail == "load" and head in ("np", "numpy") and _is_true(_keyword(node, "allow_pickle")):
            found.append(f"{where}: {name}(allow_pickle=True)")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or not _dotted(loader).endswith(("SafeLoader", "CSafeLoader")):
                found.append(f"{where}: {name}( without SafeLoader")
        elif name in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "pd.read_pickle",
                      "pandas.read_pickle", "jsonpickle.decode"):
            found.append(f"{where}: {name}(")
    return found


def test_no_unsafe_deserialisation_in_the_package():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30 and ALLOWED_UNPICKLER in files
    assert unsafe_calls(ALLOWED_UNPICKLER.read_text()), "the scanner should see the one allowed unpickler"
    problems = []
    for path in files:
        problems += unsafe_calls(path.read_text(), str(path.relative_to(PACKAGE.parent)),
                                 allow_pickle=path == ALLOWED_UNPICKLER)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\nx = pickle.load(open(p, 'rb'))",
        "import pickle\nx = pickle.loads(data)",
        "import _pickle\nx = _pickle.Unpickler(f).load()",
        "from pickle import loads",
        "import torch\nstate = torch.load(p)",
        "import torch\nstate = torch.load(p, weights_only=False)",
        "import numpy as np\na = np.load(p, allow_pickle=True)",
        "import yaml\nc = yaml.load(text)",
        "import yaml\nc = yaml.load(text, Loader=yaml.FullLoader)",
        "import yaml\nc = yaml.unsafe_load(text)",
        "import joblib\nm = joblib.load(p)",
        "import pandas as pd\nd = pd.read_pickle(p)",
        "import pickle\nclass Loader(pickle.Unpickler):\n    pass",
        "import pickle\nread = pickle.loads",
        "import marshal\ncode = marshal.loads(blob)",
    ],
)
def test_the_scanner_catches_each_unsafe_form(snippet):
    assert len(unsafe_calls(snippet)) == 1, unsafe_calls(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\nstate = torch.load(p, map_location='cpu', weights_only=True)",
        "import numpy as np\na = np.load(p)",
        "import numpy as np\na = np.load(p, allow_pickle=False)",
        "import yaml\nc = yaml.safe_load(text)",
        "import yaml\nc = yaml.load(text, Loader=yaml.SafeLoader)",
        "import json\nc = json.loads(text)",
    ],
)
def test_the_scanner_accepts_the_safe_forms(snippet):
    assert unsafe_calls(snippet) == []


# --- the restricted unpickler on hostile pickles ------------------------------------------------

SENTINEL = Path("/tmp/lthash-security-sentinel")


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _hostile_pickles() -> dict[str, bytes]:
    touch = f"touch {SENTINEL}"
    return {
        "os.system (protocol 0 GLOBAL)": f"cos\nsystem\n(S'{touch}'\ntR.".encode(),
        "posix.system (protocol 2)": pickle.dumps({b"data": _Reduce(os.system, touch)}, protocol=2),
        "builtins.eval (protocol 4 STACK_GLOBAL)": pickle.dumps(_Reduce(eval, f"__import__('os').system('{touch}')"),
                                                                protocol=4),
        "subprocess.Popen": pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(SENTINEL)]), protocol=3),
        "builtins.getattr chain": b"\x80\x02cbuiltins\ngetattr\ncos\nsystem\n\x86R.",
        "object array": pickle.dumps(np.array([{"a": 1}], dtype=object), protocol=2),
        "numpy reconstruct of another class": (
            b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncos\nsystem\nK\x00\x85U\x01b\x87R."),
    }


@pytest.mark.parametrize("name", sorted(_hostile_pickles()))
def test_restricted_unpickler_refuses_hostile_pickles_naming_the_source(name):
    SENTINEL.unlink(missing_ok=True)
    with pytest.raises(LthashError, match=r"cifar-10-batches-py/data_batch_1") as info:
        safe_loads(_hostile_pickles()[name], "cifar-10-batches-py/data_batch_1")
    assert "refused global" in str(info.value) or "only numeric" in str(info.value) or "array" in str(info.value)
    assert not SENTINEL.exists(), "code from the pickle ran"


# --- list files: paths stay inside the dataset root ----------------------------------------------

def _list_dataset(root: Path, outside: Path) -> None:
    for c in range(2):
        for i in range(3):
            path = root / "img" / f"c{c}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), 40 * c + i).save(path)
    (root / "database.txt").write_text("".join(f"img/c{c}_{i}.png {c}\n" for c in range(2) for i in range(2)))
    (root / "test.txt").write_text("".join(f"img/c{c}_2.png {c}\n" for c in range(2)))
    (root / "train.txt").write_text("img/c0_0.png 0\nimg/c1_0.png 1\n")
    outside.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 99).save(outside)


@pytest.mark.parametrize("form", ["absolute", "dot-dot inside a subfolder", "absolute to a system file"])
def test_list_paths_cannot_leave_the_dataset_root(tmp_path, form):
    root, outside = tmp_path / "data", tmp_path / "elsewhere" / "secret.png"
    _list_dataset(root, outside)
    entry = {"absolute": str(outside), "dot-dot inside a subfolder": "img/../../elsewhere/secret.png",
             "absolute to a system file": "/etc/passwd"}[form]
    assert len(load_dataset({"name": "list", "root": str(root)})) == 6  # valid before the bad line
    with open(root / "test.txt", "a") as handle:
        handle.write(f"{entry} 1\n")
    with pytest.raises(LthashError, match=r"test.txt:3: image path .* escapes the dataset root"):
        load_dataset({"name": "list", "root": str(root)})
