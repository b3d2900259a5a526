"""Stage two: train a GRU on cached features, report, and predict.

``framecache.train`` is both this package and the public function: calling it
trains, as :func:`framecache.api.train` (the package and the function share one
name in ``framecache``, so the package is made callable rather than letting
whichever was imported last win).
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from framecache.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
