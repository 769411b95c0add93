"""The outbound federation sender: one durable queue per destination (see
:mod:`.service`)."""

from pocketserver.federation.sender.service import FederationSender, SenderStatistics
from pocketserver.federation.sender.transport import FederationSendError, FederationTransport

__all__ = ["FederationSendError", "FederationSender", "FederationTransport", "SenderStatistics"]
