"""event_coordination: the Assets pipelines read and update, and their events."""
