"""edgegw: the street-cabinet gateway agent."""

__version__ = "0.1.0"
