"""The ``dbrunbook`` command: a thin shell over the command functions."""
