"""The training loop, its stopping rules and progress events, and the executors that run jobs."""
