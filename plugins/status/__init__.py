"""Public status page: incidents, maintenance windows and latency graphs. Not implemented yet: this plugin loads and
contributes nothing."""
