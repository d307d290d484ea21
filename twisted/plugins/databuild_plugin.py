"""twistd dropin: ``twistd databuild`` runs the DataBuild service."""

from twisted.application.service import ServiceMaker

databuild = ServiceMaker(
    "DataBuild",
    "databuild.service.tap",
    "Partition build service: HTTP API, job executor and Build Event Log",
    "databuild",
)
