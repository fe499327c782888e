"""credvault's hazmat layer: pure functions on bytes; no I/O, no SQL, no clock.

WARNING: these functions are easy to misuse. The rest of credvault reaches them through a
few calls that draw their own nonces and keys (``envelope.seal``, ``primitives.hpke_seal``); nothing
outside this package touches a nonce, a label or ``cryptography.hazmat``. Every tag, MAC or
signature failure raises :class:`credvault.errors.IntegrityError` and nothing else, so there
is no oracle telling which check failed.
"""
