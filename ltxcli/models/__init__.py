"""Pure torch modules: no file I/O, no CLI. Attribute names follow the official checkpoint keys."""
