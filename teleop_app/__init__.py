"""The composition root: the `refine-dp` command line, teleop devices and the Qt application."""
