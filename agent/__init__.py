"""OncoAgent daemon: configuration, job store, routing, execution and the command line."""

__version__ = "0.1.0"
