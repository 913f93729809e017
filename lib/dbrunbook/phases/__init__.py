"""The phases: the registry, the base every phase builds on, one module per phase."""
