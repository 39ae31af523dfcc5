"""Fast paths, one module per array library.

A module here is imported only when an array of its library reaches a public function (or
when the registry is listed); importing it registers its fast paths with
:func:`xpsoftmax._registry.register`. Modules use absolute imports only.
"""
