"""Runners: the runner contract, the registry of runner types and the pack-facing Action class.

``registry.py`` maps each runner type name to the class that runs it;
``runners.yaml`` holds every runner type's metadata (parameters, output key
and schema) as StackStorm's ``runner.yaml`` files declare them.
"""
