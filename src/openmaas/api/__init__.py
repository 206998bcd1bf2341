"""HTTP surface: the composition root, dependencies, error rendering and one router package per protocol."""
