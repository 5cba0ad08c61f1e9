"""Packaging for Powerstrip, the Docker API proxy with chained adapter hooks."""

from setuptools import find_packages, setup

setup(
    name="powerstrip",
    version="1.0.0",
    description="Extend Docker without patching it: a Docker API proxy with chained pre/post-hook adapters.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["powerstrip", "powerstrip.*"]) + ["twisted.plugins"],
    # An explicit root makes `pip install -e .` (setuptools' default, "lenient"
    # editable mode) write a plain .pth naming this checkout instead of an
    # import-hook finder. twistd finds plugins by scanning twisted.plugins.__path__,
    # which Twisted builds from the *directories* on sys.path that hold a
    # twisted/plugins/; a finder maps modules by import hooks and puts no such
    # directory there, so `twistd powerstrip` was unknown outside the checkout.
    # (The checkout root on sys.path also makes examples/ importable, as the
    # README's python:examples.NAME:adapter URLs expect.) Wheels are unaffected.
    package_dir={"": "."},
    package_data={
        "powerstrip.sdk": ["schemas/*/*.json"],  # the adapter protocol's JSON Schemas
        "powerstrip.wire": ["engine_api.json"],  # the Engine API's routes and request schemas
        "twisted": ["plugins/powerstrip_plugin.py", "plugins/powerstrip_adapter_plugin.py"],
    },
    install_requires=[
        "Twisted[tls]>=23.10",
        "treq>=23.11",
        "PyYAML>=6.0",
        "zope.interface>=6.0",
        "prometheus_client>=0.17",  # disable_created_metrics()
    ],
    # powerstrip.ops.console: `powerstrip healthcheck` (a container health check,
    # run every few seconds) starts without importing Twisted; the other commands
    # go to powerstrip.ops.cli.main.
    entry_points={"console_scripts": ["powerstrip = powerstrip.ops.console:console"]},
    extras_require={
        # mypy-zope: zope.interface ships no types; the plugin (mypy.ini) gives them.
        "test": ["docker>=7.0", "h11>=0.14", "hypothesis>=6.0", "ruff", "mypy", "mypy-zope", "types-PyYAML"],
    },
)
