"""Packaging for aws_ork."""

from pathlib import Path

from setuptools import find_packages, setup

about: dict[str, str] = {}
exec(Path("aws_ork/__init__.py").read_text(), about)  # __version__ without importing deps

setup(
    name="aws_ork",
    version=about["__version__"],
    description="Keep a Salt master's minion keys in step with EC2 Auto Scaling",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["aws_ork", "aws_ork.*"]),
    install_requires=[
        "boto3>=1.34",
        "salt>=3006.27,<3009",
        "python-daemon>=3.0",
        "cryptography>=42",
        "prometheus-client>=0.20",  # MetricsAddress: /metrics (the collector API)
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "moto[server]>=5.1",
        ],
    },
    entry_points={"console_scripts": ["aws_ork = aws_ork.cli:main"]},
    data_files=[("share/aws_ork", ["data/aws_ork.conf", "data/aws_ork.service",
                                   "data/aws_ork.init",
                                   "data/instance/aws_ork-bind-minion.sh",
                                   "data/cloudformation/aws_ork.yaml"]),
                ("share/man/man5", ["man/aws_ork.conf.5"]),
                ("share/man/man8", ["man/aws_ork.8"])],
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "License :: OSI Approved :: MIT License",
        "Topic :: System :: Systems Administration",
    ],
)
