"""The twistd plugin: ``twistd -n txlb --config lb.ini``."""

from twisted.application.service import ServiceMaker

txlb = ServiceMaker(
    "txlb",
    "txlb.tap",
    "A least-connections HTTP/TCP load balancer with a live dashboard.",
    "txlb",
)
