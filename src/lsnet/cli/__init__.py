"""The ``lsnet`` command line."""
