"""Robot assets. The Panda comes from ``pybullet_data``; we only swap its visual meshes for the collision
meshes (3.4k instead of 100k faces), which makes CPU rendering ~6x faster (research/sim.md section 1)."""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

import pybullet_data

_PANDA_URDF = Path(pybullet_data.getDataPath()) / "franka_panda" / "panda.urdf"


def low_poly_panda_urdf(cache_dir: Path | None = None) -> Path:
    """Path of a Panda URDF whose visuals use the collision meshes, written once per pybullet_data version.

    Mesh paths become absolute, so the file can live anywhere (a per-user cache directory by default).
    """
    text = _PANDA_URDF.read_text()
    meshes = _PANDA_URDF.parent / "meshes"
    text = re.sub(r"package://meshes/visual/(\w+)\.(obj|dae|stl)", r"package://meshes/collision/\1.obj", text)
    text = text.replace("package://meshes/", f"{meshes}/")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    directory = cache_dir or Path(tempfile.gettempdir()) / "mirror_assets"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"panda_lowpoly_{digest}.urdf"
    if not path.exists():
        tmp = path.with_suffix(f".tmp{id(text)}")
        tmp.write_text(text)
        tmp.replace(path)
    return path
