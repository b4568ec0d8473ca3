"""pixsim-host: run your own PixSim7 host."""

__version__ = "0.1.0"
