"""Use-cases shared by several services."""
