"""The web dashboard (SPEC §8): server-rendered pages over the event log, live build graphs."""
