"""``twistd xmppnode``: the node as a daemon that operators run, watch and extend.

The plugin in ``twisted/plugins/xmppnode_plugin.py`` points ``twistd`` here: :data:`Options`
reads the command line (or a config file) and :func:`makeService` builds the
:class:`~txxmppnode.daemon.service.NodeService`.  See the operations guide for how to run it.
"""

from .handlers import HandlerError, HandlerFactory, echo_handler, log_handler, resolve_handler
from .metrics import NodeMetrics, metrics_site
from .options import NodeOptions, NodeSettings, Options, Secret, load_config
from .service import NodeService, makeService
from .subscriptions import SubscriptionPolicy

__all__ = [
    "HandlerError",
    "HandlerFactory",
    "NodeMetrics",
    "NodeOptions",
    "NodeService",
    "NodeSettings",
    "Options",
    "Secret",
    "SubscriptionPolicy",
    "echo_handler",
    "load_config",
    "log_handler",
    "makeService",
    "metrics_site",
    "resolve_handler",
]
