"""An operator's checkout, as pixsim-host sees one: PixSim7's layout around a backend.

``make_checkout`` lays out a folder the way a PixSim7 checkout is laid out for a host tool:
``services/<id>/pixsim.service.json`` declarations (``main-api`` and a ``worker``), the
migration entry point ``scripts/migrate_all.py`` and, for Docker, a Dockerfile at the
root. The backend inside is pixsim-host's own reference backend (copied from the
installed package), so the tests prove the checkout path without any PixSim7 code.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

DOCKERFILE = """\
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIXSIM_HOME=/data HOST=0.0.0.0 PORT=8000
WORKDIR /app
COPY pixsim_reference_backend /app/pixsim_reference_backend
COPY scripts /app/scripts
COPY services /app/services
COPY VERSION /app/VERSION
CMD ["python", "-m", "pixsim_reference_backend"]
"""

# The checkout's own migration entry point, as PixSim7 has one: it runs the backend's
# migrations in the same interpreter and environment, and fails like they do.
MIGRATE_ALL = """\
import os, runpy, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.argv = ["pixsim_reference_backend", "migrate"]
runpy.run_module("pixsim_reference_backend", run_name="__main__")
"""


def make_checkout(root: Path, *, version: str = "1") -> Path:
    package = Path(str(resources.files("pixsim_reference_backend")))
    shutil.copytree(package, root / "pixsim_reference_backend",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "services"))
    for sid, kind, args in (("main-api", "backend", ["serve"]), ("worker", "worker", ["worker"])):
        path = root / "services" / sid / "pixsim.service.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"id": sid, "type": kind, "module": "pixsim_reference_backend",
                                    "args": args, "depends_on": ["db"]}), encoding="utf-8")
    (root / "scripts").mkdir()
    (root / "scripts" / "migrate_all.py").write_text(MIGRATE_ALL, encoding="utf-8")
    (root / "Dockerfile.host").write_text(DOCKERFILE, encoding="utf-8")
    (root / "VERSION").write_text(version + "\n", encoding="utf-8")
    return root
