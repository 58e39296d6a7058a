"""The DSA names the Handle System's keys need, read once with cryptography's deprecation hushed.

Handle.Net's servers and clients sign with DSA keys (``HS_DSAPUBKEY`` values, 1024-bit server keys), so
the native protocol must verify and make DSA signatures. cryptography 51 deprecated its DSA API: every
attribute read of ``cryptography.hazmat.primitives.asymmetric.dsa`` warns, which a warnings-as-errors
run (the tests) turns into a failure at import. The names are read here once, under a filter for that
warning only; the rest of idresolve uses this module where it would use cryptography's ``dsa``
(``from ..native import dsa_keys as dsa``). The objects are cryptography's own. When cryptography drops
DSA, the import below fails and says so.
"""

from __future__ import annotations

import warnings

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    from cryptography.hazmat.primitives.asymmetric.dsa import (
        DSAParameterNumbers,
        DSAPrivateKey,
        DSAPublicKey,
        DSAPublicNumbers,
        generate_private_key,
    )

__all__ = ["DSAParameterNumbers", "DSAPrivateKey", "DSAPublicKey", "DSAPublicNumbers", "generate_private_key"]
