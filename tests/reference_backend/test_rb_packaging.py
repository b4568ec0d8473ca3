"""Static checks of the image contract and of the stdlib-only rule (no Docker needed)."""

from __future__ import annotations

import ast
import sys

from rb_support import SRC

PACKAGE = SRC / "pixsim_reference_backend"


def test_package_imports_only_the_standard_library() -> None:
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "pixsim_reference_backend", (
                    f"{path.name} imports {name}, which is not in the standard library")


def test_dockerfile_contract() -> None:
    text = (PACKAGE / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert 'CMD ["python", "-m", "pixsim_reference_backend"]' in lines
    assert "EXPOSE 8000" in lines
    assert "WORKDIR /app" in lines
    assert any(line.startswith("COPY") and "/app/pixsim_reference_backend" in line
               for line in lines)
    assert any(line.startswith("USER ") and line != "USER root" for line in lines)
    assert "pip" not in text
    assert "/data" in text and "/srv/pixsim/external-plugins" in text
