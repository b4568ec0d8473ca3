"""Reference PixSim7 backend: implements the host contract with the standard library only.

It exists because the real backend cannot be built everywhere pixsim-host is tested; the
behaviour it reproduces (settings validation, host identity, plugin rules, health shapes)
is what pixsim-host relies on.
"""

__version__ = "0.1.0"
API_VERSION = "v1"
