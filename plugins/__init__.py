"""Bundled plugins. Each is discovered through the ``hostbay.plugins`` entry-point group like any third-party one;
core never imports them."""
