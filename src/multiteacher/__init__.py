"""multiteacher: train students from many teachers at once."""

__version__ = "0.1.0"
