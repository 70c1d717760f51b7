"""Running Label Studio and the backend together on one machine (the main job)."""
