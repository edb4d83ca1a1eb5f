"""The pure core: graphs, state, reducers, frontier rules. Never imports trio."""
