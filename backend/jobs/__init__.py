"""Background jobs of the backend: the durable queue, the score and train jobs, and their state."""
