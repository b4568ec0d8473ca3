# Fixtures live in rb_support (a uniquely named module) so that test modules can import
# its helpers without colliding with other folders' conftest modules.
from rb_support import backends, external_hello, postgres, redis_server  # noqa: F401
