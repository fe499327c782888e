"""credvault's agent: one per user, holding unlocked member keys in memory for a while.

``protocol`` and ``client`` use the standard library only (the fast path of ``credvault get``
imports nothing heavy); ``server`` is the agent itself and uses the whole library.
"""
