"""The workflow engine: Orquesta and ActionChain workflows."""
