"""The shared core of the platform: configuration, records, bus, content and use-cases."""

__version__ = "3.9.0"
