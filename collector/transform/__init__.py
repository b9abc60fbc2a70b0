"""Per-container decisions made once when a container starts (and on rename), never per line:
whether it is collected (selection), its Loki labels (metadata, mappings, relabel rules, Loki's
limits) and its settings from `collector.*` Docker labels."""
