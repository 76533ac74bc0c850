"""The st2 CLI and the Python client."""
