"""Talking to Label Studio: the SDK client, task images, brush RLE, pre-annotations, imports."""
