"""Task-specific decoding of exit outputs (segmentation labels, pose keypoints), losses and metrics."""
