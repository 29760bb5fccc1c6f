"""Waterbirds: the release's reader, image loading, per-image inference and generated look-alikes (drawn
birds, handwritten digits)."""
