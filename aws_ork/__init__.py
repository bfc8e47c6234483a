"""aws_ork: keep a Salt master's minion keys in step with EC2 Auto Scaling."""

__version__ = "2.1.0"
