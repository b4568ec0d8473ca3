import sys
from pathlib import Path

# Fixtures live in rb_support (a uniquely named module) so that test modules can import
# its helpers; the folder is put on sys.path so this also works under importlib mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rb_support import (  # noqa: E402, F401
    backends,
    external_hello,
    postgres,
    postgres_without_trgm,
    redis_server,
)
