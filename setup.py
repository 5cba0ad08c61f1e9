"""Packaging for Powerstrip, the Docker API proxy with chained adapter hooks."""

from setuptools import find_packages, setup

setup(
    name="powerstrip",
    version="1.0.0",
    description="Extend Docker without patching it: a Docker API proxy with "
    "chained pre/post-hook adapters.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["powerstrip", "powerstrip.*"]) + ["twisted.plugins"],
    package_data={
        "powerstrip": ["schemas/*/*.json"],  # the adapter protocol's JSON Schemas and samples
        "twisted": ["plugins/powerstrip_plugin.py", "plugins/powerstrip_adapter_plugin.py"],
    },
    install_requires=[
        "Twisted[tls]>=23.10",
        "treq>=23.11",
        "PyYAML>=6.0",
        "zope.interface>=6.0",
        "prometheus_client>=0.17",  # disable_created_metrics()
    ],
    entry_points={"console_scripts": ["powerstrip = powerstrip.cli:main"]},
    extras_require={
        "test": ["docker>=7.0", "hypothesis>=6.0", "ruff"],
    },
)
