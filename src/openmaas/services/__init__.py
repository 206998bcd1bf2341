"""Use cases: datasets, jobs, registry, inference, auth. Protocol-neutral: never imports fastapi or wire schemas."""
