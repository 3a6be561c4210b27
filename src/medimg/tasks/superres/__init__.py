"""Super-resolution: thick slices to thin."""
