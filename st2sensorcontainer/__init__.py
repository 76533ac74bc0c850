"""The sensor container: runs pack sensors, each in its own process."""
