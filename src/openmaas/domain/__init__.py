"""Plain entities, ids and state machines. Imports nothing else of ours."""
