"""Image io, datasets, downsamplers and corruptions."""
