"""DataBuild: partition-oriented declarative data builds."""

__version__ = "0.1.0"
