"""The trio driver: configuration, node contexts, the superstep engine, the App."""
