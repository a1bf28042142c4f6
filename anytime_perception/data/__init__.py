"""Label sets, preprocessing constants and datasets."""
