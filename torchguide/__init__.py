"""torchguide: the library behind the `guide` command line.

Importing the package is cheap on purpose (no torch): the registries fill
themselves on first use by importing the modules that define components.
"""

__version__ = "0.1.0"
