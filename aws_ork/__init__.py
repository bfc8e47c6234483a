"""aws_ork: keep a Salt master's minion keys in step with EC2 Auto Scaling."""

__version__ = "3.0.0"
