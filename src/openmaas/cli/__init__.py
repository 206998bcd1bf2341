"""The `openmaas` command line: `serve` starts the server, every other command goes through the SDK."""
