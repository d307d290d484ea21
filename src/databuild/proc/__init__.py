"""The low room: starting child programs in their own process groups, and reading ``/proc``.

Every other room may import it; it imports none of them. ``databuild.proc.info`` is standard
library only, so the CLI can use it before Twisted is imported.
"""
