"""Label names every stream carries whatever the config says: shared by the labeling of a container
and the config's check of Loki's label budget, so neither imports the other."""

# The sink adds `stream` to every entry: one label name of Loki's budget is always taken.
SINK_LABELS = ("stream",)
DEFAULT_LABELS = ("container_name", "compose_project", "compose_service", "host")
