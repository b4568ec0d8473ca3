import sys
from pathlib import Path

# Fixtures live in rb_support (a uniquely named module) so that test modules can import
# its helpers; the folder is put on sys.path so this also works under importlib mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rb_support import backends, external_hello, postgres, redis_server  # noqa: E402, F401
