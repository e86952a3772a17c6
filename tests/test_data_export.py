"""export-imagefolder: digits written as PNG class folders read back by the imagefolder reader."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lthash.data.export import export_imagefolder
from lthash.data.readers import load_dataset, read_digits
from lthash.errors import LthashError


def test_digits_round_trip_through_an_imagefolder(tmp_path):
    counts = export_imagefolder({"name": "digits"}, tmp_path / "digits")
    digits = read_digits()
    assert counts == {str(c): int(n) for c, n in enumerate(np.bincount(digits.labels))}
    folder = load_dataset({"name": "imagefolder", "root": str(tmp_path / "digits")})
    assert folder.class_names == [str(c) for c in range(10)]
    order = np.argsort([int(p.split("/")[1][:-4]) for p in folder.files])
    assert np.array_equal(folder.labels[order], digits.labels)
    assert np.array_equal(folder.images[order], digits.images)


def test_export_resizes_and_never_writes_into_a_used_folder(tmp_path):
    export_imagefolder({"name": "digits"}, tmp_path / "d28", size=28)
    assert load_dataset({"name": "imagefolder", "root": str(tmp_path / "d28")}).image_shape == (28, 28, 1)
    with pytest.raises(LthashError, match="already holds files"):
        export_imagefolder({"name": "digits"}, tmp_path / "d28", size=28)
    result = subprocess.run([sys.executable, "-m", "lthash.cli", "export-imagefolder", "--out", str(tmp_path / "d28")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "already holds files" in result.stderr
