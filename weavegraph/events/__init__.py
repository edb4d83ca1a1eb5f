"""Events, the event bus, event streams and sinks."""
