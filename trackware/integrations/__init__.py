"""Framework integrations: ``trackware.integrations.flask`` and ``.asgi``.

Importing this package imports no framework; each integration module needs
its extra (``pip install 'trackware[flask]'`` or ``'trackware[asgi]'``).
:class:`TrackingOptions` lists the options both integrations take.
"""

from ._options import Identity, TrackingOptions

__all__ = ["Identity", "TrackingOptions"]
