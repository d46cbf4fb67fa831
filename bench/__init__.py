"""genmask-bench: evaluation harness for referring and reasoning segmentation (GenMask and rivals)."""

__version__ = "0.1.0"
