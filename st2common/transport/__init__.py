"""The message bus: connection from the config URL, topology, publisher and consumer base."""
