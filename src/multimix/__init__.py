"""multimix: reproducible semi-supervised multi-task learning on chest X-rays."""

__version__ = "0.1.0"
