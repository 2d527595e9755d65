"""The ``twistd xmppnode`` command; the daemon itself is :mod:`txxmppnode.daemon`.

Only names are given here: twistd imports the package when the command is used, not when it
lists its commands.
"""

from twisted.application.service import ServiceMaker

xmppnode = ServiceMaker(
    "txxmppnode XMPP node",
    "txxmppnode.daemon",
    "An XMPP client node: stays online, reconnects and resumes, runs handlers, serves metrics.",
    "xmppnode",
)
